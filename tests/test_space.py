"""Search spaces: every shipped file loads and samples valid configs; bad files fail with clear messages."""

from __future__ import annotations

import pickle
from pathlib import Path

import optuna
import pytest
import yaml

from hsc_search.space import Param, SearchSpace, SpaceError, load_space, load_space_dict, validate_sampled
from trainer.config import ConfigError, TrainConfig

SPACES_DIR = Path(__file__).resolve().parents[1] / "search_spaces"
SHIPPED = sorted(SPACES_DIR.glob("*.yaml"))
DEFAULTS = TrainConfig().to_dict()

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _sample(space: SearchSpace, n: int, seed: int) -> list[tuple[dict, dict]]:
    """(suggested params, returned dict) of n trials of a seeded random-sampler study."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed), direction="maximize")
    fn = space.define_by_run()
    out = []
    for _ in range(n):
        trial = study.ask()
        returned = fn(trial)
        out.append((dict(trial.params), returned))
        study.tell(trial, 0.0)
    return out


def _in_domain(p: Param, v) -> bool:
    """Checked here independently of Param.contains."""
    if p.type == "categorical":
        return any(type(v) is type(c) and v == c for c in p.choices)
    if p.type == "int" and type(v) is not int:
        return False
    if not p.low <= v <= p.high:
        return False
    if p.step:
        k = (v - p.low) / p.step
        return abs(k - round(k)) < 1e-8
    return True


def _write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _error(tmp_path: Path, text: str) -> str:
    path = _write(tmp_path, text)
    with pytest.raises(SpaceError) as info:
        load_space(path)
    message = str(info.value)
    for line in message.splitlines():
        assert line.startswith(f"{path}: "), line  # every problem names the file
    return message


# ------------------------------------------------------------------------------------------- shipped spaces
def test_the_three_spaces_are_shipped():
    assert {p.name for p in SHIPPED} >= {"quick.yaml", "hsc_mae.yaml", "ablation.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_space_samples_valid_configs(path):
    space = load_space(path)
    assert space.source == str(path)
    assert space.description and "\n" not in space.description
    assert "epochs" not in space.names() and "epochs" not in space.fixed
    seen_with, seen_without = set(), set()
    for params, returned in _sample(space, 30, seed=1):
        assert returned == space.fixed
        cfg = validate_sampled(space, params, epochs=5)
        assert cfg.epochs == 5
        for name, value in space.fixed.items():
            if name not in params:
                assert getattr(cfg, name) == value
        # conditional params appear exactly when their condition holds (on sampled, fixed or default values)
        values = {**DEFAULTS, **space.fixed}
        for p in space.params:
            holds = all(values[ref] in allowed for ref, allowed in p.when.items())
            assert (p.name in params) == holds, (p.name, params)
            if holds:
                assert _in_domain(p, params[p.name]), (p.name, params[p.name])
                assert getattr(cfg, p.name) == params[p.name]
                values[p.name] = params[p.name]
                seen_with.add(p.name)
            else:
                seen_without.add(p.name)
        assert set(params) <= set(space.names())
    # every param was sampled, and every conditional one was also skipped at least once
    assert seen_with == set(space.names())
    assert seen_without == {p.name for p in space.params if p.when}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_space_defaults_validate_and_lie_in_range(path):
    space = load_space(path)
    defaults = space.defaults()[0]
    validate_sampled(space, defaults, epochs=5)
    values = {**DEFAULTS, **space.fixed}
    for p in space.params:
        holds = all(values[ref] in allowed for ref, allowed in p.when.items())
        assert (p.name in defaults) == holds
        if holds:
            assert _in_domain(p, defaults[p.name])
            values[p.name] = defaults[p.name]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_space_round_trips_through_yaml(path):
    space = load_space(path)
    back = load_space_dict(yaml.safe_load(yaml.safe_dump(space.to_dict(), sort_keys=False)), source="copy")
    assert (back.params, back.fixed, back.description) == (space.params, space.fixed, space.description)


def test_shipped_ranges_cite_a_source():
    """STYLE.md: each range says where it came from: every param line has a comment, or directly follows a
    comment (possibly shared by a group of consecutive param lines)."""

    def is_param(line: str) -> bool:
        return line.startswith("  ") and not line.lstrip().startswith("#") and ":" in line

    for path in SHIPPED:
        lines = path.read_text().splitlines()
        start = lines.index("params:")
        for i in range(start + 1, len(lines)):
            if is_param(lines[i]) and "#" not in lines[i]:
                j = i - 1
                while is_param(lines[j]):
                    j -= 1
                assert lines[j].lstrip().startswith("#"), f"{path.name}: no comment for {lines[i]!r}"


def test_quick_space_is_small():
    space = load_space(SPACES_DIR / "quick.yaml")
    assert space.fixed["hidden_dim"] <= 128 and space.fixed["batch_size"] <= 256
    assert 3 <= len(space.names()) <= 6
    assert any(p.when for p in space.params)


def test_ablation_never_samples_a_config_without_a_loss():
    """... nor one judged on a head no loss trains: the DCCA-only combinations were judged on the contrastive head
    z, a random projection there (a walkthrough: their mAP was a random MLP's of the encoder output); the trainer
    now refuses that config, and the space judges them on DCCA's head h."""
    space = load_space(SPACES_DIR / "ablation.yaml")
    loss_sets, heads = set(), set()
    for params, _ in _sample(space, 200, seed=3):
        cfg = validate_sampled(space, params, epochs=1)
        loss_sets.add(tuple(n for n in cfg.active_losses() if n != "distill"))
        z_trained = bool({"nce", "distill"} & set(cfg.active_losses()))
        assert cfg.eval_embedding == ("z" if z_trained else "h"), (params, cfg.active_losses())
        heads.add(cfg.eval_embedding)
    assert heads == {"z", "h"}
    # the six documented loss sets, reconstruction alone excluded
    assert loss_sets == {
        ("rec", "dcca", "nce"), ("dcca", "nce"), ("rec", "nce"), ("rec", "dcca"), ("nce",), ("dcca",)
    }


# ------------------------------------------------------------------------------------------- define-by-run
def test_define_by_run_is_deterministic_and_returns_the_fixed_values():
    space = load_space(SPACES_DIR / "hsc_mae.yaml")
    a = _sample(space, 10, seed=7)
    b = _sample(space, 10, seed=7)
    c = _sample(space, 10, seed=8)
    assert [p for p, _ in a] == [p for p, _ in b]
    assert [p for p, _ in a] != [p for p, _ in c]
    quick = load_space(SPACES_DIR / "quick.yaml")
    returned = quick.define_by_run()(optuna.create_study().ask())
    assert returned == quick.fixed and returned
    returned["hidden_dim"] = 1  # a copy: the caller cannot change the space
    assert quick.fixed["hidden_dim"] != 1


class _RecordingTrial:
    """Only the suggest_* methods; answers with the low end or the first choice, and records every call."""

    def __init__(self):
        self.calls = []

    def suggest_float(self, name, low, high, *, step=None, log=False):
        self.calls.append(("float", name, low, high, step, log))
        return low

    def suggest_int(self, name, low, high, *, step=1, log=False):
        self.calls.append(("int", name, low, high, step, log))
        return low

    def suggest_categorical(self, name, choices):
        self.calls.append(("categorical", name, tuple(choices)))
        return choices[0]


def test_define_by_run_passes_log_and_step_through_in_order():
    space = load_space(SPACES_DIR / "quick.yaml")
    trial = _RecordingTrial()
    space.define_by_run()(trial)
    assert trial.calls == [
        ("float", "lr", 3e-4, 1e-2, None, True),
        ("float", "mask_ratio", 0.3, 0.8, 0.1, False),
        ("int", "topk", 0, 8, 1, False),
        ("float", "tau", 0.1, 1.0, None, True),
        ("categorical", "loss_weighting", ("learned", "fixed")),
        ("float", "weight_lr", 1e-3, 5e-2, None, True),  # loss_weighting answered 'learned'
    ]


def test_define_by_run_is_picklable():
    """Ray's OptunaSearch.save pickles its space with plain pickle when the Tuner checkpoints the search."""
    space = load_space(SPACES_DIR / "quick.yaml")
    fn = pickle.loads(pickle.dumps(space.define_by_run()))
    trial = _RecordingTrial()
    assert fn(trial) == space.fixed
    assert [c[1] for c in trial.calls] == space.names()


def test_condition_on_a_fixed_value_and_chained_conditions():
    space = load_space_dict(
        {
            "fixed": {"loss_weighting": "fixed"},
            "params": {
                "distill": {"type": "categorical", "choices": ["none", "relational"]},
                "w_distill": {
                    "type": "float",
                    "low": 0.1,
                    "high": 2.0,
                    "when": {"loss_weighting": "fixed", "distill": "relational"},
                },
                "logvar_floor": {"type": "float", "low": -4.0, "high": -1.0, "when": {"distill": ["none"]}},
            },
        }
    )
    for params, _ in _sample(space, 20, seed=0):
        assert ("w_distill" in params) == (params["distill"] == "relational")
        assert ("logvar_floor" in params) == (params["distill"] == "none")


def test_defaults_snap_into_range_and_skip_failed_conditions():
    space = load_space_dict(
        {
            "fixed": {"loss_weighting": "fixed"},
            "params": {
                "lr": {"type": "float", "low": 2.0e-3, "high": 3.0e-3, "log": True},  # default 1e-3 below
                "mask_ratio": {"type": "float", "low": 0.55, "high": 0.85, "step": 0.1},  # 0.5 -> 0.55
                "topk": {"type": "int", "low": 6, "high": 10, "step": 2},  # 5 -> 6
                "batch_size": {"type": "categorical", "choices": [192, 512]},  # 256 -> nearest 192
                "distill": {"type": "categorical", "choices": ["relational", "embedding"]},  # none -> first
                "w_distill": {"type": "float", "low": 0.1, "high": 2.0, "when": {"distill": "relational"}},
                "weight_lr": {"type": "float", "low": 1.0e-3, "high": 5.0e-2, "when": {"distill": "embedding"}},
            },
        }
    )
    d = space.defaults()[0]
    expected = {"lr": 2e-3, "mask_ratio": 0.55, "topk": 6, "batch_size": 192, "distill": "relational", "w_distill": 1.0}
    assert d == expected
    validate_sampled(space, d, epochs=1)
    # a bound with more than 12 significant digits: the default clipped to it is the bound, inside the space (it
    # was rounded to 12 digits, below the bound: the first trial trained a value outside its own space)
    low = 0.0011957985546849999
    space = load_space_dict({"params": {"lr": {"type": "float", "low": low, "high": 0.01, "log": True},
                                        "mask_ratio": {"type": "float", "low": 0.1 + 1e-13, "high": 0.9, "step": 0.1}}})
    d = space.defaults()[0]
    assert d["lr"] == low and all(p.contains(d[p.name]) for p in space.params), d


def test_validate_sampled_reports_trainer_problems():
    space = load_space_dict({"params": {"topk": {"type": "int", "low": 0, "high": 8}}, "fixed": {"batch_size": 16}})
    assert validate_sampled(space, {"topk": 3}, epochs=2).batch_size == 16
    with pytest.raises(ConfigError, match="topk"):
        validate_sampled(space, {"topk": 20}, epochs=2)  # not reachable by sampling, but checked all the same


# ------------------------------------------------------------------------------------------- overrides
def test_override_of_a_searched_name_moves_it_to_fixed():
    path = SPACES_DIR / "quick.yaml"
    space = load_space(path, overrides={"lr": "2e-3", "loss_weighting": "fixed", "seed": 3})
    assert "lr" not in space.names() and "loss_weighting" not in space.names()
    assert space.unsearched == {"lr": "--set", "loss_weighting": "--set"}  # said when the search starts
    assert load_space(path, overrides={"lr": 1e-3}, set_from={"lr": "s.yaml: set"}).unsearched == {"lr": "s.yaml: set"}
    assert load_space(path).unsearched == {}
    assert space.fixed["lr"] == 2e-3 and type(space.fixed["lr"]) is float
    assert space.fixed["loss_weighting"] == "fixed" and space.fixed["seed"] == 3
    assert space.fixed["hidden_dim"] == load_space(path).fixed["hidden_dim"]
    for params, returned in _sample(space, 10, seed=0):
        assert "weight_lr" not in params  # its condition now sees the fixed 'fixed'
        assert returned["lr"] == 2e-3
        assert validate_sampled(space, params, epochs=1).lr == 2e-3
    assert "weight_lr" not in space.defaults()[0]


def test_override_wins_over_the_files_fixed_value_and_is_checked():
    path = SPACES_DIR / "quick.yaml"
    assert load_space(path, overrides={"hidden_dim": 32}).fixed["hidden_dim"] == 32
    # a batch of 8 is fine once topk (searched up to 8, which must stay below the batch) is fixed too
    assert load_space(path, overrides={"batch_size": 8, "topk": 2}).fixed["batch_size"] == 8
    with pytest.raises(SpaceError, match=r"params.topk: high 8 is not a valid topk: topk \(8\) must be below batch_size"):
        load_space(path, overrides={"batch_size": 8})
    with pytest.raises(SpaceError) as info:
        load_space(path, overrides={"epochs": 3, "hiden_dim": 32, "batch_size": "many"})
    message = str(info.value)
    assert "--max-epochs" in message and "hiden_dim" in message and "hidden_dim" in message
    assert "batch_size" in message and "expected an integer" in message
    # the overrides' own mistakes are blamed on --set (or a config's set:), never on the space file
    lines = message.splitlines()
    assert any(ln.startswith("--set hiden_dim=32: ") and "did you mean 'hidden_dim'" in ln for ln in lines), lines
    assert any(ln.startswith("--set batch_size=many: expected an integer") for ln in lines), lines
    assert not any(ln.startswith(str(path)) and ("hiden_dim" in ln or "many" in ln) for ln in lines), lines


# ------------------------------------------------------------------------------------------- bad spaces
def test_unknown_name(tmp_path):
    message = _error(tmp_path, "params:\n  mask_ration: {type: float, low: 0.3, high: 0.8}\n")
    assert "mask_ration" in message and "did you mean 'mask_ratio'" in message
    assert "valid names:" in message and "lr" in message and "tau_teacher" in message


def test_low_above_high(tmp_path):
    message = _error(tmp_path, "params:\n  lr: {type: float, low: 1.0e-2, high: 1.0e-3, log: true}\n")
    assert "params.lr" in message and "low (0.01) must not exceed high (0.001)" in message


def test_wrong_and_unknown_types(tmp_path):
    message = _error(
        tmp_path,
        "params:\n"
        "  topk: {type: float, low: 0, high: 5}\n"
        "  tau: {type: bogus, low: 0.1, high: 0.2}\n"
        "  use_rec: {type: int, low: 0, high: 1}\n"
        "  mask_ratio: {low: 0.1, high: 0.2}\n",
    )
    assert "params.topk: type float does not fit trainer field topk, which is int" in message
    assert "params.tau: unknown type 'bogus'" in message
    assert "params.use_rec: type int does not fit trainer field use_rec, which is bool; use categorical" in message
    assert "params.mask_ratio: missing 'type'" in message


def test_conditions_on_unknown_later_or_self(tmp_path):
    message = _error(
        tmp_path,
        "params:\n"
        "  w_distill: {type: float, low: 0.1, high: 2.0, when: {distill: relational}}\n"
        "  distill: {type: categorical, choices: [none, relational]}\n"
        "  tau: {type: float, low: 0.05, high: 0.3, when: {bogus_param: 1}}\n"
        "  topk: {type: int, low: 0, high: 5, when: {topk: 3}}\n"
        "  lr: {type: float, low: 1.0e-4, high: 1.0e-3, when: {weight_lr: 0.01}}\n",
    )
    assert "params.w_distill: when refers to 'distill', which is searched later" in message
    assert "params.tau: when refers to unknown parameter 'bogus_param'" in message
    assert "params.topk: when refers to topk itself" in message
    assert "params.lr: when refers to 'weight_lr', which is neither searched before lr nor fixed" in message


def test_impossible_condition_values(tmp_path):
    message = _error(
        tmp_path,
        "fixed: {loss_weighting: fixed}\n"
        "params:\n"
        "  distill: {type: categorical, choices: [none, relational]}\n"
        "  topk: {type: int, low: 0, high: 5}\n"
        "  w_distill: {type: float, low: 0.1, high: 2.0, when: {distill: embedding}}\n"
        "  tau_teacher: {type: float, low: 0.01, high: 0.2, when: {topk: [3, 7]}}\n"
        "  weight_lr: {type: float, low: 1.0e-3, high: 5.0e-2, when: {loss_weighting: learned}}\n"
        "  self_weight: {type: float, low: 0.5, high: 0.9, when: {distill: bogus}}\n",
    )
    assert "params.w_distill: when.distill: 'embedding' can never be sampled for distill" in message
    assert "params.tau_teacher: when.topk: 7 can never be sampled for topk ([0, 5])" in message
    assert "params.weight_lr: when.loss_weighting: never holds: loss_weighting is fixed to 'fixed'" in message
    assert "params.self_weight: when.distill: expected one of ['none', 'relational', 'embedding'], got 'bogus'" in (
        message
    )


def test_log_with_low_zero_and_log_with_step(tmp_path):
    message = _error(
        tmp_path,
        "params:\n"
        "  weight_decay: {type: float, low: 0.0, high: 0.2, log: true}\n"
        "  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true, step: 1.0e-4}\n",
    )
    assert "params.weight_decay: log scale needs low > 0, got low=0.0" in message
    assert "params.lr: log and step cannot be combined" in message


def test_categorical_without_choices_and_with_wrong_choice_types(tmp_path):
    message = _error(
        tmp_path,
        "params:\n"
        "  distill: {type: categorical}\n"
        "  loss_weighting: {type: categorical, choices: []}\n"
        "  use_rec: {type: categorical, choices: [1, 0]}\n"
        "  use_dcca: {type: categorical, choices: ['true', false]}\n"
        "  eval_model: {type: categorical, choices: [teacher, ema]}\n"
        "  batch_size: {type: categorical, choices: [128, 256.5]}\n"
        "  tau: {type: categorical, choices: [0.1, 0.1]}\n",
    )
    assert "params.distill: categorical needs a non-empty list 'choices'" in message
    assert "params.loss_weighting: categorical needs a non-empty list 'choices'" in message
    assert "params.use_rec: choice 1: expected true or false" in message
    # a boolean in quotes is text to YAML: said (only the quotes hinted it: a walkthrough)
    assert "params.use_dcca: choice 'true': expected true or false, got 'true' (text, not a boolean: in a YAML file, " \
        "write it without quotes)" in message, message  # fmt: skip
    assert "params.eval_model: choice 'ema': expected one of ['teacher', 'student']" in message
    assert "params.batch_size: choice 256.5: expected an integer" in message
    assert "params.tau: choices [0.1, 0.1] contain duplicates" in message


def test_int_bounds_steps_and_unknown_param_keys(tmp_path):
    message = _error(
        tmp_path,
        "params:\n"
        "  topk: {type: int, low: 0, high: 5.5}\n"
        "  seq_layers: {type: int, low: 1, high: 4, step: 0.5}\n"
        "  mask_ratio: {type: float, low: 0.3, hihg: 0.8}\n"
        "  tau: {type: float, low: 0.05, high: 0.3, step: 0.1}\n"
        "  hidden_dim: {type: int, low: 0, high: 8, step: 3}\n",  # Optuna searched 0-6, with a warning
    )
    assert "params.hidden_dim: step 3 does not divide high - low = 8; expected e.g. high: 6" in message
    assert "params.topk: high: expected an integer, got 5.5" in message
    assert "params.seq_layers: step: expected an integer, got 0.5" in message
    assert "params.mask_ratio: unknown key 'hihg' for type float (did you mean 'high'?)" in message
    assert "params.mask_ratio: float needs 'high'" in message
    assert "params.tau: step 0.1 does not divide high - low = 0.25" in message


def test_other_libraries_names_are_answered_with_ours(tmp_path):
    """`type: loguniform` (Optuna's and Ray Tune's), `lg:` for log and `learning_rate:` for lr were each told only
    the list of valid names (a walkthrough)."""
    message = _error(
        tmp_path,
        "params:\n"
        "  lr: {type: loguniform, low: 0.0001, high: 0.01}\n"
        "  batch_size: {type: randint, low: 8, high: 64}\n"
        "  mask_ratio: {type: choice, choices: [0.5, 0.7]}\n"
        "  tau: {type: float, low: 0.05, high: 0.3, lg: true}\n"
        "  learning_rate: {type: float, low: 0.001, high: 0.1}\n"
        "  w_rec: {type: float, low: 0.1, high: 1.0, bogus: 1}\n",
    )
    assert "params.lr: unknown type 'loguniform' (here: type: float with log: true); expected one of float, int, " \
           "categorical" in message, message
    assert "params.batch_size: unknown type 'randint' (here: type: int (step: for a grid))" in message, message
    assert "params.mask_ratio: unknown type 'choice' (here: type: categorical with choices: [...])" in message, message
    assert "params.tau: unknown key 'lg' for type float (did you mean 'log'?)" in message, message
    assert "params.learning_rate: 'learning_rate' is not a trainer config field (did you mean 'lr'?)" in message
    assert "params.w_rec: unknown key 'bogus' for type float; expected" in message, message  # no guess where none fits


def test_epochs_cannot_be_searched_or_fixed(tmp_path):
    message = _error(tmp_path, "fixed: {epochs: 3}\nparams:\n  epochs: {type: int, low: 1, high: 10}\n")
    assert "fixed.epochs: epochs cannot be searched or fixed in a search space" in message
    assert "params.epochs: epochs cannot be searched or fixed" in message
    assert "--max-epochs" in message


def test_invalid_fixed_values_and_endpoints(tmp_path):
    message = _error(
        tmp_path,
        "fixed: {batch_size: 4, hidden_dim: big, lr: 1.0e-3}\n"
        "params:\n"
        "  mask_ratio: {type: float, low: 0.5, high: 1.0}\n"
        "  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n",
    )
    assert "fixed.hidden_dim: expected an integer, got 'big'" in message
    assert "fixed: batch_size must be >= 8, got 4" in message
    assert "params.mask_ratio: high 1.0 is not a valid mask_ratio: mask_ratio must be in [0, 1), got 1.0" in message
    assert "params.lr: is both fixed and searched" in message


def test_numeric_strings_are_accepted(tmp_path):
    path = _write(
        tmp_path,
        "params:\n  lr: {type: float, low: 1e-4, high: 3e-3, log: true}\n  topk: {type: int, low: '0', high: 1e1}\n",
    )
    space = load_space(path)
    lr, topk = space.params
    assert (lr.low, lr.high) == (1e-4, 3e-3) and type(lr.low) is float
    assert (topk.low, topk.high) == (0, 10) and type(topk.high) is int


def test_file_level_problems(tmp_path):
    with pytest.raises(SpaceError, match="cannot read search space file") as info:
        load_space(tmp_path / "missing.yaml")
    assert "missing.yaml" in str(info.value)
    message = _error(tmp_path, "- lr\n- tau\n")
    assert "expected a mapping with keys description, fixed, params at the top level, got a list" in message
    message = _error(tmp_path, "")
    assert "got an empty file" in message
    message = _error(tmp_path, "params: {lr: [unclosed\n")
    assert "not valid YAML" in message
    # an unclosed { is found on a later line: where it starts is said too (PyYAML's context mark)
    message = _error(tmp_path, "params:\n  lr: {type: float, low: 1.0e-4, high: 1.0e-2\n  tau: {type: float}\n")
    assert message.endswith("not valid YAML: while parsing a flow mapping; expected ',' or '}', but got ':' (line 3, "
                            "column 6); a flow mapping that starts at line 2, column 7"), message
    # a `when` value off a stepped grid: the step is part of the domain said
    message = _error(tmp_path, "params:\n  topk: {type: int, low: 0, high: 8, step: 2}\n  tau_teacher: {type: float, "
                               "low: 0.01, high: 0.2, when: {topk: [3, 4]}}\n")  # fmt: skip
    assert "when.topk: 3 can never be sampled for topk ([0, 8] step 2)" in message, message
    message = _error(tmp_path, "descripton: typo\nparams: {}\n")
    assert "descripton: unknown top-level key; expected description, fixed, params (did you mean 'description'?)" \
        in message, message
    assert "params: expected a non-empty mapping" in message
    message = _error(tmp_path, "param:\n  lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}\n")  # the s left off
    assert "param: unknown top-level key; expected description, fixed, params (did you mean 'params'?)" in message
    assert "(did you mean" not in _error(tmp_path, "zzz: 1\nparams: {}\n")  # nothing near: no guess


def test_several_problems_are_reported_together(tmp_path):
    message = _error(
        tmp_path,
        "description: several problems\n"
        "extra: 1\n"
        "fixed: {epochs: 5, nonsense: 1}\n"
        "params:\n"
        "  lr: {type: float, low: 1.0e-2, high: 1.0e-3}\n"
        "  topk: {type: float, low: 0, high: 5}\n"
        "  tau: {type: float, low: 0.0, high: 0.3, log: true}\n"
        "  distill: {type: categorical}\n"
        "  w_distill: {type: float, low: 0.1, high: 2.0, when: {ghost: 1}}\n",
    )
    lines = message.splitlines()
    expected = ["extra:", "fixed.epochs:", "fixed.nonsense:", "params.lr:", "params.topk:", "params.tau:",
                "params.distill:", "params.w_distill:"]
    for fragment in expected:
        assert any(fragment in line for line in lines), fragment
    assert len(lines) == len(expected)


def test_space_error_is_a_value_error_with_its_problems():
    with pytest.raises(ValueError) as info:
        load_space_dict({"params": {"lr": {"type": "float"}}}, source="inline")
    assert isinstance(info.value, SpaceError)
    assert info.value.problems == ["inline: params.lr: float needs 'low'", "inline: params.lr: float needs 'high'"]


# ------------------------------------------------------------------------------------------- Ray Tune
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_ray_optuna_search_first_suggestion_is_the_default_config(path, tmp_path):
    """Ray's real OptunaSearch, without starting Ray: points_to_evaluate enqueues the defaults as trial one."""
    ray = pytest.importorskip("ray")
    from ray.tune.search.optuna import OptunaSearch

    space = load_space(path)
    searcher = OptunaSearch(
        space=space.define_by_run(), metric="m", mode="max", seed=0, points_to_evaluate=[space.defaults()[0]]
    )
    first = searcher.suggest("t1")
    assert first == {**space.defaults()[0], **space.fixed}
    second = searcher.suggest("t2")
    validate_sampled(space, second, epochs=3)
    assert {k: second[k] for k in space.fixed} == space.fixed
    assert second != first  # sampled by TPE (random start-up trials), not the default again
    # the searcher state (which holds the space) pickles, as the Tuner's experiment checkpoints need
    searcher.save(str(tmp_path / "searcher.pkl"))
    restored = OptunaSearch(space=space.define_by_run(), metric="m", mode="max")
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored.suggest("t1") == first
    assert not ray.is_initialized()


# ------------------------------------------------------------------------------------------- issue 8
def test_first_trial_is_the_trainer_default_as_it_trains():
    """cca_dim 0 (auto) trains as 16 on data with >= 16 dims: the first trial of hsc_mae takes 16, not the
    nearest choice to 0 (8); ema_momentum 0 (auto) is itself a choice."""
    space = load_space(SPACES_DIR / "hsc_mae.yaml")
    resolved = TrainConfig(**space.fixed).resolve(3339, 128, 1024).to_dict()
    first, notes = space.defaults(resolved)
    assert first["cca_dim"] == 16 and first["ema_momentum"] == 0.0
    assert notes == []
    cfg = validate_sampled(space, first, epochs=30).resolve(3339, 128, 1024)
    assert cfg == TrainConfig(**{**space.fixed, "epochs": 30}).resolve(3339, 128, 1024)


def test_a_default_outside_the_space_is_named():
    space = load_space_dict({"params": {"cca_dim": {"type": "categorical", "choices": [8, 32]}}})
    resolved = TrainConfig().resolve(1000, 64, 64).to_dict()  # auto cca_dim -> 16, not a choice
    first, notes = space.defaults(resolved)
    assert first == {"cca_dim": 8}
    assert notes == ["cca_dim=8: the trainer default 0 (trains as 16) is not among the space's choices"]
    # a default in range but off a stepped space's grid was "outside the space" (a walkthrough): how it misses
    space = load_space_dict({"params": {"weight_decay": {"type": "float", "low": 0.0, "high": 0.3, "step": 0.1},
                                        "lr": {"type": "float", "low": 0.01, "high": 0.1, "log": True},
                                        "seq_layers": {"type": "int", "low": 3, "high": 4}}})
    assert TrainConfig().weight_decay == 0.05 and TrainConfig().lr < 0.01 and TrainConfig().seq_layers < 3
    assert space.defaults(None)[1] == [
        "weight_decay=0.0: the trainer default 0.05 is not on the space's grid (0 to 0.3 in steps of 0.1)",
        f"lr=0.01: the trainer default {TrainConfig().lr!r} is outside the space's range (0.01 to 0.1)",
        f"seq_layers=3: the trainer default {TrainConfig().seq_layers!r} is outside the space's range (3 to 4)"]


def test_val_fraction_can_be_fixed_but_not_searched():
    with pytest.raises(SpaceError, match="val_fraction cannot be searched: it changes the validation split"):
        load_space_dict({"params": {"val_fraction": {"type": "float", "low": 0.1, "high": 0.3}}}, source="s.yaml")
    space = load_space_dict({"fixed": {"val_fraction": 0.2}, "params": {"lr": {"type": "float", "low": 1.0e-4,
                                                                              "high": 1.0e-2}}})  # fmt: skip
    assert space.fixed["val_fraction"] == 0.2


def test_a_key_given_twice_is_refused_in_every_file_people_write(tmp_path):
    """PyYAML keeps the last of two equal keys without a word: a space with `lr:` twice searched only the second
    range. Spaces, search configs and trainer configs refuse it in one line naming both lines."""
    from hsc_search.settings import SettingsError, load_settings
    from trainer import ConfigError, TrainConfig

    space = tmp_path / "space.yaml"
    space.write_text("params:\n  lr: {type: float, low: 1.0e-4, high: 1.0e-3}\n  tau: {type: float, low: 0.1, "
                     "high: 0.5}\n  lr: {type: float, low: 1.0e-2, high: 1.0e-1}\n")  # fmt: skip
    with pytest.raises(SpaceError) as e:
        load_space(space)
    assert str(e.value) == f"{space}: not valid YAML: 'lr' is given twice (lines 2 and 4); keep one (line 4, column 3)"
    search = tmp_path / "search.yaml"
    search.write_text("num_samples: 4\nmax_epochs: 2\nnum_samples: 8\n")
    with pytest.raises(SettingsError, match=r"search.yaml: not valid YAML: 'num_samples' is given twice \(lines 1 "
                                            r"and 3\); keep one \(line 3, column 1\)$"):  # fmt: skip
        load_settings(search, {}, [])
    config = tmp_path / "train.yaml"
    config.write_text("lr: 0.001\nepochs: 2\nlr: 0.01\n")
    with pytest.raises(ConfigError, match=r"train.yaml: not valid YAML: 'lr' is given twice \(lines 1 and 3\)"):
        TrainConfig.from_yaml(config)
    # a nested mapping too; merge keys (`<<`) may still be overridden, as YAML allows
    search.write_text("set: {hidden_dim: 32, hidden_dim: 64}\n")
    with pytest.raises(SettingsError, match="'hidden_dim' is given twice"):
        load_settings(search, {}, [])
    space.write_text("base: &b {type: float, low: 0.1, high: 0.5}\nparams:\n  tau: {<<: *b, high: 0.4}\n")
    with pytest.raises(SpaceError, match="base"):  # the merge itself is fine: only the unknown top-level key is not
        load_space(space)


def test_a_condition_that_an_override_makes_false_is_named():
    """--set of a param that a condition refers to: the conditional param is never searched, and the search's
    start says so (it said only that the overridden param is not searched). A chain stops where the stranded
    param's default satisfies the next condition (ablation: topk asks use_nce, whose default is true)."""
    from hsc_search.settings import SPACES_DIR

    ablation = load_space(SPACES_DIR / "ablation.yaml", overrides={"use_dcca": False})
    assert ablation.never_searched() == {  # and eval_embedding h, for use_nce off, with it (its h is invalid there)
        "use_nce": "its condition use_dcca in [True] never holds: use_dcca is fixed at False by --set",
        "eval_embedding": "its condition use_nce in [False] never holds: use_nce is never searched, so it stays True"}
    quick = load_space(SPACES_DIR / "quick.yaml", overrides={"loss_weighting": "fixed"}, set_from={})
    assert list(quick.never_searched()) == ["weight_lr"]
    assert "loss_weighting is fixed at 'fixed' by --set" in quick.never_searched()["weight_lr"]
    for space in (load_space(SPACES_DIR / "ablation.yaml"), load_space(SPACES_DIR / "quick.yaml"),
                  load_space(SPACES_DIR / "quick.yaml", overrides={"loss_weighting": "learned"})):  # fmt: skip
        assert space.never_searched() == {}


def test_a_condition_on_a_stepped_float_holds_for_every_grid_value_optuna_returns():
    """`when: {mask_ratio: [0.6, 0.7]}` on a 0.1 grid from 0.3: Optuna returns 0.6 there as 0.6000000000000001
    (low + k * step in floats), and the exact comparison never matched it, so lr was not searched on those
    trials and trained the default. Every grid value Optuna samples is checked, and the condition holds on
    exactly the ones within 1e-9 of 0.6 or 0.7, computed here in exact decimal arithmetic."""
    from decimal import Decimal

    space = load_space_dict({
        "fixed": {},
        "params": {"mask_ratio": {"type": "float", "low": 0.3, "high": 0.7, "step": 0.1},
                   "lr": {"type": "float", "low": 2e-3, "high": 1e-2, "log": True,
                          "when": {"mask_ratio": [0.6, 0.7]}}}})  # fmt: skip
    seen = {}
    for params, _ in _sample(space, 60, seed=0):
        seen.setdefault(params["mask_ratio"], set()).add("lr" in params)
    wanted = {Decimal("0.6"), Decimal("0.7")}
    exact = {v: any(abs(Decimal(repr(v)) - w) < Decimal("1e-9") for w in wanted) for v in seen}
    assert len(seen) == 5 and sum(exact.values()) == 2, seen  # the whole grid, both wanted values among it
    assert any(v != 0.6 and abs(v - 0.6) < 1e-9 for v in seen), seen  # Optuna's 0.6 is not the literal 0.6
    assert all(seen[v] == {exact[v]} for v in seen), (seen, exact)
    # and not true for 1 (a bool condition stays apart from numbers)
    assert not Param("x", "float", low=0, high=1, when={"use_rec": [True]}).holds({"use_rec": 1})


def test_a_first_trial_invalid_only_by_its_auto_fields_is_resolved_again_or_left_out():
    """The first trial resolved its auto fields for the trainer defaults: batch_size [12, 16] took 16 and cca_dim
    [8, 16] took the auto value for batch 256 (16), an invalid pair, and the whole (valid) space was refused.
    Now resolved again with its own batch_size; a first trial that still cannot be valid is not enqueued (a note
    says why) while the search goes on with sampled trials, each checked by the trainer."""
    from hsc_search import driver
    from hsc_search.settings import SearchSettings

    data = "synthetic:ave?n_train=200&n_val=50&n_test=50&dim_audio=8&dim_visual=8&num_classes=4"
    small = {"hidden_dim": 64, "embed_dim": 32, "proj_dim": 32}
    space = load_space_dict({"fixed": small, "params": {
        "batch_size": {"type": "categorical", "choices": [12, 16]},
        "cca_dim": {"type": "categorical", "choices": [8, 16]}}})  # fmt: skip
    settings = SearchSettings(data=data, max_epochs=2)
    loaded = driver.load_search_data(settings, space)
    first, _ = driver._first_trial(space, settings, loaded)
    auto = TrainConfig(**{**small, "batch_size": 16}).resolve(len(loaded.train), 8, 8).cca_dim  # the trainer's own
    assert first == {"batch_size": 16, "cca_dim": auto} and auto < 16, first
    validate_sampled(space, first, 2)  # a valid trial
    # cca_k [12, 4] beside cca_dim [8, 32]: the defaults' nearest choices (8, 12) are invalid however resolved
    space = load_space_dict({"fixed": small, "params": {
        "cca_dim": {"type": "categorical", "choices": [8, 32]},
        "cca_k": {"type": "categorical", "choices": [12, 4]}}})  # fmt: skip
    first, notes = driver._first_trial(space, settings, loaded)
    assert first == {} and len(notes) == 1, (first, notes)
    assert notes[0].startswith("the trainer default, as near as this space allows (cca_dim=8, cca_k=12), is not a "
                               "valid trial (") and notes[0].endswith("): not enqueued; every trial is sampled")
    assert "cca_k (12) must not exceed cca_dim (8)" in notes[0]
    validate_sampled(space, {"cca_dim": 32, "cca_k": 12}, 2)  # the space has valid trials


def test_a_space_is_judged_by_the_trials_it_gives_not_by_the_trainer_defaults_it_searches():
    """A fixed value that clashed only with the default of a field the space searches was refused (cca_dim 300
    fixed, batch_size searched over [512, 1024]: "batch_size (256) must exceed cca_dim (300)", a value no trial
    trains; and cca_k 20 fixed beside cca_dim searched over [24, 32], refused for the auto cca_dim 16), and a space
    none of whose trials trains on the data was noted for one value and every trial then failed after Ray had
    started (a walkthrough). Each trial is checked by the trainer's own TrainConfig."""
    from hsc_search import driver
    from hsc_search.preflight import PreflightError
    from hsc_search.settings import SearchSettings

    data = "synthetic:ave?n_train=1200&n_val=100&n_test=100&dim_audio=16&dim_visual=24&num_classes=4"
    small = {"hidden_dim": 32, "embed_dim": 16, "proj_dim": 16}
    settings = SearchSettings(data=data, max_epochs=2)
    space = load_space_dict({"fixed": {**small, "cca_dim": 300},
                             "params": {"batch_size": {"type": "categorical", "choices": [512, 1024]}}})
    loaded = driver.load_search_data(settings, space)
    first, _ = driver._first_trial(space, settings, loaded)
    assert first == {"batch_size": 512}, first
    validate_sampled(space, first, 2).resolve(len(loaded.train), 16, 24)  # the trainer takes it
    space = load_space_dict({"fixed": {**small, "batch_size": 64, "cca_k": 20},
                             "params": {"cca_dim": {"type": "categorical", "choices": [24, 32]}}})
    first, _ = driver._first_trial(space, settings, loaded)
    assert first == {"cca_dim": 24}, first
    validate_sampled(space, first, 2).resolve(len(loaded.train), 16, 24)
    # every cca_k of 20 to 30 exceeds the auto cca_dim of this data (min(16, 16, 24, 63) = 16): refused before Ray
    space = load_space_dict({"fixed": {**small, "batch_size": 64},
                             "params": {"cca_k": {"type": "int", "low": 20, "high": 30}}})
    for k in (20, 25, 30):
        with pytest.raises(ConfigError):
            validate_sampled(space, {"cca_k": k}, 2).resolve(len(loaded.train), 16, 24)
    with pytest.raises(PreflightError) as e:
        driver._first_trial(space, settings, loaded)
    assert str(e.value).startswith("space <dict>: none of 200 trials drawn from it at random trains on this data "
                                   "(the first, cca_k="), str(e.value)
    assert "exceeds cca_dim 16, which auto (cca_dim 0) picked for this data" in str(e.value), str(e.value)
    # a fixed value (--set cca_k=40) that every trial shares and the data refuses is said of itself, not of the
    # space's draws (a review: "space quick.yaml: no trial of it trains", with a random draw's values)
    space = load_space_dict({"fixed": small, "params": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2,
                                                               "log": True}}}, overrides={"cca_k": 40})  # fmt: skip
    with pytest.raises(ConfigError) as e:
        driver._first_trial(space, settings, loaded)
    assert "cca_k 40 exceeds cca_dim 16" in str(e.value) and "space" not in str(e.value), str(e.value)


