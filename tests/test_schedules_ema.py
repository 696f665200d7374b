"""Learning-rate and EMA-momentum schedules at their ends, and the EMA teacher update."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from trainer.ema import ema_update, make_teacher
from trainer.schedules import ema_momentum, learning_rate

# ----------------------------------------------------------------------------- learning rate

LR_CASES = [  # total_steps, warmup_steps, peak, min_ratio
    (1000, 100, 1e-3, 0.01),
    (200, 10, 3e-4, 0.0),
    (50, 1, 1.0, 0.5),
    (120, 60, 2e-3, 0.1),
]


@pytest.mark.parametrize("total,warmup,peak,min_ratio", LR_CASES)
def test_learning_rate_end_points(total, warmup, peak, min_ratio):
    assert learning_rate(0, total, warmup, peak, min_ratio) == pytest.approx(peak / warmup, rel=1e-12)
    assert 0 < learning_rate(0, total, warmup, peak, min_ratio) <= peak
    assert learning_rate(warmup, total, warmup, peak, min_ratio) == pytest.approx(peak, rel=1e-12)
    assert learning_rate(total, total, warmup, peak, min_ratio) == pytest.approx(peak * min_ratio, rel=1e-12, abs=0)
    assert learning_rate(total + 10, total, warmup, peak, min_ratio) == pytest.approx(peak * min_ratio, rel=1e-12)


@pytest.mark.parametrize("total,warmup,peak,min_ratio", LR_CASES)
def test_learning_rate_warmup_is_linear(total, warmup, peak, min_ratio):
    lrs = np.array([learning_rate(s, total, warmup, peak, min_ratio) for s in range(warmup)])
    np.testing.assert_allclose(lrs, peak * np.arange(1, warmup + 1) / warmup, rtol=1e-12)
    if warmup > 1:
        np.testing.assert_allclose(np.diff(lrs), peak / warmup, rtol=1e-9)  # constant increments


@pytest.mark.parametrize("total,warmup,peak,min_ratio", LR_CASES)
def test_learning_rate_cosine_decay_after_warmup(total, warmup, peak, min_ratio):
    steps = np.arange(warmup, total + 1)
    lrs = np.array([learning_rate(int(s), total, warmup, peak, min_ratio) for s in steps])
    assert np.all(np.diff(lrs) <= 1e-15)  # monotone non-increasing
    assert lrs[0] > lrs[-1]
    progress = (steps - warmup) / (total - warmup)
    expected = peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + np.cos(np.pi * progress)))
    np.testing.assert_allclose(lrs, expected, rtol=1e-12, atol=1e-18)
    mid = warmup + (total - warmup) // 2
    if (total - warmup) % 2 == 0:  # half way through the decay: half way between peak and floor
        assert learning_rate(mid, total, warmup, peak, min_ratio) == pytest.approx(peak * (1 + min_ratio) / 2)


def test_learning_rate_without_warmup_starts_at_peak():
    assert learning_rate(0, 100, 0, 0.1, 0.01) == pytest.approx(0.1)
    assert learning_rate(100, 100, 0, 0.1, 0.01) == pytest.approx(0.001)


def test_learning_rate_never_exceeds_peak():
    lrs = [learning_rate(s, 300, 30, 5e-4, 0.05) for s in range(301)]
    assert max(lrs) == pytest.approx(5e-4, rel=1e-12)
    assert min(lrs[30:]) == pytest.approx(5e-4 * 0.05, rel=1e-12)  # the floor, reached at the end
    assert min(lrs) == pytest.approx(5e-4 / 30, rel=1e-12)  # the first warm-up step is the smallest
    assert all(lr > 0 for lr in lrs)


# ----------------------------------------------------------------------------- EMA momentum


@pytest.mark.parametrize("total", [1, 7, 100, 2500])
@pytest.mark.parametrize("base", [0.0, 0.9, 0.99, 0.996])
def test_ema_momentum_ends_and_monotone(total, base):
    assert ema_momentum(0, total, base) == pytest.approx(base, abs=1e-15)
    assert ema_momentum(total, total, base) == pytest.approx(1.0, abs=1e-15)
    assert ema_momentum(total + 5, total, base) == pytest.approx(1.0, abs=1e-15)
    ms = np.array([ema_momentum(s, total, base) for s in range(total + 1)])
    assert np.all(np.diff(ms) >= -1e-15)
    assert np.all((ms >= base - 1e-15) & (ms <= 1.0 + 1e-15))
    expected = 1 - (1 - base) * 0.5 * (1 + np.cos(np.pi * np.arange(total + 1) / total))
    np.testing.assert_allclose(ms, expected, atol=1e-14)


def test_ema_momentum_half_way_is_mid_point():
    assert ema_momentum(50, 100, 0.9) == pytest.approx(0.95, abs=1e-12)


# ----------------------------------------------------------------------------- EMA teacher


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(5, 4)
        self.bn = nn.BatchNorm1d(4)
        self.out = nn.Linear(4, 3, bias=False)
        self.register_buffer("counter", torch.zeros(2))

    def forward(self, x):
        return self.out(self.bn(self.lin(x)))


def _student() -> _Net:
    torch.manual_seed(0)
    return _Net()


def test_make_teacher_is_frozen_deep_copy():
    student = _student()
    teacher = make_teacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    assert not teacher.training
    for (n_s, p_s), (n_t, p_t) in zip(student.named_parameters(), teacher.named_parameters()):
        assert n_s == n_t and torch.equal(p_s, p_t) and p_s.data_ptr() != p_t.data_ptr()
    with torch.no_grad():
        student.lin.weight.add_(1.0)
    assert not torch.equal(student.lin.weight, teacher.lin.weight)


def test_teacher_receives_no_gradient():
    student = _student()
    teacher = make_teacher(student)
    loss = student(torch.randn(8, 5)).square().sum() + teacher(torch.randn(8, 5)).square().sum()
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9, 0.996, 1.0])
def test_ema_update_matches_numpy(momentum):
    student = _student()
    teacher = make_teacher(student)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    student.train()
    student(torch.randn(16, 5))  # changes the BatchNorm running statistics (buffers)
    with torch.no_grad():
        student.counter.fill_(3.0)
    before = {n: p.detach().double().numpy().copy() for n, p in teacher.named_parameters()}
    student_params = {n: p.detach().double().numpy().copy() for n, p in student.named_parameters()}
    ema_update(teacher, student, momentum)
    for n, p in teacher.named_parameters():
        expected = momentum * before[n] + (1 - momentum) * student_params[n]
        np.testing.assert_allclose(p.detach().double().numpy(), expected, rtol=1e-6, atol=1e-7)
        assert not p.requires_grad
    for (n, tb), (_, sb) in zip(teacher.named_buffers(), student.named_buffers()):
        assert torch.equal(tb, sb), n
        assert tb.data_ptr() != sb.data_ptr()  # copied, not shared
    for n, p in student.named_parameters():  # the student is untouched
        np.testing.assert_array_equal(p.detach().double().numpy(), student_params[n])


def test_ema_update_repeated_converges_geometrically():
    student = _student()
    teacher = make_teacher(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    t0 = {n: p.detach().double().numpy().copy() for n, p in teacher.named_parameters()}
    s = {n: p.detach().double().numpy().copy() for n, p in student.named_parameters()}
    for _ in range(10):
        ema_update(teacher, student, 0.8)
    for n, p in teacher.named_parameters():
        expected = s[n] + 0.8**10 * (t0[n] - s[n])
        np.testing.assert_allclose(p.detach().double().numpy(), expected, rtol=1e-5, atol=1e-6)
    assert math.isclose(0.8**10, 0.1073741824)
