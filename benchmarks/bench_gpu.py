"""Trainer speed on a GPU: epoch time, achieved TFLOP/s against the card's bf16 matmul rate, several trials
sharing one GPU, and what lifts a launch-bound small trial.

Three measurements, all of the full HSC-MAE training step (`trainer.engine.train_one_epoch`, default config):

1. **One trial at VEGAS size** (`--data`, batch 256): epoch time, samples/s, and achieved TFLOP/s. The FLOPs of
   one step (forward + backward of the student, the teacher's forward) are counted once with
   `torch.utils.flop_counter.FlopCounterMode` (matmul-class ops only, the ones the bf16 rate is quoted for), then
   multiplied by the measured steps/s. The card's dense bf16 rate comes from PEAK_BF16_TFLOPS by device name, or
   `--peak-tflops`.
2. **Trials sharing the GPU** (1, 2, 4, 8 by default, `--share`): that many separate processes (as Ray places
   trials with fractional `--gpus-per-trial`), each training the same config. They warm up, wait for a common
   start time, then train for `--duration` seconds; aggregate samples/s is the sum of each process's own rate.
3. **Variants of one small trial** (`--variants`): eager at batch 256; eager at a larger batch (`--big-batch`);
   `torch.compile` of the model; `torch.compile(mode="reduce-overhead")` (CUDA graphs). A variant that fails
   is reported with its error instead of a figure.

Everything runs in subprocesses of this script (`--worker`), so every figure comes from a fresh process and the
sharing runs see nothing of each other but the GPU.

    python benchmarks/bench_gpu.py                       # on a machine with a CUDA GPU
    python benchmarks/bench_gpu.py --quick               # tiny data, CPU or GPU, well under a minute

Writes `gpu.json` and `gpu.md` to `--out` (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Dense (no sparsity) bf16 tensor-core rates in TFLOP/s from the vendors' data sheets, matched by substring of
# torch.cuda.get_device_name(). Longest match wins ("H100 PCIe" before "H100").
PEAK_BF16_TFLOPS = {
    "H200": 989.4,  # SXM
    "H100 PCIe": 756.0,
    "H100": 989.4,  # SXM
    "A100": 312.0,
    "L40S": 362.1,
    "L40": 181.0,  # before "L4": "NVIDIA L40" contains "L4"
    "L4": 121.0,
    "A10G": 70.0,
    "A10": 125.0,
    "V100": 125.0,  # fp16 tensor cores; V100 has no bf16
}

VARIANTS = ("eager", "big_batch", "compile", "cudagraphs")


def peak_tflops(device_name: str) -> float | None:
    hits = [k for k in PEAK_BF16_TFLOPS if k in device_name]
    return PEAK_BF16_TFLOPS[max(hits, key=len)] if hits else None


# ------------------------------------------------------------------------------------------------ worker


def worker(args) -> dict:
    """One trial in this process: build, warm up, wait for the common start, train for `duration` seconds."""
    import torch

    from trainer import TrainConfig, load_data
    from trainer.engine import DeviceSplit, Schedule, train_one_epoch
    from trainer.fit import build_state, resolve_device

    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    data = load_data(args.data)
    cfg = TrainConfig(batch_size=args.batch_size, epochs=1000).resolve(
        len(data.train), data.audio_dim, data.visual_dim
    )
    train = DeviceSplit.from_split(data.train, device)
    state = build_state(cfg, data, device)
    if args.variant == "compile":
        state.model = torch.compile(state.model)
    elif args.variant == "cudagraphs":
        state.model = torch.compile(state.model, mode="reduce-overhead")
    steps = len(train) // cfg.batch_size
    chunk = max(1, min(steps, args.chunk))  # steps between host syncs (one epoch of ours syncs once)
    sched = Schedule(total_steps=1000 * steps, warmup_steps=steps, steps_per_epoch=chunk)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    t0 = time.perf_counter()
    epoch = 1
    for _ in range(args.warmup_chunks):  # allocator, cuBLAS heuristics, compilation, graph capture
        train_one_epoch(state, train, cfg, epoch, sched)
        epoch += 1
    sync()
    warmup_s = time.perf_counter() - t0
    flops = step_flops(state, train, cfg, sched) if args.count_flops else None
    late_s = 0.0
    if args.start_at:
        late_s = max(0.0, time.time() - args.start_at)  # > 0: this process missed the common start
        time.sleep(max(0.0, args.start_at - time.time()))
    done, t0 = 0, time.perf_counter()
    while True:
        train_one_epoch(state, train, cfg, epoch, sched)  # reads its losses once: a host sync per chunk
        epoch += 1
        done += chunk
        if time.perf_counter() - t0 >= args.duration:
            break
    sync()
    elapsed = time.perf_counter() - t0
    out = {
        "variant": args.variant,
        "batch_size": cfg.batch_size,
        "steps": done,
        "seconds": elapsed,
        "samples_per_s": done * cfg.batch_size / elapsed,
        "epoch_s": steps * elapsed / done,  # one full pass over train at this rate
        "steps_per_epoch": steps,
        "warmup_s": warmup_s,
        "late_s": late_s,
        "flops_per_step": flops,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        out["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def step_flops(state, train, cfg, sched) -> float:
    """Matmul-class FLOPs of one training step (forward + backward), counted by torch's FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from trainer.engine import train_one_epoch

    one = type(sched)(sched.total_steps, sched.warmup_steps, 1, sched.ema_base)
    counter = FlopCounterMode(display=False)
    with counter:
        train_one_epoch(state, train, cfg, 10_000, one)
    if train.audio.device.type == "cuda":
        torch.cuda.synchronize()
    return float(counter.get_total_flops())


