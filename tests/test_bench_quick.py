"""--quick's smaller settings leave the flags given with it as given (benchmarks/quick.py); they were replaced
without a word (`--quick --trials 64` ran 4 trials)."""

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from quick import given_options, quick_defaults  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--epochs-short", type=int, default=5)
    p.add_argument("--keep-ray", action="store_true")
    p.add_argument("--quick", action="store_true")
    return p


def test_given_flags_win_over_quick_and_are_said(capsys):
    p = _parser()
    for argv, want in [(["--quick"], (4, 1, True)), (["--quick", "--trials", "64"], (64, 1, True)),
                       (["--trials=64", "--quick"], (64, 1, True)), (["--quick", "--epochs-s", "9"], (4, 9, True)),
                       (["--quick", "--tri", "7", "--keep-ray"], (7, 1, True))]:  # fmt: skip
        args = p.parse_args(argv)
        kept = quick_defaults(p, args, argv, trials=4, epochs_short=1, keep_ray=True)
        assert (args.trials, args.epochs_short, args.keep_ray) == want, argv
        err = capsys.readouterr().err
        if want[0] != 4:
            assert "trials" in kept and f"quick run: --trials {want[0]}" in err and "as given" in err, (argv, err)
        else:
            assert "--trials" not in err, (argv, err)
    assert given_options(p, ["--quick", "8"]) == {"quick"}  # a value is not an option
    # an option typed in full is that one, not also a longer one it begins (the review); an ambiguous prefix none
    p.add_argument("--epochs", type=int, default=12)
    assert given_options(p, ["--quick", "--epochs", "3"]) == {"quick", "epochs"}
    assert given_options(p, ["--epochs-s=2"]) == {"epochs_short"} and given_options(p, ["--ep", "2"]) == set()
    args = p.parse_args(["--quick", "--keep-ray", "--epochs", "3"])
    quick_defaults(p, args, ["--quick", "--keep-ray", "--epochs", "3"], epochs=1, epochs_short=1, keep_ray=True)
    assert (args.epochs, args.epochs_short) == (3, 1)
    assert capsys.readouterr().err == "quick run: --epochs 3, --keep-ray as given (--quick's own values for the rest)\n"
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])  # shown as typed: spaced, not with commas
    args = p.parse_args(["--quick", "--seeds", "3", "4"])
    quick_defaults(p, args, ["--quick", "--seeds", "3", "4"], seeds=[0])
    assert args.seeds == [3, 4] and "quick run: --seeds 3 4 as given" in capsys.readouterr().err


def test_a_benchmark_takes_a_flag_given_with_quick(tmp_path):
    """End to end on the quickest benchmark: `bench_trainer.py --quick --rounds 1` times one round, not --quick's 2."""
    out = tmp_path / "t.json"
    proc = subprocess.run([sys.executable, "benchmarks/bench_trainer.py", "--quick", "--rounds", "1", "--steps", "2",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "quick run: --rounds 1 as given" in proc.stderr, proc.stderr
    import json

    doc = json.loads(out.read_text())
    assert doc["rounds"] == 1, doc
