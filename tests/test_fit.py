"""End to end: training learns, resume equals uninterrupted, the CLI writes its run folder, bad input fails cleanly."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer import NonFiniteLossError, TrainConfig, fit
from trainer.engine import DeviceSplit, evaluate
from trainer.fit import CHECKPOINT_FILE, build_state

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(epochs=4, batch_size=60, hidden_dim=64, embed_dim=32, proj_dim=32, ema_momentum=0.9)
COST_KEYS = ("time/", "perf/")


def _comparable(history):
    return [{k: v for k, v in h.items() if not k.startswith(COST_KEYS)} for h in history]


def test_training_beats_untrained_model(small_data):
    cfg = TrainConfig(**{**TINY, "epochs": 12})
    resolved = cfg.resolve(len(small_data.train), small_data.audio_dim, small_data.visual_dim)
    untrained = build_state(resolved, small_data, torch.device("cpu")).teacher
    val = DeviceSplit.from_split(small_data.val, torch.device("cpu"))
    before = evaluate(untrained, val, resolved, "val")["val/map_avg"]
    result = fit(cfg, small_data, log=None)
    after = max(h["val/map_avg"] for h in result.history)
    chance = float(np.mean(small_data.val.labels.mean(0)))  # expected AP of a random ranking ~ class frequency
    assert after > before + 0.1, (before, after)
    assert after > 2 * chance, (chance, after)


def test_metric_keys_follow_the_design(small_data):
    reports = []
    result = fit(TrainConfig(**{**TINY, "epochs": 2, "distill": "relational"}), small_data, on_epoch=reports.append,
                 log=None)  # fmt: skip
    assert [r.epoch for r in reports] == [1, 2] and reports[-1].is_last and not reports[0].is_last
    keys = set(reports[0].metrics)
    losses = ["rec", "dcca", "nce", "distill"]
    expected = {"epoch", "loss/total", "val/map_a2v", "val/map_v2a", "val/map_avg", "cca/mean",
                "time/epoch_s", "perf/samples_per_s"}  # fmt: skip
    expected |= {f"loss/{n}" for n in losses} | {f"weight/{n}" for n in losses} | {f"logvar/{n}" for n in losses}
    expected |= {f"cca/rho_{i:02d}" for i in range(result.config.cca_k)}
    assert keys == expected
    assert set(reports[-1].metrics) == expected | {"test/map_a2v", "test/map_v2a", "test/map_avg"}
    m = reports[-1].metrics
    assert all(math.isfinite(v) for v in m.values())
    rhos = [m[f"cca/rho_{i:02d}"] for i in range(result.config.cca_k)]
    assert rhos == sorted(rhos, reverse=True) and 0 <= rhos[-1] and rhos[0] < 1
    assert m["cca/mean"] == pytest.approx(np.mean(rhos))
    for n in losses:  # relative weighting (the default): weight = exp(-s) / L(first step), the reference fixed
        refs = [1 / (r.metrics[f"weight/{n}"] * math.exp(r.metrics[f"logvar/{n}"])) for r in reports]
        assert refs[0] == pytest.approx(refs[1], rel=1e-6) and refs[0] >= 1e-3
        assert m[f"logvar/{n}"] >= -2.0 - 1e-6  # the documented floor
    raw = fit(TrainConfig(**{**TINY, "epochs": 1, "loss_weighting": "learned_raw"}), small_data, log=None).history[-1]
    for n in ["rec", "dcca", "nce"]:
        assert raw[f"weight/{n}"] == pytest.approx(math.exp(-raw[f"logvar/{n}"]))
    assert result.test == {k: v for k, v in m.items() if k.startswith("test/")}


def test_test_split_scored_on_the_validation_selected_epoch(small_data):
    result = fit(TrainConfig(**{**TINY, "epochs": 3}), small_data, log=None)
    scores = [h["val/map_avg"] for h in result.history]
    assert result.best_epoch == int(np.argmax(scores)) + 1
    assert result.best_val["val/map_avg"] == max(scores)
    assert all(not k.startswith("test/") for h in result.history[:-1] for k in h)


def test_resume_equals_uninterrupted(small_data, tmp_path):
    cfg = TrainConfig(**{**TINY, "distill": "embedding", "weight_warmup_epochs": 1})
    full = fit(cfg, small_data, log=None)

    class Stop(Exception):
        pass

    def stop_after_two(report):
        if report.epoch == 2:
            report.save_checkpoint(tmp_path / "ckpt")
            raise Stop

    with pytest.raises(Stop):
        fit(cfg, small_data, on_epoch=stop_after_two, log=None)
    resumed = fit(cfg, small_data, resume_from=tmp_path / "ckpt", log=None)
    assert len(resumed.history) == cfg.epochs
    a, b = _comparable(full.history), _comparable(resumed.history)
    for ha, hb in zip(a, b):
        assert ha.keys() == hb.keys()
        for k in ha:
            assert hb[k] == pytest.approx(ha[k], rel=1e-5, abs=1e-6), (ha["epoch"], k)
    assert resumed.test == pytest.approx(full.test, rel=1e-5)


def test_checkpoint_without_a_loss_reference_resumes_on_raw_losses(small_data, tmp_path):
    """Checkpoints written before relative weighting have no `reference`: they resume with R = 1 (raw losses,
    as they were trained), so the logged weight is exp(-s) again."""
    cfg = TrainConfig(**{**TINY, "epochs": 2})

    class Stop(Exception):
        pass

    def stop_after_one(report):
        report.save_checkpoint(tmp_path / "ckpt")
        raise Stop

    with pytest.raises(Stop):
        fit(cfg, small_data, on_epoch=stop_after_one, log=None)
    path = tmp_path / "ckpt" / CHECKPOINT_FILE
    state = torch.load(path, weights_only=False)
    del state["weighting"]["reference"]
    torch.save(state, path)
    last = fit(cfg, small_data, resume_from=path, log=None).history[-1]
    for n in ("rec", "dcca", "nce"):
        assert last[f"weight/{n}"] == pytest.approx(math.exp(-last[f"logvar/{n}"]), rel=1e-6)


def test_non_finite_loss_stops_with_a_clear_message(small_data):
    with pytest.raises(NonFiniteLossError, match=r"epoch 1: .*non-finite.*lr"):
        fit(TrainConfig(**{**TINY, "lr": 1e30, "grad_clip": 0.0, "loss_weighting": "fixed"}), small_data, log=None)


def test_sequence_features_train(tmp_path):
    from trainer import load_data

    data = load_data("synthetic:ave?n_train=300&n_val=80&n_test=80&dim_audio=12&dim_visual=16&seq_len=5&num_classes=4")
    assert data.train.audio.ndim == 3
    result = fit(TrainConfig(**{**TINY, "epochs": 2}), data, log=None)
    assert math.isfinite(result.history[-1]["val/map_avg"])


def _run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)  # fmt: skip


def test_cli_writes_the_run_folder_and_resumes(small_spec, tmp_path):
    out = tmp_path / "run"
    sets = [f"--set={k}={v}" for k, v in {**TINY, "epochs": 2}.items()]
    proc = _run_cli("--data", small_spec, "--out", str(out), *sets)
    assert proc.returncode == 0, proc.stderr
    lines = [l for l in proc.stdout.splitlines() if l.startswith("epoch")]
    assert len(lines) == 2 and all("val mAP" in l for l in lines)
    assert TrainConfig.from_yaml(out / "config.yaml").epochs == 2
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test"]["test/map_avg"] == rows[-1]["test/map_avg"]
    assert (out / "checkpoint" / "state.pt").exists()
    # continue the same run to 3 epochs: one more line, metrics.jsonl without duplicates
    proc = _run_cli("--data", small_spec, "--out", str(out), *sets, "--set=epochs=3", "--resume")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--set", "mask_ratio=1.0", "--set", "tau=0"], ["mask_ratio", "tau"]),
        (["--set", "bogus=1"], ["unknown key 'bogus'", "valid keys"]),
        (["--config", "nope.yaml"], ["nope.yaml"]),
        (["--data", "synthetic:nosuch"], ["nosuch"]),
        (["--data", "missing_file.h5"], ["missing_file.h5"]),
    ],
)
def test_cli_bad_input_fails_cleanly(args, needle, small_spec, tmp_path):
    data = [] if "--data" in args else ["--data", small_spec]
    proc = _run_cli(*data, *args, "--out", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    for n in needle:
        assert n in proc.stderr


def test_cli_bad_hdf5_names_file_and_key(tmp_path, small_spec):
    import h5py

    path = tmp_path / "broken.h5"
    with h5py.File(path, "w") as f:
        f["audio_train"] = np.zeros((10, 4), np.float32)
        f["visual_train"] = np.zeros((9, 4), np.float32)
        f["lab_train"] = np.zeros(10, np.int64)
        f["audio_test"] = np.zeros((5, 4), np.float32)
        f["visual_test"] = np.zeros((5, 4), np.float32)
        f["lab_test"] = np.zeros(5, np.int64)
    proc = _run_cli("--data", str(path), "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and "broken.h5" in proc.stderr and "visual_train" in proc.stderr


def test_trainer_imports_no_search_stack(small_spec):
    code = (
        "import sys, trainer\n"
        "from trainer import TrainConfig, fit\n"
        f"fit(TrainConfig(epochs=1, batch_size=100, hidden_dim=32, embed_dim=16, proj_dim=16), {small_spec!r}, log=None)\n"
        "bad = [m for m in ('ray', 'optuna', 'mlflow') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "print('clean')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0 and "clean" in proc.stdout, proc.stderr
