"""Search settings: what `hsc-search run` takes, from flags or a search config file, validated once."""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from trainer.config import _FLOAT as FLOAT_TEXT
from trainer.config import parse_overrides, quoted_bool
from trainer.yamlfile import load_yaml, wrong_kind, yaml_problem

from .runs import without_password

from .shipped import SPACES_DIR  # noqa: E402 (the shipped spaces' folder)
DEFAULT_DATA = "synthetic:ave?n_train=1000&n_val=200&n_test=300&dim_audio=32&dim_visual=48&num_classes=10"


class SettingsError(ValueError):
    """Invalid search settings; the message lists every problem (the first 20: `trainer.config.capped`)."""

    def __init__(self, message: str):
        from trainer.config import capped

        self.problems = str(message).split("\n")  # (as ConfigError and SpaceError keep theirs)
        super().__init__(capped(str(message)))


MAX_TRIALS = 100_000  # per search (Ray Tune holds every trial object in the driver)
MAX_EPOCHS = 1_000_000


def address_form_problem(address: str) -> str | None:
    """What is wrong with the form of a Ray cluster address (host:port of a head, `auto` or `local`), None if
    nothing: said before Ray is imported or dialled (`preflight.check_address` then checks a head answers)."""
    if address in ("auto", "local"):
        return None
    if address.startswith("ray://"):  # Ray Client: not installed (ray[client]), and a driver runs on the head
        return ("Ray Client (ray://) is not supported: it needs ray[client], which hsc-search does not install, and "
                "the search's driver runs on the head itself; run it there with --address auto (README, \"On a "
                "cluster\")")  # fmt: skip
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in address:
        return "expected host:port of a Ray head node (ray start --head prints it, e.g. 10.0.0.5:6379), or auto"
    return None


