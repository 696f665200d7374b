"""Search spaces: which trainer fields a search samples, and how (data, loaded and checked once).

A search space is a YAML file (`search_spaces/*.yaml`)::

    # free comments: cite where each range comes from
    description: one line, shown in `hsc-search run --help` for a shipped space
    fixed:            # optional: trainer config values applied to every trial (not searched)
      hidden_dim: 128
    params:           # searched, in this order (Optuna define-by-run order)
      lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
      mask_ratio: {type: float, low: 0.3, high: 0.8, step: 0.05}   # optional step
      topk: {type: int, low: 0, high: 10}                           # optional step or log
      distill: {type: categorical, choices: [none, relational, embedding]}
      w_distill: {type: float, low: 0.1, high: 2.0, when: {distill: [relational, embedding]}}
      logvar_floor: {type: float, low: -4.0, high: -1.0, when: {loss_weighting: learned}}

Rules (all checked by `load_space`, which reports every problem at once):

- Top-level keys: `description` (a string, optional), `fixed` (optional), `params` (required, non-empty).
- Every name under `fixed` and `params` is a field of `trainer.TrainConfig`. `epochs` is neither searched nor
  fixed here: it is the search's `--max-epochs` (ASHA's budget). A name is either fixed or searched, not both.
- `type: float | int | categorical`. float/int need `low <= high`; optional `log: true` (then `low > 0`) or
  `step: s > 0` (not both: Optuna refuses log with a step); int bounds and step are integers; a float step
  must divide `high - low`. categorical needs a non-empty list `choices` of distinct values.
  Numeric strings are accepted for numbers (YAML 1.1 reads `1e-4` as a string; write `1.0e-4` to get a float).
- The sampled values must fit the field's type: a float field takes `float`, `int` (whole values, e.g.
  warm-up epochs) or numeric choices; an int field takes `int` or integer choices; a bool field only
  `categorical` with true/false choices; a str field only `categorical` with strings (among the field's
  allowed values when it has them). Each endpoint and choice must also be a valid value of the field on its
  own (with `fixed` applied), e.g. `mask_ratio` high 1.0 is rejected because mask_ratio must be below 1.
- `when: {name: value or [values], ...}` makes a param conditional: it is suggested only when every entry holds
  (AND). `name` is a param searched EARLIER in the file or a `fixed` name; the values must be possible for it
  (among its choices / inside its range). A param whose condition fails is not suggested at all, so the trainer
  default applies (or the fixed value), and later conditions see that value.

Overrides (`load_space(path, overrides={...})`, e.g. the CLI's `--set key=value`) are extra fixed values,
applied over the file's `fixed`. An override of a searched name wins: the name is removed from `params` and
lands in `fixed`; conditions that referred to it now see the fixed value.

A space only suggests values (no computation, no I/O), so that Optuna and Ray Tune may call it as often as they
like; parameter names are the trainer field names, stable across runs, so trials of different searches compare.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import yaml

from trainer.config import ABOVE_ZERO, YAML_BOOL_HINT, YAML_BOOLEANS, ConfigError, TrainConfig, did_you_mean, quoted_bool
from trainer.yamlfile import load_yaml, wrong_kind, yaml_problem

if TYPE_CHECKING:  # pragma: no cover
    import optuna

__all__ = ["Param", "SearchSpace", "SpaceError", "load_space", "load_space_dict", "validate_sampled"]

TYPES = ("float", "int", "categorical")
TOP_KEYS = ("description", "fixed", "params")
_PARAM_KEYS = {
    "float": ("type", "low", "high", "log", "step", "when"),
    "int": ("type", "low", "high", "log", "step", "when"),
    "categorical": ("type", "choices", "when"),
}
_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_DEFAULTS = TrainConfig().to_dict()
_NOT_IN_SPACE = "epochs"  # the search's --max-epochs
_NOT_SEARCHED = {  # fields a space may fix but not search, and why
    "val_fraction": "val_fraction cannot be searched: it changes the validation split that trials are compared on "
    "(every trial of a search is scored on the same split); fix it under `fixed:` or with --set val_fraction=...",
}


class SpaceError(ValueError):
    """A search space is invalid: one line per problem, each naming the file, the parameter and what was expected.

    Attributes:
        problems: the lines of the message.
    """

    def __init__(self, problems: list[str] | str):
        from trainer.config import capped

        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__(capped("\n".join(self.problems)))


@dataclass(frozen=True)
class Param:
    """One searched trainer field.

    `when` maps earlier param (or fixed) names to the tuple of values under which this param is suggested;
    empty means unconditional.
    """

    name: str
    type: str  # 'float' | 'int' | 'categorical'
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple | None = None
    when: dict[str, tuple] = field(default_factory=dict)

    def holds(self, values: dict[str, Any]) -> bool:
        """Whether the condition holds for the current trainer values (sampled, fixed or default)."""
        return all(any(_matches(values.get(k), a) for a in allowed) for k, allowed in self.when.items())

    def suggest(self, trial: "optuna.trial.Trial") -> Any:
        """Asks the trial for this param's value (the only thing a space does with a trial)."""
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)
        if self.type == "int":
            return trial.suggest_int(self.name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_categorical(self.name, list(self.choices))

    def contains(self, value: Any) -> bool:
        """Whether `value` is one Optuna could sample (in range and on the step grid, or among the choices)."""
        if self.type == "categorical":
            return any(_same(value, c) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not self.low <= value <= self.high:
            return False
        if self.type == "int" and value != int(value):
            return False
        if self.step:
            k = (value - self.low) / self.step
            return abs(k - round(k)) < 1e-8
        return True

    def misses(self, value: Any) -> str:
        """How a value this parameter cannot sample misses it, said after the value: 0.05 in [0, 0.3] step 0.1
        was "outside the space" (a walkthrough)."""
        if self.type == "categorical":
            return "is not among the space's choices"
        if _is_number(value) and self.low <= value <= self.high:
            if self.step:
                return f"is not on the space's grid ({self.low:g} to {self.high:g} in steps of {self.step:g})"
            return "is not a whole number"  # an int parameter (a float one in range contains it)
        return f"is outside the space's range ({self.low:g} to {self.high:g})"

    def nearest(self, value: Any) -> Any:
        """The valid value nearest to `value`: clipped into [low, high] and snapped to the step grid; for
        categorical, `value` itself if it is a choice, else the numerically nearest choice (the first on a tie),
        or the first choice for non-numeric values."""
        if self.type == "categorical":
            for c in self.choices:
                if _same(value, c):
                    return c
            if _is_number(value) and all(_is_number(c) for c in self.choices):
                return min(self.choices, key=lambda c: abs(c - value))
            return self.choices[0]
        if self.contains(value):
            return int(value) if self.type == "int" else value
        v = min(max(float(value), self.low), self.high)
        if self.step:
            k = math.floor((self.high - self.low) / self.step + 1e-8)  # last grid point at or below high
            v = self.low + min(max(round((v - self.low) / self.step), 0), k) * self.step
            # drops float noise from low + k * step, staying in range (rounding low itself could fall below it)
            v = min(max(float(f"{v:.12g}"), self.low), self.high)
        if self.type == "int":
            return int(round(v))
        return v  # a clipped value is the bound itself (rounded, a low of 0.00119579855468xx fell below itself)

    def parse(self, text: str) -> Any:
        """A value of this param from its text as MLflow and Ray's params hold it (`str(value)`): a choice whose
        text (or number) it is, a float, or a whole number for int. ValueError if it is none of these."""
        if self.type == "categorical":
            for c in self.choices:
                if str(c) == text:
                    return c
            if all(_is_number(c) for c in self.choices):
                for c in self.choices:
                    if float(text) == c:  # ValueError for non-numbers
                        return c
            raise ValueError(f"not one of {list(self.choices)}")
        value = float(text)
        if not math.isfinite(value):
            raise ValueError("not finite")
        if self.type == "int":
            if value != int(value):
                raise ValueError("not a whole number")
            return int(value)
        return value

    def distribution(self) -> "optuna.distributions.BaseDistribution":
        """The Optuna distribution `suggest` asks with (what a trial added to a study must carry)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.type == "float":
            return FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)
        return CategoricalDistribution(list(self.choices))

    def to_spec(self) -> dict[str, Any]:
        """The YAML mapping this param was (or could have been) written as."""
        spec: dict[str, Any] = {"type": self.type}
        if self.type == "categorical":
            spec["choices"] = list(self.choices)
        else:
            spec["low"], spec["high"] = self.low, self.high
            if self.log:
                spec["log"] = True
            if self.step is not None:
                spec["step"] = self.step
        if self.when:
            spec["when"] = {k: list(v) for k, v in self.when.items()}
        return spec


class _DefineByRun:
    """The define-by-run function of a space: a module-level class, not a closure, because Ray's OptunaSearch
    saves its state (the function included) with plain `pickle` when the Tuner checkpoints the search."""

    def __init__(self, space: "SearchSpace"):
        self.space = space

    def __call__(self, trial: "optuna.trial.Trial") -> dict[str, Any]:
        values = {**_DEFAULTS, **self.space.fixed}
        out = dict(self.space.fixed)
        for p in self.space.params:
            if p.holds(values):
                values[p.name] = p.suggest(trial)
                if p.type == "int" and _kind(p.name) == "float":  # e.g. warmup_epochs in whole epochs: the trial's
                    out[p.name] = float(values[p.name])  # config (Ray's, MLflow's params) holds the float it trains
        # (a stepped float is Optuna's low + k * step, 0.6000000000000001 for 0.6: trained and recorded so, the
        # very number Optuna's study holds; cleaning it to the grid value made the record differ from the study)
        return out


@dataclass(frozen=True)
class SearchSpace:
    """A loaded, checked search space (see the module docstring for the file format)."""

    params: tuple[Param, ...]
    fixed: dict[str, Any]
    description: str = ""
    source: str = "<dict>"
    # params of the file that an override fixed, so they are not searched: name -> where the value came from
    unsearched: dict[str, str] = field(default_factory=dict)
    # values of the file's `fixed` that an override replaced with another: name -> the note the search's start says
    refixed: dict[str, str] = field(default_factory=dict)

    def names(self) -> list[str]:
        """The searched names, in suggestion order."""
        return [p.name for p in self.params]

    def define_by_run(self) -> Callable[["optuna.trial.Trial"], dict[str, Any]]:
        """The Optuna define-by-run function for `OptunaSearch(space=...)` or `study.ask()` trials.

        It suggests the params in file order with `trial.suggest_float/int/categorical` (log and step passed
        through), skipping those whose `when` fails, and returns a copy of the fixed values, which Ray's
        OptunaSearch merges into the trial config. Pure: no computation and no I/O; the same trial answers give
        the same calls. Picklable.
        """
        return _DefineByRun(self)

    def clashes(self, limit: int = 3) -> list[str]:
        """Values of two searched params that the trainer refuses together, each valid alone (`batch_size` 16 and
        `cca_dim` 32: "batch_size (16) must exceed cca_dim (32)"): a trial that draws both fails, and the search
        goes on, as with any failed trial; said at the start (a walkthrough: 4 of 6 trials failed that way, with
        no word before). Each param's ends (or choices) against the other's, over the fixed values and the
        trainer's defaults, where both params' conditions hold. At most `limit` lines, then how many more."""
        from trainer import TrainConfig

        defaults = TrainConfig().to_dict()
        searched = self.names()
        found: list[str] = []
        for i, a in enumerate(self.params):
            for b in self.params[i + 1:]:
                others = [n for n in searched if n not in (a.name, b.name)]
                for va in _ends(a):
                    for vb in _ends(b):
                        values = {**self.fixed, a.name: va, b.name: vb}
                        if not (a.holds({**defaults, **values}) and b.holds({**defaults, **values})):
                            continue
                        for line in _config_lines(values):
                            if _mentions(line, a.name) and _mentions(line, b.name) and \
                                    not any(_mentions(line, n) for n in others):  # fmt: skip
                                found.append(f"trials that draw {a.name} {va!r} with {b.name} {vb!r} fail: the trainer "
                                             f"says {line}")  # fmt: skip
        if len(found) > limit:
            found = [*found[:limit], f"and {len(found) - limit} more such pairs of values"]
        return found

    def unused_fixed(self) -> dict[str, str]:
        """Fixed values (the space's or --set's) the trainer never reads in this search: a field read only when
        another takes certain values (`trainer.config.USED_ONLY_WHEN`) whose other field is not searched and holds
        none of them (`--set weight_lr=0.02` with fixed loss weights was recorded and shown as if it mattered; a
        searched one was said: a walkthrough). Name -> what to say."""
        from trainer.config import USED_ONLY_WHEN

        searched = set(self.names())
        constant = {**_DEFAULTS, **self.fixed}
        out: dict[str, str] = {}
        for name, value in self.fixed.items():
            for parent, allowed in USED_ONLY_WHEN.get(name, ()):
                held = constant.get(parent)
                if parent not in searched and not _reads(allowed, held):
                    out[name] = (f"{name} is fixed at {value!r}, but the trainer reads it only when {parent} is "
                                 f"{_needs(allowed)}, and here {parent} is {held!r}: it changes nothing")
                    break
        return out

    def unused_by_trainer(self) -> dict[str, str]:
        """Searched params whose values change nothing in some or all trials: a field the trainer reads only when
        another takes certain values (`trainer.config.USED_ONLY_WHEN`) searched without a `when` that ensures
        them, and ranges of one value: name -> what to say."""
        from trainer.config import USED_ONLY_WHEN

        by_name = {p.name: p for p in self.params}
        out: dict[str, str] = {}
        for p in self.params:
            one = (p.choices if p.type == "categorical" else (p.low,) if p.low == p.high else None)
            if one is not None and len(set(one)) == 1 and not p.when:  # (under a `when`, one value sets it there)
                out[p.name] = f"{p.name} is searched over one value ({one[0]!r}): every trial gets it; fix it instead"
                continue
            said = [m for m in (self._unread_under(p, parent, allowed, by_name)
                                for parent, allowed in USED_ONLY_WHEN.get(p.name, ())) if m]  # fmt: skip
            if said:  # (a condition under which it is never read first: the others then do not matter)
                out[p.name] = next((m for m in said if m.endswith(NOTHING)), said[0])
        return out

    def _unread_under(self, p: "Param", parent: str, allowed: Any, by_name: dict) -> str | None:
        """What to say of searched `p` that the trainer reads only when `parent` holds `allowed`
        (`unused_by_trainer`), or None when every value `parent` can take in its trials reads it."""

        def ok(v: Any) -> bool:
            return _reads(allowed, v)

        src = by_name.get(parent)
        if parent in p.when:
            possible = list(p.when[parent])
        elif src is not None:
            possible = list(src.choices) if src.type == "categorical" else [src.low, src.high]  # the ends
            if src.when:  # where its own condition fails, it keeps the trainer default (or fixed value)
                possible.append({**_DEFAULTS, **self.fixed}.get(parent))
        else:
            possible = [{**_DEFAULTS, **self.fixed}.get(parent)]
        failing = sorted({repr(v) for v in possible if not ok(v)})
        if not failing:
            return None
        needs = _needs(allowed)
        values = ", ".join(failing)
        if len(failing) == len({repr(v) for v in possible}):
            return (f"{p.name} is searched, but the trainer reads it only when {parent} is {needs}, and here {parent} "
                    f"is {values}{NOTHING}")
        else:
            # the values the parent can take that read it (a value it cannot take is refused in a `when`)
            if src is not None and src.type == "categorical":
                takes: list | None = [c for c in src.choices if ok(c)]
            elif src is not None and src.type == "int" and src.high - max(1, src.low) < 20:
                takes = [v for v in range(src.low, src.high + 1, src.step or 1) if ok(v)]
            else:
                takes = None
            entry = f"{parent}: [{', '.join(map(str, takes))}]" if takes else None
            if entry is None and src is not None and src.type == "float" and not src.step and allowed == ABOVE_ZERO:
                add = f"raise {parent}'s low above 0 (a `when` cannot condition on a continuous range)"  # (a review:
                # the `when` suggested was refused)
            elif entry is None:
                add = (f"add a condition on {parent} to its `when` that keeps only values {needs}" if p.when else
                       f"add a `when` on {parent} to its spec that keeps only values {needs}")  # fmt: skip
            elif p.when:  # a second `when:` key would be a duplicate
                add = f"add `{entry}` to its `when`"
            else:
                add = f"add `when: {{{entry}}}` to its spec"
            return (f"{p.name} is searched, but the trainer reads it only when {parent} is {needs}: trials with {parent} "
                    f"{values} ignore it (their {p.name} changes nothing); {add}")  # fmt: skip

    def never_searched(self) -> dict[str, str]:
        """Params whose condition can never hold, because a param it refers to is fixed (by an override: the
        file's own fixed values are checked when it is read) or is itself never searched: name -> why."""
        constant = {**_DEFAULTS, **self.fixed}  # what a param that is not sampled takes
        live = {p.name for p in self.params}
        out: dict[str, str] = {}
        for p in self.params:
            for ref, allowed in p.when.items():
                if ref in live and ref not in out:
                    continue  # sampled: its domain was checked against `allowed` when the file was read
                if not any(_matches(constant.get(ref), a) for a in allowed):
                    how = f"fixed at {constant.get(ref)!r} by {self.unsearched[ref]}" if ref in self.unsearched else (
                        f"never searched, so it stays {constant.get(ref)!r}" if ref in out else
                        f"fixed at {constant.get(ref)!r}")  # fmt: skip
                    out[p.name] = f"its condition {ref} in {list(allowed)} never holds: {ref} is {how}"
                    live.discard(p.name)
                    break
        return out

    def defaults(self, resolved: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
        """The first trial: the trainer defaults (with `fixed` applied) of the searched params whose condition
        holds under them, and one note per param that could not take its trainer default.

        Args:
            resolved: the same defaults as the trainer resolves them for the search's data (auto fields such as
                cca_dim 0 filled in; `TrainConfig.resolve`). A default the space cannot express as written (an
                auto value outside the choices) is matched by its resolved value, so the trial trains exactly
                what the trainer default trains.

        A default still outside the space is clipped and snapped to the step grid, or becomes the nearest numeric
        choice, or the first choice (see `Param.nearest`), and a note says so. Later conditions see the value
        used. Meant for Ray's `points_to_evaluate`.
        """
        values = {**_DEFAULTS, **self.fixed}
        out: dict[str, Any] = {}
        notes: list[str] = []
        for p in self.params:
            if not p.holds(values):
                continue
            default = values[p.name]
            if p.contains(default):
                value = int(default) if p.type == "int" else default
            elif resolved is not None and p.contains(resolved.get(p.name)):
                value = resolved[p.name]
            else:
                asked = default if resolved is None else resolved.get(p.name, default)
                value = p.nearest(asked)
                trains = "" if resolved is None or resolved.get(p.name) == default else f" (trains as {resolved[p.name]!r})"
                notes.append(f"{p.name}={value!r}: the trainer default {default!r}{trains} {p.misses(asked)}")
            values[p.name] = out[p.name] = value
        return out, notes

    def match(self, recorded: dict[str, str]) -> tuple[dict[str, Any] | None, str]:
        """A recorded trial's searched params (as text, as MLflow holds them) read as values of this space: the
        params this space's define-by-run would have asked for under them (conditions applied in order), each one
        a value Optuna could sample here, and no other name. Returns (params, "") or (None, why not)."""
        values = {**_DEFAULTS, **self.fixed}
        out: dict[str, Any] = {}
        for p in self.params:
            if not p.holds(values):
                continue
            if p.name not in recorded:
                return None, f"no {p.name}"
            try:
                value = p.parse(recorded[p.name])
            except ValueError:
                return None, f"{p.name}={recorded[p.name]} is not {'an' if p.type == 'int' else 'a'} {p.type} value here"
            if not p.contains(value):
                between = p.type != "categorical" and p.step and p.low <= value <= p.high  # (said "outside" of
                # a value inside the range, between its grid points: a walkthrough)
                return None, f"{p.name}={recorded[p.name]} " + (f"off the grid {_bounds(p)}" if between
                                                                 else f"outside {_bounds(p)}")  # fmt: skip
            values[p.name] = out[p.name] = value
        # a name not searched here (fixed by --set, say) fits when the trial trained the value this search trains
        # (every trial was refused, those that had drawn it too: a walkthrough)
        extra = sorted(n for n in set(recorded) - set(out) if not _recorded_as(recorded[n], values.get(n)))
        other = [n for n in extra if n in values]
        if other:
            return None, "; ".join(f"{n}={recorded[n]} where this search trains {values[n]}" for n in other)
        if extra:
            return None, f"{', '.join(extra)} not searched here"
        return out, ""

    def to_dict(self) -> dict[str, Any]:
        """A YAML-able mapping that `load_space_dict` reads back to an equal space, but for the params that are
        never searched (`never_searched`: a condition that an override made false): they are left out, being
        never sampled, and their condition, on what the record holds as fixed, would be refused on reading (a
        search of quick with --set loss_weighting=fixed could then not be resumed, and without MLflow it wrote
        no best config).

        The order of `params` is the suggestion order: dump with `yaml.safe_dump(..., sort_keys=False)`.
        """
        never = self.never_searched()
        return {
            "description": self.description,
            "fixed": dict(self.fixed),
            "params": {p.name: p.to_spec() for p in self.params if p.name not in never},
        }


# ---------------------------------------------------------------------------------------------------- loading
def load_space(path: str | Path, *, overrides: dict[str, Any] | None = None,
               set_from: dict[str, str] | None = None) -> SearchSpace:  # fmt: skip
    """Reads and checks a search-space YAML file.

    Args:
        path: the file.
        overrides: extra fixed values (e.g. the CLI's `--set`); they win over the file's `fixed` and remove a
            searched name from `params`.
        set_from: where an override was given, for its messages ("<config>: set"); "--set" when not named.

    Raises:
        SpaceError: the file is missing, not YAML, not a mapping, or breaks any rule of the format (all problems
            in one message, one per line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SpaceError(f"{path}: cannot read search space file ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise SpaceError(f"{path}: not UTF-8 text (byte {e.start}); expected a YAML search space file") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as e:
        raise SpaceError(f"{path}: not valid YAML: {yaml_problem(e)}") from None
    return load_space_dict(data, source=str(path), overrides=overrides, set_from=set_from)


def load_space_dict(d: dict[str, Any], source: str = "<dict>", overrides: dict[str, Any] | None = None,
                    set_from: dict[str, str] | None = None) -> SearchSpace:  # fmt: skip
    """Checks a search space given as a mapping (the parsed YAML); see `load_space`."""
    if not isinstance(d, dict):
        got = "an empty file" if d is None else f"a {type(d).__name__}"
        raise SpaceError(f"{source}: expected a mapping with keys {', '.join(TOP_KEYS)} at the top level, got {got}")
    wrong = wrong_kind(source, d, "space")
    if wrong:
        raise SpaceError(wrong)
    bad = _Problems(source)

    for key in d:
        if key not in TOP_KEYS:
            near = difflib.get_close_matches(str(key), TOP_KEYS, n=1)
            bad(str(key), f"unknown top-level key; expected {', '.join(TOP_KEYS)}"
                + (f" (did you mean {near[0]!r}?)" if near else ""))  # fmt: skip
    description = d.get("description", "")
    if description is None:
        description = ""
    if not isinstance(description, str):
        bad("description", f"expected one line of text, got {description!r}")
        description = ""

    fixed = _read_fixed(d.get("fixed"), "fixed", bad)
    if overrides is not None and not isinstance(overrides, dict):
        bad("overrides", f"expected a mapping of field: value, got {type(overrides).__name__}")
        overrides = {}
    bad_set = _OverrideProblems(bad, overrides if isinstance(overrides, dict) else {}, set_from or {})
    override = _read_fixed(overrides, "override", bad_set)

    raw_params = d.get("params")
    if not isinstance(raw_params, dict) or not raw_params:
        bad("params", "expected a non-empty mapping of trainer field: {type: ..., ...}")
        raw_params = {}
    order = {str(name): i for i, name in enumerate(raw_params)}
    parsed: dict[str, Param | None] = {}
    for name, spec in raw_params.items():
        name = str(name)
        parsed[name] = _read_param(name, spec, fixed, bad)

    for i, (name, p) in enumerate(parsed.items()):
        if p is not None and p.when:
            parsed[name] = _check_when(p, i, order, parsed, fixed, bad, set_by_override=override)

    searched = [n for n in parsed if n not in override]
    _check_fixed_values({**fixed, **override}, searched, bad, override, bad_set)
    unsearched = {n: (set_from or {}).get(n, "--set") for n in parsed if n in override}
    # a param whose condition an override made false is never sampled: its values are not trained (ablation's
    # eval_embedding h, for use_nce off, is invalid with use_dcca fixed off, where use_nce stays on)
    never = SearchSpace(params=tuple(p for n, p in parsed.items() if p is not None and n not in override),
                        fixed={**fixed, **override}, unsearched=unsearched).never_searched()  # fmt: skip
    for name, p in parsed.items():
        if p is not None and name not in override and name not in never:  # an overridden param is not sampled
            _check_endpoints(p, {**fixed, **override}, searched, bad,
                             {n: _set_flag(n, override[n], set_from) for n in override})  # fmt: skip

    if bad.lines:
        raise SpaceError(bad.lines)
    params = tuple(p for n, p in parsed.items() if n not in override)
    # (an override of a fixed value was taken without a word: the space file read as what trained, a walkthrough)
    refixed = {n: (f"{_set_flag(n, override[n], set_from)} replaces the space's fixed {n}: {fixed[n]!r} "
                   f"({source}): every trial trains {override[n]!r}")
               for n in override if n in fixed and not _same(fixed[n], override[n])}  # fmt: skip
    return SearchSpace(params=params, fixed={**fixed, **override}, description=description.strip(), source=source,
                       unsearched=unsearched, refixed=refixed)  # fmt: skip


def validate_sampled(space: SearchSpace, params: dict[str, Any], epochs: int) -> TrainConfig:
    """The trainer config of one sampled trial: fixed values, then the sampled params, then `epochs`.

    Raises:
        ConfigError: the combination is invalid for the trainer (the message lists every problem).
    """
    return TrainConfig.from_dict({**space.fixed, **params, "epochs": epochs}, source=f"trial config of {space.source}")


# ---------------------------------------------------------------------------------------------------- helpers
class _Problems:
    """Collects problem lines `<source>: <where>: <what>`; `bad(where, msg)` adds one."""

    def __init__(self, source: str):
        self.source = source
        self.lines: list[str] = []

    def __call__(self, where: str, msg: str) -> None:
        self.lines.append(f"{self.source}: {where}: {msg}")

    def __len__(self) -> int:
        return len(self.lines)


class _OverrideProblems:
    """`bad(where, msg)` for the overrides: blames `--set name=value`, or the search config's `set:` where the
    value came from there (`set_from`), not the space file the overrides are applied to."""

    def __init__(self, bad: _Problems, overrides: dict[str, Any], set_from: dict[str, str]):
        self.bad, self.overrides, self.set_from = bad, overrides, set_from

    def __call__(self, where: str, msg: str) -> None:
        if "." not in where:
            self.bad.lines.append(f"--set: {msg}")
            return
        name = where.split(".", 1)[1]
        self.bad.lines.append(f"{_set_flag(name, self.overrides.get(name, ''), self.set_from)}: {msg}")


def _set_flag(name: str, value: Any, set_from: dict[str, str] | None) -> str:
    """How an override was given, as `_OverrideProblems` names it: `--set name=value`, or `<config>: set: name=value`."""
    where = (set_from or {}).get(name)
    return f"{where}: {name}={value}" if where else f"--set {name}={value}"


NOTHING = ": its values change nothing; fix it or leave it out"  # (unused_by_trainer)


def _reads(allowed: Any, value: Any) -> bool:
    """Whether the trainer reads a field when its other field (`trainer.config.USED_ONLY_WHEN`) holds `value`."""
    return _is_number(value) and value > 0 if allowed == ABOVE_ZERO else any(_matches(value, a) for a in allowed)


def _needs(allowed: Any) -> str:
    """The values of the other field under which the trainer reads a field, in words."""
    return "above 0" if allowed == ABOVE_ZERO else " or ".join(map(str, allowed))


# other libraries' distribution names, in this format's words (a walkthrough wrote `type: loguniform`)
OTHER_TYPES = {
    **dict.fromkeys(("loguniform", "log_uniform", "reciprocal", "qloguniform"), "type: float with log: true"),
    **dict.fromkeys(("uniform", "quniform", "discrete_uniform", "real", "continuous"), "type: float (step: for a grid)"),
    **dict.fromkeys(("randint", "qrandint", "int_uniform", "integer", "discrete"), "type: int (step: for a grid)"),
    **dict.fromkeys(("lograndint", "qlograndint", "int_log_uniform"), "type: int with log: true"),
    **dict.fromkeys(("choice", "choices", "grid_search", "grid", "categorical_choice", "enum"),
                    "type: categorical with choices: [...]"),
}  # fmt: skip


def _valid_names() -> str:
    return ", ".join(n for n in _FIELDS if n != _NOT_IN_SPACE)


def _name_problem(name: str) -> str | None:
    """Why `name` cannot appear in a space, or None."""
    if name == _NOT_IN_SPACE:
        return (
            "epochs cannot be searched or fixed in a search space: the search sets it from --max-epochs "
            "(ASHA's budget)"
        )
    if name not in _FIELDS:
        hint = did_you_mean(name, [n for n in _FIELDS if n != _NOT_IN_SPACE])
        return f"'{name}' is not a trainer config field{hint}; valid names: {_valid_names()}"
    return None


def _kind(name: str) -> str:
    t = _FIELDS[name].type
    return t if isinstance(t, str) else t.__name__


def _bounds(p: Param) -> str:
    if p.type == "categorical":
        return "{" + ", ".join(map(str, p.choices)) + "}"
    return f"[{p.low:g}, {p.high:g}]" + (f" step {p.step:g}" if p.step else "")


def _recorded_as(text: Any, value: Any) -> bool:
    """Whether a recorded param (text, as MLflow holds it, or a value from a Ray folder) is `value`: the same
    text, or for numbers the same number ("0.001" and 1e-3; "True" is not 1)."""
    if value is None:
        return False
    if str(text) == str(value):
        return True
    if isinstance(text, bool) or not _is_number(value):
        return False
    try:
        return _matches(float(text), value)
    except (TypeError, ValueError):
        return False


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _same(a: Any, b: Any) -> bool:
    """Equality that keeps true apart from 1."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _matches(value: Any, wanted: Any) -> bool:
    """A condition's value (`when:`) matches: `_same`, and for floats up to float rounding (Optuna returns 0.6 on
    a 0.1 step grid from 0.3 as 0.6000000000000001, which `when: {mask_ratio: [0.6]}` must match, as
    `Param.contains` accepts it)."""
    if _same(value, wanted):
        return True
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (value, wanted))
    return numbers and math.isclose(value, wanted, rel_tol=1e-9, abs_tol=1e-12)


def _number(v: Any) -> float | int:
    """A YAML number, or a numeric string (YAML 1.1 reads 1e-4 as a string)."""
    if _is_number(v):
        return v
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            pass
    raise TypeError(f"expected a number, got {v!r}")


def _integer(v: Any) -> int:
    try:
        n = _number(v)
    except TypeError:
        raise TypeError(f"expected an integer, got {v!r}") from None
    if isinstance(n, float) and not (math.isfinite(n) and n == int(n)):
        raise TypeError(f"expected an integer, got {v!r}")
    return int(n)


def _field_value(name: str, v: Any) -> Any:
    """`v` as a value of trainer field `name`, or TypeError saying what was expected."""
    kind = _kind(name)
    if kind == "bool":
        if isinstance(v, bool):
            return v
        raise TypeError(f"expected true or false, got {v!r}{quoted_bool(v)}")
    if kind == "int":
        return _integer(v)
    if kind == "float":
        n = _number(v)
        if not math.isfinite(n):
            raise TypeError(f"expected a finite number, got {v!r}")
        return float(n)
    allowed = _FIELDS[name].metadata.get("choices")
    if isinstance(v, bool) and allowed:  # as the trainer says it: quoting `on` would not make it a choice
        raise TypeError(f"expected one of {list(allowed)}, got {v!r} ({YAML_BOOLEANS})")
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {v!r}{YAML_BOOL_HINT if isinstance(v, bool) else ''}")
    if allowed and v not in allowed:
        raise TypeError(f"expected one of {list(allowed)}, got {v!r}")
    return v


def _read_fixed(raw: Any, where: str, bad: _Problems) -> dict[str, Any]:
    """Checks names and types of a `fixed` mapping (or of the overrides); returns the converted values."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        bad(where, f"expected a mapping of trainer field: value, got {type(raw).__name__}")
        return {}
    out = {}
    for name, value in raw.items():
        name = str(name)
        problem = _name_problem(name)
        if problem:
            bad(f"{where}.{name}", problem)
            continue
        try:
            out[name] = _field_value(name, value)
        except TypeError as e:
            bad(f"{where}.{name}", f"{e} (trainer field {name} is {_kind(name)})")
    return out


def _read_param(name: str, spec: Any, fixed: dict[str, Any], bad: _Problems) -> Param | None:
    """One entry of `params`, or None after reporting its problems."""
    where = f"params.{name}"
    problem = _name_problem(name)
    if problem:
        bad(where, problem)
        return None
    if name in _NOT_SEARCHED:
        bad(where, _NOT_SEARCHED[name])
        return None
    if name in fixed:
        bad(where, "is both fixed and searched; keep one (fixed wins only through an override such as --set)")
    if not isinstance(spec, dict):
        bad(where, f"expected a mapping like {{type: float, low: ..., high: ...}}, got {spec!r}")
        return None
    n_before = len(bad)
    kind = _kind(name)
    ptype = spec.get("type")
    if ptype is None:
        bad(where, f"missing 'type'; expected one of {', '.join(TYPES)}")
        return None
    if ptype not in TYPES:
        ours = OTHER_TYPES.get(str(ptype).lower().replace("-", "_"))  # Optuna's, Ray Tune's, hyperopt's names
        hint = f" (here: {ours})" if ours else ""
        bad(where, f"unknown type {ptype!r}{hint}; expected one of {', '.join(TYPES)}")
        return None
    for key in spec:
        if key not in _PARAM_KEYS[ptype]:
            near = difflib.get_close_matches(str(key), _PARAM_KEYS[ptype], n=1, cutoff=0.6)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            bad(where, f"unknown key '{key}' for type {ptype}{hint}; expected {', '.join(_PARAM_KEYS[ptype])}")

    allowed_types = {"float": ("float", "int", "categorical"), "int": ("int", "categorical")}.get(
        kind, ("categorical",)
    )
    if ptype not in allowed_types:
        bad(where, f"type {ptype} does not fit trainer field {name}, which is {kind}; use {' or '.join(allowed_types)}")
        return None

    when = _read_when(where, spec.get("when"), bad)
    if ptype == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            bad(where, "categorical needs a non-empty list 'choices'")
            return None
        values = []
        for c in choices:
            try:
                values.append(_field_value(name, c))
            except TypeError as e:
                bad(where, f"choice {c!r}: {e} (trainer field {name} is {kind})")
        if len(values) == len(choices):
            if len({(type(v), v) for v in values}) != len(values):
                bad(where, f"choices {choices} contain duplicates")
        if len(bad) > n_before:
            return None
        return Param(name=name, type="categorical", choices=tuple(values), when=when)

    read = _integer if ptype == "int" else _number
    got: dict[str, Any] = {}
    for key in ("low", "high", "step"):
        if key not in spec:
            if key != "step":
                bad(where, f"{ptype} needs '{key}'")
            continue
        try:
            got[key] = read(spec[key])
        except TypeError as e:
            bad(where, f"{key}: {e}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        bad(where, f"log: expected true or false, got {log!r}")
        log = False
    if len(bad) > n_before:
        return None
    low, high, step = got["low"], got["high"], got.get("step")
    if ptype == "float":
        low, high = float(low), float(high)
        step = None if step is None else float(step)
        if not (math.isfinite(low) and math.isfinite(high)):
            bad(where, f"low and high must be finite, got {low} and {high}")
    if low > high:
        bad(where, f"low ({low}) must not exceed high ({high})")
    if log and low <= 0:
        bad(where, f"log scale needs low > 0, got low={low}")
    if log and step is not None:
        bad(where, "log and step cannot be combined (Optuna refuses it); drop one")
    if step is not None:
        if step <= 0:
            bad(where, f"step must be > 0, got {step}")
        elif ptype == "float" and low <= high:
            k = (high - low) / step
            if abs(k - round(k)) > 1e-8:
                bad(where, f"step {step} does not divide high - low = {high - low:g}")
        elif ptype == "int" and low <= high and (high - low) % step:  # Optuna would search up to a lower high
            top = low + (high - low) // step * step
            bad(where, f"step {step} does not divide high - low = {high - low}; expected e.g. high: {top} "
                       f"(the largest value the step reaches) or high: {top + step}")
    if len(bad) > n_before:
        return None
    return Param(name=name, type=ptype, low=low, high=high, log=log, step=step, when=when)


def _read_when(where: str, raw: Any, bad: _Problems) -> dict[str, tuple]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not raw:
        bad(where, f"when: expected a mapping of earlier param: value or [values], got {raw!r}")
        return {}
    out = {}
    for ref, vals in raw.items():
        vals = tuple(vals) if isinstance(vals, (list, tuple)) else (vals,)
        if not vals:
            bad(where, f"when.{ref}: expected a value or a non-empty list of values")
            continue
        out[str(ref)] = vals
    return out


def _check_when(
    p: Param,
    index: int,
    order: dict[str, int],
    parsed: dict[str, Param | None],
    fixed: dict[str, Any],
    bad: _Problems,
    set_by_override: dict[str, Any] | None = None,
) -> Param:
    """Checks `p.when` against earlier params and the file's fixed values; returns `p` with converted values. A
    name that only an override (--set) fixes may be referred to too (it was refused as "neither searched nor
    fixed"); a condition it makes false is said at the start as never searched (`never_searched`), not refused."""
    overridden = set_by_override or {}
    fixed = {**fixed, **{k: v for k, v in overridden.items() if k not in fixed}}
    where = f"params.{p.name}"
    when = {}
    for ref, vals in p.when.items():
        if ref == p.name:
            bad(where, f"when refers to {p.name} itself; conditions may only refer to earlier params or fixed values")
            continue
        if ref in order and order[ref] > index:
            bad(
                where,
                f"when refers to '{ref}', which is searched later; conditions may only refer to params searched "
                f"before {p.name} (reorder params) or to fixed values",
            )
            continue
        if ref not in order and ref not in fixed:
            if ref in _FIELDS:
                why = f"'{ref}', which is neither searched before {p.name} nor fixed"
            else:
                why = f"unknown parameter '{ref}'"
            bad(where, f"when refers to {why}; earlier params: {', '.join(list(order)[:index]) or 'none'}")
            continue
        converted = []
        for v in vals:
            try:
                v = _field_value(ref, v) if ref in _FIELDS else v
            except TypeError as e:
                bad(where, f"when.{ref}: {e}")
                continue
            target = parsed.get(ref)
            if ref in order and target is not None and not target.contains(v):
                domain = (list(target.choices) if target.type == "categorical" else f"[{target.low}, {target.high}]"
                          + (f" step {target.step:g}" if target.step else ""))  # fmt: skip
                bad(where, f"when.{ref}: {v!r} can never be sampled for {ref} ({domain})")
            converted.append(v)
        target = parsed.get(ref)
        if ref in order and target is not None and target.type == "float" and not target.step and converted:
            # Optuna samples any float of a range without a step: a value condition practically never holds
            bad(where, f"when.{ref}: {ref} is a continuous range [{target.low}, {target.high}] without a step, so "
                       f"it is practically never exactly {', '.join(repr(v) for v in converted)}; condition on a "
                       "categorical or a stepped (step:) parameter")  # fmt: skip
        if (ref in fixed and ref not in order and ref not in overridden and converted
                and not any(_matches(fixed[ref], v) for v in converted)):  # fmt: skip
            bad(where, f"when.{ref}: never holds: {ref} is fixed to {fixed[ref]!r}, not one of {converted}")
        when[ref] = tuple(converted)
    return dataclasses.replace(p, when=when)


def _ends(p: Param) -> tuple:
    """The values of `p` a check tries: a categorical's choices, a range's ends."""
    return p.choices if p.type == "categorical" else (p.low, p.high) if p.low != p.high else (p.low,)


def _config_lines(values: dict[str, Any]) -> list[str]:
    """The trainer's problems with a config made of `values` over the defaults (empty when valid)."""
    try:
        TrainConfig.from_dict(values, source="@")
    except ConfigError as e:
        return [line.removeprefix("@: ") for line in str(e).splitlines()]
    return []


def _mentions(line: str, name: str) -> bool:
    return re.search(rf"\b{re.escape(name)}\b", line) is not None


def _check_fixed_values(fixed: dict[str, Any], searched: list[str], bad: _Problems, override: dict[str, Any],
                        bad_set: "_OverrideProblems") -> None:  # fmt: skip
    """The trainer's own checks on the fixed values (over the defaults). A problem that names a searched param
    may go away with its sampled value, so only problems that name none are reported here. A problem that names
    an override is blamed on it (`--set` or a search config's `set:`), not on the space file."""
    for line in _config_lines(fixed):
        if not any(_mentions(line, n) for n in searched):
            blamed = [k for k in override if _mentions(line, k)]
            if blamed:
                bad_set(f"override.{blamed[0]}", line)
            else:
                bad("fixed", line)


def _check_endpoints(p: Param, fixed: dict[str, Any], searched: list[str], bad: _Problems,
                     set_by: dict[str, str] | None = None) -> None:  # fmt: skip
    """Each endpoint (or choice) of `p` must be a valid trainer value with the fixed values and defaults. Only
    problems that name `p` and no other searched param are reported (the others depend on other samples). A
    problem that also names a value an override gave (`set_by`: name -> "--set name=value") says so: the file
    alone was blamed (`--set batch_size=16` against hsc_mae's cca_dim choices)."""
    candidates = p.choices if p.type == "categorical" else (p.low, p.high)
    others = [n for n in searched if n != p.name]
    seen = set()
    for v in candidates:
        for line in _config_lines({**fixed, p.name: v}):
            if _mentions(line, p.name) and not any(_mentions(line, n) for n in others) and line not in seen:
                seen.add(line)
                label = "choice" if p.type == "categorical" else ("low" if v == p.low else "high")
                given = [how for name, how in (set_by or {}).items() if name != p.name and _mentions(line, name)]
                bad(f"params.{p.name}", f"{label} {v!r} is not a valid {p.name}: {line}"
                    + (f" (with {', '.join(given)})" if given else ""))  # fmt: skip
