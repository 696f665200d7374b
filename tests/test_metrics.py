"""Retrieval mAP and linear CCA against independent references (scikit-learn, numpy float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from trainer.linear_cca import LinearCCA
from trainer.metrics import average_precisions, cross_modal_map, retrieval_map

N_CLASSES = 5
LAYOUTS = ["int", "onehot", "multihot"]


# ----------------------------------------------------------------------------- references


def _labels(layout: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) ints, (n, C) one-hot or (n, C) multi-hot with at least one label per row."""
    ints = rng.integers(0, N_CLASSES, size=n)
    if layout == "int":
        return ints
    onehot = np.eye(N_CLASSES, dtype=np.float32)[ints]
    if layout == "onehot":
        return onehot
    extra = (rng.random((n, N_CLASSES)) < 0.25).astype(np.float32)
    return np.maximum(onehot, extra)  # multi-hot; the one-hot part guarantees >= 1 label per row


def _as_matrix(labels: np.ndarray) -> np.ndarray:
    if labels.ndim == 1:
        return np.eye(N_CLASSES)[labels]
    return (labels > 0).astype(np.float64)


def _sklearn_aps(query, gallery, query_labels, gallery_labels) -> np.ndarray:
    """Per-query AP with cosine scores in float64; NaN where a query has no relevant gallery item."""
    q = np.asarray(query, dtype=np.float64)
    g = np.asarray(gallery, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    scores = q @ g.T
    relevant = (_as_matrix(query_labels) @ _as_matrix(gallery_labels).T) > 0
    out = np.full(len(q), np.nan)
    for i in range(len(q)):
        if relevant[i].any():
            out[i] = average_precision_score(relevant[i], scores[i])
    return out


# ----------------------------------------------------------------------------- average precision


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n_query,n_gallery", [(40, 40), (17, 53), (60, 9)])
@pytest.mark.parametrize("chunk", [1024, 7])
def test_average_precisions_match_sklearn(layout, n_query, n_gallery, chunk):
    rng = np.random.default_rng([LAYOUTS.index(layout), n_query, n_gallery])
    q, g = rng.standard_normal((n_query, 8)), rng.standard_normal((n_gallery, 8))
    ql, gl = _labels(layout, n_query, rng), _labels(layout, n_gallery, rng)
    expected = _sklearn_aps(q, g, ql, gl)
    ap = average_precisions(torch.from_numpy(q).float(), torch.from_numpy(g).float(), ql, gl, chunk=chunk)
    assert ap.shape == (n_query,)
    assert ap.dtype == torch.float64
    np.testing.assert_array_equal(np.isnan(ap.numpy()), np.isnan(expected))
    np.testing.assert_allclose(ap.numpy(), expected, rtol=0, atol=1e-9, equal_nan=True)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n_query,n_gallery", [(30, 30), (12, 45)])
def test_retrieval_map_is_mean_sklearn_ap(layout, n_query, n_gallery):
    rng = np.random.default_rng(7 + n_query)
    q, g = rng.standard_normal((n_query, 6)), rng.standard_normal((n_gallery, 6))
    ql, gl = _labels(layout, n_query, rng), _labels(layout, n_gallery, rng)
    expected = np.nanmean(_sklearn_aps(q, g, ql, gl))
    assert retrieval_map(q, g, ql, gl) == pytest.approx(expected, abs=1e-9)


def test_known_answer_ap():
    # query at angle 0; gallery at 10, 20, 30, 40 degrees ranks them in that order.
    # Relevance in rank order [1, 0, 1, 0]: AP = (1/1 + 2/3) / 2 = 5/6.
    angles = np.deg2rad([30.0, 10.0, 40.0, 20.0])  # shuffled gallery order
    gallery = np.stack([np.cos(angles), np.sin(angles)], 1)
    gallery_labels = np.array([0, 0, 1, 1])  # 30 and 10 degrees relevant
    ap = average_precisions(np.array([[1.0, 0.0]]), gallery, np.array([0]), gallery_labels)
    assert float(ap[0]) == pytest.approx(5 / 6, abs=1e-12)


def test_query_without_relevant_item_is_skipped():
    rng = np.random.default_rng(3)
    q, g = rng.standard_normal((10, 4)), rng.standard_normal((20, 4))
    gl = rng.integers(0, 3, size=20)  # gallery classes 0..2
    ql = rng.integers(0, 3, size=10)
    ql[[2, 7]] = 4  # class 4 has no gallery item
    ap = average_precisions(q, g, ql, gl).numpy()
    assert np.isnan(ap[[2, 7]]).all()
    assert not np.isnan(np.delete(ap, [2, 7])).any()
    expected = _sklearn_aps(q, g, ql, gl)
    assert retrieval_map(q, g, ql, gl) == pytest.approx(np.nanmean(expected), abs=1e-9)
    assert retrieval_map(q, g, ql, gl) == pytest.approx(np.delete(expected, [2, 7]).mean(), abs=1e-9)


def test_multihot_query_with_no_label_is_skipped():
    rng = np.random.default_rng(4)
    q, g = rng.standard_normal((8, 4)), rng.standard_normal((15, 4))
    ql, gl = _labels("multihot", 8, rng), _labels("multihot", 15, rng)
    ql[0] = 0  # no label at all: nothing is relevant
    ap = average_precisions(q, g, ql, gl).numpy()
    assert np.isnan(ap[0]) and not np.isnan(ap[1:]).any()
    assert retrieval_map(q, g, ql, gl) == pytest.approx(np.nanmean(_sklearn_aps(q, g, ql, gl)), abs=1e-9)


def test_retrieval_map_nan_when_no_query_has_a_relevant_item():
    q, g = np.eye(3), np.eye(3)
    assert math.isnan(retrieval_map(q, g, np.array([0, 0, 0]), np.array([1, 1, 1])))


@pytest.mark.parametrize("layout", ["int", "onehot"])
def test_perfect_embedding_gives_map_one(layout):
    rng = np.random.default_rng(5)
    labels = _labels(layout, 50, rng)
    ints = labels if labels.ndim == 1 else labels.argmax(1)
    audio = np.eye(N_CLASSES)[ints] + 1e-3 * rng.standard_normal((50, N_CLASSES))
    visual = np.eye(N_CLASSES)[ints] + 1e-3 * rng.standard_normal((50, N_CLASSES))
    out = cross_modal_map(audio, visual, labels)
    assert out == pytest.approx({"a2v": 1.0, "v2a": 1.0, "avg": 1.0}, abs=1e-12)


def test_random_embedding_is_not_perfect():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, N_CLASSES, size=60)
    out = cross_modal_map(rng.standard_normal((60, 8)), rng.standard_normal((60, 8)), labels)
    assert 0.0 < out["avg"] < 0.6


