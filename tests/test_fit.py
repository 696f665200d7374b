"""End to end: training learns, resume equals uninterrupted, the CLI writes its run folder, bad input fails cleanly."""

from __future__ import annotations

import os
import json
import re
import math
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer import ConfigError, NonFiniteLossError, TrainConfig, fit
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
    assert set(reports[-1].metrics) == expected | {"test/map_a2v", "test/map_v2a", "test/map_avg", "test/epoch"}
    # the test metrics are of the epoch validation selected, and say which
    assert reports[-1].metrics["test/epoch"] == result.best_epoch == 1 + max(range(2), key=lambda i: (
        reports[i].metrics["val/map_avg"], -i))
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
    # the epoch kept and tested is the first best by select_metric, lowest for a loss: as numpy finds it
    for metric in ("val/map_a2v", "loss/total"):
        sel = fit(TrainConfig(**{**TINY, "epochs": 4, "select_metric": metric}), small_data, log=None)
        values = np.array([h[metric] for h in sel.history], dtype=np.float64)
        expected_epoch = 1 + int(np.argmin(values) if metric.startswith("loss/") else np.argmax(values))
        assert sel.best_epoch == sel.history[-1]["test/epoch"] == expected_epoch, (metric, values)
    with pytest.raises(ConfigError, match="select_metric must be one of"):
        TrainConfig(select_metric="cca/rho_00")
    # fixed weights: the weights as given, and no log-variance (there is no s to learn)
    cfg = TrainConfig(**{**TINY, "epochs": 1, "loss_weighting": "fixed", "w_rec": 0.5, "w_dcca": 2.0, "w_nce": 1.5})
    fixed = fit(cfg, small_data, log=None).history[-1]
    assert not [k for k in fixed if k.startswith("logvar/")]
    assert {k: v for k, v in fixed.items() if k.startswith("weight/")} == pytest.approx(
        {f"weight/{n}": getattr(cfg, f"w_{n}") for n in cfg.active_losses()})


def _sklearn_map(a: np.ndarray, v: np.ndarray, labels: np.ndarray) -> float:
    """Independent reference: mean of a2v and v2a mAP with scikit-learn's average precision (cosine scores)."""
    from sklearn.metrics import average_precision_score

    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    relevant = (labels @ labels.T) > 0
    scores = a.astype(np.float64) @ v.T.astype(np.float64)
    a2v = np.mean([average_precision_score(relevant[i], scores[i]) for i in range(len(a))])
    v2a = np.mean([average_precision_score(relevant[:, j], scores[:, j]) for j in range(len(v))])
    return (a2v + v2a) / 2


def test_test_split_scored_on_the_validation_selected_epoch(small_data, tmp_path):
    """Validation here disagrees with test (val labels shuffled), so validation selects an early epoch while
    test mAP keeps rising: a trainer that scored the last epoch's weights instead of the selected ones fails. The
    last epoch's `test/epoch` (where MLflow charts the test metrics) and the run folder's summary.json name that
    selected epoch and its validation metrics, not the last epoch's."""
    import dataclasses

    from trainer.data import Split
    from trainer.model import HSCMAE

    rng = np.random.default_rng(1)  # a shuffle under which validation picks epoch 1
    val = small_data.val
    data = dataclasses.replace(small_data, val=Split(val.audio, val.visual, val.labels[rng.permutation(len(val))]))
    cfg = TrainConfig(**{**TINY, "epochs": 5})
    saved = {}

    def keep(report):
        saved[report.epoch] = report.save_checkpoint(tmp_path / f"epoch{report.epoch}")

    result = fit(cfg, data, on_epoch=keep, log=None, out_dir=tmp_path / "run")
    scores = [h["val/map_avg"] for h in result.history]
    assert result.best_epoch == int(np.argmax(scores)) + 1
    assert result.best_val["val/map_avg"] == max(scores)
    assert all(not k.startswith("test/") for h in result.history[:-1] for k in h)
    assert result.best_epoch < cfg.epochs  # the premise: the selected epoch is not the last
    assert result.history[-1]["test/epoch"] == int(np.argmax(scores)) + 1
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    selected = result.history[int(np.argmax(scores))]
    assert summary["best_epoch"] == int(np.argmax(scores)) + 1
    assert summary["best_val"] == {k: v for k, v in selected.items() if k.startswith("val/")}
    assert summary["best_val"]["val/map_avg"] == max(scores)

    resolved = result.config
    test_map = {}
    for epoch, path in saved.items():  # the teacher of every epoch, embedded and scored independently
        net = HSCMAE(data.train.audio.shape[1:], data.train.visual.shape[1:], resolved)
        net.load_state_dict(torch.load(path, weights_only=False)["teacher"])
        net.eval()
        with torch.no_grad():
            oa, ov = net(torch.as_tensor(data.test.audio), torch.as_tensor(data.test.visual))
        test_map[epoch] = _sklearn_map(oa.z.numpy(), ov.z.numpy(), data.test.labels)
    assert abs(test_map[cfg.epochs] - test_map[result.best_epoch]) > 1e-3  # scoring the wrong epoch shows
    assert result.test["test/map_avg"] == pytest.approx(test_map[result.best_epoch], abs=1e-5)


def _reference_cca(ta: np.ndarray, tv: np.ndarray, k: int, ridge: float):
    """Independent reference for eval_projection cca: canonical directions by Cholesky whitening in float64 (the
    trainer whitens by symmetric inverse square roots), fitted on (ta, tv); returns a function projecting (a, v).
    The variates agree up to a sign shared by each pair of directions, which cosine scores do not see."""
    ma, mv = ta.mean(0), tv.mean(0)
    a, v = ta - ma, tv - mv
    n = len(a)
    s_aa = a.T @ a / (n - 1) + ridge * np.eye(a.shape[1])
    s_vv = v.T @ v / (n - 1) + ridge * np.eye(v.shape[1])
    la, lv = np.linalg.cholesky(s_aa), np.linalg.cholesky(s_vv)
    u, _, vt = np.linalg.svd(np.linalg.solve(la, a.T @ v / (n - 1)) @ np.linalg.inv(lv).T)
    wa, wv = np.linalg.solve(la.T, u[:, :k]), np.linalg.solve(lv.T, vt.T[:, :k])
    return lambda x, y: ((x - ma) @ wa, (y - mv) @ wv)


@pytest.mark.parametrize("model, embedding, projection", [
    ("student", "z", "none"), ("teacher", "h", "cca"), ("student", "e", "cca"), ("teacher", "e", "none"),
    ("student", "h", "none"), ("teacher", "z", "cca")])  # fmt: skip
def test_each_evaluation_setting_scores_what_it_names(small_data, tmp_path, model, embedding, projection):
    """eval_model, eval_embedding and eval_projection (the ablation space evaluates every trial through a CCA)
    were checked only at their defaults (an audit of the tests): a validation mAP of the other network, of
    another embedding, or of a CCA fitted on the validation split instead of the train split would have passed.
    Here each setting's logged val/map_avg equals scikit-learn's mAP of that network's embedding from the saved
    checkpoint, through an independent float64 CCA fitted on the train split where asked, and the wrong routes
    score measurably differently."""
    from trainer.model import HSCMAE

    cfg = TrainConfig(**{**TINY, "epochs": 2, "eval_model": model, "eval_embedding": embedding,
                         "eval_projection": projection})  # fmt: skip
    saved = {}
    result = fit(cfg, small_data, on_epoch=lambda r: saved.setdefault(r.epoch, r.save_checkpoint(tmp_path / str(r.epoch))),
                 log=None)  # fmt: skip
    resolved, state = result.config, torch.load(saved[2], weights_only=False)

    def embedded(key: str, split, which: str):
        net = HSCMAE(small_data.train.audio.shape[1:], small_data.train.visual.shape[1:], resolved)
        net.load_state_dict(state[key])
        net.eval()
        with torch.no_grad():
            oa, ov = net(torch.as_tensor(split.audio), torch.as_tensor(split.visual))
        return getattr(oa, which).double().numpy(), getattr(ov, which).double().numpy()

    def score(key: str, which: str, fit_on) -> float:
        a, v = embedded(key, small_data.val, which)
        if projection == "cca":
            a, v = _reference_cca(*embedded(key, fit_on, which), resolved.cca_dim, resolved.cca_ridge)(a, v)
        return _sklearn_map(a, v, small_data.val.labels)

    key, other = ("teacher", "model") if model == "teacher" else ("model", "teacher")
    logged = result.history[1]["val/map_avg"]
    expected = score(key, embedding, small_data.train)
    assert logged == pytest.approx(expected, abs=1e-5), (logged, expected)
    assert abs(score(other, embedding, small_data.train) - expected) > 1e-4  # the other network
    assert min(abs(score(key, w, small_data.train) - expected) for w in "zhe" if w != embedding) > 1e-4
    if projection == "cca":
        assert abs(score(key, embedding, small_data.val) - expected) > 1e-4  # a CCA fitted on the val split