def test_the_first_trials_notes_say_what_an_auto_default_trains_as_beside_its_other_values():
    """"the trainer default 0 (trains as N)" of cca_dim and cca_k said the auto value of the trainer defaults (16
    for batch 256), not what 0 trains as beside the first trial's own batch_size and cca_dim (a walkthrough). Auto
    cca_dim is min(16, audio dim, visual dim, batch - 1) and auto cca_k is cca_dim (README, trainer/config.py)."""
    from hsc_search import driver
    from hsc_search.settings import SearchSettings

    data = "synthetic:ave?n_train=200&n_val=50&n_test=50&dim_audio=16&dim_visual=24&num_classes=4"
    space = load_space_dict({"params": {"cca_dim": {"type": "categorical", "choices": [8, 32]},
                                        "cca_k": {"type": "categorical", "choices": [4, 6]},
                                        "batch_size": {"type": "categorical", "choices": [12, 16]}}})  # fmt: skip
    settings = SearchSettings(data=data, max_epochs=2)
    first, notes = driver._first_trial(space, settings, driver.load_search_data(settings, space))
    assert first == {"cca_dim": 8, "cca_k": 6, "batch_size": 16}, first
    assert notes == [f"cca_dim=8: the trainer default 0 (trains as {min(16, 16, 24, 16 - 1)}) is not among the "
                     "space's choices",  # beside batch 16
                     "cca_k=6: the trainer default 0 (trains as 8) is not among the space's choices",  # cca_dim 8
                     "batch_size=16: the trainer default 256 (trains as 200) is not among the space's choices"], notes


