"""`hsc-search`: the command line. A thin layer: parse, call one function, print, exit non-zero on bad input."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer
from typer.core import TyperCommand

from .commands import disk_error, exe, resume_command, retrain_command
from .shipped import shipped_spaces

# MLflow prints "View run ... at: http://..." and "View experiment at: ..." for every run it ends on a server
# store: 2-3 lines per trial between the search's own progress lines, and 2 per run import-runs copies
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
# and INFO lines of its own, such as "Creating initial MLflow database tables..." for a new store (import-runs)
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
# and a tqdm bar per artifact it downloads (a warm start reads its source's search_space.yaml in the pre-flight)
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,  # `hsc-search` alone: the commands, not "Missing command"
    rich_markup_mode=None,  # plain help: `[default: ...]` stays visible, flags show no `<bool>`
    context_settings={"help_option_names": ["-h", "--help"]},  # -h worked on `train` only (the trainer's own)
    help="Hyperparameter search for HSC-MAE: Ray Tune runs Optuna-sampled trials of the trainer, ASHA stops weak "
    "ones early, and every trial lands in MLflow. With no flags, `hsc-search run` searches the quick space on "
    "small synthetic data on this machine.",
)

SET_HELP = "Fixed trainer value for every trial, KEY=VALUE, repeatable (e.g. --set hidden_dim=256)."

# other tools' names for run's flags (Optuna's n_trials, a trainer's epochs): click's own suggestion for `--trials`
# was "Possible options: --metric" (a walkthrough)
OTHER_NAMES = {"--trials": "--num-samples", "--n-trials": "--num-samples", "--samples": "--num-samples",
               "--num-trials": "--num-samples", "--epochs": "--max-epochs", "--n-epochs": "--max-epochs",
               "--num-epochs": "--max-epochs"}


class _Command(TyperCommand):
    """A command whose unknown-option error suggests the flag another tool's name means (`OTHER_NAMES`)."""

    def parse_args(self, ctx, args):
        given = list(args)  # (click's parser consumes the list)
        try:
            parsed = super().parse_args(ctx, args)
            if twice := _given_twice(self, given):  # the last was taken in silence: a second --warm-start dropped
                typer.echo(f"note: {twice}", err=True)  # the first one's trials (a walkthrough). Said, not refused:
                # flags appended to a command to change it (a script's, a test's) take the last, as in most tools
            return parsed
        except Exception as e:  # click's NoSuchOption (typer 0.29 carries a click of its own: matched by its fields)
            name = getattr(e, "option_name", None) or ""
            meant = OTHER_NAMES.get(name)
            if meant and hasattr(e, "possibilities") and any(meant in p.opts for p in self.params):
                e.possibilities = [meant]
            elif self.name == "resume" and hasattr(e, "possibilities") and _run_flag(ctx, meant or name):
                # `resume --num-samples 20` got click's bare "No such option" (a walkthrough): say why and what to do
                e.possibilities = None
                e.message = (f"No such option: {name}: resume continues a search with the settings it started "
                             f"with (its record holds them); for more trials or other settings, start a new "
                             f"search that learns from its trials: `{_exe('hsc-search')} run --warm-start "
                             f"{_folder_in(given, ctx)}` with "
                             f"{meant or name.split('=')[0]} and the flags it started with (README, \"Warm starts\")")
            raise


def _given_twice(command, args: list[str]) -> str | None:
    """"--seed given twice (1, 2): the last, 2, is used" for a one-valued option given more than once (click takes
    the last, without a word before), else None. --set, which may repeat, and on/off flags are not counted."""
    seen: dict[str, list[str]] = {}
    i = 0
    while i < len(args) and args[i] != "--":
        name, eq, inline = args[i].partition("=")
        option = next((p for p in command.params if name in getattr(p, "opts", ())), None) if name.startswith(
            "--") else None  # fmt: skip
        if option is not None and not getattr(option, "is_flag", False) and not option.multiple:
            value = inline if eq else (args[i + 1] if i + 1 < len(args) else "")
            i += 0 if eq else 1
            seen.setdefault(option.opts[0], []).append(value)
        i += 1
    name, values = next(((n, v) for n, v in seen.items() if len(v) > 1), (None, None))
    if name is None:
        return None
    times = "twice" if len(values) == 2 else f"{len(values)} times"
    shown = [v or repr(v) for v in values]
    return f"{name} given {times} ({', '.join(shown)}): the last, {shown[-1]}, is used"


def _run_flag(ctx, name: str):
    """`run`'s option `name` (asked of the command group `ctx` belongs to), or None."""
    group = ctx.parent
    run = group.command.get_command(group, "run") if group is not None else None
    return next((p for p in run.params if name.split("=")[0] in p.opts), None) if run is not None else None


def _folder_in(args: list[str], ctx) -> str:
    """The search folder among resume's arguments (its one positional), as typed; FOLDER when none is."""
    i = 0
    while i < len(args):
        a = args[i]
        option = None if not a.startswith("-") or "=" in a else (
            next((p for p in ctx.command.params if a in p.opts), None) or _run_flag(ctx, OTHER_NAMES.get(a, a)))
        if option is not None and not getattr(option, "is_flag", False):
            i += 2  # its value
            continue
        if not a.startswith("-"):
            return shlex.quote(a)
        i += 1
    return "FOLDER"