def _checkpointed_and_stopped(cfg: TrainConfig, data, folder, after: int = 1) -> None:
    """Trains `cfg`, saves a checkpoint into `folder` after epoch `after`, and stops there (as a killed run)."""

    class Stop(Exception):
        pass

    def stop(report):
        if report.epoch == after:
            report.save_checkpoint(folder)
            raise Stop

    with pytest.raises(Stop):
        fit(cfg, data, on_epoch=stop, log=None)


def test_resume_equals_uninterrupted(small_data, tmp_path):
    cfg = TrainConfig(**{**TINY, "distill": "embedding", "weight_warmup_epochs": 1})
    full = fit(cfg, small_data, log=None)
    _checkpointed_and_stopped(cfg, small_data, tmp_path / "ckpt", after=2)
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
    _checkpointed_and_stopped(cfg, small_data, tmp_path / "ckpt")
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
    """Sequence features (N, T, D) train, and their test mAP is that of the selected epoch's teacher embedding the
    sequences as they are, scored independently with scikit-learn (it asserted only a finite number: an audit)."""
    from trainer import load_data
    from trainer.model import HSCMAE

    data = load_data("synthetic:ave?n_train=300&n_val=80&n_test=80&dim_audio=12&dim_visual=16&seq_len=5&num_classes=4")
    assert data.train.audio.ndim == 3
    saved = {}
    result = fit(TrainConfig(**{**TINY, "epochs": 2}), data, log=None,
                 on_epoch=lambda r: saved.setdefault(r.epoch, r.save_checkpoint(tmp_path / str(r.epoch))))  # fmt: skip
    assert math.isfinite(result.history[-1]["val/map_avg"])
    net = HSCMAE(data.train.audio.shape[1:], data.train.visual.shape[1:], result.config)
    net.load_state_dict(torch.load(saved[result.best_epoch], weights_only=False)["teacher"])
    net.eval()
    with torch.no_grad():
        oa, ov = net(torch.as_tensor(data.test.audio), torch.as_tensor(data.test.visual))
    expected = _sklearn_map(oa.z.double().numpy(), ov.z.double().numpy(), data.test.labels)
    assert result.test["test/map_avg"] == pytest.approx(expected, abs=1e-5)
    with torch.no_grad():  # the time steps are read as a sequence: reversed in time, the clips embed otherwise
        ra, _ = net(torch.as_tensor(data.test.audio[:, ::-1].copy()), torch.as_tensor(data.test.visual))
    assert not torch.allclose(ra.z, oa.z, atol=1e-4)


def _run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)  # fmt: skip


