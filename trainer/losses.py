"""The HSC-MAE losses (docs/method.md, section 2), each a small function with shape docstrings.

Every loss here is >= 0, so the uncertainty weighting in `LossWeighting` has a finite optimum
(s_i = log L_i) for each term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ----------------------------------------------------------------------------- sample level


def reconstruction_loss(recon: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the masked entries only.

    Args:
        recon: (B, D) or (B, T, D) decoder output.
        target: same shape, the standardised input features.
        mask: (B, D) for vectors (entry-wise) or (B, T) for sequences (whole steps); True = masked.

    Returns:
        Scalar: sum of squared errors on masked entries / number of masked entries (0 when none is masked).
    """
    err = (recon.float() - target.float()).square()
    m = mask.to(err.dtype)
    if m.dim() == err.dim() - 1:  # sequence: a masked step masks all of its D entries
        m = m.unsqueeze(-1).expand_as(err)
    return (err * m).sum() / m.sum().clamp_min(1.0)


# ----------------------------------------------------------------------------- global level


class _InvSqrtm(torch.autograd.Function):
    """S^{-1/2} of a symmetric positive definite matrix via `eigh`, with a backward that stays finite for
    repeated eigenvalues.

    Autograd through `eigh`'s eigenvectors divides by eigenvalue gaps (inf for the repeated eigenvalue r of a
    rank-deficient batch plus ridge). The Fréchet derivative of f(S) = S^{-1/2} has the divided differences
    (f(l_i) - f(l_j)) / (l_i - l_j) = -1 / (s_i s_j (s_i + s_j)) with s = sqrt(l), which is finite everywhere
    (Daleckii-Krein), so we use that closed form instead.
    """

    @staticmethod
    def forward(ctx, S: Tensor, eps: float) -> Tensor:  # (k, k) -> (k, k)
        # A diverged batch (NaN/inf) would make eigh raise; decompose the identity instead and return NaN, so the
        # non-finite loss surfaces at the epoch-end check without a host sync here.
        finite = torch.isfinite(S).all()
        S = torch.where(finite, S, torch.eye(S.shape[-1], dtype=S.dtype, device=S.device))
        evals, V = torch.linalg.eigh(S)
        s = evals.clamp_min(eps).sqrt()
        ctx.save_for_backward(s, V)
        return torch.where(finite, (V / s) @ V.mT, torch.full_like(S, float("nan")))

    @staticmethod
    def backward(ctx, grad: Tensor):
        s, V = ctx.saved_tensors
        g = V.mT @ (0.5 * (grad + grad.mT)) @ V
        K = -1.0 / (s[:, None] * s[None, :] * (s[:, None] + s[None, :]))
        return V @ (K * g) @ V.mT, None


def inv_sqrtm(S: Tensor, eps: float = 1e-12) -> Tensor:
    """Inverse square root of a symmetric positive (semi)definite (k, k) matrix; eigenvalues clamped at eps."""
    return _InvSqrtm.apply(S, eps)


def canonical_correlations(h_a: Tensor, h_v: Tensor, ridge: float, eps: float = 1e-12) -> Tensor:
    """All canonical correlations of two views, in float64, descending.

    S_aa = cov(h_a) + r I, S_vv = cov(h_v) + r I, S_av = cross-cov (denominator B - 1);
    T = S_aa^{-1/2} S_av S_vv^{-1/2}; rho = singular values of T. With r > 0 every rho is in [0, 1).

    Args:
        h_a: (B, k) audio CCA-head outputs.
        h_v: (B, k) visual CCA-head outputs.

    Returns:
        (k,) float64, differentiable. Singular values only (no singular vectors) keep the gradient
        U diag(g) V^T finite for repeated values.
    """
    ha = h_a.double()
    hv = h_v.double()
    finite = torch.isfinite(ha).all() & torch.isfinite(hv).all()  # diverged batch: NaN out, no raise, no sync
    ha, hv = torch.where(finite, ha, 0.0), torch.where(finite, hv, 0.0)
    ha = ha - ha.mean(0, keepdim=True)
    hv = hv - hv.mean(0, keepdim=True)
    n = ha.shape[0]
    eye_a = torch.eye(ha.shape[1], dtype=ha.dtype, device=ha.device)
    eye_v = torch.eye(hv.shape[1], dtype=hv.dtype, device=hv.device)
    s_aa = ha.mT @ ha / (n - 1) + ridge * eye_a
    s_vv = hv.mT @ hv / (n - 1) + ridge * eye_v
    s_av = ha.mT @ hv / (n - 1)
    t = inv_sqrtm(s_aa, eps) @ s_av @ inv_sqrtm(s_vv, eps)
    rho = torch.linalg.svdvals(t)  # descending
    return torch.where(finite, rho, float("nan"))


