"""`trainer/engine.py`: which forward pass feeds which loss (`step_losses`) and the order of things inside one
training step (`train_one_epoch`): learning rate, clipping, optimiser step, EMA update, loss-weight warm-up.

Routing is checked against losses recomputed here from explicit forward passes (masked student, unmasked student,
unmasked teacher), with the teacher moved away from the student so that every path gives different numbers; each
test also checks that the plausible wrong routings give values far from what `step_losses` returns. The step order
is observed with hooks on the state's own optimiser instance (`register_step_pre_hook` / `register_step_post_hook`),
removed after each test; nothing module-level is patched.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from trainer import TrainConfig
from trainer.data import AVData, Split
from trainer.engine import DeviceSplit, Schedule, step_losses, train_one_epoch
from trainer.fit import build_state
from trainer.losses import dcca_loss, distillation_loss, reconstruction_loss, soft_topk_infonce, soft_topk_targets
from trainer.model import HSCMAE, random_mask
from trainer.schedules import ema_momentum, learning_rate

TINY = dict(hidden_dim=16, embed_dim=8, proj_dim=8, cca_dim=4, batch_size=16, seed=3)
DA, DV, T = 8, 12, 3
ROUTE_TOL = dict(rtol=1e-5, atol=1e-7)  # float64 networks; the losses cast to float32 inside


def _data(n: int, seq: bool = False, seed: int = 0) -> AVData:
    rng = np.random.default_rng(seed)
    shape_a, shape_v = ((n, T, DA), (n, T, DV)) if seq else ((n, DA), (n, DV))

    def split():
        labels = np.eye(4, dtype=np.float32)[rng.integers(0, 4, n)]
        return Split(rng.standard_normal(shape_a).astype(np.float32), rng.standard_normal(shape_v).astype(np.float32),
                     labels)  # fmt: skip

    return AVData(split(), split(), split(), num_classes=4, source="test_engine", val_carved=False)


def _setup(n: int = 16, seq: bool = False, **overrides):
    data = _data(n, seq)
    cfg = TrainConfig.from_dict({**TINY, **overrides}).resolve(n, data.audio_dim, data.visual_dim)
    with torch.random.fork_rng(devices=[]):  # build_state seeds the global generator; keep that inside this test
        state = build_state(cfg, data, torch.device("cpu"))
    return cfg, state, DeviceSplit.from_split(data.train, torch.device("cpu"))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _move_teacher(state, scale: float = 0.3, seed: int = 99) -> None:
    """Teacher != student, so a loss fed by the wrong one of them gives a different value."""
    g = _gen(seed)
    with torch.no_grad():
        for p in state.teacher.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


_FORWARD = inspect.signature(HSCMAE.forward)


class _Calls:
    """Records the (bound) arguments of every forward call of a module via a forward pre-hook."""

    def __init__(self, module: torch.nn.Module):
        self.calls: list[dict] = []
        self.handle = module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        bound = _FORWARD.bind(module, *args, **kwargs)
        bound.apply_defaults()
        self.calls.append({k: v for k, v in bound.arguments.items() if k != "self"})

    def masked(self) -> list[dict]:
        return [c for c in self.calls if c["mask_a"] is not None or c["mask_v"] is not None]

    def unmasked(self) -> list[dict]:
        return [c for c in self.calls if c["mask_a"] is None and c["mask_v"] is None]


def _f(x) -> float:
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


def _close(a, b) -> bool:
    return bool(np.isclose(_f(a), _f(b), **ROUTE_TOL))


def _far(a, b, margin: float = 1e-3) -> bool:
    """At least `margin` apart (relative, for values above 1): 100 times the tolerance of `_close`."""
    return abs(_f(a) - _f(b)) > margin * max(1.0, abs(_f(b)))


# ----------------------------------------------------------------------------- step_losses routing

ROUTING_CASES = {
    "vector-relational": dict(distill="relational", tau=0.05, self_weight=0.3),
    "vector-embedding": dict(distill="embedding", mask_ratio=0.75, topk=3, tau=0.05, self_weight=0.3),
    "sequence-relational": dict(distill="relational", tau=0.05, self_weight=0.3, seq=True),
}


@pytest.mark.parametrize("case", list(ROUTING_CASES))
def test_step_losses_route_each_path_to_its_losses(case):
    """rec, nce and distill come from the student on MASKED inputs, dcca from the student on UNMASKED inputs, the
    InfoNCE soft targets and the distillation targets from the teacher on UNMASKED inputs, and reconstruction is
    scored on the very mask applied to the student's input.

    Each loss is recomputed from explicit forward passes of float64 networks (masks rebuilt from an identically
    seeded generator). Catches, each with an explicit check that the wrong value is far away: masked and unmasked
    inputs swapped between the student paths; DCCA on the masked path; InfoNCE or distillation on the unmasked
    path; targets taken from the student instead of the teacher, or from the teacher on masked inputs; a fresh mask
    handed to the reconstruction loss; the full-input MSE instead of the masked-entries MSE; one mask used for both
    modalities.
    """
    opts = dict(ROUTING_CASES[case])
    seq = opts.pop("seq", False)
    cfg, state, data = _setup(16, seq=seq, **opts)
    assert cfg.active_losses() == ["rec", "dcca", "nce", "distill"] and cfg.topk > 0 and cfg.mask_ratio > 0
    state.model.double()
    state.teacher.double()
    _move_teacher(state, scale=1.0)
    xa, xv = data.audio.double(), data.visual.double()

    student, teacher = _Calls(state.model), _Calls(state.teacher)
    try:
        got = step_losses(state, xa, xv, cfg, _gen(5))
    finally:
        student.handle.remove()
        teacher.handle.remove()
    assert set(got) == {"rec", "dcca", "nce", "distill"}

    # the masks the student saw are Bernoulli(mask_ratio) draws from the step's generator, audio then visual
    g = _gen(5)
    ma, mv = random_mask(xa, cfg.mask_ratio, g), random_mask(xv, cfg.mask_ratio, g)
    fresh_a, fresh_v = random_mask(xa, cfg.mask_ratio, g), random_mask(xv, cfg.mask_ratio, g)
    assert [len(student.masked()), len(student.unmasked())] == [1, 1], student.calls
    mae_call = student.masked()[0]
    assert torch.equal(mae_call["mask_a"], ma) and torch.equal(mae_call["mask_v"], mv)
    assert mae_call["decode"] is True
    assert len(teacher.calls) == 1 and teacher.unmasked() == teacher.calls
    for call in (mae_call, student.unmasked()[0], teacher.calls[0]):
        assert torch.equal(call["xa"], xa) and torch.equal(call["xv"], xv)

    with torch.no_grad():
        sa, sv = state.model(xa, xv, ma, mv, decode=True)  # student, masked
        ca, cv = state.model(xa, xv)  # student, unmasked
        ta, tv = state.teacher(xa, xv)  # teacher, unmasked
        tma, tmv = state.teacher(xa, xv, ma, mv)  # teacher, masked (a wrong route)

    def nce(za, zv, tza, tzv):
        return soft_topk_infonce(za, zv, soft_topk_targets(tza, tzv, cfg.topk, cfg.tau_teacher, cfg.self_weight),
                                 cfg.tau)  # fmt: skip

    def dcca(ha, hv):
        return dcca_loss(ha, hv, cfg.cca_ridge, cfg.cca_k)[0]

    def rec(mask_a, mask_v):
        return 0.5 * (reconstruction_loss(sa.recon, xa, mask_a) + reconstruction_loss(sv.recon, xv, mask_v))

    expected = {
        "rec": rec(ma, mv),
        "dcca": dcca(ca.h, cv.h),
        "nce": nce(sa.z, sv.z, ta.z, tv.z),
        "distill": distillation_loss(sa.z, sv.z, ta.z, tv.z, cfg.distill),
    }
    ones_a, ones_v = (torch.ones(x.shape[: 2 if seq else None], dtype=torch.bool) for x in (xa, xv))
    wrong = {
        "rec": [rec(fresh_a, fresh_v), rec(~ma, ~mv), rec(ones_a, ones_v)],
        "dcca": [dcca(sa.h, sv.h), dcca(ta.h, tv.h)],
        "nce": [nce(ca.z, cv.z, ta.z, tv.z), nce(sa.z, sv.z, ca.z, cv.z), nce(sa.z, sv.z, sa.z, sv.z),
                nce(sa.z, sv.z, tma.z, tmv.z)],
        "distill": [distillation_loss(ca.z, cv.z, ta.z, tv.z, cfg.distill),
                    distillation_loss(sa.z, sv.z, ca.z, cv.z, cfg.distill),
                    distillation_loss(sa.z, sv.z, tma.z, tmv.z, cfg.distill)],
    }  # fmt: skip
    for name in expected:
        assert _close(got[name], expected[name]), (name, _f(got[name]), _f(expected[name]))
        for i, w in enumerate(wrong[name]):
            assert _far(w, expected[name]), (name, i, _f(w), _f(expected[name]))


def test_without_masking_one_forward_serves_both_student_paths():
    """With mask_ratio 0 the student runs once, unmasked, and that one output feeds DCCA, InfoNCE and distillation;
    rec is absent (nothing is masked, so there is nothing to reconstruct).

    Catches: a second, redundant student forward; masks (even all-False ones) drawn and applied; a rec loss left in
    the dict (it would be 0 and still weighted); DCCA or InfoNCE fed from the teacher.
    """
    cfg, state, data = _setup(16, mask_ratio=0.0, distill="embedding")
    assert cfg.active_losses() == ["dcca", "nce", "distill"]
    state.model.double()
    state.teacher.double()
    _move_teacher(state)
    xa, xv = data.audio.double(), data.visual.double()
    student, teacher = _Calls(state.model), _Calls(state.teacher)
    try:
        got = step_losses(state, xa, xv, cfg, _gen(6))
    finally:
        student.handle.remove()
        teacher.handle.remove()
    assert set(got) == {"dcca", "nce", "distill"}
    assert len(student.calls) == 1 and student.unmasked() == student.calls and student.calls[0]["decode"] is False
    assert len(teacher.calls) == 1 and teacher.unmasked() == teacher.calls
    with torch.no_grad():
        sa, sv = state.model(xa, xv)
        ta, tv = state.teacher(xa, xv)
    targets = soft_topk_targets(ta.z, tv.z, cfg.topk, cfg.tau_teacher, cfg.self_weight)
    expected = {
        "dcca": dcca_loss(sa.h, sv.h, cfg.cca_ridge, cfg.cca_k)[0],
        "nce": soft_topk_infonce(sa.z, sv.z, targets, cfg.tau),
        "distill": distillation_loss(sa.z, sv.z, ta.z, tv.z, "embedding"),
    }
    for name, value in expected.items():
        assert _close(got[name], value), (name, _f(got[name]), _f(value))
    assert _far(dcca_loss(ta.h, tv.h, cfg.cca_ridge, cfg.cca_k)[0], expected["dcca"])
    assert _far(got["distill"], 0.0)  # student and teacher differ: the loss is not a student-vs-itself zero


SWITCH_CASES = {  # overrides -> (active losses, student forwards (masked, unmasked), teacher forwards)
    "dcca only": (dict(use_rec=False, use_nce=False, eval_embedding="h"), ["dcca"], (0, 1), 0),
    "rec only": (dict(use_dcca=False, use_nce=False, eval_embedding="e"), ["rec"], (1, 0), 0),
    "clip nce only": (dict(use_rec=False, use_dcca=False, topk=0), ["nce"], (1, 0), 0),
    "soft nce only": (dict(use_rec=False, use_dcca=False), ["nce"], (1, 0), 1),
    "distill only": (dict(use_rec=False, use_dcca=False, use_nce=False, distill="relational"), ["distill"], (1, 0), 1),
    "rec+dcca": (dict(use_nce=False, eval_embedding="h"), ["rec", "dcca"], (1, 1), 0),
}


@pytest.mark.parametrize("case", list(SWITCH_CASES))
def test_switched_off_losses_are_absent_and_unused_paths_do_not_run(case):
    """`step_losses` returns exactly the config's active losses; a path no active loss needs is not run (no
    teacher forward for DCCA/reconstruction/plain InfoNCE, no masked forward for DCCA alone, no unmasked student
    forward without DCCA), and plain InfoNCE (topk 0) equals the CLIP loss on the masked student path.

    Catches: a loss computed and returned although switched off (it would be weighted into the total), a loss
    missing although on, wasted forwards (teacher, second student pass, decoder without rec), topk 0 still using
    teacher targets.
    """
    overrides, names, (n_masked, n_unmasked), n_teacher = SWITCH_CASES[case]
    cfg, state, data = _setup(16, **overrides)
    assert cfg.active_losses() == names == state.weighting.names
    _move_teacher(state)
    student, teacher = _Calls(state.model), _Calls(state.teacher)
    try:
        got = step_losses(state, data.audio, data.visual, cfg, _gen(7))
    finally:
        student.handle.remove()
        teacher.handle.remove()
    assert list(got) == names
    assert all(torch.isfinite(v) and v.dim() == 0 for v in got.values())
    assert (len(student.masked()), len(student.unmasked()), len(teacher.calls)) == (n_masked, n_unmasked, n_teacher)
    assert all(c["decode"] == ("rec" in names) for c in student.masked())  # the decoder runs only for rec
    assert not any(c["decode"] for c in student.unmasked() + teacher.calls)
    if case == "clip nce only":
        g = _gen(7)
        ma, mv = random_mask(data.audio, cfg.mask_ratio, g), random_mask(data.visual, cfg.mask_ratio, g)
        with torch.no_grad():
            sa, sv = state.model(data.audio, data.visual, ma, mv)
        clip = soft_topk_infonce(sa.z, sv.z, torch.eye(16), cfg.tau)
        torch.testing.assert_close(got["nce"], clip, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- train_one_epoch: order of a step


class _StepProbe:
    """Hooks on one optimiser instance: the lr of each param group and the gradients just before each step, and
    the student and teacher parameters just after it (inside `optimizer.step()`, before anything that follows)."""

    def __init__(self, state):
        self.state = state
        self.pre: list[dict] = []
        self.post: list[dict] = []
        opt = state.optimizer
        self.handles = [opt.register_step_pre_hook(self._before), opt.register_step_post_hook(self._after)]

    def _snap(self, module) -> list[np.ndarray]:
        return [p.detach().double().numpy().copy() for p in module.parameters()]

    def _before(self, opt, args, kwargs):
        grads = [p.grad.detach().double().numpy().copy() for p in self.state.model.parameters() if p.grad is not None]
        self.pre.append({"lr": [g["lr"] for g in opt.param_groups], "grads": grads})

    def _after(self, opt, args, kwargs):
        self.post.append({"student": self._snap(self.state.model), "teacher": self._snap(self.state.teacher),
                          "logvars": self.state.weighting.logvars.detach().clone()})  # fmt: skip

    def remove(self):
        for h in self.handles:
            h.remove()


def _run_epochs(state, data, cfg, sched, epochs):
    probe = _StepProbe(state)
    try:
        metrics = [train_one_epoch(state, data, cfg, e, sched) for e in epochs]
    finally:
        probe.remove()
    return probe, metrics


def test_ema_update_follows_the_optimizer_step_with_the_momentum_of_that_step():
    """After each optimiser step s the teacher becomes m_s * teacher + (1 - m_s) * student, where the student is
    the one just updated and m_s = ema_momentum(s, total_steps, ema_base); numpy float64 reference from snapshots
    taken inside `optimizer.step()`.

    The run starts at step 3 of 10 (a resumed run) with base 0.5, so every step's momentum differs noticeably.
    Catches: the EMA update before `optimizer.step()` (the teacher would lerp towards the pre-step student), the
    momentum of step s + 1 or of step 0 (the base) used throughout, a lerp with weight m instead of 1 - m, a teacher
    not updated at all, a teacher that copies the student.
    """
    cfg, state, data = _setup(32, lr=0.05, weight_warmup_epochs=0)  # large steps: the student moves visibly
    sched = Schedule(total_steps=10, warmup_steps=2, steps_per_epoch=2, ema_base=0.5)
    _move_teacher(state, scale=0.5)  # teacher != student at the start, as in any run after its first step
    state.step = 3
    teacher0 = [p.detach().double().numpy().copy() for p in state.teacher.parameters()]
    probe, _ = _run_epochs(state, data, cfg, sched, epochs=[2, 3])
    assert state.step == 7 and len(probe.post) == 4
    teacher_before = teacher0
    for k, step in enumerate(range(3, 7)):
        m = ema_momentum(step, sched.total_steps, sched.ema_base)
        student = probe.post[k]["student"]
        expected = [m * t + (1 - m) * s for t, s in zip(teacher_before, student)]
        after = probe.post[k + 1]["teacher"] if k + 1 < len(probe.post) else [
            p.detach().double().numpy() for p in state.teacher.parameters()]  # fmt: skip
        for e, a in zip(expected, after):
            np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-7)
        # the wrong orders and momenta would give visibly different teachers
        m_next = ema_momentum(step + 1, sched.total_steps, sched.ema_base)
        prev_student = probe.post[k - 1]["student"] if k else None
        wrong = [[m_next * t + (1 - m_next) * s for t, s in zip(teacher_before, student)],
                 [(1 - m) * t + m * s for t, s in zip(teacher_before, student)]]  # fmt: skip
        if prev_student is not None:  # EMA before the step: towards the student of the previous step
            wrong.append([m * t + (1 - m) * s for t, s in zip(teacher_before, prev_student)])
        for w in wrong:
            assert max(np.abs(x - a).max() for x, a in zip(w, after)) > 1e-4
        teacher_before = [np.asarray(a, dtype=np.float64).copy() for a in after]
    # the teacher stays frozen: no gradient ever reached it
    assert all(p.grad is None and not p.requires_grad for p in state.teacher.parameters())


def test_learning_rate_on_the_optimizer_is_the_schedule_of_the_current_step():
    """At every `optimizer.step()` each param group's lr equals learning_rate(step, ...) of that step (warm-up
    then cosine), and the loss-weight optimiser keeps its own constant weight_lr.

    Catches: the lr set after the step (the first step would run at the constructor's peak lr), an off-by-one step,
    only the decayed param group updated, the schedule applied to the loss-weight optimiser.
    """
    cfg, state, data = _setup(32, lr=2e-3, min_lr_ratio=0.1, weight_lr=0.02, weight_warmup_epochs=0)
    sched = Schedule(total_steps=6, warmup_steps=2, steps_per_epoch=2, ema_base=0.9)
    probe, _ = _run_epochs(state, data, cfg, sched, epochs=[1, 2, 3])
    expected = [learning_rate(s, 6, 2, 2e-3, 0.1) for s in range(6)]
    assert len(state.optimizer.param_groups) == 2
    got = np.array([p["lr"] for p in probe.pre])  # (steps, groups)
    np.testing.assert_allclose(got, np.repeat(np.array(expected)[:, None], 2, axis=1), rtol=1e-12)
    # the cases the test must tell apart really differ: the constructor's lr, the schedule shifted by one step
    assert expected[0] != cfg.lr and not np.allclose(expected[1:], expected[:-1])
    assert [g["lr"] for g in state.weight_optimizer.param_groups] == [0.02]


@pytest.mark.parametrize("warmup_epochs", [0, 2])
def test_loss_weights_frozen_during_warmup_then_learned(warmup_epochs):
    """The learned log-variances s_i stay exactly 0 for weight_warmup_epochs epochs and move afterwards.

    Two steps per epoch (the first step's relative loss is 1, so its gradient on s is 0; the second is not).
    Catches: weights learned during warm-up, an off-by-one (`epoch >= warmup` would learn in epoch 2), weights
    never learned, warm-up counted in steps instead of epochs.
    """
    cfg, state, data = _setup(32, weight_warmup_epochs=warmup_epochs)
    assert state.weighting.learned and state.weight_optimizer is not None
    sched = Schedule(total_steps=8, warmup_steps=1, steps_per_epoch=2, ema_base=0.9)
    after_epoch = []
    for epoch in range(1, warmup_epochs + 2):
        train_one_epoch(state, data, cfg, epoch, sched)
        after_epoch.append(state.weighting.logvars.detach().clone())
    for epoch, s in enumerate(after_epoch[:-1], start=1):
        assert torch.equal(s, torch.zeros_like(s)), (epoch, s)
    assert (after_epoch[-1] != 0).all(), after_epoch[-1]
    assert (after_epoch[-1] >= cfg.logvar_floor).all()


def _grads_at_step(grad_clip: float) -> list[np.ndarray]:
    cfg, state, data = _setup(16, grad_clip=grad_clip, weight_warmup_epochs=0)
    sched = Schedule(total_steps=4, warmup_steps=1, steps_per_epoch=1, ema_base=0.9)
    probe, _ = _run_epochs(state, data, cfg, sched, epochs=[1])
    assert len(probe.pre) == 1
    return probe.pre[0]["grads"]


def test_gradient_clipping_caps_the_global_norm_before_the_step():
    """The gradients the optimiser steps on are the unclipped ones scaled by min(1, grad_clip / global norm) (one
    factor for all parameters); grad_clip 0 leaves them untouched.

    The unclipped gradients come from an identical run with grad_clip 0, observed at `optimizer.step()`.
    Catches: clipping after the step (the step would see the unclipped norm), per-tensor clipping or clipping by
    value (the direction changes), grad_clip 0 treated as a cap of 0 (zero gradients), a cap that is not applied.
    """
    raw = _grads_at_step(0.0)
    norm = float(np.sqrt(sum(np.square(g).sum() for g in raw)))
    assert norm > 0.5  # a cap of 0.05 bites hard
    for cap in (0.05, 10 * norm):
        clipped = _grads_at_step(cap)
        assert len(clipped) == len(raw)
        scale = min(1.0, cap / (norm + 1e-6))
        for c, r in zip(clipped, raw):
            np.testing.assert_allclose(c, r * scale, rtol=1e-4, atol=1e-9)
        got_norm = float(np.sqrt(sum(np.square(g).sum() for g in clipped)))
        assert got_norm == pytest.approx(min(cap, norm), rel=1e-4)
    # per-tensor clipping would leave every tensor's norm <= cap, but not scale them all by one factor
    per_tensor = [r * min(1.0, 0.05 / (np.linalg.norm(r) + 1e-6)) for r in raw]
    assert max(np.abs(p - r * 0.05 / norm).max() for p, r in zip(per_tensor, raw)) > 1e-4