def _disk_full(error: BaseException, folder: Callable[[], Any] | str | None) -> None:
    """A write the disk refused mid-search (the search's folder or its store full or made read-only), raised as
    it is or inside Ray's TuneError (a callback's write): one line with the command that continues it, exit 1,
    instead of Ray's and our tracebacks (263 lines; a walkthrough). Any other error goes on as it was."""
    e = disk_error(error)
    if e is None:
        raise error
    if callable(folder):  # worked out only now: before the search is named it cannot be (the review)
        try:
            folder = folder()
        except Exception:  # noqa: BLE001 - the sentence without the command
            folder = None
    where = f"{e.filename}: " if e.filename else ""
    then = f"; once it can be written, `{resume_command(folder)}` continues the search" if folder else ""
    if folder:
        from .storage import cut_off_experiment_state

        try:
            cut = cut_off_experiment_state(str(folder))
        except Exception:  # noqa: BLE001 - the sentence without it
            cut = None
        if cut is not None:  # Ray writes its record in place: `resume` cannot restore it (the review)
            then = (f"; it cut off Ray's record of the search ({cut}), so the search cannot be resumed; its "
                    f"trials' results are kept in {folder}")  # fmt: skip
    _fail(f"{where}{e.strerror or e} (a disk that is full or read-only){then}", code=1)


def _note_anothers(search) -> None:
    """Notes that the latest search of an experiment, which a command without --run-id took, was started by someone
    else (its `mlflow.user`): on a team's server two people's searches of one default name were told apart by nothing,
    and one exported the other's best config (a walkthrough)."""
    import getpass

    from .runs import user_tag

    theirs, mine = search.data.tags.get("mlflow.user"), user_tag().get("mlflow.user")
    try:  # one's own search, run under the account's name where the MLflow login now differs, is not another's (a
        if theirs == getpass.getuser():  # review)
            return
    except Exception:  # noqa: BLE001 - (no account name: a container)
        pass
    if theirs and mine and theirs != mine:
        typer.echo(f"note: search {search.info.run_name} is {theirs}'s (the experiment's latest search; you are "
                   f"{mine}): for one of yours, give --run-id with its parent run id (the MLflow UI lists the "
                   "searches)", err=True)  # fmt: skip


def _fail(msg: str, code: int = 2) -> None:
    """One line on stderr, red in a terminal unless NO_COLOR is set (no-color.org) or the terminal is dumb (an
    editor's compile buffer showed the escape codes: a walkthrough), and exit `code`."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":  # (secho adds a reset code even uncoloured)
        typer.echo(f"error: {msg}", err=True)
    else:
        typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _bounded_http_retries() -> None:
    """For commands that can simply be run again (export-best, report, replay, import-runs): an
    MLflow server that keeps failing costs seconds, not MLflow's default of 7 retries with a doubling backoff
    (about 4 minutes per request, meant to outlast rate limits). A value the user set wins. Searches keep
    MLflow's defaults: what they log must not be lost to a server's hiccup."""
    import os

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")  # urllib3 waits about 0, 2 and 4 s (+ jitter)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


_exe = exe  # what we print: see commands.exe


def _home(path: Optional[Path]) -> Optional[Path]:
    """`~` in a file the user names: a shell leaves `--out=~/x` (and a quoted '~/x') as it is, and the file went to
    a folder named `~` here while the message read as the home folder."""
    return None if path is None else path.expanduser()


def _ui_hint(tracking_uri: Optional[str], experiment_id: Optional[str], run_id: Optional[str] = None,
             artifact: Optional[str] = None, known_run: Optional[str] = None) -> str:
    """How to open the store's UI at an experiment (or a run's artifact): a server's page, else `mlflow ui` of it.
    `known_run` (or `run_id`): a run of the store, by which a UI already serving it on MLflow's port is known."""
    from .runs import resolved_tracking_uri, ui_url, without_password

    def at(base: str) -> str:
        return ui_url(base, experiment_id, run_id, artifact) if experiment_id else base

    resolved = resolved_tracking_uri(tracking_uri)  # $MLFLOW_TRACKING_URI too (an http one got `mlflow ui` of it)
    if resolved.startswith(("http://", "https://")):
        shown = without_password(resolved, "")  # (the console is read by others)
        return f"open {at(shown)} (through your SSH tunnel on a cluster)"
    # absolute: it works pasted in any folder; no password (the console is read by others, and a command line by
    # `ps`: libpq reads it from ~/.pgpass or PGPASSWORD, as every command we print; a walkthrough found it here)
    bare, note = without_password(resolved, ""), ""
    if bare != resolved:
        import os

        if not tracking_uri and os.environ.get("MLFLOW_TRACKING_URI"):  # the variable works there as it is
            bare = "$MLFLOW_TRACKING_URI"
        elif bare.startswith("postgresql"):
            note = "\n             (its password left out: libpq reads it from ~/.pgpass or PGPASSWORD)"
        else:  # MySQL's and SQL Server's drivers read no password file (the second review)
            note = "\n             (its password left out: put it back into the URI to run this)"
    port, serving = _free_ui_port(known_run or run_id)
    page = at(f"http://127.0.0.1:{port}")
    if serving:  # (told to start `mlflow ui` there, which would fail: the port is taken, by this very UI)
        return f"open {page} (the MLflow UI serving this store there){note}"
    # MLflow's own command: its usage telemetry off, as for every process hsc-search starts (README)
    shown = '"$MLFLOW_TRACKING_URI"' if bare == "$MLFLOW_TRACKING_URI" else shlex.quote(bare)
    flag = f" --port {port}" if port != UI_PORT else ""
    return (f"MLFLOW_DISABLE_TELEMETRY=true {_exe('mlflow')} ui --backend-store-uri {shown}{flag}\n"
            f"             then open {page}{note}")


