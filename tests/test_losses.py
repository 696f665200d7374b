"""The HSC-MAE losses against numpy float64 references, and the DCCA gradient on hard batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.losses import (
    LossWeighting,
    canonical_correlations,
    dcca_loss,
    distillation_loss,
    inv_sqrtm,
    reconstruction_loss,
    soft_topk_infonce,
    soft_topk_targets,
)
from trainer.model import random_mask

# ----------------------------------------------------------------------------- numpy references


def _np_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _np_inv_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * w**-0.5) @ v.T


def _np_canonical_correlations(ha: np.ndarray, hv: np.ndarray, ridge: float) -> np.ndarray:
    ha = np.asarray(ha, dtype=np.float64)
    hv = np.asarray(hv, dtype=np.float64)
    ha, hv = ha - ha.mean(0), hv - hv.mean(0)
    n = len(ha)
    s_aa = ha.T @ ha / (n - 1) + ridge * np.eye(ha.shape[1])
    s_vv = hv.T @ hv / (n - 1) + ridge * np.eye(hv.shape[1])
    s_av = ha.T @ hv / (n - 1)
    return np.linalg.svd(_np_inv_sqrt(s_aa) @ s_av @ _np_inv_sqrt(s_vv), compute_uv=False)


def _np_log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(1, keepdims=True)
    return x - np.log(np.exp(x).sum(1, keepdims=True))


def _np_softmax(x: np.ndarray) -> np.ndarray:
    return np.exp(_np_log_softmax(x))


def _np_soft_infonce(za, zv, p, tau) -> float:
    logits = _np_normalize(za) @ _np_normalize(zv).T / tau
    a2v = -(p * _np_log_softmax(logits)).sum(1).mean()
    v2a = -(p * _np_log_softmax(logits.T)).sum(1).mean()
    return 0.5 * (a2v + v2a)


def _np_clip_loss(za, zv, tau) -> float:
    logits = _np_normalize(za) @ _np_normalize(zv).T / tau
    idx = np.arange(len(logits))
    return 0.5 * (-_np_log_softmax(logits)[idx, idx].mean() - _np_log_softmax(logits.T)[idx, idx].mean())


def _np_fused_affinity(ta, tv) -> np.ndarray:
    t = _np_normalize(_np_normalize(ta) + _np_normalize(tv))
    return t @ t.T


def _np_targets(ta, tv, topk, tau_teacher, self_weight) -> np.ndarray:
    a = _np_fused_affinity(ta, tv)
    b = len(a)
    p = self_weight * np.eye(b)
    for i in range(b):
        others = np.array([j for j in range(b) if j != i])
        nbrs = others[np.argsort(-a[i, others], kind="stable")[:topk]]
        p[i, nbrs] += (1 - self_weight) * _np_softmax(a[i, nbrs][None] / tau_teacher)[0]
    return p


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- DCCA values


@pytest.mark.parametrize("b,k_out", [(32, 4), (64, 8), (20, 19)])
@pytest.mark.parametrize("ridge", [1e-4, 1e-2, 0.5])
def test_canonical_correlations_match_numpy(b, k_out, ridge):
    g = _gen(b * 100 + k_out)
    shared = torch.randn(b, 2, generator=g)
    ha = shared @ torch.randn(2, k_out, generator=g) + 0.5 * torch.randn(b, k_out, generator=g)
    hv = shared @ torch.randn(2, k_out, generator=g) + 0.5 * torch.randn(b, k_out, generator=g)
    rho = canonical_correlations(ha, hv, ridge)
    assert rho.dtype == torch.float64 and rho.shape == (k_out,)
    expected = _np_canonical_correlations(ha.numpy(), hv.numpy(), ridge)
    np.testing.assert_allclose(rho.numpy(), expected, rtol=1e-9, atol=1e-12)
    assert (rho.diff() <= 0).all()
    assert ((rho >= 0) & (rho < 1)).all()
    assert rho[0] > 0.3  # the shared factor is found


@pytest.mark.parametrize("k", [None, 0, 1, 3, 6])
def test_dcca_loss_is_one_minus_mean_top_k(k):
    g = _gen(1)
    shared = torch.randn(40, 3, generator=g)
    ha = shared @ torch.randn(3, 6, generator=g) + 0.3 * torch.randn(40, 6, generator=g)
    hv = shared @ torch.randn(3, 6, generator=g) + 0.3 * torch.randn(40, 6, generator=g)
    loss, rho = dcca_loss(ha, hv, ridge=1e-3, k=k)
    expected_rho = _np_canonical_correlations(ha.numpy(), hv.numpy(), 1e-3)
    top = expected_rho[: (k or 6)]
    assert float(loss) == pytest.approx(1.0 - top.mean(), abs=1e-10)
    np.testing.assert_allclose(rho.numpy(), expected_rho, rtol=1e-9, atol=1e-12)
    assert not rho.requires_grad
    assert 0.0 <= float(loss) <= 1.0


def test_identical_views_rho_is_lambda_over_lambda_plus_ridge():
    # h_a == h_v: T = S^{-1/2} C S^{-1/2} with S = C + rI, so rho_i = l_i / (l_i + r) for eigenvalues l of C.
    h = torch.randn(50, 5, generator=_gen(2), dtype=torch.float64)
    c = np.cov(h.numpy(), rowvar=False)
    lam = np.sort(np.linalg.eigvalsh(c))[::-1]
    rho = canonical_correlations(h, h, ridge=0.1)
    np.testing.assert_allclose(rho.numpy(), lam / (lam + 0.1), rtol=1e-9)
    assert (rho < 1).all()


# ----------------------------------------------------------------------------- DCCA gradients


def _whitened(b: int, d: int, g: torch.Generator) -> torch.Tensor:
    """(b, d) centred columns with sample covariance exactly I (all eigenvalues repeated)."""
    x = torch.randn(b, d, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(x - x.mean(0))
    return q * (b - 1) ** 0.5


def _hard_batch(case: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(3)
    b, d = 32, 8
    if case == "identical":
        h = torch.randn(b, d, generator=g)
        return h, h.clone()
    if case == "rank_deficient":
        return (
            torch.randn(b, 2, generator=g) @ torch.randn(2, d, generator=g),
            torch.randn(b, 2, generator=g) @ torch.randn(2, d, generator=g),
        )
    if case == "rank_deficient_identical":
        h = torch.randn(b, 2, generator=g) @ torch.randn(2, d, generator=g)
        return h, h.clone()
    if case == "whitened":
        return _whitened(b, d, g).float(), _whitened(b, d, g).float()
    if case == "whitened_identical":  # S_aa = S_vv = (1 + r) I and T = I / (1 + r): every value repeated
        h = _whitened(b, d, g).float()
        return h, h.clone()
    if case == "duplicated_rows":
        return (
            torch.randn(8, d, generator=g).repeat(4, 1),
            torch.randn(8, d, generator=g).repeat(4, 1),
        )
    if case == "constant":
        return torch.ones(b, d), torch.full((b, d), 2.0)
    raise AssertionError(case)


HARD_CASES = [
    "identical",
    "rank_deficient",
    "rank_deficient_identical",
    "whitened",
    "whitened_identical",
    "duplicated_rows",
    "constant",
]


@pytest.mark.parametrize("case", HARD_CASES)
@pytest.mark.parametrize("k", [None, 3])
@pytest.mark.parametrize("ridge", [1e-3, 1e-5])
def test_dcca_gradient_finite_on_hard_batches(case, k, ridge):
    ha, hv = _hard_batch(case)
    ha.requires_grad_(True)
    hv.requires_grad_(True)
    loss, rho = dcca_loss(ha, hv, ridge=ridge, k=k)
    loss.backward()
    assert torch.isfinite(loss)
    assert 0.0 <= loss.item() <= 1.0
    assert torch.isfinite(rho).all()
    assert torch.isfinite(ha.grad).all() and torch.isfinite(hv.grad).all()
    expected = _np_canonical_correlations(ha.detach().numpy(), hv.detach().numpy(), ridge)
    np.testing.assert_allclose(rho.numpy(), expected, atol=1e-6)


def test_dcca_gradient_finite_through_a_network():
    # the gradient reaches parameters of a linear layer on a rank-deficient, identical-view batch
    torch.manual_seed(0)
    layer = torch.nn.Linear(2, 8)
    x = torch.randn(32, 2)
    h = layer(x)  # rank 2 in 8 dims
    loss, _ = dcca_loss(h, h, ridge=1e-3)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
    assert any(p.grad.abs().sum() > 0 for p in layer.parameters())


def test_inv_sqrtm_value_matches_numpy():
    x = torch.randn(6, 6, generator=_gen(4), dtype=torch.float64)
    s = x @ x.mT + 0.5 * torch.eye(6, dtype=torch.float64)
    out = inv_sqrtm(s)
    np.testing.assert_allclose(out.numpy(), _np_inv_sqrt(s.numpy()), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose((out @ s @ out).numpy(), np.eye(6), atol=1e-10)


@pytest.mark.parametrize("n", [3, 5])
def test_inv_sqrtm_gradcheck(n):
    x = torch.randn(n, n, generator=_gen(5 + n), dtype=torch.float64)
    spd = (x @ x.mT / n + torch.eye(n, dtype=torch.float64)).requires_grad_(True)
    # eigh reads one triangle only, so the input is symmetrised: the function is then a function of all entries.
    assert torch.autograd.gradcheck(lambda a: inv_sqrtm(0.5 * (a + a.mT)), (spd,), eps=1e-6, atol=1e-6)


def test_inv_sqrtm_backward_finite_on_repeated_eigenvalues():
    s = (2.0 * torch.eye(4, dtype=torch.float64)).requires_grad_(True)
    out = inv_sqrtm(s)
    (out * torch.arange(16, dtype=torch.float64).reshape(4, 4)).sum().backward()
    assert torch.isfinite(s.grad).all()
    # d/dS of <G, S^{-1/2}> at S = 2I is -1/2 * 2^{-3/2} * sym(G)
    gmat = torch.arange(16, dtype=torch.float64).reshape(4, 4)
    np.testing.assert_allclose(s.grad.numpy(), (-0.5 * 2**-1.5 * 0.5 * (gmat + gmat.mT)).numpy(), atol=1e-12)


@pytest.mark.parametrize("k", [None, 2])
def test_dcca_loss_gradient_matches_finite_differences(k):
    g = _gen(6)
    shared = torch.randn(12, 2, generator=g, dtype=torch.float64)
    ha = shared @ torch.randn(2, 3, generator=g, dtype=torch.float64) + 0.5 * torch.randn(12, 3, generator=g, dtype=torch.float64)
    hv = shared @ torch.randn(2, 3, generator=g, dtype=torch.float64) + 0.5 * torch.randn(12, 3, generator=g, dtype=torch.float64)
    ha.requires_grad_(True)
    hv.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, v: dcca_loss(a, v, ridge=0.1, k=k)[0], (ha, hv), eps=1e-6, atol=1e-6)


def test_canonical_correlations_gradcheck():
    g = _gen(7)
    ha = torch.randn(10, 3, generator=g, dtype=torch.float64, requires_grad=True)
    hv = torch.randn(10, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, v: canonical_correlations(a, v, ridge=0.1), (ha, hv), eps=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- soft top-k InfoNCE


@pytest.mark.parametrize("b", [2, 8, 33])
def test_topk_zero_targets_are_identity(b):
    g = _gen(b)
    p = soft_topk_targets(torch.randn(b, 4, generator=g), torch.randn(b, 4, generator=g), 0, 0.05, 0.7)
    assert torch.equal(p, torch.eye(b))


@pytest.mark.parametrize("b,d", [(8, 4), (32, 16)])
@pytest.mark.parametrize("tau", [0.05, 0.1, 1.0])
def test_identity_targets_give_clip_loss(b, d, tau):
    g = _gen(b + d)
    za, zv = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)
    loss = soft_topk_infonce(za, zv, torch.eye(b), tau)
    assert float(loss) == pytest.approx(_np_clip_loss(za.numpy(), zv.numpy(), tau), rel=1e-5)


@pytest.mark.parametrize("b,topk", [(8, 1), (16, 3), (24, 5), (6, 5)])
@pytest.mark.parametrize("self_weight", [0.5, 0.9])
@pytest.mark.parametrize("tau_teacher", [0.05, 0.5])
def test_soft_targets_match_numpy(b, topk, self_weight, tau_teacher):
    g = _gen(b * 10 + topk)
    ta, tv = torch.randn(b, 8, generator=g), torch.randn(b, 8, generator=g)
    p = soft_topk_targets(ta, tv, topk, tau_teacher, self_weight)
    assert p.shape == (b, b)
    np.testing.assert_allclose(p.sum(1).numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose(torch.diagonal(p).numpy(), self_weight, atol=1e-6)  # true pair: exactly self_weight
    off = p.clone().fill_diagonal_(0)
    assert ((off > 0).sum(1) == topk).all()
    affinity = _np_fused_affinity(ta.numpy(), tv.numpy())
    for i in range(b):
        others = np.array([j for j in range(b) if j != i])
        nbrs = others[np.argsort(-affinity[i, others])[:topk]]
        assert set(torch.nonzero(off[i]).flatten().tolist()) == set(nbrs.tolist())
        w = _np_softmax(affinity[i, nbrs][None] / tau_teacher)[0]
        np.testing.assert_allclose(off[i, nbrs].numpy(), (1 - self_weight) * w, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(p.numpy(), _np_targets(ta.numpy(), tv.numpy(), topk, tau_teacher, self_weight), atol=1e-6)


def test_soft_targets_topk_clamped_to_batch():
    g = _gen(9)
    p = soft_topk_targets(torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g), 50, 0.5, 0.6)
    off = p.clone().fill_diagonal_(0)
    assert ((off > 0).sum(1) == 4).all()
    np.testing.assert_allclose(p.sum(1).numpy(), 1.0, atol=1e-6)


def test_soft_targets_self_weight_one_is_identity():
    g = _gen(10)
    p = soft_topk_targets(torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g), 3, 0.1, 1.0)
    assert torch.allclose(p, torch.eye(8))


@pytest.mark.parametrize("b,topk", [(8, 2), (20, 5)])
@pytest.mark.parametrize("tau", [0.07, 0.3])
def test_soft_infonce_matches_numpy(b, topk, tau):
    g = _gen(b + topk)
    za, zv = torch.randn(b, 6, generator=g), torch.randn(b, 6, generator=g)
    ta, tv = torch.randn(b, 6, generator=g), torch.randn(b, 6, generator=g)
    loss = soft_topk_infonce(za, zv, soft_topk_targets(ta, tv, topk, 0.1, 0.7), tau)
    p = _np_targets(ta.numpy(), tv.numpy(), topk, 0.1, 0.7)
    expected = _np_soft_infonce(za.numpy(), zv.numpy(), p, tau)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert expected != pytest.approx(_np_clip_loss(za.numpy(), zv.numpy(), tau), rel=1e-3)  # soft != hard


def test_infonce_prefers_aligned_pairs():
    g = _gen(11)
    z = torch.randn(16, 8, generator=g)
    aligned = soft_topk_infonce(z, z, torch.eye(16), 0.1)
    shuffled = soft_topk_infonce(z, z[torch.randperm(16, generator=g)], torch.eye(16), 0.1)
    assert float(aligned) < float(shuffled)


# ----------------------------------------------------------------------------- reconstruction


@pytest.mark.parametrize("shape", [(16, 10), (4, 64)])
@pytest.mark.parametrize("ratio", [0.2, 0.5, 0.9])
def test_reconstruction_loss_vectors_masked_only(shape, ratio):
    g = _gen(12)
    recon, target = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    mask = torch.rand(shape, generator=g) < ratio
    assert mask.any()
    loss = reconstruction_loss(recon, target, mask)
    m = mask.numpy()
    expected = ((recon.numpy().astype(np.float64) - target.numpy()) ** 2)[m].mean()
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    changed = torch.where(mask, recon, 1e3 * torch.randn(shape, generator=g))  # unmasked entries changed
    assert float(reconstruction_loss(changed, target, mask)) == pytest.approx(float(loss), rel=1e-6)
    moved = torch.where(mask, recon + 1.0, recon)  # masked entries changed: the loss moves
    assert float(reconstruction_loss(moved, target, mask)) != pytest.approx(float(loss), rel=1e-3)


@pytest.mark.parametrize("b,t,d", [(4, 6, 3), (8, 10, 5)])
def test_reconstruction_loss_sequences_masks_whole_steps(b, t, d):
    g = _gen(13)
    recon, target = torch.randn(b, t, d, generator=g), torch.randn(b, t, d, generator=g)
    mask = torch.rand(b, t, generator=g) < 0.5
    assert mask.any() and not mask.all()
    loss = reconstruction_loss(recon, target, mask)
    err = (recon.numpy().astype(np.float64) - target.numpy()) ** 2  # (b, t, d)
    expected = err[mask.numpy()].mean()  # (n_masked_steps, d) -> mean over every entry of masked steps
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    changed = torch.where(mask[..., None], recon, torch.full_like(recon, 100.0))
    assert float(reconstruction_loss(changed, target, mask)) == pytest.approx(float(loss), rel=1e-6)


def test_reconstruction_loss_zero_when_nothing_masked():
    recon, target = torch.randn(4, 5), torch.randn(4, 5)
    loss = reconstruction_loss(recon, target, torch.zeros(4, 5, dtype=torch.bool))
    assert float(loss) == 0.0 and torch.isfinite(loss)


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.75])
def test_random_mask_vectors_realise_ratio(ratio):
    x = torch.zeros(1000, 400)
    mask = random_mask(x, ratio, _gen(14))
    assert mask.shape == x.shape and mask.dtype == torch.bool
    assert abs(mask.float().mean().item() - ratio) < 0.01
    per_dim = mask.float().mean(0)
    assert (per_dim - ratio).abs().max() < 0.07  # every dimension gets masked, not just some


@pytest.mark.parametrize("ratio", [0.25, 0.6])
def test_random_mask_sequences_mask_steps(ratio):
    x = torch.zeros(40000, 10, 2)
    mask = random_mask(x, ratio, _gen(15))
    assert mask.shape == (40000, 10) and mask.dtype == torch.bool
    assert abs(mask.float().mean().item() - ratio) < 0.01
    assert ((mask.float().mean(0) - ratio).abs() < 0.01).all()  # per time step


def test_random_mask_is_seeded_and_zero_ratio_masks_nothing():
    x = torch.zeros(64, 32)
    assert torch.equal(random_mask(x, 0.5, _gen(16)), random_mask(x, 0.5, _gen(16)))
    assert not torch.equal(random_mask(x, 0.5, _gen(16)), random_mask(x, 0.5, _gen(17)))
    assert not random_mask(x, 0.0, _gen(16)).any()


# ----------------------------------------------------------------------------- distillation


def _np_distill(sa, sv, ta, tv, mode) -> float:
    sa, sv, ta, tv = map(_np_normalize, (sa, sv, ta, tv))
    if mode == "relational":
        return float(((sa @ sv.T - ta @ tv.T) ** 2).mean())
    return float(0.5 * (((sa - ta) ** 2).sum(1).mean() + ((sv - tv) ** 2).sum(1).mean()))


@pytest.mark.parametrize("mode", ["relational", "embedding"])
@pytest.mark.parametrize("b,d", [(6, 4), (32, 16)])
def test_distillation_matches_numpy(mode, b, d):
    g = _gen(b + d)
    sa, sv, ta, tv = (torch.randn(b, d, generator=g) for _ in range(4))
    loss = distillation_loss(sa, sv, ta, tv, mode)
    expected = _np_distill(sa.numpy(), sv.numpy(), ta.numpy(), tv.numpy(), mode)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert 0.0 < float(loss) <= 4.0


@pytest.mark.parametrize("mode", ["relational", "embedding"])
def test_distillation_zero_when_student_is_teacher(mode):
    g = _gen(18)
    a, v = torch.randn(10, 5, generator=g), torch.randn(10, 5, generator=g)
    assert float(distillation_loss(a, v, a.clone(), v.clone(), mode)) == pytest.approx(0.0, abs=1e-7)
    # scale does not matter: the inputs are L2-normalised first
    assert float(distillation_loss(3 * a, 0.5 * v, a, v, mode)) == pytest.approx(0.0, abs=1e-7)


def test_distillation_unknown_mode_raises():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="relational or embedding"):
        distillation_loss(x, x, x, x, "none")


# ----------------------------------------------------------------------------- loss weighting


def _optimise_logvars(losses: list[float], floor: float, steps: int = 500, mode: str = "learned_raw",
                      first: list[float] | None = None) -> np.ndarray:  # fmt: skip
    torch.manual_seed(0)
    names = ["rec", "dcca", "nce"][: len(losses)]
    lw = LossWeighting(names, mode, {n: 1.0 for n in names}, floor=floor)
    opt = torch.optim.Adam(lw.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    target = torch.tensor(losses)
    if first is not None:  # the first step's losses set the reference of relative weighting
        lw(torch.tensor(first))
    for _ in range(steps):
        opt.zero_grad()
        lw(target).backward()
        opt.step()
        sched.step()
        lw.clamp_()
    return lw.log_variances().numpy()


def test_learned_logvars_converge_to_log_loss():
    losses = [0.5, 2.0, 0.05]
    s = _optimise_logvars(losses, floor=-10.0)
    np.testing.assert_allclose(s, np.log(losses), atol=1e-3)


def test_learned_logvars_stop_at_floor():
    losses = [0.5, 2.0, 0.05]
    s = _optimise_logvars(losses, floor=-2.0)
    np.testing.assert_allclose(s[:2], np.log(losses[:2]), atol=1e-3)
    assert s[2] == pytest.approx(-2.0, abs=1e-6)  # log 0.05 = -3.0 is below the floor


def test_relative_logvars_converge_to_log_loss_ratio():
    """Relative weighting tracks progress: s_i -> log(L_i / L_i(first step)), whatever the losses' sizes."""
    first, later = [5.5, 0.8, 1.0], [2.2, 0.02, 0.5]  # InfoNCE-like (large floor), DCCA-like (overfits), rec
    s = _optimise_logvars(later, floor=-10.0, mode="learned", first=first)
    np.testing.assert_allclose(s, np.log(np.array(later) / np.array(first)), atol=1e-3)


