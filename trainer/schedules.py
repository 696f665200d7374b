"""Schedules as pure functions of the optimiser step (DINO's cosine_scheduler, nanoGPT's get_lr)."""

from __future__ import annotations

import math


def learning_rate(step: int, total_steps: int, warmup_steps: int, peak: float, min_ratio: float) -> float:
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then cosine decay to `peak * min_ratio` at `total_steps`.

    step 0 gives peak / warmup_steps (never exactly 0, so the first step moves); step >= total_steps gives the floor.
    """
    assert total_steps >= 1 and 0 <= warmup_steps <= total_steps, (total_steps, warmup_steps)
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if step >= total_steps:
        return peak * min_ratio
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def ema_momentum(step: int, total_steps: int, base: float) -> float:
    """Teacher momentum rising from `base` at step 0 to 1.0 at `total_steps` on a half cosine (DINO)."""
    assert total_steps >= 1
    progress = min(step, total_steps) / total_steps
    return 1.0 - (1.0 - base) * 0.5 * (1.0 + math.cos(math.pi * progress))