def test_runs_started_together_never_share_a_run_folder(small_spec, tmp_path):
    """Three runs started at once without --out shared runs/train-<second> and mixed their epochs in one
    metrics.jsonl, and two of them said they succeeded (a walkthrough); a run given a folder another run trains in
    is refused in one line, the other run's files untouched."""
    import fcntl

    sets = [f"--set={k}={v}" for k, v in {**TINY, "epochs": 2}.items()]
    procs = [subprocess.Popen([sys.executable, "-m", "trainer", "--data", small_spec, *sets, f"--set=seed={i}"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(3)]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    # each by its absolute path, quoted for a shell where it needs it (it was printed relative: a walkthrough)
    folders = {Path(shlex.split(o.strip().splitlines()[-1].removeprefix("run folder: "))[0]) for o, _ in outs}
    assert len(folders) == 3 and {f.parent for f in folders} == {tmp_path.resolve() / "runs"}, folders
    for f in folders:  # each its own run: its epochs once, its seed
        assert [json.loads(ln)["epoch"] for ln in (tmp_path / f / "metrics.jsonl").read_text().splitlines()] == [1, 2]
        assert not (tmp_path / f / ".training").exists()  # the lock goes with the run
    assert sorted(TrainConfig.from_yaml(tmp_path / f / "config.yaml").seed for f in folders) == [0, 1, 2]
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    # a run in its first epoch: its config.yaml and an empty metrics.jsonl, as a run cut off then leaves them (a
    # check made before taking the lock removed them, then refused: the review)
    (busy / "config.yaml").write_text(TrainConfig(**TINY).to_yaml())
    (busy / "metrics.jsonl").write_text("")
    with open(busy / ".training", "w") as held:  # as a run training there holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        before = {p.name: p.read_bytes() for p in busy.iterdir()}
        for extra in ([], ["--resume"]):
            proc = _run_cli("--data", small_spec, "--out", str(busy), *sets, *extra)
            assert proc.returncode == 2 and proc.stderr.strip() == (
                f"error: --out {busy}: another run is training in this folder now; pick another --out, or wait for "
                "it (nothing was changed)"), proc.stderr
            assert {p.name: p.read_bytes() for p in busy.iterdir()} == before
    proc = _run_cli("--data", small_spec, "--out", str(busy), *sets)  # once it is free: that cut-off run replaced
    assert proc.returncode == 0 and "starting over there" in proc.stdout, proc.stderr
    assert sorted(p.name for p in busy.iterdir()) == ["checkpoint", "config.yaml", "metrics.jsonl", "notes.txt",
                                                      "summary.json"]  # fmt: skip
    # a `runs` that is a dangling link: one line (the search for a free name went on for ever: the review)
    dangling = tmp_path / "dangling"
    dangling.mkdir()
    (dangling / "runs").symlink_to(tmp_path / "nowhere")
    proc = _run_cli("--data", small_spec, *sets, cwd=dangling)
    assert proc.returncode == 2 and "cannot create the run folder" in proc.stderr, proc.stderr


def test_a_file_system_that_locks_nothing_does_not_stop_a_run(small_spec, tmp_path, monkeypatch, capsys):
    """NFS without its lock daemon (ENOLCK): every run was refused as "cannot create the run folder" (the review)."""
    import errno
    import fcntl

    from trainer.__main__ import main

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    sets = [f"--set={k}={v}" for k, v in {**TINY, "epochs": 1}.items()]
    assert main(["--data", small_spec, "--out", str(tmp_path / "r"), *sets]) == 0
    out = capsys.readouterr().out
    assert f"note: --out {tmp_path / 'r'}: this file system does not lock files (No locks available)" in out, out
    assert not (tmp_path / "r" / ".training").exists() and (tmp_path / "r" / "summary.json").exists()


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
    # it says where it picks up (it started silently at epoch 3), and a finished run that there is nothing to train
    assert f"resuming after epoch 2 of 3 ({out / 'checkpoint'}): training epoch 3" in proc.stdout, proc.stdout
    assert [l for l in proc.stdout.splitlines() if l.startswith("epoch")][0].startswith("epoch   3/3"), proc.stdout
    proc = _run_cli("--data", small_spec, "--out", str(out), "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "resuming after epoch 3 of 3" in proc.stdout and "nothing left to train" in proc.stdout, proc.stdout
    assert [json.loads(l)["epoch"] for l in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_cli_refuses_to_start_over_a_run_and_to_resume_it_on_other_features(small_spec, tmp_path):
    """A run folder is not replaced by a new run (its checkpoint and metrics were lost without a word), and a
    resume on features of other dimensions is one line naming both, not torch's size-mismatch traceback."""
    out = tmp_path / "run"
    sets = [f"--set={k}={v}" for k, v in {**TINY, "epochs": 1}.items()]
    assert _run_cli("--data", small_spec, "--out", str(out), *sets).returncode == 0
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    again = _run_cli("--data", small_spec, "--out", str(out), *sets, "--set=lr=0.002")
    assert again.returncode == 2 and "Traceback" not in again.stderr, again.stderr
    assert again.stderr.strip() == (f"error: --out {out} holds a run already (config.yaml, metrics.jsonl, checkpoint, "
                                    "summary.json), which a new run would replace: continue the run there with "
                                    "--resume, or pick another --out (nothing was changed)")  # fmt: skip
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    other = small_spec.replace("dim_visual=", "dim_visual=1").replace("dim_audio=", "dim_audio=1")
    assert other != small_spec
    for folder, what in ((tmp_path / "none", "is not there"),
                         (tmp_path, "holds no run (no config.yaml, metrics.jsonl or checkpoint)")):  # fmt: skip
        proc = _run_cli("--data", small_spec, "--out", str(folder), "--resume")  # it said: config.yaml: cannot read
        assert proc.returncode == 2 and proc.stderr.strip() == (f"error: --out {folder} {what}: nothing to resume; "
                                                                "start a run there without --resume"), proc.stderr
    # a relative one says where it was looked for (a resume command pasted in another folder: a walkthrough)
    proc = _run_cli("--data", small_spec, "--out", "none", "--resume", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip() == (f"error: --out none is not there (read from the working "
                                                            f"directory, {tmp_path}): nothing to resume; start a run "
                                                            "there without --resume"), proc.stderr  # fmt: skip
    proc = _run_cli("--data", other, "--out", str(out), "--resume", "--set=epochs=2")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    # the dimensions of both, and the data the run trained on (it said "its audio.mask_value is [16], here [116]")
    assert re.search(r"resume: the checkpoint was trained on audio \d+-d, visual \d+-d features "
                     rf"\({re.escape(small_spec)}\); {re.escape(other)} \(audio \d+-d, visual \d+-d\) has other "
                     r"dimensions\.", proc.stderr), proc.stderr
    assert "mask_value" not in proc.stderr
    assert "Resume with the data the run was trained on" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # other data of the same dimensions and another size: the config resolved from it differs (an auto field, here the
    # EMA momentum): said as other data, not as a field the user never set
    bigger = re.sub(r"n_train=(\d+)", lambda m: f"n_train={2 * int(m.group(1))}", small_spec)
    assert bigger != small_spec
    auto = tmp_path / "auto"  # ema_momentum left on auto: resolved from the number of steps, so from the data
    assert _run_cli("--data", small_spec, "--out", str(auto), *sets, "--set=ema_momentum=0").returncode == 0
    proc = _run_cli("--data", bigger, "--out", str(auto), "--resume", "--set=epochs=2")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"resume: the checkpoint was trained on other data than {bigger}" in proc.stderr, proc.stderr
    assert "ema_momentum" not in proc.stderr, proc.stderr  # 10 steps: auto 0, which reads back as auto itself
    proc = _run_cli("--data", small_spec, "--out", str(auto), "--resume", "--set=epochs=2", "--set=batch_size=64")
    assert proc.returncode == 2 and "differs from the checkpoint's in batch_size" in proc.stderr, proc.stderr
    # other data of the same shapes (another seed): it trained on it, and chose its epoch over both val sets
    same_shapes = small_spec.replace("seed=1", "seed=4")
    assert same_shapes != small_spec
    proc = _run_cli("--data", same_shapes, "--out", str(out), "--resume", "--set=epochs=2")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "resume: the checkpoint was trained on other data than" in proc.stderr, proc.stderr
    assert f"resume with the data the run was trained on (the run was trained on {small_spec})" in proc.stderr
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--set", "mask_ratio=1.0", "--set", "tau=0"], ["mask_ratio", "tau"]),
        (["--set", "bogus=1"], ["unknown key 'bogus'", "valid keys"]),
        (["--config", "nope.yaml"], ["nope.yaml"]),
        (["--data", "synthetic:nosuch"], ["nosuch"]),
        (["--data", "missing_file.h5"], ["missing_file.h5"]),
        (["--set", "epochs=inf"], ["--set epochs=inf", "epochs: expected a finite integer"]),
        (["--set", "lr=.inf"], ["--set lr=.inf", "lr: expected a finite number"]),
        (["--set", "batch_size=2"], ["--set batch_size=2", "batch_size must be >= 8"]),
        (["--device", "gpu"], ["--device gpu", "expected auto, cpu, cuda or cuda:N"]),
        (["--device", "cuda:99"], ["--device cuda:99"]),  # no CUDA here; a GPU machine has fewer than 100
        (["--resume"], ["nothing to resume"]),  # a fresh folder
    ],
)
def test_cli_bad_input_fails_cleanly(args, needle, small_spec, tmp_path):
    data = [] if "--data" in args else ["--data", small_spec]
    proc = _run_cli(*data, *args, "--out", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    for n in needle:
        assert n in proc.stderr


def test_cli_a_file_in_the_wrong_place_and_a_closed_pipe(tmp_path, small_spec):
    """The data file as --config (a UnicodeDecodeError traceback), a file as --out (FileExistsError), and
    `--help-config | head` (BrokenPipeError): one line, or nothing, each."""
    data = tmp_path / "f.h5"
    data.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    proc = _run_cli("--data", small_spec, "--config", str(data), "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and proc.stderr.strip() == (f"error: {data}: not UTF-8 text (byte 0); expected a "
                                                            "YAML trainer config"), proc.stderr  # fmt: skip
    proc = _run_cli("--data", small_spec, "--out", str(data))
    assert proc.returncode == 2 and proc.stderr.strip() == (f"error: --out {data} is a file; expected the run "
                                                            "folder to write (or, with --resume, to continue)")
    assert data.read_bytes().startswith(b"\x89HDF")
    # a reader that has gone before the first line is written (as `| head` can be): EPIPE on every write
    proc = subprocess.run(f"{shlex.quote(sys.executable)} -m trainer --help-config | true", shell=True, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    # a training run's output closed the same way: the pipe named, not the run folder (it said "<folder>: Broken pipe")
    sets = " ".join(f"--set={k}={v}" for k, v in {**TINY, "epochs": 2}.items())
    proc = subprocess.run(f"{shlex.quote(sys.executable)} -m trainer --data {shlex.quote(small_spec)} --out "
                          f"{tmp_path / 'piped'} {sets} | true", shell=True, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.stderr.startswith("error: the output: its reader closed the pipe (e.g. `| head`); "), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Broken pipe" not in proc.stderr, proc.stderr


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


def test_cli_single_class_data_is_refused(tmp_path):
    import h5py

    path = tmp_path / "one_class.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        for split, n in (("train", 80), ("test", 30)):
            f[f"audio_{split}"] = rng.normal(size=(n, 6)).astype(np.float32)
            f[f"visual_{split}"] = rng.normal(size=(n, 5)).astype(np.float32)
            f[f"lab_{split}"] = np.full(n, 3, np.int64)
    proc = _run_cli("--data", str(path), "--out", str(tmp_path / "r"), "--set", "epochs=1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "one_class.h5" in proc.stderr and "lab_train' (val carved from it)" in proc.stderr
    assert "at least two classes" in proc.stderr


def test_ema_momentum_values_train_differently_and_the_effective_value_is_recorded(small_data, tmp_path):
    """0.996 and 0.999 used to train identically (both capped at 1 - 10 / steps)."""
    runs = {}
    for m in (0.996, 0.999, 0.0):
        runs[m] = fit(TrainConfig(**{**TINY, "epochs": 2, "ema_momentum": m}), small_data, out_dir=tmp_path / str(m),
                      log=None)  # fmt: skip
    assert _comparable(runs[0.996].history) != _comparable(runs[0.999].history)
    assert TrainConfig.from_yaml(tmp_path / "0.996" / "config.yaml").ema_momentum == 0.996
    assert TrainConfig.from_yaml(tmp_path / "0.999" / "config.yaml").ema_momentum == 0.999
    steps = 2 * (len(small_data.train) // TINY["batch_size"])  # 18 steps: auto = 1 - 10 / 18
    assert TrainConfig.from_yaml(tmp_path / "0.0" / "config.yaml").ema_momentum == pytest.approx(1 - 10 / steps)


def test_resume_refuses_a_changed_config_and_allows_more_epochs(small_data, tmp_path):
    from trainer import ConfigError

    cfg = TrainConfig(**{**TINY, "epochs": 2})
    fit(cfg, small_data, out_dir=tmp_path / "r", log=None)
    ckpt = tmp_path / "r" / "checkpoint"
    with pytest.raises(ConfigError) as info:
        fit(cfg.replace(lr=3e-3, hidden_dim=32), small_data, resume_from=ckpt, log=None)
    msg = str(info.value)
    assert "hidden_dim (checkpoint 64, now 32)" in msg and "lr (checkpoint 0.001, now 0.003)" in msg
    before = {p.name: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match="resume: epochs 1 is below the 2 epochs the checkpoint has trained"):
        fit(cfg.replace(epochs=1), small_data, out_dir=tmp_path / "r", resume_from=ckpt, log=None)
    assert {p.name: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()} == before  # not `epochs: 1`
    longer = fit(cfg.replace(epochs=3), small_data, resume_from=ckpt, log=None)
    assert [h["epoch"] for h in longer.history] == [1, 2, 3]


def test_a_resumed_runs_summary_counts_the_seconds_of_every_invocation(small_data, tmp_path):
    """summary.json's wall_s counted the last invocation alone (a walkthrough): a run of 2 epochs that took over a
    second, extended by one epoch, said a fraction of a second. The epochs' own times are a floor for it."""
    import json
    import time

    cfg = TrainConfig(**{**TINY, "epochs": 2})
    fit(cfg, small_data, out_dir=tmp_path / "r", log=None, on_epoch=lambda r: r.epoch == 1 and time.sleep(1.2))
    first = json.loads((tmp_path / "r" / "summary.json").read_text())["wall_s"]
    assert first >= 1.2
    t = time.perf_counter()
    fit(cfg.replace(epochs=3), small_data, out_dir=tmp_path / "r", resume_from=tmp_path / "r" / "checkpoint", log=None)
    second = time.perf_counter() - t
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    epochs = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in epochs] == [1, 2, 3]
    assert summary["wall_s"] >= 1.2 + epochs[2]["time/epoch_s"], (first, summary["wall_s"])
    assert summary["wall_s"] >= sum(m["time/epoch_s"] for m in epochs)
    assert summary["wall_s"] <= first + second  # the first invocation's seconds taken once, not twice
    # a checkpoint from before it carried wall_s: its epochs' own times stand for the seconds before
    import torch

    state = torch.load(tmp_path / "r" / "checkpoint" / "state.pt", weights_only=False)
    state.pop("wall_s")
    torch.save(state, tmp_path / "r" / "checkpoint" / "state.pt")
    t = time.perf_counter()
    fit(cfg.replace(epochs=4), small_data, out_dir=tmp_path / "r", resume_from=tmp_path / "r" / "checkpoint", log=None)
    third = time.perf_counter() - t
    epochs = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    wall = json.loads((tmp_path / "r" / "summary.json").read_text())["wall_s"]
    assert sum(m["time/epoch_s"] for m in epochs) <= wall <= sum(m["time/epoch_s"] for m in epochs[:3]) + third


def test_fit_into_a_folder_that_holds_a_run_is_refused_and_resumes_from_the_run_folder(small_data, tmp_path):
    """`fit(cfg, data, out_dir=<a run's folder>)` replaced its 6-epoch run with a new 4-epoch one without a word,
    where the CLI refuses; `resume_from=<the run folder>` said "<folder>/state.pt: no checkpoint" (a walkthrough)."""
    from trainer import ConfigError

    cfg = TrainConfig(**{**TINY, "epochs": 2})
    fit(cfg, small_data, out_dir=tmp_path / "r", log=None)
    before = {p.name: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()}
    with pytest.raises(ConfigError) as e:
        fit(cfg.replace(epochs=1), small_data, out_dir=tmp_path / "r", log=None)
    assert str(e.value) == (f"out_dir {tmp_path / 'r'} holds a run already (checkpoint/state.pt, summary.json, "
                            f"metrics.jsonl), which this run would replace: resume it (resume_from={tmp_path / 'r'}), "
                            "or give another out_dir (nothing was changed)")  # fmt: skip
    # nor a resume of another run into it (the review); a folder with only its epochs kept is a run too
    fit(cfg, small_data, out_dir=tmp_path / "other", log=None)
    with pytest.raises(ConfigError, match="holds a run already"):
        fit(cfg.replace(epochs=3), small_data, out_dir=tmp_path / "r", resume_from=tmp_path / "other", log=None)
    assert {p.name: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()} == before
    longer = fit(cfg.replace(epochs=3), small_data, out_dir=tmp_path / "r", resume_from=tmp_path / "r", log=None)
    assert [h["epoch"] for h in longer.history] == [1, 2, 3]
    import shutil

    shutil.rmtree(tmp_path / "other" / "checkpoint")
    (tmp_path / "other" / "summary.json").unlink()
    with pytest.raises(ConfigError) as e:
        fit(cfg, small_data, out_dir=tmp_path / "other", log=None)
    assert str(e.value).endswith("holds a run already (metrics.jsonl), which this run would replace: give another "
                                 "out_dir (nothing was changed)"), str(e.value)


def test_a_short_run_with_auto_ema_resumes_again_after_being_extended(small_data, tmp_path):
    """Auto ema_momentum resolves to 0.0 for a run of at most 10 steps, which reads back as 'auto': extended once,
    the run was then refused on every further resume, as if it were other data."""
    from trainer.config import auto_ema_momentum

    cfg = TrainConfig(**{**TINY, "epochs": 2, "batch_size": 300, "ema_momentum": 0.0})  # 2 steps per epoch
    assert auto_ema_momentum(2 * 2) == 0.0 and auto_ema_momentum(6 * 2) > 0.0  # the case: 0 now, not at 6 epochs
    fit(cfg, small_data, out_dir=tmp_path / "r", log=None)
    ckpt = tmp_path / "r" / "checkpoint"
    fit(cfg.replace(epochs=6), small_data, out_dir=tmp_path / "r", resume_from=ckpt, log=None)
    again = fit(cfg.replace(epochs=7), small_data, out_dir=tmp_path / "r", resume_from=ckpt, log=None)
    assert [h["epoch"] for h in again.history] == list(range(1, 8))
    # test metrics only at the end of the run as it is now (the ends at epochs 2 and 6 carried theirs too)
    lines = [json.loads(ln) for ln in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [ln["epoch"] for ln in lines] == list(range(1, 8))
    assert [any(k.startswith("test/") for k in ln) for ln in lines] == [False] * 6 + [True]
    assert [any(k.startswith("test/") for k in h) for h in again.history] == [False] * 6 + [True]
    import yaml

    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["ema_momentum"] == 0.0  # as it trained


def test_data_carved_with_another_val_fraction_is_refused(small_data):
    from trainer import ConfigError, load_data

    carved = load_data("synthetic:ave?n_train=300&n_val=0&n_test=100&dim_audio=8&dim_visual=8&num_classes=4&seed=2",
                       val_fraction=0.2)  # fmt: skip
    assert carved.val_carved and len(carved.val) == 60
    with pytest.raises(ConfigError, match="val_fraction is 0.1 but .* carved with 0.2"):
        fit(TrainConfig(**{**TINY, "epochs": 1}), carved, log=None)
    fit(TrainConfig(**{**TINY, "epochs": 1, "val_fraction": 0.2}), carved, log=None)


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


def test_ctrl_c_is_one_line_with_the_command_that_continues_and_an_empty_folder_starts_over(small_spec, tmp_path,
                                                                                            monkeypatch):
    """Ctrl-C printed a 25-line traceback; a run stopped in its first epoch (Ctrl-C, or a loss that diverged at
    once) left a folder that refused a new run ('continue it with --resume') and a resume ('no checkpoint')."""
    import signal

    out = tmp_path / "run"
    sets = [f"--set={k}={v}" for k, v in {**TINY, "epochs": 50}.items()]
    # --out as typed, relative: the printed command names it by its absolute path, and works pasted in another
    # folder (it said `--out run`, which there found "nothing to resume": a walkthrough)
    proc = subprocess.Popen([sys.executable, "-m", "trainer", "--data", small_spec, "--out", "run", *sets],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    for line in proc.stdout:  # interrupt once an epoch has ended
        if line.startswith("epoch   1/50"):
            proc.send_signal(signal.SIGINT)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    # as `hsc-search train`, the same program: `python -m trainer` pasted in a folder with a trainer/ of its own ran
    # that one, and on a bare box (no hsc-search installed) found no trainer outside the repository (a walkthrough)
    hsc = shlex.quote(os.path.abspath(Path(sys.executable).parent / "hsc-search"))
    again = f"{hsc} train --data {shlex.quote(small_spec)} --out {out} --resume"
    assert lines == [f"interrupted: the run's last completed epoch is kept in {out}; `{again}` continues it"], err
    (tmp_path / "elsewhere" / "trainer").mkdir(parents=True)
    (tmp_path / "elsewhere" / "trainer" / "__main__.py").write_text("raise SystemExit('the folder own trainer ran')\n")
    (tmp_path / "elsewhere" / "trainer" / "__init__.py").write_text("")
    pasted = subprocess.run(f"{again} --set=epochs=2", shell=True, cwd=tmp_path / "elsewhere", capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert pasted.returncode == 0 and "epoch   2/2" in pasted.stdout, pasted.stderr
    # a bare box, the trainer run from its repository folder by a Python beside which no hsc-search is installed
    from trainer.__main__ import _again, build_parser

    monkeypatch.setattr(sys, "executable", str(tmp_path / "bare" / "bin" / "python"))
    args = build_parser().parse_args(["--data", small_spec, "--out", str(out)])
    assert _again("python -m trainer", args, out) == (
        f"cd {shlex.quote(str(ROOT))} && {tmp_path / 'bare' / 'bin' / 'python'} -m trainer --data "
        f"{shlex.quote(small_spec)} --out {out} --resume")  # (no subshell: `( )` is command substitution in fish)
    # hsc-search beside that Python but without what it needs (`pip install --no-deps`: the script, no typer): not
    # offered, its paste was a traceback (a review)
    (tmp_path / "bare" / "bin").mkdir(parents=True)
    (tmp_path / "bare" / "bin" / "hsc-search").write_text("#!/bin/sh\n")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "typer" else real(name, *a))
    assert _again("python -m trainer", args, out).startswith(f"cd {shlex.quote(str(ROOT))} && ")
    monkeypatch.undo()
    # a folder whose run ended before its first epoch: nothing to resume, and a new run there starts over
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.yaml").write_text(TrainConfig(**TINY).to_yaml())
    (empty / "metrics.jsonl").write_text("")
    resume = _run_cli("--data", small_spec, "--out", str(empty), "--resume")
    assert resume.returncode == 2 and resume.stderr.strip() == (
        f"error: --out {empty} holds a run that stopped before its first epoch ended (no checkpoint, no epoch in "
        "metrics.jsonl): nothing to resume; the same command without --resume starts it over"), resume.stderr
    fresh = _run_cli("--data", small_spec, "--out", str(empty), *[f"--set={k}={v}" for k, v in {**TINY, "epochs": 1}.items()])
    assert fresh.returncode == 0, fresh.stderr
    assert f"note: --out {empty} held a run that stopped before its first epoch ended; starting over there" in fresh.stdout
    assert len((empty / "metrics.jsonl").read_text().splitlines()) == 1 and (empty / "summary.json").exists()


def test_a_run_that_fails_before_its_first_epoch_leaves_no_folder_it_made_and_says_so_in_a_line(tmp_path, capsys,
                                                                                             monkeypatch):
    """A failure found once the run folder was made (a batch not above cca_dim on a 20-clip train split, an
    allocation larger than the machine) left an empty folder (runs/train-<time> without --out), the allocation a
    20-line traceback; `--out ""` (an unset shell variable) wrote the run into the working directory (a
    walkthrough). A folder the user made is kept; so is one holding anything else."""
    from trainer.__main__ import main

    monkeypatch.chdir(tmp_path)
    data = "synthetic:ave?n_train=20&n_val=40&n_test=40&dim_audio=16&dim_visual=24&num_classes=4"
    sets = ["--set=epochs=1", "--set=hidden_dim=32", "--set=embed_dim=16", "--set=proj_dim=16"]
    assert main(["--data", data, "--out", str(tmp_path / "r"), *sets, "--set=cca_dim=32"]) == 2
    assert capsys.readouterr().err == (
        "error: data: the train split has 20 clips, so batches of 20, which must exceed cca_dim 32: a smaller cca_dim "
        "(0 picks one below the batch) or more training clips\n") and not (tmp_path / "r").exists()
    # an empty (or all-commented) --config is said: it trained the defaults without a word (a walkthrough)
    (tmp_path / "empty.yaml").write_text("# epochs: 5\n")
    assert main(["--data", data, "--config", str(tmp_path / "empty.yaml"), "--out", str(tmp_path / "r"), *sets,
                 "--set=cca_dim=32"]) == 2  # fmt: skip
    assert capsys.readouterr().out.startswith(f"note: --config {tmp_path / 'empty.yaml'} sets no field: the "
                                              "defaults train, with any --set on top (`python -m trainer "
                                              "--help-config` lists them)\n")  # fmt: skip
    # read once: a config given through a pipe was read again for the note, found empty, and said so (the review)
    piped = subprocess.run([sys.executable, "-m", "trainer", "--config", "/dev/stdin", "--data", data, "--out",
                            str(tmp_path / "p"), *sets], input="cca_dim: 32\n", capture_output=True, text=True,
                           cwd=tmp_path, timeout=120)  # fmt: skip
    assert piped.returncode == 2 and "sets no field" not in piped.stdout, piped.stdout + piped.stderr
    assert "which must exceed cca_dim 32" in piped.stderr, piped.stderr
    assert main(["--data", data, *sets, "--set=cca_dim=32"]) == 2  # its own runs/train-<time>: gone too,
    assert not (tmp_path / "runs").exists()  # and the runs/ it made (an empty runs/ was left, a walkthrough)
    assert main(["--data", data, "--out", str(tmp_path / "a" / "b" / "r"), *sets, "--set=cca_dim=32"]) == 2
    assert not (tmp_path / "a").exists()
    (tmp_path / "kept").mkdir()  # an empty folder of the user's, reached through `..` after a new one (the review)
    assert main(["--data", data, "--out", "new/../kept/r", *sets, "--set=cca_dim=32"]) == 2
    assert (tmp_path / "kept").is_dir() and not (tmp_path / "new").exists() and not (tmp_path / "kept" / "r").exists()
    (tmp_path / "kept").rmdir()
    # a runs/train-<time>-N it made is removed, the runs it stepped past and the runs/ that held them are kept
    import shutil
    import time

    now = time.time()
    taken = [time.strftime("train-%Y%m%d-%H%M%S", time.localtime(now + s)) for s in range(30)]
    for name in taken:
        (tmp_path / "runs" / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "runs" / name / "metrics.jsonl").write_text("")
    assert main(["--data", data, *sets, "--set=cca_dim=32"]) == 2
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(set(taken))
    assert all((tmp_path / "runs" / name / "metrics.jsonl").is_file() for name in taken)
    shutil.rmtree(tmp_path / "runs")
    (tmp_path / "mine").mkdir()
    assert main(["--data", data, "--out", str(tmp_path / "mine"), *sets, "--set=cca_dim=32"]) == 2
    assert (tmp_path / "mine").is_dir()  # the user's folder stays
    capsys.readouterr()
    huge = ["--set=epochs=1", "--set=hidden_dim=100000000000", "--set=cca_dim=4", "--set=batch_size=10"]
    assert main(["--data", data, "--out", str(tmp_path / "h"), *huge]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: the config needs ") and err.count("\n") == 1, err
    assert "GiB in one allocation, more than this machine has in all (" in err and not (tmp_path / "h").exists()
    with pytest.raises(SystemExit) as e:
        main(["--data", data, "--out", "", *sets])
    assert e.value.code == 2 and "argument --out: empty; expected the run folder's path" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.yaml", "mine"]  # nothing written here


def test_sigterm_is_said_as_ctrl_c_is_with_the_command_that_continues(small_spec, tmp_path):
    """`timeout` or a batch scheduler ending the job (SIGTERM) stopped the run without a word, exit 143."""
    import signal

    sets = [f"--set={k}={v}" for k, v in {**TINY, "epochs": 50}.items()]
    proc = subprocess.Popen([sys.executable, "-m", "trainer", "--data", small_spec, "--out", str(tmp_path / "run"),
                             *sets], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    for line in proc.stdout:
        if line.startswith("epoch   1/50"):
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=120)
    again = (f"{shlex.quote(os.path.abspath(Path(sys.executable).parent / 'hsc-search'))} train --data "
             f"{shlex.quote(small_spec)} --out {tmp_path / 'run'} --resume")  # fmt: skip
    assert proc.returncode == 143 and [ln for ln in err.splitlines() if ln.strip()] == [
        f"stopped (SIGTERM): the run's last completed epoch is kept in {tmp_path / 'run'}; `{again}` continues it"], err
    # a SIGTERM its parent ignores on purpose (`trap '' TERM`) stays ignored (the review): the run goes on
    cmd = shlex.join([sys.executable, "-m", "trainer", "--data", small_spec, "--out", str(tmp_path / "kept"), *sets])
    proc = subprocess.Popen(["bash", "-c", f"trap '' TERM; exec {cmd}"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        for line in proc.stdout:
            if line.startswith("epoch   1/50"):
                proc.send_signal(signal.SIGTERM)
                break
        for line in proc.stdout:  # two more epochs after it
            if line.startswith("epoch   3/50"):
                break
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    assert proc.returncode == 130


def test_cli_removes_no_file_it_did_not_write_and_says_folder_and_checkpoint_faults_in_a_line(small_spec, tmp_path):
    """A folder with a checkpoint/ of another program, or the user's own config.yaml, was taken for a run that
    stopped before its first epoch and its files deleted (the config.yaml even before it was read); a run folder
    that cannot be made and a checkpoint cut off while written were tracebacks."""
    sets = [f"--set={k}={v}" for k, v in {**TINY, "epochs": 1}.items()]
    theirs = tmp_path / "theirs"
    (theirs / "checkpoint").mkdir(parents=True)
    (theirs / "checkpoint" / "resnet_epoch90.pt").write_bytes(b"weights")
    (theirs / "notes.txt").write_text("mine")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text(TrainConfig(**TINY).to_yaml())
    for folder, args, held in ((theirs, [], "checkpoint"), (mine, ["--config", "config.yaml"], "config.yaml")):
        before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        proc = _run_cli("--data", small_spec, "--out", ".", *args, *sets, cwd=folder)
        # (no --resume offered: nothing there resumes; it said to resume, and the resume to start without it)
        assert proc.returncode == 2 and proc.stderr.strip() == (
            f"error: --out . already holds ({held}), which a new run would replace: pick another --out (nothing was "
            "changed)"), proc.stderr
        proc = _run_cli("--data", small_spec, "--out", ".", "--resume", cwd=folder)
        assert proc.returncode == 2 and proc.stderr.strip() == (
            f"error: --out . holds no run of the trainer to resume (it has {held}, but no checkpoint/state.pt and no "
            "epoch in metrics.jsonl); pick another --out"), proc.stderr  # ("checkpoint, and no checkpoint": HH)
        assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    # a summary.json of another program's: not a run to resume ("cannot read config file": walkthrough HH)
    (tmp_path / "summ").mkdir()
    (tmp_path / "summ" / "summary.json").write_text("{}")
    proc = _run_cli("--data", small_spec, "--out", ".", "--resume", cwd=tmp_path / "summ")
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: --out . holds no run of the trainer to resume (it has summary.json, but no checkpoint/state.pt); "
        "pick another --out"), proc.stderr
    # a run cut off as it started, its checkpoint half-written: only its own files go
    cut = tmp_path / "cut"
    (cut / "checkpoint").mkdir(parents=True)
    (cut / "config.yaml").write_text(TrainConfig(**TINY).to_yaml())
    (cut / "metrics.jsonl").write_text("")
    (cut / "checkpoint" / "tmpab12.tmp").write_bytes(b"half")
    (cut / "notes.txt").write_text("mine")
    proc = _run_cli("--data", small_spec, "--out", str(cut), *sets)
    assert proc.returncode == 0 and "starting over there" in proc.stdout, proc.stderr
    assert (cut / "notes.txt").read_text() == "mine" and (cut / "checkpoint" / CHECKPOINT_FILE).exists()
    assert not (cut / "checkpoint" / "tmpab12.tmp").exists()
    # that cut-off run started over with its own config.yaml as --config: read first (it was removed, then not found)
    (cut / "checkpoint" / CHECKPOINT_FILE).unlink()
    (cut / "summary.json").unlink()
    (cut / "metrics.jsonl").write_text("")
    proc = _run_cli("--data", small_spec, "--out", ".", "--config", "config.yaml", *sets, cwd=cut)
    assert proc.returncode == 0 and "starting over there" in proc.stdout, proc.stderr
    assert (cut / "summary.json").exists() and (cut / "config.yaml").exists()
    # --out below a file, and a checkpoint cut off while written
    (tmp_path / "a_file").write_text("x")
    proc = _run_cli("--data", small_spec, "--out", str(tmp_path / "a_file" / "run"), *sets)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"error: --out {tmp_path / 'a_file' / 'run'}: cannot create the run folder (Not a directory); expected a "
        "folder path that can be written"), proc.stderr
    state = cut / "checkpoint" / CHECKPOINT_FILE
    state.write_bytes(state.read_bytes()[:1000])
    proc = _run_cli("--data", small_spec, "--out", str(cut), "--resume")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().startswith(f"error: {state}: cannot be read as a checkpoint ("), proc.stderr
    assert proc.stderr.strip().endswith("it was cut off while being written or is not one: resume from another "
                                        "checkpoint, or start the run over"), proc.stderr


def test_a_checkpoint_keeps_the_umask_and_leaves_no_cut_off_write_behind(tmp_path):
    """state.pt was 0600 whatever the umask (mkstemp); then 0644 under umask 077 (the review); a write killed
    before left its .tmp (a checkpoint's size) for good."""
    import os

    from trainer.fit import save_state

    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "tmpold.tmp").write_bytes(b"cut off")
    for mask, mode in ((0o022, 0o644), (0o077, 0o600)):
        old = os.umask(mask)
        try:
            path = save_state({"epoch": 1}, tmp_path / "ck")
        finally:
            os.umask(old)
        assert path.stat().st_mode & 0o777 == mode, (oct(mask), oct(path.stat().st_mode))
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [CHECKPOINT_FILE]


def test_the_data_fingerprint_tells_labels_moved_between_clips():
    """The fingerprint kept each split's label sum only: labels corrected between an interruption and a resume
    (moved between clips, the same sum) passed, and the resumed run selected its epoch over both label sets."""
    import copy

    import numpy as np

    from trainer import load_data
    from trainer.fit import data_fingerprint, same_data

    data = load_data("synthetic:ave?n_train=60&n_val=30&n_test=30&dim_audio=8&dim_visual=8&num_classes=4&seed=2")
    before = data_fingerprint(data)
    assert same_data(before, data_fingerprint(copy.deepcopy(data)))
    moved = copy.deepcopy(data)
    labels = moved.val.labels
    i = int(np.flatnonzero((labels != labels[0]).reshape(len(labels), -1).any(axis=1))[0])  # a clip of another class
    labels[[0, i]] = labels[[i, 0]]  # two clips swap labels: every per-class count and sum unchanged
    after = data_fingerprint(moved)
    assert after["labels"] == before["labels"] and not same_data(before, after)
    old = {k: v for k, v in before.items() if k != "label_digests"}  # a checkpoint from before the digests
    assert same_data(old, data_fingerprint(data))
    # the same features with their columns in another order, and two clips of one class seven apart swapped: every
    # row sum, label and row-weighted sum unchanged, which was all the fingerprint saw (a walkthrough)
    columns = copy.deepcopy(data)
    columns.train.visual = columns.train.visual[:, ::-1].copy()
    rows = copy.deepcopy(data)
    lab = rows.train.labels.reshape(len(rows.train.labels), -1)
    i = next(i for i in range(len(lab) - 7) if (lab[i] == lab[i + 7]).all())
    rows.train.audio[[i, i + 7]] = rows.train.audio[[i + 7, i]]
    for changed in (columns, rows):
        after = data_fingerprint(changed)
        assert same_data({k: v for k, v in after.items() if k != "mixed"}, before)  # what the old one saw
        assert not same_data(before, after)
    assert same_data({k: v for k, v in before.items() if k != "mixed"}, data_fingerprint(data))  # older ones pass
    # at scale: two clips of one class swapped seven apart in 4,000 x 128 features (a tolerance growing with the
    # values, 2e-5 each, took them for the same data: a review)
    big = load_data("synthetic:ave?n_train=4000&n_val=30&n_test=30&dim_audio=128&dim_visual=8&num_classes=4&seed=2")
    lab = big.train.labels.reshape(len(big.train.labels), -1)
    # a swap whose change of the mixed sum (numpy, float64, the documented weights) is within the old tolerance,
    # 2e-5 a value, which took it for the same data (the second review: the first swap chosen was not)
    flat = np.asarray(big.train.audio, dtype=np.float64).reshape(len(lab), -1)
    per_clip = flat @ (1.0 + np.random.default_rng(1).random(flat.shape[1]))
    w = 1.0 + np.random.default_rng(0).random(len(lab))
    change = [abs((w[i] - w[i + 7]) * (per_clip[i] - per_clip[i + 7])) if (lab[i] == lab[i + 7]).all() else 0.0
              for i in range(len(lab) - 7)]  # fmt: skip
    i = next(i for i, c in enumerate(change) if 1e-3 < c < 2e-5 * flat.size)
    swapped = copy.deepcopy(big)
    swapped.train.audio[[i, i + 7]] = swapped.train.audio[[i + 7, i]]
    assert not same_data(data_fingerprint(big), data_fingerprint(swapped))
    assert same_data(data_fingerprint(big), data_fingerprint(copy.deepcopy(big)))
    # the mixed sums against numpy in float64, weights drawn as documented (fixed seeds): independent of the code
    a = np.asarray(data.val.audio, dtype=np.float64).reshape(len(data.val.audio), -1)
    w_clip = 1.0 + np.random.default_rng(0).random(a.shape[0])
    w_feat = 1.0 + np.random.default_rng(1).random(a.shape[1])
    assert before["mixed"][2] == pytest.approx(float(np.einsum("i,ij,j->", w_clip, a, w_feat)), rel=1e-12)


def test_of_epochs_that_tie_on_the_selection_metric_the_first_is_kept(small_data):
    """Epochs whose validation score is exactly equal (here: a learning rate so small that no ranking moves, so
    every epoch's mAP is the same number): the first of them is selected, tested and reported, as numpy's argmax
    takes it (the "first best" rule test_metric_keys_follow_the_design checks on untied values); keeping a later
    one would make the selected epoch depend on noise-free plateaus, and a longer run of the same config would
    report another epoch than a shorter one that reached the same score first."""
    result = fit(TrainConfig(**{**TINY, "epochs": 2, "lr": 1e-12}), small_data, log=None)
    values = np.array([h["val/map_avg"] for h in result.history], dtype=np.float64)
    assert values[0] == values[1]  # the premise: a tie
    assert result.best_epoch == result.history[-1]["test/epoch"] == 1 + int(np.argmax(values)) == 1


def test_the_learning_rate_fit_trains_with_follows_the_configured_warm_up_and_decay(small_data, tmp_path):
    """`warmup_epochs` (searched in hsc_mae.yaml) and `epochs` must shape the learning rate fit trains with: linear
    from lr / warmup_steps up to lr over round(warmup_epochs * steps_per_epoch) steps, then a cosine down to
    lr * min_lr_ratio at the run's last step. A fit that built its schedule without the warm-up would make that
    searched parameter a no-op; one with another total would never decay to the floor. Read from the optimizer in
    the checkpoint after each epoch: the learning rate of the epoch's last step, worked out by hand."""
    cfg = TrainConfig(**{**TINY, "epochs": 2, "warmup_epochs": 1.5, "lr": 2e-3, "min_lr_ratio": 0.01})
    saved = {}

    def keep(report):
        saved[report.epoch] = report.save_checkpoint(tmp_path / f"epoch{report.epoch}")

    fit(cfg, small_data, on_epoch=keep, log=None)
    spe = len(small_data.train) // cfg.batch_size
    warmup, total = round(1.5 * spe), 2 * spe
    assert spe < warmup < total  # the premise: epoch 1 is inside the warm-up, epoch 2 ends in the decay
    expected = {
        1: 2e-3 * spe / warmup,  # the last step of epoch 1, index spe - 1: lr * (index + 1) / warmup
        # the last step of epoch 2, index total - 1: the cosine at (index - warmup) / (total - warmup)
        2: 2e-3 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (total - 1 - warmup) / (total - warmup)))),
    }
    for epoch, lr in expected.items():
        groups = torch.load(saved[epoch], weights_only=False)["optimizer"]["param_groups"]
        assert [g["lr"] for g in groups] == pytest.approx([lr] * len(groups), rel=1e-9), (epoch, groups, lr)


def test_warm_ups_longer_than_the_run_are_said_and_train_as_the_whole_run(small_data):
    """A learning-rate warm-up longer than the run spans the run (its steps are clamped to the run's: warm-ups of 2
    and 5 epochs in a 2-epoch run train the same numbers), and a loss-weight warm-up as long as the run keeps the
    learned log-variances at their initial 0 throughout; both are said as the run starts, the one that fits is not."""
    lines: list[str] = []
    long = fit(TrainConfig(**{**TINY, "epochs": 2, "warmup_epochs": 5.0, "weight_warmup_epochs": 2}), small_data,
               log=lines.append)  # fmt: skip
    notes = [line for line in lines if line.startswith("note:")]
    assert notes == ["note: warmup_epochs 5 is longer than the run (2 epochs): the learning rate rises over the "
                     "whole run, reaching lr 0.001 at its last step",
                     "note: weight_warmup_epochs 2 is not shorter than the run (2 epochs): the loss weights never "
                     "learn (they keep their initial values)"]  # fmt: skip
    logvars = [v for h in long.history for k, v in h.items() if k.startswith("logvar/")]
    assert logvars and all(v == 0.0 for v in logvars), logvars
    lines.clear()
    whole = fit(TrainConfig(**{**TINY, "epochs": 2, "warmup_epochs": 2.0, "weight_warmup_epochs": 2}), small_data,
                log=lines.append)  # fmt: skip
    assert [line for line in lines if line.startswith("note: warmup")] == []
    loss = [h["loss/total"] for h in long.history]
    assert loss == [h["loss/total"] for h in whole.history] and len(set(loss)) == 2
    lines.clear()
    fit(TrainConfig(**{**TINY, "epochs": 2, "weight_warmup_epochs": 2, "loss_weighting": "fixed"}), small_data,
        log=lines.append)  # fixed weights: no warm-up of theirs to say
    assert [line for line in lines if line.startswith("note:")] == []
    from trainer.fit import schedule_notes

    assert schedule_notes(TrainConfig(**{**TINY, "epochs": 1})) == [  # the default weight warm-up of 1 epoch
        "weight_warmup_epochs 1 is not shorter than the run (1 epoch): the loss weights never learn (they keep "
        "their initial values)"]  # fmt: skip
    # a grid's 3.0000000000000004 (Optuna's, of 0.1 steps from 0.1) is 3: no "3 is longer than the run (3 epochs)"
    assert schedule_notes(TrainConfig(**{**TINY, "epochs": 3, "warmup_epochs": 0.1 + 29 * 0.1})) == []


def test_a_resume_that_trains_on_says_the_warm_ups_its_run_is_too_short_for(small_data, tmp_path):
    """The notes were said only as a run started: a resume that trains on (here 2 epochs of a 3-epoch run) is still
    too short for these warm-ups, and says so again (the review)."""
    cfg = TrainConfig(**{**TINY, "epochs": 3, "warmup_epochs": 5.0, "weight_warmup_epochs": 3})
    _checkpointed_and_stopped(cfg, small_data, tmp_path / "ckpt")
    lines: list[str] = []
    fit(cfg, small_data, resume_from=tmp_path / "ckpt", log=lines.append)
    assert [line for line in lines if line.startswith("note:")] == [
        "note: warmup_epochs 5 is longer than the run (3 epochs): the learning rate rises over the whole run, "
        "reaching lr 0.001 at its last step",
        "note: weight_warmup_epochs 3 is not shorter than the run (3 epochs): the loss weights never learn (they "
        "keep their initial values)"], lines  # fmt: skip


def test_values_the_data_makes_smaller_are_said_as_the_run_starts(tmp_path, capsys):
    """A batch larger than the train split and a topk not below it are clamped by `TrainConfig.resolve`; the topk
    trained silently (only config.yaml told it, a walkthrough). Both are said, with the values trained."""
    import yaml

    from trainer.__main__ import main

    data = "synthetic:ave?n_train=20&n_val=40&n_test=40&dim_audio=16&dim_visual=24&num_classes=4"
    sets = ["--set=epochs=1", "--set=hidden_dim=32", "--set=embed_dim=16", "--set=proj_dim=16", "--set=cca_dim=4"]
    assert main(["--data", data, "--out", str(tmp_path / "r"), *sets, "--set=batch_size=64", "--set=topk=30"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "note: batch_size 64 is larger than the train split (20 clips): batches of 20" in out, out
    assert "note: topk 30 is not below the batch (20): 19 neighbours" in out
    trained = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert (trained["batch_size"], trained["topk"]) == (20, 19)
    # values that fit say nothing
    assert main(["--data", data, "--out", str(tmp_path / "s"), *sets, "--set=batch_size=10", "--set=topk=5"]) == 0
    assert not [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("note: ") and " clips)" in ln
                or ln.startswith("note: topk")]


def test_a_run_folder_without_its_config_yaml_resumes_from_its_checkpoint_and_an_edited_one_is_named(small_spec,
                                                                                                   tmp_path):
    """Its config.yaml deleted, its checkpoint whole: `--resume` said "cannot read config file" with no way on,
    though the checkpoint holds the config (README: "everything needed to resume"); an edited config.yaml was
    answered "resume with the run's own config.yaml", the very file edited (walkthrough HH)."""
    import shutil

    sets = [f"--set={k}={v}" for k, v in {**TINY, "epochs": 1}.items()]
    first = _run_cli("--data", small_spec, "--out", str(tmp_path / "a"), *sets)
    assert first.returncode == 0, first.stderr
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.copytree(tmp_path / "a", tmp_path / "c")
    (tmp_path / "b" / "config.yaml").unlink()
    runs = {n: _run_cli("--data", small_spec, "--out", str(tmp_path / n), "--resume", "--set=epochs=2")
            for n in ("a", "b")}  # fmt: skip
    assert all(p.returncode == 0 for p in runs.values()), {n: p.stderr for n, p in runs.items()}
    assert (f"note: {tmp_path / 'b' / 'config.yaml'} is missing: the run resumes with the config its checkpoint "
            "holds") in runs["b"].stdout, runs["b"].stdout
    assert "is missing" not in runs["a"].stdout

    def epochs(n):
        return [{k: v for k, v in json.loads(ln).items() if not k.startswith(COST_KEYS)}
                for ln in (tmp_path / n / "metrics.jsonl").read_text().splitlines()]

    assert len(epochs("b")) == 2 and epochs("b") == epochs("a")  # the same run, to the digit
    assert yaml_load((tmp_path / "b" / "config.yaml")) == yaml_load((tmp_path / "a" / "config.yaml"))
    shutil.copytree(tmp_path / "a", tmp_path / "d")
    (tmp_path / "d" / "config.yaml").unlink()  # a new run there is told --resume continues it (the checkpoint's
    new = _run_cli("--data", small_spec, "--out", str(tmp_path / "d"), *sets)  # config), as where config.yaml is
    assert new.returncode == 2 and "continue the run there with --resume" in new.stderr, new.stderr
    (tmp_path / "other" / "checkpoint").mkdir(parents=True)  # another program's checkpoint/state.pt alone: not
    (tmp_path / "other" / "checkpoint" / "state.pt").write_bytes(b"junk")  # offered --resume, nor said to resume
    new = _run_cli("--data", small_spec, "--out", str(tmp_path / "other"), *sets)
    assert new.returncode == 2 and "--resume" not in new.stderr, new.stderr
    junk = _run_cli("--data", small_spec, "--out", str(tmp_path / "other"), "--resume")
    assert junk.returncode == 2 and "is missing" not in junk.stdout and "cannot be read as a checkpoint" in \
        junk.stderr, (junk.stdout, junk.stderr)  # fmt: skip
    (tmp_path / "mine").mkdir()  # another tool's metrics.jsonl: not called a run of ours (the review)
    (tmp_path / "mine" / "metrics.jsonl").write_text('{"x": 1}\n')
    theirs = _run_cli("--data", small_spec, "--out", str(tmp_path / "mine"), "--resume")
    assert theirs.returncode == 2 and "holds no run of the trainer to resume" in theirs.stderr, theirs.stderr
    (tmp_path / "d" / "checkpoint" / "state.pt").unlink()  # a run of ours without its checkpoint: said as one
    gone = _run_cli("--data", small_spec, "--out", str(tmp_path / "d"), "--resume")
    assert gone.returncode == 2 and gone.stderr.strip() == (
        f"error: --out {tmp_path / 'd'} holds a run without its checkpoint (no checkpoint/state.pt): nothing to "
        "resume from; start a new run in another --out"), gone.stderr
    config = (tmp_path / "c" / "config.yaml").read_text()
    (tmp_path / "c" / "config.yaml").write_text(config.replace("lr: 0.001\n", "lr: 0.5\n"))
    edited = _run_cli("--data", small_spec, "--out", str(tmp_path / "c"), "--resume")
    assert edited.returncode == 2 and edited.stderr.strip() == (
        "error: resume: the config differs from the checkpoint's in lr (checkpoint 0.001, now 0.5); only epochs may "
        "change when resuming. Leave out the --set or --config that gives it, or, if the run folder's config.yaml "
        "was edited since, put back the checkpoint's values there; or start a new run."), edited.stderr


def yaml_load(path):
    import yaml

    return yaml.safe_load(path.read_text())


def test_a_config_header_edited_into_another_shape_is_passed_over(tmp_path):
    """The data fingerprint in an exported config's header, edited by hand (a key gone, a null, text for numbers, a
    pair cut short): the trainer crashed with a KeyError or TypeError (a review); such a line is not read."""
    from trainer import load_data
    from trainer.fit import SEARCHED_DATA_MARK, data_fingerprint, searched_data

    saved = data_fingerprint(load_data("synthetic:ave?n_train=60&n_val=30&n_test=30&dim_audio=8&dim_visual=8"))
    mangled = [{k: v for k, v in saved.items() if k != "features"}, {**saved, "mixed": None},
               {**saved, "mixed": ["1"] * 6}, {**saved, "features": [[1.0]] * 6}, {"clips": saved["clips"]}, [1, 2],
               {**saved, "features": [], "mixed": ["x"] * 6}, {**saved, "mixed": []}]  # (the last two: a review)
    for i, header in enumerate([saved, *mangled]):
        path = tmp_path / f"c{i}.yaml"
        path.write_text(f"# exported\n{SEARCHED_DATA_MARK}{json.dumps(header)}\nlr: 0.001\n")
        assert searched_data(path) == (saved if i == 0 else None), (i, header)
    (tmp_path / "own.yaml").write_text("lr: 0.001\n" + SEARCHED_DATA_MARK + json.dumps(saved) + "\n")
    assert searched_data(tmp_path / "own.yaml") is None  # (below the first field: not the header)


def test_a_val_split_carved_by_another_val_fraction_is_named_beside_other_data(small_spec, tmp_path):
    """On a file without a val split, `--set val_fraction=0.2` against a search that carved 0.1 was told "--data is
    not the data the search ran on", the same file unchanged (a review): the carving is named as a cause too."""
    from trainer import load_data
    from trainer.fit import SEARCHED_DATA_MARK, data_fingerprint

    import h5py

    raw = load_data(small_spec, standardize=False)
    with h5py.File(tmp_path / "noval.h5", "w") as f:  # its train and test splits, and no val split
        for split in ("train", "test"):
            s = getattr(raw, split)
            f[f"audio_{split}"], f[f"visual_{split}"], f[f"lab_{split}"] = s.audio, s.visual, s.labels
    spec = str(tmp_path / "noval.h5")
    data = load_data(spec, val_fraction=0.1)
    assert data.val_carved
    config = tmp_path / "best.yaml"
    sets = {**TINY, "epochs": 1}
    config.write_text(f"# exported\n{SEARCHED_DATA_MARK}{json.dumps(data_fingerprint(data))}\n"
                      + "".join(f"{k}: {v}\n" for k, v in sets.items()))  # fmt: skip
    same = _run_cli("--config", str(config), "--data", spec, "--set=val_fraction=0.1", "--out", str(tmp_path / "a"))
    other = _run_cli("--config", str(config), "--data", spec, "--set=val_fraction=0.2", "--out", str(tmp_path / "b"))
    assert same.returncode == other.returncode == 0, (same.stderr, other.stderr)
    assert "is not the data" not in same.stdout, same.stdout
    assert (f"note: --data {spec} is not the data the search behind {config} ran on (other clips, labels or values "
            "than the fingerprint in its header, or its val split carved by another val_fraction): this run will not "
            "reproduce the search's score") in other.stdout, other.stdout
    # no --data at all: the default trains, said as the default (it was "--data synthetic:ave", never typed: a
    # walkthrough), with where the search's is
    default = _run_cli("--config", str(config), "--out", str(tmp_path / "c"))
    assert default.returncode == 0, default.stderr[-2000:]
    assert (f"note: no --data given: the default, synthetic:ave, trains, which is not the data the search behind "
            f"{config} ran on: its header's retrain line gives that --data") in default.stdout, default.stdout


def test_the_splits_that_differ_from_a_searchs_data_are_named(small_spec, tmp_path):
    """A retrain on a copy whose test labels alone changed was told "this run will not reproduce the search's
    score", and reproduced it exactly (a walkthrough: the test split does not take part in training or in choosing
    the epoch). The differing splits are named (a train change: all three, its features standardise them), and
    such a retrain is told that only its test metrics differ."""
    import copy

    import h5py
    import numpy as np

    from trainer import load_data
    from trainer.data import standardize
    from trainer.fit import SEARCHED_DATA_MARK, data_fingerprint, differing_splits

    raw = load_data(small_spec, standardize=False)
    before = data_fingerprint(standardize(raw))
    assert differing_splits(before, data_fingerprint(standardize(copy.deepcopy(raw)))) == []
    for split, expected in (("test", ["test"]), ("val", ["val"]), ("train", ["train", "val", "test"])):
        changed = copy.deepcopy(raw)
        getattr(changed, split).audio[0] += 1.0  # one clip's features
        assert differing_splits(before, data_fingerprint(standardize(changed))) == expected, split
    relabelled = copy.deepcopy(raw)
    labels = relabelled.test.labels.reshape(len(relabelled.test.labels), -1)
    i = int(np.flatnonzero((labels != labels[0]).any(axis=1))[0])
    labels[[0, i]] = labels[[i, 0]]
    assert differing_splits(before, data_fingerprint(standardize(relabelled))) == ["test"]
    # the retrain's note, on a file whose test labels changed
    for name, data in (("same", raw), ("other", relabelled)):
        with h5py.File(tmp_path / f"{name}.h5", "w") as f:
            for split in ("train", "val", "test"):
                s = getattr(data, split)
                f[f"audio_{split}"], f[f"visual_{split}"], f[f"lab_{split}"] = s.audio, s.visual, s.labels
    config = tmp_path / "best.yaml"
    searched = data_fingerprint(load_data(str(tmp_path / "same.h5")))
    config.write_text(f"# exported\n{SEARCHED_DATA_MARK}{json.dumps(searched)}\n"
                      + "".join(f"{k}: {v}\n" for k, v in {**TINY, "epochs": 1}.items()))  # fmt: skip
    other = _run_cli("--config", str(config), "--data", str(tmp_path / "other.h5"), "--out", str(tmp_path / "o"))
    assert other.returncode == 0, other.stderr
    assert (f"note: --data {tmp_path / 'other.h5'} is not the data the search behind {config} ran on: its test split "
            "has other clips, labels or values than the fingerprint in its header, so this run trains and keeps its "
            "epoch as the search's trial did, but its test metrics are not the search's") in other.stdout, other.stdout