def test_relative_forward_matches_formula_and_reference_is_set_once_and_checkpointed():
    lw = LossWeighting(["a", "b", "c"], "learned", {"a": 1.0, "b": 1.0, "c": 1.0}, floor=-2.0)
    assert torch.isnan(lw.reference).all()
    first = np.array([5.5, 0.8, 1e-5])  # the last is floored to REF_FLOOR
    ref = np.maximum(first, LossWeighting.REF_FLOOR)
    assert lw(torch.tensor(first)).item() == pytest.approx(float((first / ref).sum()), rel=1e-6)
    s = np.array([0.3, -1.2, 0.8])
    with torch.no_grad():
        lw.logvars.copy_(torch.tensor(s))
    losses = np.array([2.0, 0.05, 0.3])
    expected = float((np.exp(-s) * losses / ref + s).sum())  # the reference stays that of the first step
    assert lw(torch.tensor(losses)).item() == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(lw.weights().numpy(), np.exp(-s) / ref, rtol=1e-6)  # effective, on raw losses
    np.testing.assert_allclose(lw.log_variances().numpy(), s, rtol=1e-6)
    other = LossWeighting(["a", "b", "c"], "learned", {"a": 1.0, "b": 1.0, "c": 1.0}, floor=-2.0)
    other.load_state_dict(lw.state_dict())  # a resumed run keeps the reference (its first step is long gone)
    assert other(torch.tensor(losses)).item() == pytest.approx(expected, rel=1e-6)