def test_a_condition_on_a_value_of_a_continuous_range_is_refused():
    """`when: {lr: 0.02}` with lr a log range without a step: Optuna never samples exactly 0.02, so tau was never
    searched, without a word."""
    with pytest.raises(SpaceError, match=r"s\.yaml: params\.tau: when\.lr: lr is a continuous range \[0\.001, 0\.1\] "
                                         r"without a step, so it is practically never exactly 0\.02; condition on"):
        load_space_dict({"params": {"lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True},
                                    "tau": {"type": "float", "low": 0.1, "high": 1.0, "when": {"lr": [0.02]}}}},
                        source="s.yaml")  # fmt: skip
    load_space_dict({"params": {"mask_ratio": {"type": "float", "low": 0.3, "high": 0.7, "step": 0.1},
                                "tau": {"type": "float", "low": 0.1, "high": 1.0, "when": {"mask_ratio": [0.5]}}}})


def test_an_int_range_on_a_float_field_is_recorded_as_the_float_it_trains():
    """warmup_epochs (a float field) searched as `type: int`: Optuna, Ray's params and MLflow said 1, the trial's
    config.yaml and what trained said 1.0. Ray's trial config is the captured suggestions updated by what the
    define-by-run function returns; that config is what the trainable trains and the tracker records."""
    space = load_space_dict({"params": {"warmup_epochs": {"type": "int", "low": 0, "high": 2},
                                        "batch_size": {"type": "int", "low": 64, "high": 128}}})  # fmt: skip
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(6):
        trial = study.ask()
        returned = space.define_by_run()(trial)
        config = {**trial.params, **returned}  # as Ray's OptunaSearch builds it
        cfg = TrainConfig.from_dict(config)
        assert type(config["warmup_epochs"]) is float and config["warmup_epochs"] == trial.params["warmup_epochs"]
        assert str(config["warmup_epochs"]) == str(cfg.warmup_epochs)  # the recorded text is the trained value's
        assert type(config["batch_size"]) is int  # an int field stays an int
        study.tell(trial, 0.0)


