"""Trainer throughput: the full HSC-MAE step, our loop against a plain reference loop, side by side in one run.

Ours: the dataset lives on the device, batches are index slices, losses accumulate on the device and are read
once per epoch (`trainer.engine.train_one_epoch`). Reference: the same model, losses and optimiser driven the
usual way: a `DataLoader` over a `TensorDataset` on the host, per-batch host-to-device copies, and `.item()` on
every loss every step. Rounds alternate (ours, reference, ours, ...) and medians are reported, because these
machines are shared and noisy.

    python benchmarks/bench_trainer.py                 # VEGAS size, CPU (or the GPU when there is one)
    python benchmarks/bench_trainer.py --quick         # small data, seconds
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import TrainConfig, load_data  # noqa: E402
from trainer.ema import ema_update  # noqa: E402
from trainer.engine import DeviceSplit, Schedule, epoch_generator, step_losses, train_one_epoch  # noqa: E402
from trainer.fit import build_state, resolve_device  # noqa: E402
from trainer.schedules import ema_momentum, learning_rate  # noqa: E402


def reference_epoch(state, loader, cfg, epoch, sched, device) -> float:
    """The plain loop: DataLoader batches copied to the device, `.item()` per loss per step. Returns seconds."""
    t0 = time.perf_counter()
    state.model.train()
    gen = epoch_generator(cfg, epoch, device)
    names = state.weighting.names
    logged = {n: 0.0 for n in names}
    for i, (xa, xv) in enumerate(loader):
        if i >= sched.steps_per_epoch:
            break
        xa, xv = xa.to(device), xv.to(device)
        lr = learning_rate(state.step, sched.total_steps, sched.warmup_steps, cfg.lr, cfg.min_lr_ratio)
        for group in state.optimizer.param_groups:
            group["lr"] = lr
        by_name = step_losses(state, xa, xv, cfg, gen)
        losses = torch.stack([by_name[n].float() for n in names])
        total = state.weighting(losses)
        state.optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.grad_clip)
        state.optimizer.step()
        ema_update(state.teacher, state.model, ema_momentum(state.step, sched.total_steps, sched.ema_base))
        state.step += 1
        for n in names:
            logged[n] += by_name[n].item()  # the per-step host sync the reference loop pays
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="synthetic:vegas")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (one epoch of each loop per round)")
    p.add_argument("--steps", type=int, default=0, help="cap on steps per epoch (0 = whole epoch)")
    p.add_argument("--quick", action="store_true", help="small data and 2 rounds: a smoke run in seconds")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = p.parse_args(argv)
    limits = (("--rounds", args.rounds, 1), ("--steps", args.steps, 0), ("--batch-size", args.batch_size, 8))
    for flag, value, least in limits:
        if value < least:  # (a --rounds of -1 was said as "config: epochs must be >= 1, got -2")
            p.error(f"{flag} must be >= {least}, got {value}")
    if args.quick:
        from quick import quick_defaults

        quick_defaults(p, args, argv, data="synthetic:ave?n_train=1200&n_val=200&n_test=200&dim_audio=32&dim_visual=48",
                       rounds=2)  # fmt: skip

    device = resolve_device(args.device)
    data = load_data(args.data)
    cfg = TrainConfig(batch_size=args.batch_size, epochs=args.rounds * 2).resolve(
        len(data.train), data.audio_dim, data.visual_dim
    )
    train = DeviceSplit.from_split(data.train, device)
    steps = len(train) // cfg.batch_size
    if args.steps:
        steps = min(steps, args.steps)
    sched = Schedule(total_steps=cfg.epochs * steps, warmup_steps=steps, steps_per_epoch=steps)
    host = torch.utils.data.TensorDataset(torch.as_tensor(data.train.audio), torch.as_tensor(data.train.visual))
    loader = torch.utils.data.DataLoader(host, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                         pin_memory=device.type == "cuda")  # fmt: skip

    ours_state, ref_state = build_state(cfg, data, device), build_state(cfg, data, device)
    # warm-up epoch of each (allocator, kernels, threads) before timing
    train_one_epoch(ours_state, train, cfg, 1, Schedule(sched.total_steps, sched.warmup_steps, min(steps, 3)))
    reference_epoch(ref_state, loader, cfg, 1, Schedule(sched.total_steps, sched.warmup_steps, min(steps, 3)), device)
    ours, ref = [], []
    for r in range(args.rounds):
        t0 = time.perf_counter()
        train_one_epoch(ours_state, train, cfg, r + 2, sched)
        if device.type == "cuda":
            torch.cuda.synchronize()
        ours.append(time.perf_counter() - t0)
        ref.append(reference_epoch(ref_state, loader, cfg, r + 2, sched, device))
    samples = steps * cfg.batch_size
    result = {
        "data": data.summary(),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "batch_size": cfg.batch_size,
        "steps_per_epoch": steps,
        "rounds": args.rounds,
        "losses": cfg.active_losses(),
        "ours_samples_per_s": samples / statistics.median(ours),
        "reference_samples_per_s": samples / statistics.median(ref),
        "ours_epoch_s": statistics.median(ours),
        "reference_epoch_s": statistics.median(ref),
        "speedup": statistics.median(ref) / statistics.median(ours),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    print(json.dumps(result, indent=2))
    if args.json:  # (its folder made when missing, as the other output flags' are: it was a FileNotFoundError)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    from entry import run

    sys.exit(run(main))