# ------------------------------------------------------------------------------------------------ driver


def launch(args, n: int, variant: str, batch_size: int, count_flops: bool = False) -> list[dict]:
    """Runs `n` worker processes of one variant side by side; returns their reports (or raises on failure)."""
    start_at = time.time() + args.setup_s if n > 1 else 0.0
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--data", args.data, "--device", args.device,
           "--variant", variant, "--batch-size", str(batch_size), "--duration", str(args.duration),
           "--chunk", str(args.chunk), "--warmup-chunks", str(args.warmup_chunks), "--threads", str(args.threads),
           "--start-at", str(start_at)] + (["--count-flops"] if count_flops else [])  # fmt: skip
    logs = [tempfile.TemporaryFile(mode="w+") for _ in range(n)]  # stderr to files: no pipe fills up and blocks
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True) for log in logs]
    reports, errors = [], []
    try:
        for p, log in zip(procs, logs):
            out, _ = p.communicate(timeout=args.setup_s + args.duration + 600)
            if p.returncode != 0:
                log.seek(0)
                errors.append(_error_line(log.read()) or f"exit code {p.returncode}")
            else:
                reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:  # a timeout or a failure must not leave workers on the device for the next measurement
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    if errors:
        raise RuntimeError(errors[0])
    late = [r for r in reports if r.get("late_s", 0) > 0.5]
    if late:
        print(f"  warning: {len(late)} of {n} workers started up to {max(r['late_s'] for r in late):.1f} s after the "
              "common start; raise --setup-s", file=sys.stderr)  # fmt: skip
    return reports