UI_PORT = 5000  # `mlflow ui`'s own


def _free_ui_port(run_id: Optional[str] = None) -> tuple[int, bool]:
    """(`mlflow ui`'s port, False), or the next free one when something on this machine holds it (on a shared
    machine the printed command failed, "Address already in use" and exit 0, and its link opened another user's
    MLflow: a walkthrough); (MLflow's port, True) where the UI holding it serves this store (it knows `run_id`: a
    `make ui` left open, the review), asked for at most 2 s in all, never through a proxy."""
    import socket

    for port in range(UI_PORT, UI_PORT + 20):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port, False
            except OSError:
                pass
        if port == UI_PORT and run_id and _serves_run(port, run_id, 2.0):
            return port, True
    return UI_PORT, False


def _serves_run(port: int, run_id: str, timeout_s: float) -> bool:
    """Whether the MLflow server on this machine's `port` knows run `run_id` (its REST API), within `timeout_s`
    in all (a listener that sends a byte now and then held the summary for 78 s: the review)."""
    import json
    import threading
    import urllib.parse
    import urllib.request

    found: list[bool] = []

    def ask() -> None:
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/get?{urllib.parse.urlencode({'run_id': run_id})}"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # (http_proxy sent it off the machine)
        try:
            with opener.open(url, timeout=timeout_s) as answer:
                found.append(json.loads(answer.read(1 << 20)).get("run", {}).get("info", {}).get("run_id") == run_id)
        except Exception:  # noqa: BLE001 - not MLflow, or not this store
            pass

    t = threading.Thread(target=ask, daemon=True, name="hsc-ui-probe")
    t.start()
    t.join(timeout_s)
    return bool(found and found[0])


def _experiment_of(tracking_uri: Optional[str], run_id: str) -> Optional[str]:
    from .runs import client_for

    try:
        return client_for(tracking_uri).get_run(run_id).info.experiment_id
    except Exception:  # the hint is a nicety
        return None


def _report(outcome, tracking_uri: Optional[str], data: str) -> None:
    from .runs import outcome_label

    def word(kind: str) -> str:
        return outcome_label(kind, outcome.interrupted)

    counts: dict[str, int] = {}
    for r in outcome.rows:
        counts[word(r.outcome)] = counts.get(word(r.outcome), 0) + 1
    none = "none reported an epoch yet" if outcome.interrupted else "none"  # trials that started and were cut off
    said = [f"{v} {k}" for k, v in sorted(counts.items())]
    unstarted = (outcome.num_samples or 0) - len(outcome.rows)
    if outcome.interrupted and said and unstarted > 0:  # the interrupted search's other trials
        said.append(f"{unstarted} not started")
    typer.echo(f"\ntrials: {', '.join(said) or none}")
    if outcome.interrupted:  # a line of its own, to copy (it was in parentheses at the end of the counts)
        typer.echo(f"interrupted: `{resume_command(outcome.experiment_dir)}` continues it")
    if outcome.best is None:
        failed = sum(r.outcome == "failed" for r in outcome.rows)
        if outcome.rows and failed == len(outcome.rows):
            where = " and in its MLflow run's tag hsc.error" if outcome.parent_run_id else ""
            typer.echo(f"no trial produced a score: {'the' if failed == 1 else f'all {failed}'} "
                       f"trial{'s' * (failed != 1)} failed (each one's reason is above{where})")  # fmt: skip
        elif not outcome.interrupted:  # an interrupted search's trials may yet score: its lines above say so
            typer.echo("no trial produced a score")  # (it read as a failure after a Ctrl-C: a walkthrough)
    else:
        b = outcome.best
        from .runs import params_line

        own, resolved = params_line(b.params)
        so_far = " so far" if outcome.interrupted else ""  # the search has not ended: its best may still change
        epochs = f"{b.epochs} epoch{'s' * (b.epochs != 1)}"
        typer.echo(f"best trial{so_far}: {b.name} ({word(b.outcome)}, {epochs}) score {b.score:.4f}  {own}"
                   + (f"  (resolved on this data: {resolved})" if resolved else ""))
        if outcome.best_config_path is not None:
            typer.echo(f"best config: {shlex.quote(str(outcome.best_config_path))}")
            typer.echo(f"retrain:     {retrain_command(outcome.best_config_path, data)}")
    if getattr(outcome, "warm_line", None):  # did it better its source? (it named only its own best: a walkthrough)
        typer.echo(f"warm start:  {outcome.warm_line}")
    if getattr(outcome, "report_path", None) is not None:
        typer.echo(f"report:      {shlex.quote(str(outcome.report_path))}  (also in MLflow: the search run's artifact report.html)")
    if outcome.parent_run_id is not None:
        typer.echo(f"MLflow UI:   {_ui_hint(tracking_uri, _experiment_of(tracking_uri, outcome.parent_run_id), known_run=outcome.parent_run_id)}")
    typer.echo(f"folder:      {shlex.quote(str(outcome.experiment_dir))}")  # (not "experiment:", which --experiment
    # means in MLflow; quoted where a shell needs it: `resume` takes it, and a path with a space broke the paste)


