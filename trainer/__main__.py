"""`python -m trainer`: train one HSC-MAE configuration and write a run folder."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import time
from pathlib import Path

from . import EXAMPLE_CONFIG, ConfigError, DataError, NonFiniteLossError, TrainConfig, fit, load_data
from .config import describe, repeated_sets, why_unwritable
from .fit import (CHECKPOINT_FILE, CheckpointError, data_fingerprint, larger_than_the_device, load_state,
                  resolve_device, differing_splits, searched_data)


RUN_FILES = ("config.yaml", "metrics.jsonl", "checkpoint", "summary.json")  # what `fit` writes into a run folder


def build_parser(prog: str = "python -m trainer") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Train one HSC-MAE configuration on pre-extracted audio-visual features. Prints one line per "
        "epoch with the validation mAP; the run folder gets config.yaml, metrics.jsonl, checkpoint/state.pt and "
        "summary.json (test mAP of the validation-selected epoch).",
    )
    p.add_argument("--config", type=Path, default=None,
                   help=f"YAML trainer config (default: the shipped example, {EXAMPLE_CONFIG.name}; with --resume, the "
                   "run folder's own config.yaml).")
    p.add_argument("--data", default=None,
                   help="a .h5/.hdf5 file (AVE/VEGAS feature layout), a .parquet file, or synthetic:ave / "
                   "synthetic:vegas, optionally with options, e.g. 'synthetic:ave?n_train=800&dim_visual=64' "
                   "(default: synthetic:ave, AVE-sized synthetic data).")
    p.add_argument("--out", type=_folder, default=None, help="run folder (default: runs/train-<timestamp>).")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config field; repeatable (e.g. --set lr=3e-4 --set distill=relational).")
    p.add_argument("--device", default="auto",
                   help="auto (cuda when available), cpu, cuda or cuda:N (default: auto).")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint, with the run's own config. Only epochs may "
                   "change (--set epochs=N trains longer; the learning-rate and EMA schedules then follow the longer "
                   "run from the resumed epoch on); any other change is refused with the fields named.")
    p.add_argument("--help-config", action="store_true", help="list every config field with its range and exit.")
    return p  # fmt: skip


def _folder(text: str) -> Path:
    """--out's type: an empty value (an unset shell variable, `--out "$RUN"`) wrote the run into the working
    directory, as Path("") is "." (a walkthrough)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty; expected the run folder's path (is a shell variable unset?)")
    return Path(text)