TINY_DATA = "synthetic:ave?n_train=180&n_val=60&n_test=60&dim_audio=12&dim_visual=16"  # 3 steps of 60


# each field the trainer reads only under others' values: two of its values that train differently where it is read
_IGNORED = {"w_rec": (0.1, 3.0), "w_dcca": (0.1, 3.0), "w_nce": (0.2, 2.0), "w_distill": (0.1, 3.0),
            "weight_lr": (1e-4, 0.5), "weight_warmup_epochs": (0, 1), "logvar_floor": (0.0, -5.0), "tau": (0.05, 0.5),
            "topk": (0, 3), "tau_teacher": (0.01, 1.0), "self_weight": (0.2, 1.0)}  # fmt: skip
# values of the fields those depend on, to pick one under which a field is read and one under which it is not
_PARENT_VALUES = {"loss_weighting": ["fixed", "learned", "learned_raw"], "use_rec": [True, False],
                  "use_dcca": [True, False], "use_nce": [True, False], "mask_ratio": [0.5, 0.0],
                  "distill": ["relational", "embedding", "none"], "topk": [3, 0]}  # fmt: skip


def test_the_fields_said_unused_are_those_the_trainer_ignores():
    """The table behind the start's notes and the report's "not used" (trainer.config.USED_ONLY_WHEN) against the
    trainer, condition by condition: with the field's other conditions holding, under a value of the condition's
    field that the table says leaves it unread, two of its values train the same metrics, to every digit; under
    one that reads it, they differ. (Walkthroughs: w_rec searched under learned weights took a fifth of fANOVA's
    importance while the trainer never read it; tau and topk searched with use_nce false were not said.)"""
    from hsc_search.space import _reads
    from trainer import load_data
    from trainer.config import USED_ONLY_WHEN
    from trainer.fit import fit

    small_data = load_data(TINY_DATA)
    assert set(_IGNORED) == set(USED_ONLY_WHEN)

    def metrics(**values):
        reports = []
        fit(TrainConfig(epochs=1, batch_size=60, hidden_dim=32, embed_dim=16, proj_dim=16, eval_embedding="e",
                        **values), small_data, on_epoch=reports.append)  # fmt: skip
        return {k: v for k, v in reports[0].metrics.items() if not k.startswith(("time/", "perf/"))}

    checked = 0
    for name, (a, b) in _IGNORED.items():
        conditions = USED_ONLY_WHEN[name]
        reads = {parent: next(v for v in _PARENT_VALUES[parent] if _reads(allowed, v)) for parent, allowed in conditions}
        for parent, allowed in conditions:
            ignores = next(v for v in _PARENT_VALUES[parent] if not _reads(allowed, v))
            base = {**reads, "weight_warmup_epochs": 0} if name != "weight_warmup_epochs" else dict(reads)
            if name in ("tau_teacher", "self_weight", "tau") or base.get("use_nce") is False:
                base.setdefault("distill", "relational")  # (a model with no loss on z: still a valid config)
            base.pop(name, None)
            assert metrics(**{**base, parent: ignores, name: a}) == metrics(**{**base, parent: ignores, name: b}), \
                (name, parent, ignores)  # fmt: skip
            assert metrics(**{**base, parent: reads[parent], name: a}) != \
                metrics(**{**base, parent: reads[parent], name: b}), (name, parent, reads[parent])  # fmt: skip
            checked += 1
    assert checked == 18