@app.command(cls=_Command)
def run(
    config: Optional[Path] = typer.Option(None, "--config", help="Search config YAML with any of the settings "
                                          "below (flags override it; `set:` holds fixed trainer values), and two "
                                          "of its own: max_failures (Ray's retries of a trial whose worker died, "
                                          "2) and keep_checkpoints (per trial, 2)."),
    space: Optional[str] = typer.Option(None, help="Search space: a shipped one, " + "; ".join(
                                        f"{k} ({v})" for k, v in shipped_spaces().items())
                                        + "; or a YAML path. [default: quick]"),
    data: Optional[str] = typer.Option(None, help="Data: .h5 / .parquet path or synthetic:ave, synthetic:vegas "
                                       "(options: 'synthetic:ave?n_train=800'). [default: small synthetic AVE]"),
    num_samples: Optional[int] = typer.Option(None, help="Number of trials. [default: 8]"),
    max_epochs: Optional[int] = typer.Option(None, help="Epochs of a trial that ASHA never stops. [default: 6]"),
    scheduler: Optional[str] = typer.Option(None, help="asha (early stopping) or fifo (every trial runs to the end). "
                                            "[default: asha]"),
    grace_period: Optional[int] = typer.Option(None, help="ASHA: epochs before a trial can be stopped. [default: 1]"),
    reduction_factor: Optional[float] = typer.Option(None, help="ASHA: keep the top 1/N at each rung. [default: 2]"),
    max_concurrent: Optional[int] = typer.Option(None, help="Max trials at once (0 = as many as fit in the cluster when the "
                                          "search starts; on a cluster `ray up` started, at its largest). "
                                          "[default: 0]"),
    metric: Optional[str] = typer.Option(None, help="Objective. [default: val/map_avg]"),
    mode: Optional[str] = typer.Option(None, help="max or min. [default: max]"),
    experiment: Optional[str] = typer.Option(None, help="MLflow experiment name. [default: hsc-search]"),
    name: Optional[str] = typer.Option(None, help="Name of this search (folder under --storage, parent run name). "
                                       "[default: hsc-<date>-<time>, -2 where taken]"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI, e.g. http://head:5000 on a "
                                               "cluster. [default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here]"),
    storage: Optional[str] = typer.Option(None, help="Ray Tune storage path (shared by all nodes on a cluster). "
                                          "[default: ./ray_results]"),
    address: Optional[str] = typer.Option(None, help="Ray cluster address: host:port of its head, or auto (the "
                                          "cluster started on this machine); or RAY_ADDRESS. [default: "
                                          "a local Ray instance of its own]"),
    cpus_per_trial: Optional[float] = typer.Option(None, help="CPUs per trial. [default: 1]"),
    gpus_per_trial: Optional[float] = typer.Option(None, help="GPUs per trial, fractional (0.25 = four trials "
                                                   "share a GPU; they must fit in its memory together). [default: 0]"),
    seed: Optional[int] = typer.Option(None, help="Optuna TPE seed. [default: 0]"),
    checkpoint_every_s: Optional[float] = typer.Option(None, help="A trial reports to Ray with a checkpoint at "
                                                       "ASHA's rungs, after its last epoch, and after this many "
                                                       "seconds of training; a trial restarted after a failure "
                                                       "recomputes at most that much. [default: 30]"),
    warm_start: Optional[str] = typer.Option(None, "--warm-start", metavar="RUN_ID_OR_FOLDER", help="Start "
                                             "Optuna from an earlier search's trials: its parent run id (in "
                                             "--tracking-uri's store) or its folder (<storage>/<name>). Completed "
                                             "trials go in with their best value, ASHA-stopped ones as pruned, "
                                             "both with their per-epoch values; failed trials and trials outside "
                                             "this space are left out (the start line counts them). They do not "
                                             "count against --num-samples and are not run again; the trainer "
                                             "default is not enqueued again when it is among them and the source "
                                             "searched the same data (by its fingerprint: a copy elsewhere is the "
                                             "same, a file replaced in place is not) with the same fixed values "
                                             "and --max-epochs (each difference is said at the start). Same "
                                             "--metric and --mode required. [default: none]"),
    no_mlflow: bool = typer.Option(False, "--no-mlflow", help="Run without MLflow tracking (nothing to browse or "
                                   "export; for benchmarks and throwaway runs)."),
    set_: List[str] = typer.Option([], "--set", help=SET_HELP, metavar="KEY=VALUE"),
) -> None:
    """Run a search: Optuna samples, Ray Tune runs, ASHA stops weak trials, MLflow records everything."""
    try:  # these imports take a few seconds (torch): a Ctrl-C in them gets the same one line as in the pre-flight
        from trainer import ConfigError, DataError

        from .settings import SettingsError, load_settings
        from .space import SpaceError
        from .storage import StorageError
    except KeyboardInterrupt:
        _interrupted_at_setup()
    cli = dict(space=space, data=data, num_samples=num_samples, max_epochs=max_epochs, scheduler=scheduler,
               grace_period=grace_period, reduction_factor=reduction_factor, max_concurrent=max_concurrent,
               metric=metric, mode=mode, experiment=experiment, name=name, tracking_uri=tracking_uri,
               storage=storage, address=address, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
               seed=seed, checkpoint_every_s=checkpoint_every_s, warm_start=warm_start,
               mlflow=False if no_mlflow else None)  # fmt: skip
    try:  # before the driver's imports (Ray, MLflow, Optuna: another 5 s here): a typo costs torch's, no more
        settings = load_settings(config, cli, set_)
    except (SettingsError, SpaceError, ConfigError, DataError, FileNotFoundError, StorageError) as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _interrupted_at_setup()
    from trainer.config import repeated_sets

    for note in repeated_sets(set_):  # the last is used, as the trainer does (said: it was not, a walkthrough)
        typer.echo(f"note: {note}")
    if settings.config_empty:  # an empty config searched the defaults without a word (walkthrough II), as the
        # trainer says of its own empty --config
        typer.echo(f"note: --config {config} sets nothing (empty, or only comments): the default search runs, with "
                   "any flags on top")  # fmt: skip
    try:
        from .driver import SetupInterrupted, StoppedByDisk, TrackingIncomplete, TrackingUnavailable, run_search
        from .preflight import PreflightError
    except KeyboardInterrupt:
        _interrupted_at_setup()
    try:
        outcome = run_search(settings, echo=typer.echo)
    except (SettingsError, SpaceError, ConfigError, DataError, FileNotFoundError, PreflightError, StorageError) as e:
        _fail(str(e))
    except (TrackingIncomplete, TrackingUnavailable, StoppedByDisk) as e:  # the trials ran and their record is not
        _fail(str(e), code=1)  # complete (resume finishes it), the store failed as the search started, or a disk
        # refused a trial's write (resume continues it): exit 1
    except SetupInterrupted as e:
        _interrupted_at_setup(e.exp_dir, e.resumable, e.removed)
    except KeyboardInterrupt:  # while the search ended (Ray's last save after a first Ctrl-C, our records)
        from .driver import experiment_dir

        _interrupted_again(experiment_dir(settings))
    except Exception as e:  # noqa: BLE001 - a full disk is one line (`_disk_full`); anything else goes on

        def folder():
            from .driver import experiment_dir

            return experiment_dir(settings)

        _disk_full(e, folder)
    _report(outcome, settings.tracking_uri, settings.data)
    _exit_as(outcome)


