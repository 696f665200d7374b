"""Cross-modal retrieval mAP (docs/method.md, section 3).

Each item of one modality queries the whole gallery of the other modality in the same split; relevant =
same label (multi-hot: shares at least one label); cosine similarity; AP_q = (1/R_q) * sum over the ranks k
of relevant items of precision@k; mAP = mean over queries that have at least one relevant item (a query with
R_q = 0 has no defined AP and is skipped, as scikit-learn's average_precision_score would warn on it).
Tied similarities form one threshold, as in scikit-learn: each relevant item of a tie counts the precision at
the tie's end, so the gallery's order never decides a score.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def _tensor(x, dtype=torch.float32) -> Tensor:
    return x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))


def label_matrix(labels) -> Tensor:
    """(N,) integer labels or (N, C) one-hot / multi-hot -> (N, C) float32 0/1."""
    lab = _tensor(labels)
    if lab.dim() == 1:
        lab = lab.long()
        return F.one_hot(lab, int(lab.max()) + 1).float()
    if lab.dim() == 2:
        return (lab > 0).float()
    raise ValueError(f"labels must be (N,) or (N, C), got shape {tuple(lab.shape)}")


@torch.no_grad()
def average_precisions(query, gallery, query_labels, gallery_labels, chunk: int = 1024) -> Tensor:
    """AP of every query against the gallery.

    Args:
        query: (Nq, d) embeddings; gallery: (Ng, d); compared by cosine similarity.
        query_labels, gallery_labels: (N,) ints or (N, C) multi-hot, with the same C.

    Returns:
        (Nq,) float64; NaN for a query with no relevant gallery item.
    """
    q = F.normalize(_tensor(query).float(), dim=1)
    g = F.normalize(_tensor(gallery).float().to(q.device), dim=1)
    ql = label_matrix(query_labels).to(q.device)
    gl = label_matrix(gallery_labels).to(q.device)
    if ql.shape[1] != gl.shape[1]:  # integer labels: pad to a common number of classes
        c = max(ql.shape[1], gl.shape[1])
        ql, gl = F.pad(ql, (0, c - ql.shape[1])), F.pad(gl, (0, c - gl.shape[1]))
    ranks = torch.arange(1, g.shape[0] + 1, device=q.device, dtype=torch.float64)  # (Ng,)
    out = []
    for start in range(0, q.shape[0], chunk):
        sim = q[start : start + chunk] @ g.mT  # (c, Ng)
        sim_sorted, order = sim.sort(dim=1, descending=True, stable=True)
        relevant = (ql[start : start + chunk] @ gl.mT > 0).double()  # (c, Ng)
        rel_sorted = relevant.gather(1, order)
        precision = rel_sorted.cumsum(1) / ranks  # precision@k for every k
        # tied similarities form one threshold, as in scikit-learn's average_precision_score: each relevant item
        # of a tie counts the precision at the tie's end, so the gallery's order never decides (a collapsed model,
        # all similarities equal, scored well above chance on a gallery sorted by class)
        last = torch.ones_like(sim_sorted, dtype=torch.bool)
        last[:, :-1] = sim_sorted[:, :-1] != sim_sorted[:, 1:]
        end = torch.where(last, ranks.long() - 1, torch.full_like(last, g.shape[0], dtype=torch.long))
        end = end.flip(1).cummin(1).values.flip(1)  # the index of the last item of each item's tie
        n_rel = rel_sorted.sum(1)
        out.append((precision.gather(1, end) * rel_sorted).sum(1) / n_rel)  # NaN where n_rel == 0
    return torch.cat(out)


def retrieval_map(query, gallery, query_labels, gallery_labels) -> float:
    """Single-direction mAP: mean AP over queries with at least one relevant gallery item."""
    ap = average_precisions(query, gallery, query_labels, gallery_labels)
    valid = ~torch.isnan(ap)
    return float(ap[valid].mean()) if bool(valid.any()) else float("nan")


def cross_modal_map(audio, visual, labels) -> dict[str, float]:
    """Audio-to-visual and visual-to-audio mAP over one split, and their mean.

    Args:
        audio: (N, d) audio embeddings; visual: (N, d') visual embeddings in the same space as audio.
        labels: (N,) or (N, C), shared by the pair.

    Returns:
        {"a2v", "v2a", "avg"} floats in [0, 1].
    """
    a2v = retrieval_map(audio, visual, labels, labels)
    v2a = retrieval_map(visual, audio, labels, labels)
    return {"a2v": a2v, "v2a": v2a, "avg": 0.5 * (a2v + v2a)}