def test_a_space_that_searches_what_the_trainer_ignores_is_said_at_the_start(tmp_path):
    """Said, not refused (a search may mean it): which trials ignore the value and the `when` that fixes it."""
    space = load_space_dict({"params": {
        "loss_weighting": {"type": "categorical", "choices": ["learned", "fixed"]},
        "w_rec": {"type": "float", "low": 0.1, "high": 3.0, "log": True},  # read in the fixed trials only
        "weight_lr": {"type": "float", "low": 1e-3, "high": 0.1, "when": {"loss_weighting": ["learned"]}},  # guarded
        "topk": {"type": "int", "low": 0, "high": 4, "step": 2},
        "tau_teacher": {"type": "float", "low": 0.01, "high": 0.2},
        "lr": {"type": "float", "low": 1e-3, "high": 1e-3},
    }})  # fmt: skip
    assert space.unused_by_trainer() == {
        "w_rec": "w_rec is searched, but the trainer reads it only when loss_weighting is fixed: trials with "
                 "loss_weighting 'learned' ignore it (their w_rec changes nothing); add `when: {loss_weighting: "
                 "[fixed]}` to its spec",
        "tau_teacher": "tau_teacher is searched, but the trainer reads it only when topk is above 0: trials with topk "
                       "0 ignore it (their tau_teacher changes nothing); add `when: {topk: [2, 4]}` to its spec",
        "lr": "lr is searched over one value (0.001): every trial gets it; fix it instead",
    }  # fmt: skip
    # the `when` suggested holds only values the parent can take (learned_raw is not a choice here: a `when` with
    # it is refused), and goes into an existing `when` (a second `when:` key is a duplicate; the review)
    # a continuous range cannot be a `when`'s (refused): its low is what to raise (a review: the advice was refused)
    masked = load_space_dict({"fixed": {"loss_weighting": "fixed"}, "params": {
        "mask_ratio": {"type": "float", "low": 0.0, "high": 0.5}, "w_rec": {"type": "float", "low": 0.1, "high": 2.0}}})
    assert masked.unused_by_trainer()["w_rec"].endswith(
        "trials with mask_ratio 0.0 ignore it (their w_rec changes nothing); raise mask_ratio's low above 0 (a `when` "
        "cannot condition on a continuous range)")  # fmt: skip
    wlr = load_space_dict({"params": {"loss_weighting": {"type": "categorical", "choices": ["fixed", "learned"]},
                                      "weight_lr": {"type": "float", "low": 1e-3, "high": 0.1}}})  # fmt: skip
    assert wlr.unused_by_trainer()["weight_lr"].endswith("add `when: {loss_weighting: [learned]}` to its spec")
    inner = load_space_dict({"params": {
        "topk": {"type": "int", "low": 0, "high": 4, "step": 2},
        "distill": {"type": "categorical", "choices": ["none", "relational"]},
        "tau_teacher": {"type": "float", "low": 0.01, "high": 0.2, "when": {"distill": ["relational"]}}}})
    assert inner.unused_by_trainer()["tau_teacher"].endswith("add `topk: [2, 4]` to its `when`")
    fixed_spec = {"type": "float", "low": 0.01, "high": 0.2, "when": {"distill": ["relational"], "topk": [2, 4]}}
    assert load_space_dict({"params": {**inner.to_dict()["params"], "tau_teacher": fixed_spec}}).unused_by_trainer() \
        == {}  # fmt: skip
    never = load_space_dict({"params": {"w_rec": {"type": "float", "low": 0.1, "high": 3.0}}})  # default: learned
    assert never.unused_by_trainer()["w_rec"].endswith("and here loss_weighting is 'learned': its values change "
                                                       "nothing; fix it or leave it out")  # fmt: skip
    fixed = load_space_dict({"params": {"w_rec": {"type": "float", "low": 0.1, "high": 3.0}}},
                            overrides={"loss_weighting": "fixed"})  # fmt: skip
    assert fixed.unused_by_trainer() == {}
    for name in ("quick", "hsc_mae", "ablation"):  # the shipped spaces guard every such field
        assert load_space(Path(__file__).resolve().parents[1] / "search_spaces" / f"{name}.yaml").unused_by_trainer() == {}, name