@app.command(cls=_Command)
def resume(
    path: str = typer.Argument(..., metavar="FOLDER", help="The search's folder or URI (<storage>/<name>), printed "
                               "by `run`."),
    address: Optional[str] = typer.Option(None, help="Ray cluster address, if different from the original; local: "
                                          "a local Ray instance."),
    tracking_uri: Optional[str] = typer.Option(None, help="The MLflow store the search logged to, if it has moved "
                                               "since (e.g. sqlite:///new/place/mlflow.db). [default: the one in "
                                               "the search's record]"),
    data: Optional[str] = typer.Option(None, help="The search's data file, if it has moved since; it must hold the "
                                       "data the search started on (checked). [default: the one in the search's "
                                       "record]"),
) -> None:
    """Continue a search whose driver died (even by SIGKILL): unfinished trials resume from their last
    checkpoints, ASHA keeps its rung history, each trial keeps its one MLflow run."""
    path = path if "://" in path else os.path.expanduser(path)  # `~` after `=` or quoted: no shell expanded it
    # a Ctrl-C before the resume went on prints the command that continues it: by the folder's absolute path (it
    # printed the relative one as typed), with the flags given (a moved file is kept in the record only once
    # checked; pasted without --data, it looked for the old file: a walkthrough)
    from .commands import absolute_data_spec
    from .runs import resolved_tracking_uri

    uri_abs = tracking_uri and resolved_tracking_uri(tracking_uri)  # (a relative sqlite path, absolute: the review)
    data_abs = data and absolute_data_spec(data)
    again = [a for flag, v in (("--address", address), ("--tracking-uri", uri_abs), ("--data", data_abs)) if v
             for a in (flag, v)]  # fmt: skip
    shown = path if "://" in path else os.path.abspath(path)
    try:  # as in `run`
        from trainer import ConfigError, DataError

        from .driver import (NothingToResume, SearchRestoreFailed, SetupInterrupted, StoppedByDisk,
                             TrackingIncomplete, TrackingUnavailable, resume_search)
        from .preflight import PreflightError
        from .space import SpaceError
        from .storage import StorageError
    except KeyboardInterrupt:
        _interrupted_at_setup(shown, resumable=True, flags=again)
    try:
        outcome = resume_search(path, echo=typer.echo, address=address, tracking_uri=tracking_uri, data=data)
    except NothingToResume as e:  # not a mistake: the search is done (exit 0, as Ray's own restore of it would)
        typer.echo(str(e))
        raise typer.Exit(0)
    except SetupInterrupted as e:
        _interrupted_at_setup(e.exp_dir, e.resumable, e.removed, flags=again)
    except (PreflightError, StorageError, DataError, ConfigError, SpaceError, FileNotFoundError) as e:
        _fail(str(e))
    except (TrackingIncomplete, TrackingUnavailable, StoppedByDisk, SearchRestoreFailed) as e:
        _fail(str(e), code=1)
    except KeyboardInterrupt:
        _interrupted_again(shown)
    except Exception as e:  # noqa: BLE001 - as in `run`
        _disk_full(e, path)
    meta = _meta_of(path)
    _report(outcome, tracking_uri or meta.get("tracking_uri"), data_abs or meta["data"])
    _exit_as(outcome)


def _signal_exit() -> int:
    """130 after Ctrl-C, 143 after a SIGTERM (which a search takes as Ctrl-C: only once the driver module, which
    is not imported again here, has installed its handler)."""
    driver = sys.modules.get("hsc_search.driver")
    return driver.interrupted_exit_code() if driver is not None else 130


def _exit_as(outcome) -> None:
    """A search's exit status: 130 when interrupted (143 by SIGTERM), 1 when it ended and no trial produced a
    score (every trial failed: the reasons are in the lines above), else 0."""
    if outcome.interrupted:
        raise typer.Exit(_signal_exit())
    if outcome.best is None:
        raise typer.Exit(1)