@pytest.mark.parametrize("layout", LAYOUTS)
def test_cross_modal_map_directions_and_mean(layout):
    rng = np.random.default_rng(8)
    labels = _labels(layout, 35, rng)
    audio, visual = rng.standard_normal((35, 6)), rng.standard_normal((35, 6))
    out = cross_modal_map(audio, visual, labels)
    a2v = np.nanmean(_sklearn_aps(audio, visual, labels, labels))
    v2a = np.nanmean(_sklearn_aps(visual, audio, labels, labels))
    assert set(out) == {"a2v", "v2a", "avg"}
    assert out["a2v"] == pytest.approx(a2v, abs=1e-9)
    assert out["v2a"] == pytest.approx(v2a, abs=1e-9)
    assert out["avg"] == pytest.approx(0.5 * (a2v + v2a), abs=1e-9)
    assert abs(a2v - v2a) > 1e-6  # the two directions are genuinely different computations


def test_cosine_is_scale_invariant():
    rng = np.random.default_rng(9)
    labels = rng.integers(0, N_CLASSES, size=30)
    audio, visual = rng.standard_normal((30, 6)), rng.standard_normal((30, 6))
    scale = rng.uniform(0.1, 10.0, size=(30, 1))
    assert cross_modal_map(audio * scale, visual, labels) == pytest.approx(cross_modal_map(audio, visual, labels))


# ----------------------------------------------------------------------------- linear CCA


def _two_views(n: int, d_a: int, d_v: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 3))
    a = z @ rng.standard_normal((3, d_a)) + 0.7 * rng.standard_normal((n, d_a)) + 2.0
    v = z @ rng.standard_normal((3, d_v)) + 0.7 * rng.standard_normal((n, d_v)) - 1.0
    return a, v


def _cholesky_cca(a: np.ndarray, v: np.ndarray, ridge: float) -> np.ndarray:
    """Canonical correlations by Cholesky whitening (a different route from symmetric inverse square roots)."""
    a, v = a - a.mean(0), v - v.mean(0)
    n = len(a)
    s_aa = a.T @ a / (n - 1) + ridge * np.eye(a.shape[1])
    s_vv = v.T @ v / (n - 1) + ridge * np.eye(v.shape[1])
    s_av = a.T @ v / (n - 1)
    la, lv = np.linalg.cholesky(s_aa), np.linalg.cholesky(s_vv)
    t = np.linalg.solve(la, s_av) @ np.linalg.inv(lv).T  # L_a^{-1} S_av L_v^{-T}
    return np.linalg.svd(t, compute_uv=False)