def _error_line(stderr: str) -> str:
    """The line that names the error (the last `...Error: ...` line), not a trailing hint."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    named = [ln for ln in lines if "Error" in ln.split(":", 1)[0]]
    return (named or lines or [""])[-1]


def run(args) -> dict:
    results: dict = {"meta": meta(args), "single": None, "share": [], "variants": []}
    print(f"[single] {args.data}, batch {args.batch_size}", flush=True)
    (single,) = launch(args, 1, "eager", args.batch_size, count_flops=True)
    peak = args.peak_tflops or peak_tflops(single["device"])
    single["achieved_tflops"] = single["flops_per_step"] * single["steps"] / single["seconds"] / 1e12
    single["peak_bf16_tflops"] = peak
    single["fraction_of_peak"] = single["achieved_tflops"] / peak if peak else None
    results["single"] = single
    print(f"  {single['samples_per_s']:,.0f} samples/s, epoch {single['epoch_s']:.2f} s, "
          f"{single['achieved_tflops']:.2f} TFLOP/s" + (f" = {single['fraction_of_peak']:.1%} of {peak:g}" if peak else ""),
          flush=True)  # fmt: skip
    base = None
    for n in args.share:
        same = n == 1 and args.small_batch == args.batch_size  # the single-trial run is this measurement
        reports = [single] if same else launch(args, n, "eager", args.small_batch)
        agg = sum(r["samples_per_s"] for r in reports)
        base = base or agg
        row = {"trials": n, "aggregate_samples_per_s": agg, "per_trial_samples_per_s": agg / n,
               "speedup_vs_first": agg / base, "max_memory_gib": max(r.get("max_memory_gib", 0) for r in reports)}  # fmt: skip
        results["share"].append(row)
        print(f"[share {n}] aggregate {agg:,.0f} samples/s ({row['speedup_vs_first']:.2f}x the first row)", flush=True)
    for variant in args.variants:
        bs = args.big_batch if variant == "big_batch" else args.small_batch
        try:
            if variant == "eager" and bs == args.batch_size:  # the single-trial run is this measurement
                r = single
            else:
                (r,) = launch(args, 1, "eager" if variant == "big_batch" else variant, bs)
            row = {"variant": variant, "batch_size": bs, "samples_per_s": r["samples_per_s"], "warmup_s": r["warmup_s"]}
        except Exception as e:  # a variant that does not work here is a finding, not a crash
            row = {"variant": variant, "batch_size": bs, "error": str(e)[-300:]}
        results["variants"].append(row)
        print(f"[variant {variant}] " + (f"{row['samples_per_s']:,.0f} samples/s" if "error" not in row
                                          else f"failed: {row['error']}"), flush=True)  # fmt: skip
    eager = next((v for v in results["variants"] if v["variant"] == "eager" and "error" not in v), None)
    for v in results["variants"]:
        if eager and "error" not in v:
            v["vs_eager"] = v["samples_per_s"] / eager["samples_per_s"]
    return results


def meta(args) -> dict:
    import torch

    return {
        "command": "python benchmarks/bench_gpu.py " + shlex.join(sys.argv[1:]),
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "data": args.data,
        "duration_s": args.duration,
        "quick": args.quick,
    }


def markdown(res: dict) -> str:
    s, m = res["single"], res["meta"]
    peak = f"{s['peak_bf16_tflops']:g}" if s.get("peak_bf16_tflops") else "unknown (pass --peak-tflops)"
    lines = [
        "# Trainer speed on a GPU",
        "",
        f"- command: `{m['command']}`",
        f"- device: {s['device']}; host {m['machine']}; date {m['date']}; torch {m['torch']}; python {m['python']}",
        f"- data: `{m['data']}`; each figure: {m['duration_s']:g} s of training after a warm-up, in a fresh process",
        "",
        "## One trial (default config)",
        "",
        "| batch | samples/s | epoch (s) | matmul GFLOP/step | achieved TFLOP/s | card bf16 peak | fraction |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| {s['batch_size']} | {s['samples_per_s']:,.0f} | {s['epoch_s']:.2f} | {s['flops_per_step'] / 1e9:.2f} | "
        f"{s['achieved_tflops']:.2f} | {peak} | "
        + (f"{s['fraction_of_peak']:.2%} |" if s.get("fraction_of_peak") is not None else "- |"),
        "",
        "## Trials sharing the device (separate processes, same config)",
        "",
        "| trials | aggregate samples/s | per trial | aggregate vs the first row | max memory per trial (GiB) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in res["share"]:
        lines.append(f"| {r['trials']} | {r['aggregate_samples_per_s']:,.0f} | {r['per_trial_samples_per_s']:,.0f} | "
                     f"{r['speedup_vs_first']:.2f}x | {r['max_memory_gib']:.2f} |")  # fmt: skip
    lines += ["", "## Lifting one small trial", "", "| variant | batch | samples/s | vs eager | warm-up (s) |",
              "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for v in res["variants"]:
        if "error" in v:
            lines.append(f"| {v['variant']} | {v['batch_size']} | failed: {v['error']} | - | - |")
        else:
            lines.append(f"| {v['variant']} | {v['batch_size']} | {v['samples_per_s']:,.0f} | "
                         f"{v.get('vs_eager', 1):.2f}x | {v['warmup_s']:.1f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from entry import int_list  # (standard library only: this script runs where hsc_search's deps are not)

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="synthetic:vegas", help="dataset of every measurement")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=256, help="batch of the single-trial measurement")
    p.add_argument("--small-batch", type=int, default=256, help="batch of the sharing runs and variants")
    p.add_argument("--big-batch", type=int, default=1024, help="batch of the big_batch variant")
    p.add_argument("--share", default="1,2,4,8", type=int_list(1), help="comma list of trial counts sharing the device")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of: {', '.join(VARIANTS)}")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of timed training per process")
    p.add_argument("--chunk", type=int, default=50, help="steps between host syncs")
    p.add_argument("--warmup-chunks", type=int, default=2)
    p.add_argument("--setup-s", type=float, default=90.0, help="time every sharing process gets to start and warm up")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process on CPU")
    p.add_argument("--peak-tflops", type=float, default=None, help="the card's dense bf16 rate (default: by name)")
    p.add_argument("--quick", action="store_true", help="tiny data, 1 and 2 trials, eager variants only, CPU ok")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: benchmarks/results; with --quick a "
                   "new temporary folder, so a smoke run never overwrites the recorded results)")
    # worker mode (internal)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", default="eager", help=argparse.SUPPRESS)
    p.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--count-flops", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)), flush=True)
        return 0
    from trainer import ConfigError
    from trainer.fit import resolve_device

    try:  # before any worker starts: a device this machine lacks is one line, not a worker's traceback
        device = resolve_device(args.device)
    except ConfigError as e:
        p.error(str(e))
    if device.type != "cuda" and not args.quick:  # its figures are a GPU's; CPU ones are not recorded
        p.error(f"--device {args.device}: no CUDA device here ({device}); this benchmark records a GPU's figures "
                "(--quick runs its CPU smoke test)")  # fmt: skip
    from entry import output_problem  # (standard library only: this script runs where hsc_search's deps are not)

    problem = output_problem(sys.argv[1:] if argv is None else list(argv))
    if problem:  # a folder under a file was found at the end, after the measurement (the review)
        p.error(problem)
    # `timeout` and schedulers stop a run with SIGTERM: as an exception, so that `launch` ends its workers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.variants = [v for v in str(args.variants).split(",") if v]
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad:
        p.error(f"--variants: unknown {', '.join(bad)}; choose from {', '.join(VARIANTS)}")
    if args.quick:
        from quick import quick_defaults

        quick_defaults(p, args, argv, data="synthetic:ave?n_train=1200&n_val=100&n_test=100&dim_audio=32&dim_visual=48",
                       share=[1, 2], duration=2.0, setup_s=20.0, chunk=4, batch_size=128, small_batch=128,
                       big_batch=512,  # compiling alone takes minutes: the eager variants unless --variants says
                       variants=[v for v in args.variants if v in ("eager", "big_batch")])  # fmt: skip
    res = run(args)
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="gpu-quick-")) if args.quick else Path(__file__).resolve().parent / "results"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(res, indent=1) + "\n")
    (args.out / "gpu.md").write_text(markdown(res))
    print(f"wrote {args.out / 'gpu.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