def _interrupted_again(exp_dir) -> None:
    """A KeyboardInterrupt out of a search once Ray Tune has it (a Ctrl-C in its tail, or a second one while Tune
    was saving after the first): how to continue, exit 130."""
    from . import storage
    from .driver import BEST_CONFIG, META_FILE, STOPPED, _finished_at
    from .runs import REPORT_ARTIFACT

    def there(name: str) -> bool:
        try:
            return storage.exists(storage.join(str(exp_dir), name))
        except Exception:
            return False

    known = there(META_FILE)
    if known and _finished_at(str(exp_dir)):  # the Ctrl-C came after the last write
        typer.echo(f"interrupted as the search ended; it had finished and written everything (best config: "
                   f"{storage.join(str(exp_dir), BEST_CONFIG)})", err=True)  # fmt: skip
    elif known:
        written = [n.rstrip("/") for n in ("summary/", BEST_CONFIG, REPORT_ARTIFACT) if there(n.rstrip("/"))]
        what = (f"{' and '.join(written)} written, not all of the rest" if written else
                "before its summary, best config and report were written")  # fmt: skip
        # a second Ctrl-C while a stopped search wrote its records read as if its trials had all ended (a walkthrough)
        when = ("while the stopped search was writing its records" if STOPPED[0]
                else "while the search was ending")  # fmt: skip
        typer.echo(f"interrupted {when} ({what}); `{resume_command(exp_dir)}` "
                   + ("continues its trials and writes them" if STOPPED[0] else "finishes the search and writes them"),
                   err=True)  # fmt: skip
    else:  # cannot happen after a start (the record is written first); said plainly all the same
        typer.echo(f"interrupted; {exp_dir} holds no search", err=True)
    raise typer.Exit(_signal_exit())


def _interrupted_at_setup(exp_dir=None, resumable: bool = False, removed: bool = False, flags=()) -> None:
    """Ctrl-C before Ray Tune ran the search (the command's imports, the pre-flight, the set-up; the fields of a
    `SetupInterrupted`): what is left, in one line, exit 130 (as after a search's Ctrl-C). `flags`: a resume's
    own flags, which the command it prints repeats."""
    if resumable:
        command = resume_command(exp_dir) + "".join(f" {shlex.quote(f)}" for f in flags)
        typer.echo(f"interrupted while the search was resuming, before its trials went on: `{command}` continues it",
                   err=True)  # fmt: skip
        raise typer.Exit(_signal_exit())
    if removed:
        where = f" ({exp_dir} removed): the same command starts it again"
    elif exp_dir is not None:
        where = f"; {exp_dir} holds no trial: remove it to use its --name again"
    else:
        where = ": the same command starts it again"
    typer.echo(f"interrupted while the search was starting, before any trial ran{where}", err=True)
    raise typer.Exit(_signal_exit())


def _meta_of(path: Path) -> dict:
    import json

    from . import storage
    from .driver import META_FILE

    return json.loads(storage.read_text(storage.join(str(path), META_FILE)))["settings"]


@app.command("export-best")
def export_best_cmd(
    experiment: Optional[str] = typer.Option(None, help="MLflow experiment; with --run-id, the run's (checked). "
                                             "[default: hsc-search]"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI. [default: $MLFLOW_TRACKING_URI, "
                                               "else sqlite:///mlflow.db here]"),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="The search's parent run id. [default: the "
                                         "latest search in the experiment]"),
    metric: Optional[str] = typer.Option(None, help="Ranking metric; a trial scores its best epoch. [default: the "
                                         "search's --metric]"),
    mode: Optional[str] = typer.Option(None, help="max or min. [default: the search's --mode for its metric, else "
                                       "min for loss/ and time/ metrics, max for the others]"),
    out: Optional[Path] = typer.Option(None, help="The trainer config file to write (a file, not a folder); a .json "
                                       "name writes JSON. [default: best_config.yaml, or best_config.json with --json]"),
    json_: bool = typer.Option(False, "--json", help="Write JSON instead of YAML."),
) -> None:
    """Write the best trial's trainer config; `python -m trainer --config FILE` retrains from it as is."""
    from .export import ExportError, export_best
    from .runs import search_status

    _bounded_http_retries()

    out = _home(out)
    if out is None:
        out = Path("best_config.json" if json_ else "best_config.yaml")
    elif out.suffix.lower() == ".json":
        json_ = True
    elif json_ and out.suffix.lower() in (".yaml", ".yml"):
        _fail(f"--out {out} with --json: a .yaml name for JSON text; name it {out.with_suffix('.json')} or drop "
              "--json")  # fmt: skip
    try:
        path, best, metric, mode, search, notes = export_best(tracking_uri, experiment, out, parent_run_id=run_id,
                                                              metric=metric, mode=mode,
                                                              fmt="json" if json_ else "yaml")  # fmt: skip
    except ExportError as e:
        _fail(str(e))
    # with its parent run id: two searches of one name (other --storage folders) are told apart (a walkthrough)
    name = f" of search {search.info.run_name} (run {search.info.run_id})" if search is not None else ""
    from .runs import OUTCOME_LABELS

    typer.echo(f"best trial {best.name} ({OUTCOME_LABELS.get(best.outcome, best.outcome)}){name}: {metric} "
               f"{best.score:.4f} ({mode}) -> {path}")  # fmt: skip
    data = search.data.params.get("data") if search is not None else None
    if data:  # as `run` prints it (a YAML file's header says it too; a JSON file has no place for it)
        typer.echo(f"retrain: {retrain_command(path.resolve(), data)}")  # works from any folder, as the file's header
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    if run_id is None and search is not None:  # the latest search: on a team's store, maybe a colleague's
        _note_anothers(search)
    if search is not None and search_status(search) != "FINISHED":  # its best so far, which may still change
        from .searchlock import search_state
        from .runs import TAG_RAY_AUTH, client_for

        state, said = search_state(search.info.run_name, search.info.status, search.data.tags.get("hsc.experiment_dir"),
                                   search.info.run_id, lambda: search_status(client_for(tracking_uri).get_run(
                                       search.info.run_id)), search.data.tags.get(TAG_RAY_AUTH))  # fmt: skip
        if state == "ended":
            typer.echo(f"note: {said}: its last trials may have changed its best; export again", err=True)
        else:
            typer.echo(f"note: {said}; this is its best trial so far: export again when it has ended", err=True)