class Terminated(KeyboardInterrupt):
    """SIGTERM (`timeout`, a batch scheduler ending the job): handled as a Ctrl-C is, what is kept and the command
    that continues said (the run stopped without a word, exit 143; a walkthrough)."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None, prog: str = "python -m trainer") -> int:
    import signal

    previous = None
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # (one ignored on purpose, `trap '' TERM`, stays so)
        try:
            previous = signal.signal(signal.SIGTERM, _on_sigterm)
        except ValueError:  # not the main thread: the caller's own handling stands
            pass
    try:
        return _main(argv, prog)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None, prog: str) -> int:
    args = build_parser(prog).parse_args(argv)
    # `~` as hsc-search reads it: after `--out=` or in quotes no shell expanded it, and `--out=~/run` made a folder
    # named `~` in the working directory while printing "run folder: ~/run" (a walkthrough)
    args.config = args.config.expanduser() if args.config is not None else None
    args.out = args.out.expanduser() if args.out is not None else None
    data_given = args.data is not None  # (the default named as such in a note below: a walkthrough read
    args.data = "synthetic:ave" if args.data is None else args.data  # "--data synthetic:ave", never typed)
    if args.data.startswith("~"):
        args.data = os.path.expanduser(args.data)
    if args.help_config:
        try:
            print(describe(), flush=True)
        except BrokenPipeError:  # `--help-config | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so Python's exit flush stays quiet
        return 0
    if args.resume and args.out is None:
        print("error: --resume needs --out (the run folder to continue)", file=sys.stderr)
        return 2
    named = args.out is not None  # else a new folder of its own, runs/train-<timestamp>[-N] (see _claim)
    out = args.out or Path("runs") / time.strftime("train-%Y%m%d-%H%M%S")
    if out.exists() and not out.is_dir():
        print(f"error: --out {out} is a file; expected the run folder to write (or, with --resume, to continue)",
              file=sys.stderr)  # fmt: skip
        return 2
    if named and (_busy(out) or _refused(out, args, clear=False)):  # before the data is read: seconds, not minutes
        return 2
    config = args.config or (out / "config.yaml" if args.resume else EXAMPLE_CONFIG)
    try:
        resolve_device(args.device)  # before loading any data: a wrong device costs nothing
        # an empty or all-commented --config trained the defaults without a word (a walkthrough); a resume takes
        # the run's own values, refusing others
        empty = None if args.config is None or args.resume else lambda: print(
            f"note: --config {args.config} sets no field: the defaults train, with any --set on top (`{prog} "
            "--help-config` lists them)")  # fmt: skip
        ckpt = out / "checkpoint" / CHECKPOINT_FILE
        if args.resume and args.config is None and not os.path.lexists(config) and ckpt.is_file():
            # the run's config.yaml deleted, its checkpoint whole: the checkpoint holds the config it trained
            # (it said "cannot read config file", with no way on: a walkthrough); said once it is read as ours
            state = load_state(ckpt)
            if not isinstance(state, dict) or not isinstance(state.get("config"), dict):
                raise CheckpointError(f"{ckpt}: not a checkpoint of the trainer (no config in it), and {config} is "
                                      "missing: nothing to resume; pick another --out")  # fmt: skip
            print(f"note: {config} is missing: the run resumes with the config its checkpoint holds")
            cfg = TrainConfig.with_overrides(state["config"], args.overrides, source=str(ckpt))
        else:
            cfg = TrainConfig.from_yaml(config, args.overrides, if_empty=empty)
        for note in repeated_sets(args.overrides):
            print(f"note: {note}")
        data = load_data(args.data, val_fraction=cfg.val_fraction)
        if not args.resume and not data.val_carved and any(o.split("=", 1)[0].strip() == "val_fraction"
                                                           for o in args.overrides):  # (a resume refuses the change)
            print(f"note: --set val_fraction={cfg.val_fraction} is not used: {data.source} has a val split of its "
                  f"own ({len(data.val)} clips)")  # fmt: skip
        searched = searched_data(args.config) if args.config is not None and not args.resume else None
        differ = differing_splits(searched, data_fingerprint(data)) if searched is not None else []
        if differ and not data_given:  # (the header's retrain line names the search's)
            print(f"note: no --data given: the default, {data.source}, trains, which is not the data the search "
                  f"behind {args.config} ran on: its header's retrain line gives that --data")  # fmt: skip
        elif differ == ["test"]:  # the run trains and selects as the search's trial did: only its test metrics differ
            print(f"note: --data {data.source} is not the data the search behind {args.config} ran on: its test split "
                  "has other clips, labels or values than the fingerprint in its header, so this run trains and "
                  "keeps its epoch as the search's trial did, but its test metrics are not the search's")  # fmt: skip
        elif differ:  # a file changed in place since the search (same path, same shapes) retrained to another score
            # without a word (a walkthrough)
            carved = ", or its val split carved by another val_fraction" if data.val_carved else ""  # (a review)
            print(f"note: --data {data.source} is not the data the search behind {args.config} ran on (other clips, "
                  f"labels or values than the fingerprint in its header{carved}): this run will not reproduce the "
                  "search's score")  # fmt: skip
        resume = out / "checkpoint" if args.resume else None
        made = not named or not out.exists()  # (removed again if the run ends before its first epoch; without
        # --out _claim makes a new folder, runs/train-<time>-N where another run took the name)
        # the folders this run makes on the way (runs/, or a/ and a/b/ of --out a/b/run), removed with it if empty;
        # each as the absolute path it names (--out new/../mine/run makes new/ and mine/run, not mine/: the review)
        missing = {os.path.abspath(p) for p in [out, *out.parents] if not os.path.lexists(os.path.abspath(p))}
        try:  # here, not in fit: a folder that cannot be made or written is the --out flag's fault
            out, lock = _claim(out, named)
            why = why_unwritable(out)
            if why is not None:
                raise OSError(30 if why.startswith("read-only") else 13, why[0].upper() + why[1:])
        except OSError as e:
            print(f"error: --out {out}: cannot {'create' if made else 'write in'} the run folder ({e.strerror or e}); "
                  "expected a folder path that can be written", file=sys.stderr)  # fmt: skip
            return 2
        if lock is None:  # two runs given one folder at once mixed their epochs in it, and both said they succeeded
            _say_busy(out)
            return 2
        fresh = False  # a folder this run made, holding nothing but its lock: removed if the run ends before epoch 1
        try:
            fresh = made and not any(p.name != LOCK_FILE for p in out.iterdir())
            # again, holding the folder (a run that trained there since is not replaced), and only now are the
            # files of a run cut off before its first epoch removed: a run in its first epoch looks the same, and a
            # check before the lock removed a live run's files (the review)
            if named and _refused(out, args):
                return 2
            fit(cfg, data, out_dir=out, resume_from=resume, device=args.device)
        except BaseException:
            # a folder this run made, ended before its first epoch: nothing in it is worth keeping (a too small
            # train split, a batch not above cca_dim, an allocation too large left an empty runs/train-<time>)
            if fresh and _stopped_before_first_epoch(out):
                import shutil

                shutil.rmtree(out, ignore_errors=True)
                for folder in sorted(missing, key=len, reverse=True):  # an empty runs/ was left (a walkthrough)
                    with contextlib.suppress(OSError):  # not empty (another run's), or gone
                        os.rmdir(folder)
            raise
        finally:
            _release(out, lock)
    except (ConfigError, DataError, CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except RuntimeError as e:  # torch's out-of-memory errors included (torch.OutOfMemoryError is one)
        beyond = larger_than_the_device(e)
        if beyond is None:  # memory that something else held, a lost device: the traceback says more
            raise
        print(f"error: {beyond}; a smaller model or batch (hidden_dim, batch_size, --set) fits", file=sys.stderr)
        return 1
    except OSError as e:  # a full disk, a folder made read-only mid-run: one line, not a traceback (a walkthrough)
        where = e.filename or out
        if isinstance(e, BrokenPipeError):  # `| head` closed the output: not the run folder's fault (a walkthrough)
            with contextlib.suppress(OSError):  # so Python's exit flush stays quiet
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            where, e = "the output", OSError("its reader closed the pipe (e.g. `| head`)")
        if _stopped_before_first_epoch(out):
            then = "nothing of the run is kept; the same command starts it over"
        else:
            then = (f"the run's last completed epoch is kept in {shlex.quote(os.path.abspath(out))}; "
                    f"`{_again(prog, args, out)}` continues it")
        print(f"error: {where}: {e.strerror or e}; {then}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # one line instead of a traceback: what is kept, and the command that continues
        what = "stopped (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        if _stopped_before_first_epoch(out):
            print(f"\n{what} before the first epoch ended: nothing to keep; the same command starts over",
                  file=sys.stderr)  # fmt: skip
        else:
            print(f"\n{what}: the run's last completed epoch is kept in {shlex.quote(os.path.abspath(out))}; "
                  f"`{_again(prog, args, out)}` "
                  "continues it", file=sys.stderr)  # fmt: skip
        return 143 if isinstance(e, Terminated) else 130
    print(f"run folder: {shlex.quote(os.path.abspath(out))}")  # as the resume lines name it: pasted in any folder
    return 0


def _refused(out: Path, args, clear: bool = True) -> bool:
    """Whether a run in the folder `out` (given as --out) must not start, said in one line: a new run where a run
    is (it would replace its config, metrics and checkpoint), a resume where none is. A run that stopped before its
    first epoch ended is replaced (its files only), with `clear` (only while holding the folder's lock: a run in its
    first epoch has the same files)."""
    held = [n for n in RUN_FILES if (out / n).exists()]
    if held and _stopped_before_first_epoch(out):  # nothing of value: a new run replaces it, a resume has nothing
        own = _unstarted_run_files(out)
        if args.resume:
            what = ("a run that stopped before its first epoch ended (no checkpoint, no epoch in metrics.jsonl): "
                    "nothing to resume; the same command without --resume starts it over") if own is not None else (
                   f"no run of the trainer to resume (it has {', '.join(held)}, but no checkpoint/{CHECKPOINT_FILE} "
                   "and no epoch in metrics.jsonl); pick another --out")  # (its own config.yaml: both commands sent the user to the
            print(f"error: --out {out} holds {what}", file=sys.stderr)  # other; a walkthrough)
            return True
        if own is not None and not clear:
            return False  # replaced once the folder is held
        if own is not None:  # only files a run writes, and nothing else is removed
            print(f"note: --out {out} held a run that stopped before its first epoch ended; starting over there")
            given = args.config.resolve() if args.config is not None else None
            for path in own:  # (the run's config.yaml given as --config is read first; the run then rewrites it)
                if path.resolve() != given:
                    path.unlink()
            with contextlib.suppress(OSError):  # the checkpoint folder, once empty
                (out / "checkpoint").rmdir()
            held = []
    if held and not args.resume:  # a new run would replace that run's config, metrics and checkpoint
        what = "holds a run already" if (out / "metrics.jsonl").exists() else "already holds"
        resumable = (out / "checkpoint" / CHECKPOINT_FILE).is_file() and _epochs_logged(out)  # (its config.yaml
        # gone: the checkpoint's; another program's checkpoint/state.pt alone is not offered: a review)
        print(f"error: --out {out} {what} ({', '.join(held)}), which a new run would replace: "
              + ("continue the run there with --resume, or " if resumable else "")
              + "pick another --out (nothing was changed)", file=sys.stderr)  # fmt: skip
        return True
    if args.resume and held and not (out / "checkpoint" / CHECKPOINT_FILE).is_file():  # a summary.json or an empty
        # checkpoint/ of another program's was read as a run ("cannot read config file"; "checkpoint, and no
        # checkpoint": a walkthrough); a run of ours whose checkpoint is gone is said as one (the review)
        if _epochs_logged(out):  # (by an epoch line of ours: a metrics.jsonl of another tool's is no run: a review)
            print(f"error: --out {out} holds a run without its checkpoint (no checkpoint/{CHECKPOINT_FILE}): nothing "
                  "to resume from; start a new run in another --out", file=sys.stderr)  # fmt: skip
        else:
            print(f"error: --out {out} holds no run of the trainer to resume (it has {', '.join(held)}, but no "
                  f"checkpoint/{CHECKPOINT_FILE}); pick another --out", file=sys.stderr)  # fmt: skip
        return True
    if args.resume and not held:
        what = "is not there" if not out.exists() else "holds no run (no config.yaml, metrics.jsonl or checkpoint)"
        here = "" if out.is_absolute() else f" (read from the working directory, {Path.cwd()})"
        print(f"error: --out {out} {what}{here}: nothing to resume; start a run there without --resume",
              file=sys.stderr)  # fmt: skip
        return True
    return False


LOCK_FILE = ".training"  # in a run folder while a run trains there (removed at its end; a lock, not its content)


NO_LOCK = -1  # `_claim` on a file system that does not lock files: the run goes on, unguarded (said)


def _say_busy(out: Path) -> None:
    print(f"error: --out {out}: another run is training in this folder now; pick another --out, or wait for it "
          "(nothing was changed)", file=sys.stderr)  # fmt: skip


def _busy(out: Path) -> bool:
    """Another run holds the folder's lock now (said); probed without keeping it."""
    import fcntl

    try:
        fd = os.open(out / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        _say_busy(out)
        return True
    except OSError:  # a file system without locks: `_claim` says so
        return False
    finally:
        os.close(fd)  # (and with it the probe's lock)
    return False


def _claim(out: Path, named: bool) -> tuple[Path, int | None]:
    """The run folder, made if missing, and this process's lock on it (`LOCK_FILE`, flock: released when the
    process ends, however it ends), None where another run holds it, or NO_LOCK where the file system locks
    nothing (NFS without its lock daemon, a Lustre client mounted noflock; said). Without --out, a folder of its own:
    runs/train-<timestamp>, else -2, -3, ... (runs started in one second shared one and mixed their epochs)."""
    import fcntl

    if not named:
        base, n = out, 1
        while True:
            try:
                out.mkdir(parents=True)
                break
            except FileExistsError:  # the name taken; not a parent that is a file or a dangling link (that looped
                if not (out.exists() or out.is_symlink()) or n >= 1000:  # for ever: the review)
                    raise
                n += 1
                out = base.with_name(f"{base.name}-{n}")
    else:
        out.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return out, None
        except OSError as e:  # ENOLCK, ENOSYS, EOPNOTSUPP: no locks here (refusing every run would be worse)
            os.close(fd)
            with contextlib.suppress(OSError):
                (out / LOCK_FILE).unlink()
            print(f"note: --out {out}: this file system does not lock files ({e.strerror or e}), so another run "
                  "started in this folder now would not be refused")  # fmt: skip
            return out, NO_LOCK
        try:  # the file locked is still the folder's (a run ending meanwhile removes its lock file): else again
            if os.stat(out / LOCK_FILE).st_ino == os.fstat(fd).st_ino:
                return out, fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _release(out: Path, fd: int) -> None:
    if fd == NO_LOCK:
        return
    with contextlib.suppress(OSError):  # (only our own: a folder removed and made again since holds another's)
        now, held = os.stat(out / LOCK_FILE), os.fstat(fd)
        if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            (out / LOCK_FILE).unlink()  # while held: a run that opens it now makes a new file, and checks for a run
    os.close(fd)


def _again(prog: str, args, out: Path) -> str:
    """The command that continues the run in `out`, pasted in any folder: the program, the data file and the run
    folder by their absolute paths (relative ones, as typed, failed elsewhere with "nothing to resume": a
    walkthrough). `python -m trainer` pasted elsewhere ran the trainer/ or trainer.py of the folder it was pasted
    in, and on a bare box (the trainer not installed) found none outside the repository (a walkthrough): the
    project's `hsc-search train` (the same program) where it is installed beside this Python, else the repository
    folder first."""
    import importlib.util

    cd = ""
    if prog == "python -m trainer":
        hsc = Path(sys.executable).parent / "hsc-search"
        root = Path(__file__).resolve().parent.parent
        # hsc-search with what it needs (a `pip install --no-deps` has the script without typer: a review)
        if hsc.is_file() and all(importlib.util.find_spec(m) is not None for m in ("typer", "hsc_search")):
            me = f"{shlex.quote(os.path.abspath(hsc))} train"
        elif (root / "pyproject.toml").is_file():  # the repository, not an installed package: found there only
            # (no subshell: `( ... )` is command substitution in fish; a review)
            cd, me = f"cd {shlex.quote(str(root))} && ", f"{shlex.quote(sys.executable)} -m trainer"
        else:
            me = f"{shlex.quote(sys.executable)} -m trainer"
    elif prog.startswith("hsc-search ") and os.path.basename(sys.argv[0]) == "hsc-search":  # by its path, as the
        me = f"{shlex.quote(os.path.abspath(sys.argv[0]))} {prog.split(' ', 1)[1]}"  # retrain line printed it (the review)
    else:
        me = prog
    data = args.data if args.data.startswith("synthetic:") or "://" in args.data else os.path.abspath(args.data)
    command = f"{me} --data {shlex.quote(data)} --out {shlex.quote(os.path.abspath(out))} --resume" + (
        f" --device {shlex.quote(args.device)}" if args.device != "auto" else "")
    return f"{cd}{command}"


def _unstarted_run_files(out: Path) -> list[Path] | None:
    """The files of a run that `fit` started in `out` and that ended before its first epoch did: its config.yaml
    and its empty metrics.jsonl (written together as it starts) and a checkpoint it was cut off writing (a
    `.tmp` file); None when `out` holds anything else of those names (a folder of the user's: a config.yaml of
    their own, a checkpoint/ of another program), which a new run must then not touch."""
    if not _stopped_before_first_epoch(out) or not (out / "config.yaml").is_file():
        return None
    if not (out / "metrics.jsonl").is_file():
        return None
    files = [out / "config.yaml", out / "metrics.jsonl"]
    ckpt = out / "checkpoint"
    if ckpt.exists():
        if not ckpt.is_dir():
            return None
        inside = list(ckpt.iterdir())
        if any(not (p.is_file() and p.suffix == ".tmp") for p in inside):
            return None
        files += inside
    return files


def _epochs_logged(out: Path) -> bool:
    """Whether `out`'s metrics.jsonl holds an epoch line of the trainer's (a run of ours trained there)."""
    try:
        with open(out / "metrics.jsonl", encoding="utf-8") as fh:
            for line in fh:
                try:
                    if isinstance(json.loads(line).get("epoch"), int):
                        return True
                except (ValueError, AttributeError):
                    return False
    except (OSError, UnicodeDecodeError):
        return False
    return False


def _stopped_before_first_epoch(out: Path) -> bool:
    """A run folder whose run ended before its first epoch did (Ctrl-C, a loss that diverged at once): it has no
    checkpoint and no epoch line, so nothing in it can be resumed or is worth keeping."""
    if (out / "summary.json").exists() or (out / "checkpoint" / CHECKPOINT_FILE).exists():
        return False
    metrics = out / "metrics.jsonl"
    try:
        return not metrics.exists() or not metrics.read_text().strip()
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