def _qr_cca(a: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Unregularised canonical correlations: cosines of the principal angles between the centred column spaces."""
    qa, _ = np.linalg.qr(a - a.mean(0))
    qv, _ = np.linalg.qr(v - v.mean(0))
    return np.linalg.svd(qa.T @ qv, compute_uv=False)


@pytest.mark.parametrize("d_a,d_v", [(5, 3), (4, 6), (6, 6)])
@pytest.mark.parametrize("ridge", [1e-3, 0.1, 1.0])
def test_linear_cca_rho_matches_cholesky_reference(d_a, d_v, ridge):
    a, v = _two_views(400, d_a, d_v, seed=d_a * 10 + d_v)
    k = min(d_a, d_v)
    cca = LinearCCA.fit(a, v, k=k, ridge=ridge)
    np.testing.assert_allclose(cca.rho, _cholesky_cca(a, v, ridge)[:k], rtol=1e-9, atol=1e-12)
    assert cca.w_a.shape == (d_a, k) and cca.w_v.shape == (d_v, k)
    assert np.all(np.diff(cca.rho) <= 0) and np.all((cca.rho >= 0) & (cca.rho < 1))


@pytest.mark.parametrize("d_a,d_v,k", [(5, 3, 3), (4, 6, 2), (6, 6, 6)])
def test_linear_cca_unregularised_matches_qr_and_projected_correlations(d_a, d_v, k):
    a, v = _two_views(500, d_a, d_v, seed=100 + d_a + d_v)
    cca = LinearCCA.fit(a, v, k=k, ridge=0.0)
    rho_ref = _qr_cca(a, v)[:k]
    np.testing.assert_allclose(cca.rho, rho_ref, rtol=1e-8, atol=1e-10)
    pa, pv = cca.transform(a, v)
    assert pa.shape == (500, k) and pv.shape == (500, k)
    corr = np.corrcoef(pa.T, pv.T)  # (2k, 2k)
    np.testing.assert_allclose(np.diag(corr[:k, k:]), rho_ref, atol=1e-8)  # component i vs component i
    np.testing.assert_allclose(corr[:k, :k], np.eye(k), atol=1e-8)  # audio components uncorrelated
    np.testing.assert_allclose(corr[k:, k:], np.eye(k), atol=1e-8)
    off = corr[:k, k:] - np.diag(np.diag(corr[:k, k:]))
    np.testing.assert_allclose(off, 0.0, atol=1e-8)  # only matching components correlate
    np.testing.assert_allclose(pa.std(0, ddof=1), 1.0, atol=1e-8)  # whitened


def test_linear_cca_transform_uses_train_means():
    a, v = _two_views(300, 4, 4, seed=11)
    cca = LinearCCA.fit(a, v, k=2, ridge=1e-3)
    pa, pv = cca.transform(a[:1], v[:1])
    np.testing.assert_allclose(pa, (a[:1] - a.mean(0)) @ cca.w_a, atol=1e-12)
    np.testing.assert_allclose(pv, (v[:1] - v.mean(0)) @ cca.w_v, atol=1e-12)


def test_linear_cca_k_is_capped_by_smaller_view():
    a, v = _two_views(200, 5, 3, seed=12)
    cca = LinearCCA.fit(a, v, k=10, ridge=1e-3)
    assert cca.rho.shape == (3,) and cca.w_a.shape == (5, 3) and cca.w_v.shape == (3, 3)


def test_tied_similarities_are_one_threshold_as_in_sklearn():
    """Ties were broken by the gallery's order: a collapsed model (every embedding equal) scored 0.41 on a gallery
    sorted by class against 0.29 shuffled (chance about 0.25). Embeddings drawn from four basis vectors make every
    cosine exactly 0 or 1 (many exact ties, the same in float32 and float64); the reference is scikit-learn's
    average_precision_score on those similarities, in float64."""
    rng = np.random.default_rng(0)
    basis = np.eye(4)
    for chunk in (7, 1024):
        q_idx, g_idx = rng.integers(0, 4, 40), rng.integers(0, 4, 60)
        ql, gl = rng.integers(0, 3, 40), rng.integers(0, 3, 60)
        ap = average_precisions(basis[q_idx], basis[g_idx], ql, gl, chunk=chunk).numpy()
        sims = basis[q_idx] @ basis[g_idx].T
        ref = [average_precision_score(gl == ql[i], sims[i]) if (gl == ql[i]).any() else np.nan for i in range(40)]
        np.testing.assert_allclose(ap, ref, rtol=0, atol=1e-12)
    labels = np.sort(rng.integers(0, 4, 100))  # a gallery sorted by class, every embedding the same
    ones = np.ones((100, 8))
    collapsed = average_precisions(ones, ones, labels, labels).numpy()
    prevalence = np.array([np.mean(labels == labels[i]) for i in range(100)])
    np.testing.assert_allclose(collapsed, prevalence, rtol=0, atol=1e-12)  # chance, whatever the order
    shuffled = rng.permutation(100)
    np.testing.assert_allclose(average_precisions(ones, ones, labels, labels[shuffled]).numpy(),
                               prevalence, rtol=0, atol=1e-12)  # fmt: skip