@app.command()
def report(
    run_id: Optional[str] = typer.Option(None, "--run-id", help="The search's parent run id. [default: the latest "
                                         "search in the experiment]"),
    experiment: Optional[str] = typer.Option(None, help="MLflow experiment; with --run-id, the run's (checked). "
                                             "[default: hsc-search]"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI. [default: $MLFLOW_TRACKING_URI, "
                                               "else sqlite:///mlflow.db here]"),
    out: Optional[Path] = typer.Option(None, help="The HTML file to write. [default: report.html in the search's "
                                       "folder when it is on this machine (beside best_config.yaml), else "
                                       "hsc_outputs/<name>/report.html]"),
    log: bool = typer.Option(True, "--log/--no-log", help="Also log it to the search's parent run as report.html "
                             "and mark the experiment as model training for the MLflow UI."),
) -> None:
    """Write a search's report: one interactive HTML file (learning curves with ASHA's rungs, best so far,
    parallel coordinates, parameter importance, the best trial's loss weights and canonical correlations, the
    trials). Works for any search in MLflow, also ones made before this command existed."""
    from .report import ReportError, report_search

    _bounded_http_retries()

    try:
        path, rec = report_search(tracking_uri, experiment, run_id, _home(out), log_to_run=log)
    except ReportError as e:
        _fail(str(e))
    typer.echo(f"report of search {rec.name} ({len(rec.trials)} trial{'s' * (len(rec.trials) != 1)}): {path}")
    if rec.said:  # a search that has not finished: as the report says it at its top (as export-best says it)
        typer.echo(f"note: {rec.said}", err=True)
    if log:  # the report's own page in MLflow (it said "-> Artifacts -> report.html" after the run's page); as `run`
        # says how to open the UI ($MLFLOW_TRACKING_URI's server; no password; `mlflow ui` of a store: the review)
        typer.echo(f"in MLflow:   {_ui_hint(tracking_uri, rec.experiment_id, rec.parent_run_id, 'report.html')}")


@app.command("team-server")
def team_server(
    data_dir: Path = typer.Option(..., "--data-dir", help="Folder that keeps the database (pgdata/) and the "
                                  "artifacts (artifacts/); created if missing, reused on every later start."),
    port: int = typer.Option(5000, help="Port of the MLflow server, on 127.0.0.1 only."),
    workers: int = typer.Option(2, help="MLflow server worker processes."),
    run_as: Optional[str] = typer.Option(None, "--run-as", help="Only as root: the account that runs PostgreSQL "
                                         "(which refuses root). [default: postgres, if that account exists]"),
) -> None:
    """Start a team MLflow tracking server on PostgreSQL, bound to 127.0.0.1 (colleagues use an SSH tunnel:
    ssh -N -L 5000:127.0.0.1:5000 you@this-box). Runs until Ctrl-C; see docs/team-server.md."""
    from .teamserver import TeamServerError, serve

    try:
        code = serve(data_dir, port=port, workers=workers, run_as=run_as, echo=typer.echo)
    except TeamServerError as e:
        _fail(str(e))
    raise typer.Exit(code)


@app.command("import-runs")
def import_runs(
    to: str = typer.Option(..., "--to", help="Destination tracking URI, e.g. the team server "
                           "http://127.0.0.1:5000 (through your SSH tunnel)."),
    from_: str = typer.Option("sqlite:///mlflow.db", "--from", help="Source tracking URI: the embedded default "
                              "of the folder you searched from."),
    experiment: List[str] = typer.Option([], "--experiment", metavar="NAME", help="Experiment to copy, repeatable. "
                                         "[default: every experiment]"),
) -> None:
    """Copy searches (runs, params, tags, full metric histories, artifacts, parent/child nesting, start and end
    times) from one MLflow store to another. Running it again copies only what is new."""
    from .transfer import TransferError, copy_searches

    _bounded_http_retries()

    try:
        report = copy_searches(from_, to, experiment or None, echo=typer.echo)
    except TransferError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        typer.echo("interrupted: the runs copied so far are kept; the same command copies the rest (a run cut "
                   "short is copied again)", err=True)  # fmt: skip
        raise typer.Exit(130)
    typer.echo(f"{report.copied} run(s) copied ({report.metric_points} metric points, {report.artifact_files} "
               f"artifact files), {report.skipped} already in {to}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})
def train(ctx: typer.Context) -> None:
    """Train one config with the trainer (all arguments go to `python -m trainer`; see its --help)."""
    from trainer.__main__ import main

    raise typer.Exit(main(list(ctx.args), prog="hsc-search train"))


@app.command("synth-data")
def synth_data(
    name: str = typer.Argument(..., metavar="NAME", help="ave or vegas (public sizes and dimensions by default)."),
    out: Path = typer.Argument(..., metavar="OUT", help="HDF5 file to write, named .h5 or .hdf5 (AVE/VEGAS feature "
                               "layout)."),
    set_: List[str] = typer.Option([], "--set", help="Generator option KEY=VALUE, e.g. n_train=800, mismatch=0.2.",
                              metavar="KEY=VALUE"),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists (by default an existing file is "
                               "kept and the command fails)."),
) -> None:
    """Write a synthetic benchmark dataset to an HDF5 file."""
    from trainer.synthetic import main

    argv = [name, str(_home(out))] + [a for s in set_ for a in ("--set", s)] + (["--force"] if force else [])
    raise typer.Exit(main(argv))


@app.command("replay")
def replay_cmd(
    run_id: Optional[str] = typer.Option(None, "--run-id", help="The search's parent run id in MLflow. [default: the "
                                         "latest search in the experiment]"),
    ray_dir: Optional[str] = typer.Option(None, "--ray-dir", help="Or the search's Ray results folder "
                                          "(<storage>/<name>, with a <trial_id>/result.json per trial)."),
    experiment: str = typer.Option("hsc-search", help="MLflow experiment (for the latest search)."),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI. [default: $MLFLOW_TRACKING_URI, "
                                               "else sqlite:///mlflow.db here]"),
    orders: int = typer.Option(200, help="Random orders of the recorded configs to replay each setting on."),
    seed: int = typer.Option(0, help="Seed of the orders (and of ASHA's bracket draws)."),
    concurrency: int = typer.Option(2, help="Trials at once, as --max-concurrent in a search."),
    tolerance: float = typer.Option(0.005, help="Epochs to best count until the best seen is within this of the "
                                    "best recorded score."),
    settings: List[str] = typer.Option([], "--settings", metavar="SPEC", help="A stopping rule to replay, "
                                       "repeatable (or several in one quoted, space-separated value): fifo, "
                                       "asha:grace=1,rf=2,brackets=1, hyperband:rf=3, median:grace=1,min_samples=3, "
                                       "oracle:grace=1 (a reference that knows the curves, not a rule). "
                                       "[default: FIFO, ASHA grace 1/2/3 x rf 2/3/4 and two 2-bracket ASHAs, "
                                       "HyperBand, median stopping, the oracle]"),
    json_out: Optional[Path] = typer.Option(None, "--json", metavar="OUT", help="Also write every figure, per "
                                            "order, to this JSON file."),
    timing: str = typer.Option("epoch", help="epoch: every epoch takes one unit of time; recorded: the trial's "
                               "recorded time/epoch_s."),
) -> None:
    """Replay the learning curves of a finished search (one that ran its trials to the end: FIFO) under other
    stopping rules, offline, over many random orders of the same configs: epochs trained, epochs until the best,
    best reached, per setting. What a replay cannot show: a sampler reacting to different results (the configs
    are the recorded ones; only the stopping decisions change). See docs/replay.md."""
    from .replay import ReplayError, render, run_replay, write_json

    _bounded_http_retries()

    specs = [s for value in settings for s in value.split()]
    json_out = _home(json_out)
    try:
        report = run_replay(run_id=run_id, ray_dir=ray_dir, experiment=experiment, tracking_uri=tracking_uri,
                            orders=orders, seed=seed, concurrency=concurrency, tolerance=tolerance, specs=specs,
                            json_out=json_out, timing=timing)  # fmt: skip
    except ReplayError as e:
        _fail(str(e))
    typer.echo(render(report))
    if json_out:
        try:
            write_json(report, json_out)
        except ReplayError as e:
            _fail(str(e))
        typer.echo(f"json: {json_out}")


def _exit_at_once_on_signal(code: int) -> None:
    """The command has done its work and only exits now: Ray's shutdown of the connection or of the search's local
    instance (at exit, up to seconds). A Ctrl-C there raised KeyboardInterrupt inside Ray's shutdown: a traceback
    and, one time in four, a segfault (exit 139). From here a Ctrl-C or SIGTERM ends the process at once with the
    command's own status; the local instance's watchdog ends what is left of Ray (`local_ray`)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def now(signum, frame) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a write the signal cut short: exit all the same
                pass
        os._exit(code)

    signal.signal(signal.SIGINT, now)
    signal.signal(signal.SIGTERM, now)


def main() -> None:
    """The `hsc-search` program (a test calls `app` through typer's CliRunner instead)."""
    try:
        os.getcwd()
    except FileNotFoundError:  # before torch is imported, whose MKL then says only "Cannot load libtorch_cpu.so"
        print("error: the working folder no longer exists (deleted by another shell?): cd to one that does",
              file=sys.stderr)  # fmt: skip
        sys.exit(2)
    # bytes that are not UTF-8 in a name or path (a file copied from an old system, latin-1): a traceback deep in
    # a path's use or in Ray's start (a walkthrough); said at once, by what holds them
    for what, text in [("the working folder", os.getcwd())] + [("the argument", a) for a in sys.argv[1:]]:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            shown = os.fsencode(text).decode("utf-8", "backslashreplace")
            print(f"error: {what} {shown} holds bytes that are not UTF-8 text; name it in UTF-8 (rename the file or "
                  "folder)", file=sys.stderr)  # fmt: skip
            sys.exit(2)
    from . import prefixed_log_lines, quiet_mlflow_database_errors

    quiet_mlflow_database_errors()
    prefixed_log_lines()
    try:
        app(prog_name="hsc-search")
    except SystemExit as e:  # always, in typer's standalone mode
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        _exit_at_once_on_signal(code)
        raise


if __name__ == "__main__":  # pragma: no cover
    main()