@dataclass
class SearchSettings:
    """Everything a search needs. Field names double as the keys of a search config file."""

    space: str = "quick"  # a shipped space name (search_spaces/<name>.yaml) or a path
    data: str = DEFAULT_DATA  # a data spec for trainer.load_data
    num_samples: int = 8  # trials
    max_epochs: int = 6  # full budget per trial (ASHA's max_t)
    scheduler: str = "asha"  # asha | fifo
    grace_period: int = 1  # ASHA: epochs before a trial can be stopped
    reduction_factor: float = 2.0  # ASHA: keep the top 1/reduction_factor at each rung
    max_concurrent: int = 0  # 0 = as many as fit in the cluster's CPUs/GPUs when the search starts
    metric: str = "val/map_avg"
    mode: str = "max"
    experiment: str = "hsc-search"  # MLflow experiment
    name: str | None = None  # the search's name: Ray experiment folder and MLflow parent run (default: timestamp)
    tracking_uri: str | None = None  # None: MLflow's default (sqlite:///mlflow.db in the working directory)
    mlflow: bool = True  # False: no tracking (benchmarks, throwaway runs); no runs to browse or export
    storage: str | None = None  # Ray Tune storage path; None: ./ray_results. Shared (NFS or a URI) on clusters
    address: str | None = None  # Ray cluster address; None: RAY_ADDRESS or a local Ray instance
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0  # fractional: 0.25 lets four trials share a GPU
    seed: int = 0  # Optuna TPE seed
    max_failures: int = 2  # retries of a failed trial, from its last checkpoint
    keep_checkpoints: int = 2
    checkpoint_every_s: float = 30.0  # a trial also reports (with a checkpoint) after this much training since its last
    warm_start: str | None = None  # an earlier search (parent run id in the tracking store, or its folder) whose
    # trials the Optuna study starts with (hsc_search/warm_start.py); None: a cold start
    overrides: dict[str, Any] = field(default_factory=dict)  # fixed trainer values (--set key=value)
    # where each override was given, for messages: "--set" (the default) or "<config>: set" (load_settings
    # sets it per instance; not a setting, not recorded)
    set_from: ClassVar[dict[str, str]] = {}
    # where each setting was given, for messages: "--num-samples" (a flag), "search.yaml: num_samples" (a file)
    given_by: ClassVar[dict[str, str]] = {}
    config_file: ClassVar[str | None] = None  # the search config file the settings were read from (per instance)
    config_empty: ClassVar[bool] = False  # that file set nothing (empty, or only comments): said by `run`
    built_in_python: ClassVar[bool] = True  # not read by load_settings (flags and files): overrides are typed here

    def _beside_config(self, key: str, value: str) -> tuple[Path, Path] | None:
        """(the file in the working directory, the one beside the config file) for a relative path a search config
        gave (`space:`, `data:`, `warm_start:`), when the config's folder is not the working directory and holds a
        file or folder of that path; None otherwise. A relative path is read from the working directory, so
        `space: sp.yaml` in ../A/cfg.yaml searched ./sp.yaml, another space, without a word (a walkthrough)."""
        given = self.given_by.get(key, "")
        if not self.config_file or not given or given.startswith("--") or not value:
            return None
        if value.startswith("synthetic:") or "://" in value or Path(os.path.expanduser(value)).is_absolute():
            return None
        folder = Path(self.config_file).resolve().parent
        if folder == Path.cwd().resolve() or not (folder / value).exists():
            return None
        return Path(value).resolve(), folder / value

    def validate(self) -> "SearchSettings":
        p = []

        def n(key: str) -> str:  # the flag or the config file's key the value came from
            return self.given_by.get(key, key)

        # each value of its type: a settings object built in Python is typed by no parser (num_samples="4" was a
        # TypeError below, mlflow="false" turned MLflow on: a walkthrough); ints given as 2.0 become 2
        wrong = []
        for f in dataclasses.fields(self):
            value = _plain(getattr(self, f.name))
            if f.name == "overrides" or f.type == "float" and isinstance(value, float) and not math.isfinite(value):
                continue  # (a non-finite number of a float setting is said below, by what it must be)
            try:
                setattr(self, f.name, _typed(f.name, value))
            except TypeError as e:
                wrong.append(f"{n(f.name)}: {e}")
        if not isinstance(self.overrides, dict):
            wrong.append(f"overrides: expected a mapping of trainer field: value, got {self.overrides!r}")
        elif self.built_in_python:  # text for a number or a boolean, as num_samples="4" is (a walkthrough:
            # overrides={"use_dcca": "false"} was told to unquote it in a YAML file under --set's name, and
            # {"hidden_dim": "48"} was taken as 48 without a word); --set and a config's set: are typed as read
            from trainer.config import TrainConfig

            kinds = {f.name: getattr(f.type, "__name__", f.type) for f in dataclasses.fields(TrainConfig)}
            expected = {"bool": "True or False", "int": "an integer", "float": "a number"}
            wrong += [f"overrides: {k}: expected {expected[kinds[k]]}, got {v!r} (text; give the value itself)"
                      for k, v in self.overrides.items() if isinstance(v, str) and kinds.get(k) in expected]
        if wrong:
            named = tuple(self.given_by.values())
            raise SettingsError("\n".join(m if named and m.startswith(named) else f"search settings: {m}"
                                          for m in wrong))  # fmt: skip

        if self.num_samples < 1:
            p.append(f"{n('num_samples')} must be >= 1, got {self.num_samples}")
        elif self.num_samples > MAX_TRIALS:  # 1e9 was taken in silence (beyond int64 too); Ray holds every trial
            p.append(f"{n('num_samples')} must be at most {MAX_TRIALS:,}, got {self.num_samples:,}: a search keeps "
                     "every trial in the driver's memory and one MLflow run each; run several searches (a warm "
                     "start carries one's trials into the next)")  # fmt: skip
        if self.max_epochs < 1:
            p.append(f"{n('max_epochs')} must be >= 1, got {self.max_epochs}")
        elif self.max_epochs > MAX_EPOCHS:
            p.append(f"{n('max_epochs')} must be at most {MAX_EPOCHS:,}, got {self.max_epochs:,}")
        if self.scheduler not in ("asha", "fifo"):
            p.append(f"{n('scheduler')} must be asha or fifo, got {self.scheduler!r}")
        if self.max_epochs < 1:  # said above; the grace period is checked on its own
            if self.grace_period < 1:
                p.append(f"{n('grace_period')} must be >= 1, got {self.grace_period}")
        elif not 1 <= self.grace_period <= self.max_epochs:
            p.append(f"{n('grace_period')} must be in [1, {n('max_epochs').rsplit(': ', 1)[-1]} {self.max_epochs}], "
                     f"got {self.grace_period}")  # (the bracket named the file too: "[1, c.yaml: max_epochs 2]")
        if not (math.isfinite(self.reduction_factor) and self.reduction_factor > 1):
            p.append(f"{n('reduction_factor')} must be a finite number > 1, got {self.reduction_factor}")
        if self.mode not in ("max", "min"):
            p.append(f"{n('mode')} must be max or min, got {self.mode!r}")
        if not (math.isfinite(self.cpus_per_trial) and self.cpus_per_trial > 0):  # nan passed every comparison
            p.append(f"{n('cpus_per_trial')} must be a finite number > 0, got {self.cpus_per_trial}")
        if not (math.isfinite(self.gpus_per_trial) and self.gpus_per_trial >= 0):
            p.append(f"{n('gpus_per_trial')} must be a finite number >= 0, got {self.gpus_per_trial}")
        if self.max_concurrent < 0:
            p.append(f"{n('max_concurrent')} must be >= 0, got {self.max_concurrent}")
        if not (self.checkpoint_every_s > 0 and math.isfinite(self.checkpoint_every_s)):  # (inf: a search config
            # refused it, the flag and Python not: the review)
            p.append(f"{n('checkpoint_every_s')} must be a finite number > 0, got {self.checkpoint_every_s}")
        if self.max_failures < 0:
            p.append(f"{n('max_failures')} must be >= 0, got {self.max_failures}")
        if self.keep_checkpoints < 1:
            p.append(f"{n('keep_checkpoints')} must be >= 1, got {self.keep_checkpoints}")
        if not 0 <= self.seed <= 2**32 - 1:  # Optuna's samplers take numpy seeds
            p.append(f"{n('seed')} must be in [0, 2**32 - 1], got {self.seed}")
        if not self.experiment.strip():
            p.append(f"{n('experiment')} must be an MLflow experiment name, got an empty string")
        if self.name is not None:
            why = name_problem(self.name)
            if why:
                p.append(f"{n('name')} {self.name!r}: {why}")
        if self.storage is not None and not self.storage.strip():  # Ray would take it for ./ray_results silently
            p.append(f"{n('storage')} must be a folder or a URI for the search's results, got an empty string (leave "
                     "it out for ./ray_results)")  # fmt: skip
        if self.tracking_uri is not None and not self.tracking_uri.strip():
            p.append(f"{n('tracking_uri')} must be an MLflow tracking URI, got an empty string (leave it out for "
                     "MLflow's default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")  # fmt: skip
        if self.address is not None:  # its form here, before the imports of Ray (seconds); whether a head answers
            # at it, in the pre-flight
            why = address_form_problem(self.address)
            if not self.address.strip():  # (the pre-flight took it for a local instance)
                p.append(f"{n('address')} must be a Ray cluster address, got {self.address!r} (--address local for a "
                         "local Ray instance)")  # fmt: skip
            elif why:
                p.append(f"{n('address')} {self.address}: {why}")
        if self.warm_start is not None and not self.warm_start.strip():
            p.append(f"{n('warm_start')} must be a parent run id or a search folder, got an empty string")
        said = set()
        for key in ("space", "data", "warm_start"):  # a relative path that names two files: the one meant is asked
            value = getattr(self, key)
            if key == "space" and self.space_path().parent == SPACES_DIR:
                continue  # a shipped space by its name
            both = self._beside_config(key, value or "")
            if both is None:
                continue
            here, beside = both
            if here.exists() and not os.path.samefile(here, beside):
                p.append(f"{n(key)} {value!r}: names two paths, {here} (a relative path is read from the working "
                         f"directory) and {beside} (beside the config file); give the one you mean by its "
                         "absolute path")  # fmt: skip
            elif not here.exists():  # (said here, in place of "not found" with no word of the file beside it)
                p.append(f"{n(key)} {value!r}: not in the working directory ({Path.cwd()}), where a relative path is "
                         f"read from; the config file's folder has {beside}: give its absolute path")  # fmt: skip
                said.add(key)
        if "space" not in said and not self.space_path().exists():
            shipped = sorted(f.stem for f in SPACES_DIR.glob("*.yaml"))
            near = difflib.get_close_matches(self.space, shipped, n=1)
            relative = ("/" in self.space or self.space.endswith((".yaml", ".yml"))) and not Path(self.space).is_absolute()
            # a file of that name with the extension left off (a walkthrough: `--space myspace` for myspace.yaml)
            with_ext = next((f"{self.space}{x}" for x in (".yaml", ".yml") if Path(f"{self.space}{x}").is_file()), None)
            p.append(f"{n('space')} {self.space!r}: neither a shipped space ({', '.join(shipped)}"
                     + (f"; did you mean {near[0]!r}?" if near else "") + ") nor a file"
                     + (f"; did you mean {with_ext!r}?" if with_ext else "")
                     + (f" (a relative path is read from the working directory, {os.getcwd()})" if relative else ""))  # fmt: skip
        given = self.given_by.get("data", "")
        local = Path(os.path.expanduser(self.data or ""))
        if self.data and given and not given.startswith("--") and not self.data.startswith("synthetic:") and \
                "://" not in self.data and not local.is_absolute() and not local.exists() and \
                "data" not in said:
            # read from the working directory, not beside the config file: the trainer's "file not found" said
            # neither where it looked from nor that the path came from a file (a walkthrough)
            p.append(f"{given} {self.data!r}: file not found (a relative path is read from the working directory, "
                     f"{os.getcwd()}, not the config file's folder)")  # fmt: skip
        if "epochs" in self.overrides:
            how = f"set epochs in {self.set_from['epochs'][:-len(': set')]}" if "epochs" in self.set_from else "--set epochs"
            p.append(f"do not {how}: the search's budget is --max-epochs (max_epochs in a search config)")
        if p:
            named = tuple(self.given_by.values())  # a message that names its flag or file needs no prefix
            raise SettingsError("\n".join(m if named and m.startswith(named) else f"search settings: {m}" for m in p))
        return self

    def unused(self) -> list[str]:
        """Settings that were given but will not act, or that look reversed: said at the start of a search (not
        errors: the search runs as asked)."""
        out, default = [], SearchSettings()
        if self.scheduler == "fifo":
            moved = [f"{k} {getattr(self, k):g}" for k in ("grace_period", "reduction_factor")
                     if getattr(self, k) != getattr(default, k)]  # fmt: skip
            if moved:
                out.append(f"{' and '.join(moved)}: ASHA's settings, not used with scheduler fifo")
        if not self.mlflow and self.tracking_uri is not None:
            out.append(f"tracking_uri {without_password(self.tracking_uri)}: not used, MLflow is off (--no-mlflow)")
        expected = usual_mode(self.metric)
        if expected is not None and self.mode != expected:
            out.append(f"mode {self.mode} with metric {self.metric}: the search ranks the "
                       f"{'highest' if self.mode == 'max' else 'lowest'} {self.metric} best; "
                       f"--mode {expected} is the usual choice")  # fmt: skip
        return out

    def space_path(self) -> Path:
        """A shipped space by name, or a file path."""
        candidate = SPACES_DIR / f"{self.space}.yaml"
        if "/" not in self.space and not self.space.endswith((".yaml", ".yml")) and candidate.exists():
            return candidate
        return Path(self.space)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