def dcca_loss(h_a: Tensor, h_v: Tensor, ridge: float, k: int | None = None) -> tuple[Tensor, Tensor]:
    """L_dcca = 1 - mean(top-k rho), in [0, 1].

    Args:
        h_a, h_v: (B, k_out) with B > k_out.
        k: number of top correlations (None or 0 = all).

    Returns:
        (loss float64 scalar, rho (k_out,) float64 detached, descending).
    """
    rho = canonical_correlations(h_a, h_v, ridge)
    top = rho[: k or rho.numel()]
    return 1.0 - top.mean(), rho.detach()


# ----------------------------------------------------------------------------- local level


def soft_topk_targets(ta: Tensor, tv: Tensor, topk: int, tau_teacher: float, self_weight: float) -> Tensor:
    """Teacher-mined soft positives: P_i = self_weight * onehot(i) + (1 - self_weight) * w_i.

    t_i = normalize(normalize(ta_i) + normalize(tv_i)); A = t t^T without its diagonal; w_i = softmax over
    the top-`topk` entries of row i at temperature tau_teacher (0 elsewhere). With topk = 0, P = I.

    Args:
        ta, tv: (B, d) teacher embeddings of unmasked inputs.

    Returns:
        (B, B) float32, rows sum to 1, P_ii >= self_weight.
    """
    b = ta.shape[0]
    eye = torch.eye(b, device=ta.device, dtype=torch.float32)
    k = min(topk, b - 1)
    if k <= 0:
        return eye
    t = F.normalize(F.normalize(ta.float(), dim=1) + F.normalize(tv.float(), dim=1), dim=1)
    affinity = (t @ t.mT).masked_fill(eye.bool(), float("-inf"))  # (B, B), self excluded
    vals, idx = affinity.topk(k, dim=1)  # (B, k)
    w = torch.softmax(vals / tau_teacher, dim=1)
    neighbours = torch.zeros_like(eye).scatter_(1, idx, w)
    return self_weight * eye + (1.0 - self_weight) * neighbours


def soft_topk_infonce(za: Tensor, zv: Tensor, targets: Tensor, tau: float) -> Tensor:
    """0.5 * [CE(P, softmax_rows(L)) + CE(P, softmax_rows(L^T))], L_ij = <za_i, zv_j> / tau (L2-normalised).

    Args:
        za, zv: (B, d) student embeddings (masked path).
        targets: (B, B) target distributions P (rows sum to 1); the identity gives the CLIP loss.
    """
    za = F.normalize(za.float(), dim=1)
    zv = F.normalize(zv.float(), dim=1)
    logits = za @ zv.mT / tau  # (B, B)
    a2v = -(targets * torch.log_softmax(logits, dim=1)).sum(1).mean()
    v2a = -(targets * torch.log_softmax(logits.mT, dim=1)).sum(1).mean()
    return 0.5 * (a2v + v2a)


# ----------------------------------------------------------------------------- distillation


def distillation_loss(sa: Tensor, sv: Tensor, ta: Tensor, tv: Tensor, mode: str) -> Tensor:
    """Transfers the teacher's geometry to the student; all inputs (B, d), L2-normalised here.

    relational: mean squared difference of the (B, B) cross-modal cosine-similarity matrices, in [0, 4].
    embedding: mean over clips of ||s - t||^2 (= 2 - 2 cos), averaged over both modalities, in [0, 4].
    """
    sa, sv = F.normalize(sa.float(), dim=1), F.normalize(sv.float(), dim=1)
    ta, tv = F.normalize(ta.float(), dim=1), F.normalize(tv.float(), dim=1)
    if mode == "relational":
        return (sa @ sv.mT - ta @ tv.mT).square().mean()
    if mode == "embedding":
        return 0.5 * ((sa - ta).square().sum(1).mean() + (sv - tv).square().sum(1).mean())
    raise ValueError(f"distill mode must be relational or embedding, got {mode!r}")


# ----------------------------------------------------------------------------- multi-task weights