def test_a_searched_select_metric_is_refused_naming_the_space_file(tmp_path):
    from hsc_search.driver import SearchError, select_checkpoints_by_metric
    from hsc_search.settings import SearchSettings

    f = tmp_path / "selm.yaml"
    f.write_text("params:\n  select_metric: {type: categorical, choices: [val/map_avg, val/map_a2v]}\n")
    with pytest.raises(SearchError, match=rf"^{f}: params.select_metric: searched, but a search keeps each trial's "
                                          r"checkpoint by its --metric"):  # fmt: skip
        select_checkpoints_by_metric(load_space(f), SearchSettings(space=str(f)))


def test_a_space_with_set_values_reads_back_from_its_record_and_when_may_name_a_set_value():
    """quick with --set loss_weighting=fixed: weight_lr (when learned) is never searched. The search's record held
    it with loss_weighting fixed, which reading refuses ("never holds"): the search could not be resumed, and
    without MLflow it wrote no best config (a walkthrough). And a `when` on a name that only --set fixes was
    refused as "neither searched nor fixed"."""
    space = load_space(SPACES_DIR / "quick.yaml", overrides={"loss_weighting": "fixed"})
    assert "weight_lr" in space.never_searched()
    again = load_space_dict(space.to_dict(), source="hsc_search.json")
    assert again.names() == ["lr", "mask_ratio", "topk", "tau"] and again.fixed["loss_weighting"] == "fixed"
    assert again.to_dict() == space.to_dict()
    spec = {"params": {"weight_lr": {"type": "float", "low": 1e-3, "high": 0.1, "when": {"loss_weighting": "learned"}}}}
    assert load_space_dict(spec, overrides={"loss_weighting": "learned"}).names() == ["weight_lr"]
    assert "weight_lr" in load_space_dict(spec, overrides={"loss_weighting": "fixed"}).never_searched()
    with pytest.raises(SpaceError, match="neither searched before weight_lr nor fixed"):
        load_space_dict(spec)  # without the --set: still refused
    with pytest.raises(SpaceError, match="never holds: loss_weighting is fixed to 'fixed'"):
        load_space_dict({**spec, "fixed": {"loss_weighting": "fixed"}})  # the file's own contradiction: refused