def test_unknown_weighting_mode_is_rejected():
    with pytest.raises(ValueError, match="learned, learned_raw or fixed"):
        LossWeighting(["a"], "kendall", {"a": 1.0}, floor=-2.0)


def test_learned_forward_matches_formula_and_weights_are_exp_minus_s():
    lw = LossWeighting(["a", "b", "c"], "learned_raw", {"a": 1.0, "b": 1.0, "c": 1.0}, floor=-2.0)
    s = np.array([0.3, -1.2, 0.8])
    with torch.no_grad():
        lw.logvars.copy_(torch.tensor(s))
    losses = np.array([0.4, 1.5, 0.02])
    expected = float((np.exp(-s) * losses + s).sum())
    assert lw(torch.tensor(losses)).item() == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(lw.weights().numpy(), np.exp(-s), rtol=1e-6)
    np.testing.assert_allclose(lw.log_variances().numpy(), s, rtol=1e-6)
    assert lw.logvars.requires_grad


def test_learned_initialised_at_zero_and_clamped():
    lw = LossWeighting(["a", "b"], "learned", {"a": 1.0, "b": 1.0}, floor=-2.0)
    assert torch.equal(lw.logvars.detach(), torch.zeros(2)) and lw.logvars.requires_grad
    with torch.no_grad():
        lw.logvars.copy_(torch.tensor([-5.0, 1.0]))
    lw.clamp_()
    np.testing.assert_allclose(lw.log_variances().numpy(), [-2.0, 1.0])