class LossWeighting(nn.Module):
    """Combines the active losses: learned (Kendall et al. 2018, on relative or raw losses) or fixed weights.

    learned: L = sum_i exp(-s_i) L_i / R_i + s_i, where R_i is L_i at the first training step (floored at
    REF_FLOOR), so s_i tracks the loss's *relative* progress (the loss ratio of GradNorm, Chen et al. 2018);
    distillation starts at 0 by construction, so its R is 1, or, for embedding distillation, InfoNCE's first-step
    value when InfoNCE is on (`reference_of`: both train the head z, and start with equal weights).
    learned_raw: the same on the raw losses (R_i = 1), Kendall's form as written (docs/method.md section 2.6).
    On raw losses the weights rank losses by size, not by use: a loss with a large irreducible part (InfoNCE
    with soft targets has the targets' entropy plus a temperature floor) gets a small weight, and one that overfits per batch toward 0
    (DCCA with 32 correlations on 256 clips) runs to the cap (benchmarks/results/quality.md, finding 2).
    Both: s_i starts at 0; its optimum for a fixed loss is s_i = log(L_i / R_i), so `clamp_()` after each
    step keeps s_i >= floor (at most exp(-floor) times the starting weight).
    fixed: L = sum_i w_i L_i.
    """

    REF_FLOOR = 1e-3  # a loss that starts near 0 would otherwise get a huge relative weight
    # A loss that starts at 0 by construction is not divided by its own first value: distillation compares the
    # student with a teacher that starts as its exact copy, so its first-step value (~0.006) made its weight ~170x
    # at once and ~1,200x after the floor, and training collapsed (val mAP 0.15 against 0.82 without distillation
    # on synthetic AVE, 30 epochs; a walkthrough). R = 1 for it (STARTS_AT_ZERO), or the first-step value of the
    # loss `reference_of` names for it (`fit` names InfoNCE for embedding distillation, which trailed with R = 1;
    # relational distillation does better with R = 1: docs/method.md section 2.6 has the figures).
    STARTS_AT_ZERO = ("distill",)

    def __init__(self, names: list[str], mode: str, fixed: dict[str, float], floor: float,
                 reference_of: dict[str, str] | None = None):
        super().__init__()
        if mode not in ("learned", "learned_raw", "fixed"):
            raise ValueError(f"loss weighting must be learned, learned_raw or fixed, got {mode!r}")
        self.names = list(names)
        self.mode = mode
        self.floor = floor
        self.logvars = nn.Parameter(torch.zeros(len(names)), requires_grad=mode != "fixed")
        self.register_buffer("fixed", torch.tensor([fixed[n] for n in names], dtype=torch.float32))
        # which loss's first-step value each R_i takes: its own, or reference_of's (None: R_i = 1)
        reference_of = {k: v for k, v in (reference_of or {}).items() if v in names}  # a loss that is off: R = 1
        source: list[int | None] = [names.index(reference_of[n]) if n in reference_of else
                                    None if n in self.STARTS_AT_ZERO else i for i, n in enumerate(names)]
        # R_i: NaN until the first forward sets it (mode learned; 1 where there is no source); checkpointed
        fill = [float("nan") if mode == "learned" and j is not None else 1.0 for j in source]
        self.register_buffer("reference", torch.tensor(fill, dtype=torch.float32))
        self.register_buffer("_reference_source", torch.tensor([i if j is None else j for i, j in enumerate(source)]),
                             persistent=False)

    @property
    def learned(self) -> bool:
        return self.mode != "fixed"

    def forward(self, losses: Tensor) -> Tensor:
        """losses: (n,) in the order of `names`; returns the scalar objective."""
        losses = losses.float()
        if self.mode == "fixed":
            return (self.fixed * losses).sum()
        if self.mode == "learned":
            # set once, at the first step, without a host sync (no `if isnan(...)` on the device value)
            first = losses.detach().clamp_min(self.REF_FLOOR)[self._reference_source]
            self.reference.copy_(torch.where(torch.isnan(self.reference), first, self.reference))
        return (torch.exp(-self.logvars) * losses / self.reference + self.logvars).sum()

    @torch.no_grad()
    def clamp_(self) -> None:
        self.logvars.clamp_(min=self.floor)

    def weights(self) -> Tensor:
        """(n,) effective weights on the raw losses: exp(-s) / R (learned; exp(-s) before the first step) or w."""
        if self.mode == "fixed":
            return self.fixed.clone()
        return torch.exp(-self.logvars.detach()) / torch.nan_to_num(self.reference, nan=1.0)

    def log_variances(self) -> Tensor:
        """(n,) s: the learned s, or -log w for fixed weights (w floored at 1e-12 so it stays finite)."""
        if self.learned:
            return self.logvars.detach().clone()
        return -torch.log(self.fixed.clamp_min(1e-12))