def test_an_endpoint_made_invalid_by_a_set_value_names_the_set_value():
    """hsc_mae's cca_dim choices are valid with its own batch sizes; --set batch_size=16 makes 16 and 32 invalid,
    and the sentence blamed the space file alone."""
    with pytest.raises(SpaceError) as e:
        load_space(SPACES_DIR / "hsc_mae.yaml", overrides={"batch_size": 16})
    lines = str(e.value).splitlines()
    assert len(lines) == 2 and all(ln.endswith("(with --set batch_size=16)") for ln in lines), lines
    assert "params.cca_dim: choice 16 is not a valid cca_dim: batch_size (16) must exceed cca_dim (16)" in lines[0]



def test_an_int_param_with_a_step_samples_only_its_grid():
    """`{type: int, low: 0, high: 9, step: 3}` must train topk 0, 3, 6 or 9 only: a sampler that dropped the step
    would train 1, 2, 4... (values the space never allowed), and the trials would not read back into the space."""
    space = load_space_dict({"params": {"topk": {"type": "int", "low": 0, "high": 9, "step": 3}}})
    seen = set()
    for params, _ in _sample(space, 40, seed=1):
        assert params["topk"] in {0, 3, 6, 9} and type(params["topk"]) is int, params  # worked out by hand
        seen.add(params["topk"])
    assert len(seen) > 1  # the sampler moved over the grid