UNKNOWN_SHOWN = 10  # a search config's unknown keys named in its message; the rest counted


def _unknown_hint(key: str, valid: list[str]) -> str:
    """What to say of an unknown key of a search config: the setting it nearly is (`schedulr`: scheduler; `--max-epochs`
    spelled as a flag: max_epochs), or, for a trainer field, that those go under `set:` (`lr: 0.01` beside the
    search settings was told only the list of valid settings; a walkthrough)."""
    from trainer.config import TrainConfig, did_you_mean

    near = did_you_mean(key.lstrip("-").replace("-", "_"), valid)  # " (did you mean 'x'?)"
    if near:
        return f"{key}: {near[2:-1]}"
    if key in {f.name for f in dataclasses.fields(TrainConfig)}:
        return f"{key} is a trainer field: fixed trainer values go under set:, e.g. set: {{{key}: ...}}"
    return ""


def load_settings(path: str | Path | None, cli: dict[str, Any], overrides: list[str]) -> SearchSettings:
    """Settings from a search config file (optional), then CLI values that were given (not None) on top."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    values_given = False
    if path is not None:
        path = Path(path)
        try:
            values = load_yaml(path.read_text(encoding="utf-8")) or {}
        except OSError as e:
            raise SettingsError(f"{path}: cannot read search config ({e.strerror})") from None
        except UnicodeDecodeError as e:
            raise SettingsError(f"{path}: not UTF-8 text (byte {e.start}); expected a YAML search config") from None
        except yaml.YAMLError as e:
            raise SettingsError(f"{path}: not valid YAML: {yaml_problem(e)}") from None
        if not isinstance(values, dict):
            raise SettingsError(f"{path}: expected a mapping of setting: value")
        values_given = bool(values)
        wrong = wrong_kind(path, values, "search")
        if wrong:
            raise SettingsError(wrong)
        if "overrides" in values:  # the field's name, not a key: it would be dropped beside `set:`
            raise SettingsError(f"{path}: overrides: not a key of a search config; fixed trainer values go under "
                                "set: (the file's --set)")  # fmt: skip
        if "set" in values:  # the file's spelling of --set
            values["overrides"] = values.pop("set")
        valid = {f.name for f in dataclasses.fields(SearchSettings)} - {"overrides"}
        unknown = sorted(set(values) - valid - {"overrides"}, key=str)  # (`on:` is a YAML boolean key)
        if unknown:  # said with the known keys' problems below, all at once
            hint = " (--no-mlflow is mlflow: false)" if any(str(k).lstrip("-") in ("no_mlflow", "no-mlflow")
                                                             for k in unknown) else ""  # fmt: skip
            shown = unknown[:UNKNOWN_SHOWN]  # (500 unknown keys were one line of 4,000 characters)
            hints = [h for k in shown if str(k).lstrip("-") not in ("no_mlflow", "no-mlflow")  # (said above)
                     and (h := _unknown_hint(str(k), sorted(valid | {"set"})))]  # (`on:` is a boolean key)
            hint += f" ({'; '.join(hints)})" if hints else ""
            more = f" and {len(unknown) - len(shown)} more" if len(unknown) > len(shown) else ""
            problems.append(f"{path}: unknown settings {shown}{more}{hint}; valid: {', '.join(sorted(valid))} "
                            "(and 'set' for fixed trainer values)")  # fmt: skip
            dropped = set(unknown)  # (a list: quadratic in 40,000 keys)
            values = {k: v for k, v in values.items() if k not in dropped}
        if not isinstance(values.get("overrides", {}), dict):
            problems.append(f"{path}: 'set' must be a mapping of trainer field: value")
            values["overrides"] = {}
    source = str(path) if path is not None else None
    for key, value in list(values.items()):
        if key != "overrides":
            try:
                values[key] = _typed(key, value)
            except TypeError as e:
                problems.append(f"{source}: {key}: {e}")
    if problems:  # said with the names under `set:` that are no trainer field (they were said at the next run)
        from .space import _name_problem

        for k, v in (values.get("overrides") or {}).items():
            if str(k) == "epochs":  # as it is said alone (it was told that a search *space* cannot fix it: a review)
                problems.append(f"{source}: set: epochs={v}: do not set epochs: the search's budget is max_epochs "
                                "(--max-epochs)")  # fmt: skip
            elif (problem := _name_problem(str(k))) is not None:
                problems.append(f"{source}: set: {k}={v}: {problem}")
        raise SettingsError("\n".join(problems))
    values.update({k: v for k, v in cli.items() if v is not None})
    from_file, from_flags = values.get("overrides", {}), parse_overrides(overrides)
    # `set: {tau: 4e-1}`: YAML 1.1 reads 4e-1 as text; read as --set reads it (the parent run recorded the text)
    from_file = {k: float(v) if isinstance(v, str) and FLOAT_TEXT.fullmatch(v.strip()) else v
                 for k, v in from_file.items()}  # fmt: skip
    values["overrides"] = {**from_file, **from_flags}
    settings = SearchSettings(**values)
    settings.set_from = {str(k): f"{source}: set" for k in from_file if k not in from_flags}
    settings.config_file = source
    settings.config_empty = path is not None and not values_given
    settings.built_in_python = False
    settings.given_by = {**{k: f"{source}: {k}" for k in values if k != "overrides"},
                         **{k: FLAGS.get(k, "--" + k.replace("_", "-")) for k, v in cli.items() if v is not None}}
    return settings.validate()


def usual_mode(metric: str) -> str | None:
    """The direction in which a metric is better: min for loss/ and time/ metrics, max for val/ and cca/ ones,
    None for others (the start notes a reversed --mode by it; export-best ranks by it when given no --mode)."""
    return "min" if metric.startswith(("loss/", "time/")) else "max" if metric.startswith(("val/", "cca/")) else None


FLAGS = {"mlflow": "--no-mlflow"}  # a setting whose flag is not --<its name with dashes>


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a search (its folder under the storage path, its MLflow parent run), or None."""
    if not name.strip():
        return "expected a non-empty name"
    if "/" in name or "\\" in name or name in (".", "..") or name != name.strip():
        return ("expected one folder name: no '/' or '\\', not '.' or '..', no spaces around it (it names the "
                "search's folder under the storage path)")
    if any(c < " " or c == "\x7f" for c in name):  # a newline split every printed path
        return "expected a name without control characters (newlines, tabs)"
    if len(name.encode()) > 200:  # file systems take 255 bytes a name; the trial folders' names are longer
        return f"expected a name of at most 200 bytes (this one has {len(name.encode())}): it names a folder"
    return None


_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def _plain(value: Any) -> Any:
    """A value as Python's own type: a path as its text, numpy's integers, floats and bools as int, float, bool (a
    notebook's values: `num_samples=np.int64(4)`, `storage=Path(...)` were refused; the review)."""
    import numbers

    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_"):  # numpy's (no Integral)
        return bool(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, int)):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, int, float)):
        return float(value)
    return value


def _typed(key: str, value: Any) -> Any:
    """A search config file's value as the type of setting `key` (int accepts 2.0, float accepts 2, a str or
    None setting accepts null); TypeError saying what was expected."""
    kind = {f.name: f.type for f in dataclasses.fields(SearchSettings)}[key]
    optional = kind.endswith("| None")
    base = _TYPES[kind.split("|")[0].strip()]
    if value is None and optional:
        return None
    if base is bool:
        if isinstance(value, bool):
            return value
        raise TypeError(f"expected true or false, got {value!r}{quoted_bool(value)}")
    if base in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TypeError(f"expected {'an integer' if base is int else 'a number'}, got {value!r}")
        if base is int and value != int(value):
            raise TypeError(f"expected an integer, got {value!r}")
        return base(value)
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value