def test_fixed_mode_is_weighted_sum():
    w = {"rec": 0.5, "dcca": 2.0, "nce": 0.0}
    lw = LossWeighting(list(w), "fixed", w, floor=-2.0)
    losses = np.array([0.7, 0.3, 5.0])
    assert float(lw(torch.tensor(losses))) == pytest.approx(0.5 * 0.7 + 2.0 * 0.3, rel=1e-6)
    np.testing.assert_allclose(lw.weights().numpy(), [0.5, 2.0, 0.0])
    assert not lw.logvars.requires_grad
    s = lw.log_variances().numpy()
    np.testing.assert_allclose(s[:2], -np.log([0.5, 2.0]), rtol=1e-6)
    assert np.isfinite(s).all()


def test_learned_weighting_references_for_distillation(small_data):
    """Distillation starts at 0 by construction (the teacher is the student's copy): divided by its first-step
    value (~0.006) its weight was ~170x at once and training collapsed (val mAP 0.15 against 0.82; a
    walkthrough). Its reference is 1, or the first-step value of the loss named for it: `fit` names InfoNCE for
    embedding distillation (with 1 it outweighed InfoNCE and trailed fixed weights), none for relational. The
    others' references are their own first values; all checked against the formula by hand."""
    import torch

    from trainer import TrainConfig
    from trainer.fit import build_state
    from trainer.losses import LossWeighting

    ones = {"rec": 1.0, "dcca": 1.0, "nce": 1.0, "distill": 1.0}
    w = LossWeighting(["rec", "nce", "distill"], "learned", ones, -2.0)
    first = torch.tensor([0.9, 4.2, 0.006])
    total = w(first).detach()
    assert torch.allclose(w.reference, torch.tensor([0.9, 4.2, 1.0]))
    assert abs(float(total) - (1.0 + 1.0 + 0.006)) < 1e-6  # sum exp(-0) * L_i / R_i + 0
    assert torch.allclose(w.weights(), torch.tensor([1 / 0.9, 1 / 4.2, 1.0]))
    second = w(torch.tensor([0.5, 2.1, 0.3])).detach()  # references stay those of the first step
    assert abs(float(second) - (0.5 / 0.9 + 2.1 / 4.2 + 0.3)) < 1e-6

    w = LossWeighting(["rec", "nce", "distill"], "learned", ones, -2.0, reference_of={"distill": "nce"})
    total = w(first).detach()
    assert torch.allclose(w.reference, torch.tensor([0.9, 4.2, 4.2]))
    assert abs(float(total) - (1.0 + 1.0 + 0.006 / 4.2)) < 1e-6
    assert torch.allclose(w.weights(), torch.tensor([1 / 0.9, 1 / 4.2, 1 / 4.2]))
    second = w(torch.tensor([0.5, 2.1, 0.3])).detach()
    assert abs(float(second) - (0.5 / 0.9 + 2.1 / 4.2 + 0.3 / 4.2)) < 1e-6
    # the order of names does not matter; a start below REF_FLOOR is floored
    w = LossWeighting(["distill", "dcca", "nce"], "learned", ones, -2.0, reference_of={"distill": "nce"})
    w(torch.tensor([0.004, 0.0002, 3.1]))
    assert torch.allclose(w.reference, torch.tensor([3.1, 1e-3, 3.1]))
    # the loss named is off: 1
    w = LossWeighting(["rec", "distill"], "learned", ones, -2.0, reference_of={"distill": "nce"})
    w(torch.tensor([0.9, 0.006]))
    assert torch.allclose(w.reference, torch.tensor([0.9, 1.0]))
    # learned_raw and fixed never rescale
    for mode in ("learned_raw", "fixed"):
        w = LossWeighting(["nce", "distill"], mode, ones, -2.0, reference_of={"distill": "nce"})
        w(torch.tensor([4.2, 0.006]))
        assert torch.equal(w.reference, torch.ones(2))
    # what fit builds for each kind of distillation
    for distill, expected in (("embedding", "nce"), ("relational", None)):
        cfg = TrainConfig(distill=distill, hidden_dim=32, embed_dim=16, proj_dim=16).resolve(
            len(small_data.train.labels), small_data.train.audio.shape[-1], small_data.train.visual.shape[-1])
        state = build_state(cfg, small_data, torch.device("cpu"))
        names = state.weighting.names
        state.weighting(torch.arange(1.0, len(names) + 1.0))
        want = float(names.index(expected) + 1) if expected else 1.0
        assert float(state.weighting.reference[names.index("distill")]) == want, (distill, names)
