"""One epoch of training and one evaluation pass, each a function returning a flat dict of floats.

Fast by design: the data lives on the training device, batches are index slices of it, and the losses are
accumulated on the device and read once per epoch (no host synchronisation inside the step).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .config import TrainConfig
from .ema import ema_update
from .linear_cca import LinearCCA
from .losses import (
    LossWeighting,
    canonical_correlations,
    dcca_loss,
    distillation_loss,
    reconstruction_loss,
    soft_topk_infonce,
    soft_topk_targets,
)
from .metrics import cross_modal_map
from .model import HSCMAE, random_mask
from .schedules import ema_momentum, learning_rate


class NonFiniteLossError(RuntimeError):
    """Training diverged: a loss became NaN or inf."""


@dataclass
class DeviceSplit:
    """One split as tensors on the training device."""

    audio: Tensor  # (N, D_a) or (N, T, D_a) float32
    visual: Tensor  # (N, D_v) or (N, T, D_v) float32
    labels: Tensor  # (N, C) float32 multi-hot

    @classmethod
    def from_split(cls, split, device: torch.device) -> "DeviceSplit":
        def put(x):
            return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32).to(device)

        return cls(put(split.audio), put(split.visual), put(split.labels))

    def __len__(self) -> int:
        return self.audio.shape[0]


@dataclass
class TrainState:
    """Every stateful object of a run, checkpointed by name."""

    model: HSCMAE
    teacher: HSCMAE
    weighting: LossWeighting
    optimizer: torch.optim.Optimizer
    weight_optimizer: torch.optim.Optimizer | None
    step: int = 0


@dataclass(frozen=True)
class Schedule:
    total_steps: int
    warmup_steps: int
    steps_per_epoch: int
    ema_base: float = 0.99  # starting teacher momentum: the resolved config's ema_momentum


def epoch_generator(cfg: TrainConfig, epoch: int, device: torch.device) -> torch.Generator:
    """Shuffling and masking randomness derived from (seed, epoch) alone, so a resumed run repeats it exactly."""
    return torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + epoch)


def _autocast(device: torch.device, cfg: TrainConfig):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=(device.type == "cuda" and cfg.amp))


def step_losses(state: TrainState, xa: Tensor, xv: Tensor, cfg: TrainConfig, gen: torch.Generator) -> dict[str, Tensor]:
    """The active losses of one batch (docs/method.md, section 2), keyed by name.

    Student MAE path: masked inputs -> reconstruction, InfoNCE logits, distillation. Student CCA path and teacher:
    unmasked inputs.
    """
    names = state.weighting.names
    model, teacher = state.model, state.teacher
    masked = cfg.mask_ratio > 0
    ma = random_mask(xa, cfg.mask_ratio, gen) if masked else None
    mv = random_mask(xv, cfg.mask_ratio, gen) if masked else None
    out: dict[str, Tensor] = {}
    with _autocast(xa.device, cfg):
        student_mae = bool({"rec", "nce", "distill"} & set(names))
        if student_mae:
            sa, sv = model(xa, xv, ma, mv, decode="rec" in names)
        if "dcca" in names:  # without masking both student paths see the same input: one forward serves both
            ca, cv = (sa, sv) if student_mae and not masked else model(xa, xv)
        if "distill" in names or ("nce" in names and cfg.topk > 0):
            with torch.no_grad():
                ta, tv = teacher(xa, xv)
    if "rec" in names:
        out["rec"] = 0.5 * (reconstruction_loss(sa.recon, xa, ma) + reconstruction_loss(sv.recon, xv, mv))
    if "dcca" in names:
        out["dcca"] = dcca_loss(ca.h, cv.h, cfg.cca_ridge, cfg.cca_k)[0]
    if "nce" in names:
        if cfg.topk > 0:
            targets = soft_topk_targets(ta.z, tv.z, cfg.topk, cfg.tau_teacher, cfg.self_weight)
        else:
            targets = torch.eye(xa.shape[0], device=xa.device)
        out["nce"] = soft_topk_infonce(sa.z, sv.z, targets, cfg.tau)
    if "distill" in names:
        out["distill"] = distillation_loss(sa.z, sv.z, ta.z, tv.z, cfg.distill)
    return out


def train_one_epoch(state: TrainState, data: DeviceSplit, cfg: TrainConfig, epoch: int, sched: Schedule) -> dict:
    """Trains one epoch (1-based `epoch`) over shuffled index slices; drops the last incomplete batch.

    Returns:
        {"loss/total", "loss/<name>" for each active loss, "time/train_s", "perf/samples_per_s"}.

    Raises:
        NonFiniteLossError: a loss was NaN or inf in this epoch (checked once, at the end of the epoch).
    """
    t0 = time.perf_counter()
    state.model.train()
    names = state.weighting.names
    device = data.audio.device
    gen = epoch_generator(cfg, epoch, device)
    perm = torch.randperm(len(data), generator=gen, device=device)
    bsz = cfg.batch_size
    sums = torch.zeros(len(names) + 1, dtype=torch.float64, device=device)
    learn_weights = state.weight_optimizer is not None and epoch > cfg.weight_warmup_epochs
    params = [p for p in state.model.parameters()]
    for i in range(sched.steps_per_epoch):
        idx = perm[i * bsz : (i + 1) * bsz]
        lr = learning_rate(state.step, sched.total_steps, sched.warmup_steps, cfg.lr, cfg.min_lr_ratio)
        for group in state.optimizer.param_groups:
            group["lr"] = lr
        try:
            by_name = step_losses(state, data.audio[idx], data.visual[idx], cfg, gen)
        except torch.linalg.LinAlgError as e:  # eigh failing to converge on a degenerate batch
            raise NonFiniteLossError(f"epoch {epoch}, step {i}: DCCA whitening failed ({e}); raise cca_ridge "
                                     f"(now {cfg.cca_ridge:g}) or lower lr (now {cfg.lr:g}).") from None
        losses = torch.stack([by_name[n].float() for n in names])  # (n_losses,)
        total = state.weighting(losses)
        state.optimizer.zero_grad(set_to_none=True)
        if state.weight_optimizer is not None:
            state.weight_optimizer.zero_grad(set_to_none=True)
        total.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip, foreach=True)
        state.optimizer.step()
        if learn_weights:
            state.weight_optimizer.step()
            state.weighting.clamp_()
        ema_update(state.teacher, state.model, ema_momentum(state.step, sched.total_steps, sched.ema_base))
        state.step += 1
        sums += torch.cat([losses.detach().double(), total.detach().double().reshape(1)])
    means = (sums / max(1, sched.steps_per_epoch)).tolist()  # the one host sync of the epoch
    metrics = {f"loss/{n}": v for n, v in zip(names, means[:-1])}
    metrics["loss/total"] = means[-1]
    bad = [k for k, v in metrics.items() if not np.isfinite(v)]
    if bad:
        raise NonFiniteLossError(
            f"epoch {epoch}: {', '.join(bad)} became non-finite ({', '.join(f'{metrics[k]}' for k in bad)}); "
            f"training diverged. Lower lr (now {cfg.lr:g}), raise cca_ridge (now {cfg.cca_ridge:g}) or tau, "
            f"or keep grad_clip > 0 (now {cfg.grad_clip:g})."
        )
    dt = time.perf_counter() - t0
    metrics["time/train_s"] = dt
    metrics["perf/samples_per_s"] = sched.steps_per_epoch * bsz / dt
    return metrics


@torch.no_grad()
def embed(net: HSCMAE, data: DeviceSplit, cfg: TrainConfig, which: str, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """Embeddings `which` in {z, h, e} of unmasked inputs, float32, (N, d) each."""
    net.eval()
    outs_a, outs_v = [], []
    for s in range(0, len(data), chunk):
        with _autocast(data.audio.device, cfg):
            oa, ov = net(data.audio[s : s + chunk], data.visual[s : s + chunk])
        outs_a.append(getattr(oa, which).float())
        outs_v.append(getattr(ov, which).float())
    return torch.cat(outs_a), torch.cat(outs_v)


def evaluate(net: HSCMAE, data: DeviceSplit, cfg: TrainConfig, prefix: str, fit_on: DeviceSplit | None = None) -> dict:
    """Cross-modal mAP of one split: {"<prefix>/map_a2v", "<prefix>/map_v2a", "<prefix>/map_avg"}.

    With eval_projection = cca, a linear CCA fitted on `fit_on` (the train split) projects the embeddings first.
    """
    a, v = embed(net, data, cfg, cfg.eval_embedding)
    if cfg.eval_projection == "cca":
        assert fit_on is not None, "eval_projection=cca needs the train split"
        ta, tv = embed(net, fit_on, cfg, cfg.eval_embedding)
        proj = LinearCCA.fit(ta.cpu().numpy(), tv.cpu().numpy(), k=cfg.cca_dim, ridge=cfg.cca_ridge)
        a, v = (torch.as_tensor(x, device=data.audio.device) for x in proj.transform(a.cpu().numpy(), v.cpu().numpy()))
    m = cross_modal_map(a, v, data.labels)
    return {f"{prefix}/map_a2v": m["a2v"], f"{prefix}/map_v2a": m["v2a"], f"{prefix}/map_avg": m["avg"]}


def cca_spectrum(net: HSCMAE, data: DeviceSplit, cfg: TrainConfig) -> dict:
    """Top-cca_k canonical correlations of the CCA head on a split: {"cca/rho_00", ..., "cca/mean"}."""
    ha, hv = embed(net, data, cfg, "h")
    rho = canonical_correlations(ha, hv, cfg.cca_ridge)[: cfg.cca_k].cpu().tolist()
    out = {f"cca/rho_{i:02d}": r for i, r in enumerate(rho)}
    out["cca/mean"] = float(np.mean(rho))
    return out