def test_a_value_between_the_grid_points_of_a_step_is_outside_the_space():
    """A stepped param holds only its grid: mask_ratio 0.37 on a 0.3..0.8 step-0.1 grid is no value Optuna
    could sample. Taken as inside, a trainer default off the grid would be the first trial as it is (a value
    the space never allows), and a recorded trial off the grid would be matched to this space (warm start)."""
    p = Param("mask_ratio", "float", low=0.3, high=0.8, step=0.1)
    assert p.contains(0.3) and p.contains(0.3 + 0.1 + 0.1 + 0.1) and p.contains(0.8)  # grid points, float noise
    assert not p.contains(0.37) and not p.contains(0.45) and not p.contains(0.71)
    k = Param("topk", "int", low=0, high=9, step=3)
    assert k.contains(6) and not k.contains(5) and not k.contains(4)

    space = load_space_dict({"params": {"mask_ratio": {"type": "float", "low": 0.32, "high": 0.82, "step": 0.1},
                                        "topk": {"type": "int", "low": 0, "high": 9, "step": 3}}})  # fmt: skip
    d, notes = space.defaults()
    # the trainer defaults 0.5 and 5 are in range but off the grids: snapped to 0.32 + 2 * 0.1 and 2 * 3
    assert d["mask_ratio"] == pytest.approx(0.52) and d["topk"] == 6, d
    assert len(notes) == 2 and any(n.startswith("mask_ratio=") for n in notes), notes
    params, why = space.match({"mask_ratio": "0.37", "topk": "3"})
    assert params is None and why == "mask_ratio=0.37 off the grid [0.32, 0.82] step 0.1", why
    params, why = space.match({"mask_ratio": "0.42", "topk": "4"})
    assert params is None and why == "topk=4 off the grid [0, 9] step 3", why
    params, why = space.match({"mask_ratio": "0.92", "topk": "3"})
    assert params is None and why == "mask_ratio=0.92 outside [0.32, 0.82] step 0.1", why
    params, why = space.match({"mask_ratio": "0.42", "topk": "3"})
    assert params == {"mask_ratio": pytest.approx(0.42), "topk": 3} and why == ""


def test_a_recorded_trial_fits_a_space_that_fixes_one_of_its_params_at_the_value_it_drew():
    """A warm start with `--set lr=0.001` over a space that searches lr refused every earlier trial, those that had
    drawn 0.001 too (a walkthrough): such a trial trained what this search trains. Another value is named."""
    from hsc_search.space import _recorded_as

    spec = {"params": {"mask_ratio": {"type": "float", "low": 0.3, "high": 0.8},
                       "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}}  # fmt: skip
    space = load_space_dict(spec, overrides={"lr": 1e-3})
    assert space.match({"mask_ratio": "0.5", "lr": "0.001"}) == ({"mask_ratio": 0.5}, "")
    assert space.match({"mask_ratio": "0.5", "lr": "0.002"}) == (None, "lr=0.002 where this search trains 0.001")
    # a name neither searched nor fixed here trains the trainer's default (tau 0.3)
    assert space.match({"mask_ratio": "0.5", "tau": "0.3"}) == ({"mask_ratio": 0.5}, "")
    assert space.match({"mask_ratio": "0.5", "tau": "0.2"}) == (None, "tau=0.2 where this search trains 0.3")
    assert space.match({"mask_ratio": "0.5", "foo": "1"}) == (None, "foo not searched here")
    assert _recorded_as("True", True) and _recorded_as("1.0", 1) and _recorded_as("1e-3", 0.001)
    assert not _recorded_as("1", True) and not _recorded_as(True, 1) and not _recorded_as("x", None)


def test_values_the_trainer_refuses_together_are_said_at_the_start():
    """Each value valid alone, some pairs refused by the trainer (batch_size 16 with cca_dim 32): 4 of 6 trials
    failed with no word at the start (a walkthrough). The pairs are said; a pair kept apart by a condition, or one
    that would also need a third searched value, is not; the shipped spaces have none."""
    space = load_space_dict({"params": {
        "batch_size": {"type": "categorical", "choices": [16, 128]},
        "cca_dim": {"type": "categorical", "choices": [8, 32]},
        "topk": {"type": "int", "low": 0, "high": 20},
    }})  # fmt: skip
    said = space.clashes()
    assert said == [
        "trials that draw batch_size 16 with cca_dim 32 fail: the trainer says batch_size (16) must exceed cca_dim "
        "(32): DCCA covariances need more samples than dimensions",
        "trials that draw batch_size 16 with topk 20 fail: the trainer says topk (20) must be below batch_size (16)",
    ], said  # fmt: skip
    # the same refusals as the trainer's own, for every pair said
    for pair in ({"batch_size": 16, "cca_dim": 32}, {"batch_size": 16, "topk": 20}):
        with pytest.raises(ConfigError):
            TrainConfig.from_dict(pair)
    # cca_dim 32 searched only with batch_size 128: never drawn with 16, so not said
    apart = load_space_dict({"params": {
        "batch_size": {"type": "categorical", "choices": [16, 128]},
        "cca_dim": {"type": "categorical", "choices": [8, 32], "when": {"batch_size": 128}},
    }})  # fmt: skip
    assert apart.clashes() == []
    many = load_space_dict({"params": {
        "batch_size": {"type": "categorical", "choices": [8, 12, 16]},
        "cca_dim": {"type": "categorical", "choices": [16, 24, 32]},
    }})  # fmt: skip
    said = many.clashes()
    assert len(said) == 4 and said[-1] == "and 6 more such pairs of values", said  # 9: every batch_size <= cca_dim
    for name in ("quick", "hsc_mae", "ablation"):
        assert load_space(Path(__file__).parents[1] / "search_spaces" / f"{name}.yaml").clashes() == [], name
