"""The typed trainer config: validation, YAML, overrides, data-dependent resolution, help texts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import re

import pytest

from trainer.config import ConfigError, TrainConfig, describe, parse_overrides

EXAMPLE = Path(__file__).resolve().parents[1] / "trainer" / "configs" / "example.yaml"


def test_defaults_validate():
    cfg = TrainConfig()
    cfg.validate()
    assert TrainConfig.from_dict({}) == cfg
    assert TrainConfig.from_dict(None) == cfg
    assert cfg.active_losses() == ["rec", "dcca", "nce"]


def test_yaml_round_trip(tmp_path):
    cfg = TrainConfig.from_dict(
        {"seed": 7, "lr": 3e-4, "cca_ridge": 1e-5, "distill": "relational", "use_rec": False, "warmup_epochs": 0.5}
    )
    path = tmp_path / "cfg.yaml"
    text = cfg.to_yaml(path)
    assert path.read_text() == text
    back = TrainConfig.from_yaml(path)
    assert back == cfg
    assert back.to_dict() == cfg.to_dict()
    assert type(back.lr) is float and type(back.seed) is int and type(back.use_rec) is bool


def test_yaml_round_trip_of_defaults(tmp_path):
    path = tmp_path / "defaults.yaml"
    TrainConfig().to_yaml(path)
    assert TrainConfig.from_yaml(path) == TrainConfig()


@pytest.mark.parametrize(
    "item,key,value,kind",
    [
        ("epochs=12", "epochs", 12, int),
        ("batch_size=64", "batch_size", 64, int),
        ("lr=3e-4", "lr", 3e-4, float),
        ("lr=0.002", "lr", 0.002, float),
        ("cca_ridge=1.0e-2", "cca_ridge", 1e-2, float),
        ("tau=1", "tau", 1.0, float),  # an int literal for a float field
        ("use_rec=false", "use_rec", False, bool),
        ("use_nce=true", "use_nce", True, bool),
        ("distill=relational", "distill", "relational", str),
        ("eval_embedding = h", "eval_embedding", "h", str),
        ("epochs=1.0e+2", "epochs", 100, int),  # YAML reads 1.0e+2 as a float; an integral float is an int
    ],
)
def test_overrides_are_typed(item, key, value, kind):
    cfg = TrainConfig.from_dict(parse_overrides([item]))
    got = getattr(cfg, key)
    assert got == value and type(got) is kind


@pytest.mark.parametrize("raw", ["1e3", "1.0e3", "1E3"])
def test_exponent_integral_float_for_int_field(raw):
    # _coerce documents "int accepts integral floats like 1e3", but YAML 1.1 (PyYAML) reads 1e3 and 1.0e3
    # (no sign in the exponent) as strings, which the float branch parses and the int branch rejects.
    cfg = TrainConfig.from_dict(parse_overrides([f"epochs={raw}"]))
    assert cfg.epochs == 1000 and type(cfg.epochs) is int


@pytest.mark.parametrize("value", [100.0, 1e2])
def test_integral_python_float_for_int_field(value):
    cfg = TrainConfig.from_dict({"epochs": value})
    assert cfg.epochs == 100 and type(cfg.epochs) is int


def test_overrides_apply_on_top_of_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 5\nlr: 1.0e-3\n")
    cfg = TrainConfig.from_yaml(path, overrides=["lr=3e-4", "topk=0"])
    assert cfg.epochs == 5 and cfg.lr == 3e-4 and cfg.topk == 0


def test_override_without_equals_is_rejected():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["epochs"])


@pytest.mark.parametrize("value", [1.5, "ten", True, None])
def test_int_field_rejects_non_integers(value):
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig.from_dict({"epochs": value})


@pytest.mark.parametrize("key,value", [("use_rec", 1), ("use_rec", "yes please"), ("tau", "fast"), ("distill", 3)])
def test_wrong_types_are_rejected(key, value):
    with pytest.raises(ConfigError, match=key):
        TrainConfig.from_dict({key: value})


def test_unknown_key_names_key_and_lists_valid_names():
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({"learning_rate": 0.1})
    msg = str(info.value)
    assert "learning_rate" in msg
    for name in TrainConfig.field_names():
        assert name in msg


def test_unknown_key_from_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 5\n")
    with pytest.raises(ConfigError, match="mask_ration"):
        TrainConfig.from_yaml(path, overrides=["mask_ration=0.5"])


BAD_VALUES = {  # key: (value, a fragment of the message that must name the problem)
    "batch_size": (16, "cca_dim"),
    "cca_dim": (32, "batch_size (16) must exceed cca_dim (32)"),
    "mask_ratio": (1.0, "mask_ratio"),
    "tau": (0, "tau must be > 0"),
    "distill": ("sometimes", "distill"),
    "tau_teacher": (-0.1, "tau_teacher"),
    "ema_momentum": (1.0, "ema_momentum"),
}


def test_all_value_problems_reported_together():
    values = {k: v for k, (v, _) in BAD_VALUES.items()}
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(values)
    msg = str(info.value)
    for _, fragment in BAD_VALUES.values():
        assert fragment in msg
    assert "'sometimes'" in msg and "mask_ratio must be in [0, 1), got 1.0" in msg
    assert len(msg.splitlines()) >= 6  # one problem per line


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5])
def test_mask_ratio_out_of_range(ratio):
    with pytest.raises(ConfigError, match="mask_ratio"):
        TrainConfig.from_dict({"mask_ratio": ratio})


@pytest.mark.parametrize("batch_size,cca_dim", [(16, 16), (16, 32), (8, 8)])
def test_batch_must_exceed_cca_dim(batch_size, cca_dim):
    with pytest.raises(ConfigError, match="must exceed cca_dim"):
        TrainConfig.from_dict({"batch_size": batch_size, "cca_dim": cca_dim})


def test_type_and_value_problems_reported_together():
    # STYLE.md / the module docstring: "validated once, all problems reported together".
    values = {
        "epochs": "ten",
        "batch_size": 16,
        "cca_dim": 32,
        "mask_ratio": -0.1,
        "tau": 0,
        "distill": "sometimes",
        "not_a_field": 1,
    }
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(values)
    msg = str(info.value)
    for fragment in ("epochs", "'ten'", "not_a_field", "cca_dim (32)", "mask_ratio", "tau must be > 0", "distill"):
        assert fragment in msg, f"{fragment!r} missing from:\n{msg}"


def test_error_names_yaml_file(tmp_path):
    path = tmp_path / "my_experiment.yaml"
    path.write_text("mask_ratio: 1.0\ntau: 0\n")
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_yaml(path)
    msg = str(info.value)
    assert "my_experiment.yaml" in msg and "mask_ratio" in msg and "tau" in msg


@pytest.mark.parametrize("text", ["- 1\n- 2\n", "just a string\n", "42\n"])
def test_non_mapping_yaml_is_rejected(tmp_path, text):
    path = tmp_path / "list.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="list.yaml"):
        TrainConfig.from_yaml(path)


def test_invalid_yaml_is_rejected(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("epochs: [1, 2\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        TrainConfig.from_yaml(path)


def test_missing_file_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="nowhere.yaml"):
        TrainConfig.from_yaml(tmp_path / "nowhere.yaml")


def test_empty_yaml_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n")
    assert TrainConfig.from_yaml(path) == TrainConfig()


def test_no_active_loss_is_rejected():
    with pytest.raises(ConfigError, match="no loss is active"):
        TrainConfig.from_dict({"use_rec": False, "use_dcca": False, "use_nce": False})
    with pytest.raises(ConfigError, match="no loss is active"):  # rec with mask_ratio 0 reconstructs nothing
        TrainConfig.from_dict({"mask_ratio": 0.0, "use_dcca": False, "use_nce": False})


# ----------------------------------------------------------------------------- resolve


@pytest.mark.parametrize(
    "n_train,audio_dim,visual_dim,batch,cca_dim",
    [
        (20000, 128, 1024, 256, 16),  # VEGAS-like: 16 cap
        (100, 128, 1024, 100, 16),  # batch clamped to the split
        (12, 128, 1024, 12, 11),  # cca_dim below the clamped batch
        (5000, 10, 1024, 256, 10),  # small audio
        (5000, 128, 6, 256, 6),  # small visual
    ],
)
def test_resolve_clamps_batch_and_picks_cca_dim(n_train, audio_dim, visual_dim, batch, cca_dim):
    cfg = TrainConfig().resolve(n_train, audio_dim, visual_dim)
    assert cfg.batch_size == batch
    assert cfg.cca_dim == cca_dim
    assert cfg.cca_dim <= min(audio_dim, visual_dim, cfg.batch_size - 1)
    assert cfg.cca_k == cca_dim  # 0 = all
    assert cfg.topk < cfg.batch_size
    cfg.validate()


def test_resolve_keeps_explicit_values():
    cfg = TrainConfig.from_dict({"cca_dim": 16, "cca_k": 4, "batch_size": 64}).resolve(1000, 128, 128)
    assert (cfg.batch_size, cfg.cca_dim, cfg.cca_k) == (64, 16, 4)


def test_resolve_clamps_topk_to_small_batch():
    cfg = TrainConfig.from_dict({"topk": 50, "batch_size": 256}).resolve(12, 128, 128)
    assert cfg.batch_size == 12 and cfg.topk == 11


def test_resolve_does_not_change_original():
    cfg = TrainConfig()
    cfg.resolve(50, 8, 8)
    assert cfg == TrainConfig()


@pytest.mark.parametrize("n_train,cca_dim", [(10, 16), (16, 16), (40, 64)])
def test_resolve_rejects_explicit_cca_dim_that_cannot_fit(n_train, cca_dim):
    cfg = TrainConfig.from_dict({"cca_dim": cca_dim, "batch_size": 256})
    with pytest.raises(ConfigError) as info:
        cfg.resolve(n_train, 128, 128)
    msg = str(info.value)
    assert str(cca_dim) in msg and str(n_train) in msg


# ----------------------------------------------------------------------------- help texts and shipped configs


def test_every_field_has_help_text():
    for f in dataclasses.fields(TrainConfig):
        help_text = f.metadata.get("help")
        assert isinstance(help_text, str) and len(help_text.strip()) > 10, f.name
    text = describe()
    for name in TrainConfig.field_names():
        assert f"{name} (default" in text


def test_choice_field_defaults_are_valid_choices():
    n_choice_fields = 0
    for f in dataclasses.fields(TrainConfig):
        choices = f.metadata.get("choices")
        if choices:
            n_choice_fields += 1
            assert f.default in choices, f.name
    assert n_choice_fields >= 5  # distill, loss_weighting, eval_model, eval_embedding, eval_projection


def test_example_config_loads_and_validates():
    cfg = TrainConfig.from_yaml(EXAMPLE)
    cfg.validate()
    assert cfg.cca_ridge == pytest.approx(1e-3) and cfg.lr == pytest.approx(1e-3)
    assert cfg.resolve(22482, 128, 1024).cca_dim == 16
    import trainer

    assert Path(trainer.EXAMPLE_CONFIG).resolve() == EXAMPLE


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "trainer" / "configs").glob("*.yaml")))
def test_every_shipped_config_validates(path):
    TrainConfig.from_yaml(path).validate()


# ------------------------------------------------------------------ issue 8: trained as written, validated once
def test_auto_ema_momentum_keeps_the_teacher_window_within_a_tenth_of_the_run():
    from trainer.config import auto_ema_momentum

    assert auto_ema_momentum(90) == pytest.approx(1 - 1 / 9)  # 90 steps: window 9 steps, not 100
    assert auto_ema_momentum(2370) == 0.99  # a VEGAS-size run (30 epochs) gets the ceiling
    assert auto_ema_momentum(5) == 0.0  # fewer than 10 steps: the teacher follows the student
    for steps in (10, 100, 1000, 10000):
        assert 1 / (1 - auto_ema_momentum(steps)) <= 0.1 * steps + 1e-9


@pytest.mark.parametrize("m", [0.9, 0.99, 0.996, 0.999])
def test_an_explicit_ema_momentum_is_trained_as_written(m):
    # AVE size: 3,339 train clips, batch 256, 30 epochs = 390 steps; the old cap turned all of these into 0.9744
    resolved = TrainConfig(ema_momentum=m).resolve(3339, 128, 1024)
    assert resolved.ema_momentum == m


def test_auto_ema_momentum_resolves_to_the_effective_value():
    resolved = TrainConfig().resolve(3339, 128, 1024)  # 13 steps/epoch x 30 epochs = 390 steps
    assert TrainConfig().ema_momentum == 0.0
    assert resolved.ema_momentum == pytest.approx(1 - 10 / 390)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"batch_size": 2}, "batch_size must be >= 8, got 2"),
        ({"ema_momentum": 1.0}, "ema_momentum must be 0 (auto) or in (0, 1)"),
        ({"use_rec": False, "use_dcca": False, "use_nce": False}, "no loss is active"),
        ({"distill": "sometimes"}, "distill must be one of"),
        # a head no active loss trains is a random projection: judging retrieval on it is refused
        ({"use_nce": False}, "eval_embedding z: the contrastive head z is trained only by InfoNCE (use_nce) or "
                             "distillation"),
        ({"use_nce": False, "use_dcca": False}, "eval_embedding z:"),
        ({"use_dcca": False, "eval_embedding": "h"}, "eval_embedding h: the CCA head h is trained only by DCCA"),
        ({"logvar_floor": 1.0}, "logvar_floor must be <= 0"),
    ],
)
def test_construction_validates(kwargs, fragment):
    for ok in ({"use_nce": False, "eval_embedding": "h"}, {"use_nce": False, "eval_embedding": "e"},
               {"use_nce": False, "distill": "relational"}, {"use_dcca": False, "eval_embedding": "e"},
               {"logvar_floor": 0.0}):  # fmt: skip
        TrainConfig(**ok)  # the same fields, valid: what is refused is the combination above
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**kwargs)


@pytest.mark.parametrize(
    "item, fragment",
    [
        ("epochs=inf", "epochs: expected a finite integer, got"),
        ("lr=.inf", "lr: expected a finite number, got inf"),
        ("tau=nan", "tau: expected a finite number"),
        ("epochs=-.inf", "epochs: expected a finite integer"),
    ],
)
def test_non_finite_numbers_are_refused_and_blamed_on_the_flag(tmp_path, item, fragment):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 5\n")
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_yaml(path, overrides=[item])
    msg = str(info.value)
    assert f"--set {item}: {fragment}" in msg
    assert str(path) not in msg  # the file is fine: the flag is to blame


def test_a_file_problem_is_blamed_on_the_file_and_a_flag_problem_on_the_flag(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 5\nmask_ratio: 1.5\n")
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_yaml(path, overrides=["bogus=1", "tau=0"])
    lines = str(info.value).splitlines()
    assert any(l.startswith(f"{path}: mask_ratio must be in [0, 1)") for l in lines), lines
    assert any(l.startswith("--set bogus=1: unknown key 'bogus'") for l in lines), lines
    assert any(l.startswith("--set tau=0: tau must be > 0") for l in lines), lines
    # a rule between two fields is blamed on the flag that set either (`--set batch_size=4` was blamed on the file
    # for topk 5, a walkthrough); with both from the file, on the file
    path.write_text("topk: 12\ncca_dim: 10\n")
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_yaml(path, overrides=["batch_size=10"])
    assert str(info.value).splitlines() == [
        "--set batch_size=10: batch_size (10) must exceed cca_dim (10): DCCA covariances need more samples than "
        "dimensions", "--set batch_size=10: topk (12) must be below batch_size (10)"], str(info.value)
    path.write_text("topk: 12\nbatch_size: 10\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: topk \(12\) must be below batch_size \(10\)$"):
        TrainConfig.from_yaml(path)
    # z evaluated with neither loss that trains it: blamed on the --set that turned one off, not on a file the user
    # never named (the shipped example, as `python -m trainer` reads it without --config: a walkthrough)
    path.write_text("eval_embedding: z\n")
    with pytest.raises(ConfigError, match=r"^--set use_nce=false: eval_embedding z: the contrastive head z"):
        TrainConfig.from_yaml(path, overrides=["use_nce=false", "distill=none"])


def test_a_cca_k_above_the_auto_cca_dim_names_the_auto_value():
    """`--set cca_k=40` with cca_dim auto on 16-d features said "config: cca_k (40) must not exceed cca_dim (16)",
    a cca_dim no one gave (a walkthrough): said as what auto picked for the data, and why."""
    with pytest.raises(ConfigError) as e:
        TrainConfig(cca_k=40).resolve(400, 16, 24)
    assert str(e.value) == ("data: cca_k 40 exceeds cca_dim 16, which auto (cca_dim 0) picked for this data (min(16, "
                            "audio dim 16, visual dim 24, batch 256 - 1)): a cca_k of at most 16, 0 (all), or an "
                            "explicit cca_dim"), str(e.value)
    assert TrainConfig(cca_k=16).resolve(400, 16, 24).cca_k == 16  # at most the auto value: trains


def test_zero_padded_integers_are_refused_not_read_as_octal(tmp_path):
    """YAML 1.1 reads 064 as octal 52 and 1:30 as 90: a config, a space or a --set with them trained another value
    than written, without a word (found by a walkthrough)."""
    from hsc_search.space import SpaceError, load_space
    from trainer.config import parse_overrides

    cfg = tmp_path / "c.yaml"
    cfg.write_text("hidden_dim: 064\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*064 is read by YAML 1\.1 as 52 \(octal\); write 64 without the "
                                          r"leading zeros, or quote it as text \(line 1"):
        TrainConfig.from_yaml(cfg)
    space = tmp_path / "s.yaml"
    space.write_text("params:\n  hidden_dim: {type: categorical, choices: [032, 128]}\n")
    with pytest.raises(SpaceError, match=r"s\.yaml.*032 is read by YAML 1\.1 as 26 \(octal\)"):
        load_space(space)
    with pytest.raises(ConfigError, match=r"--set seed=010: 010 is read by YAML 1\.1 as 8 \(octal\); write 10"):
        parse_overrides(["seed=010"])
    cfg.write_text("epochs: 1:30\n")
    with pytest.raises(ConfigError, match=r"1:30 is read by YAML 1\.1 as 90 \(base 60\); write 90 if meant"):
        TrainConfig.from_yaml(cfg)
    # plain integers, zero itself, hex, floats and quoted text are read as before
    assert parse_overrides(["seed=0", "epochs=10", "lr=0.05", "name='010'"]) == {
        "seed": 0, "epochs": 10, "lr": 0.05, "name": "010"}  # fmt: skip


def test_a_yaml_boolean_in_a_text_field_says_to_quote_it(tmp_path):
    """`eval_model: on` (YAML 1.1: True) was refused as 'expected a string, got True' with no word of why."""
    from hsc_search.space import SpaceError, load_space

    cfg = tmp_path / "c.yaml"
    cfg.write_text("eval_model: off\n")
    # a field with choices names them (quoting 'off' would not help: a walkthrough found the hint useless there)
    with pytest.raises(ConfigError, match=r"eval_model: expected one of teacher, student, got False \(YAML reads "
                                          r"on/off, yes/no and true/false as booleans\)$"):
        TrainConfig.from_yaml(cfg)
    space = tmp_path / "s.yaml"
    space.write_text("params:\n  eval_model: {type: categorical, choices: [teacher, on]}\n")
    with pytest.raises(SpaceError, match=r"choice True: expected one of \['teacher', 'student'\], got True \(YAML "
                                         r"reads on/off"):
        load_space(space)


def test_a_typoed_key_is_told_the_field_it_is_close_to(tmp_path):
    """Among ~35 valid keys a typo was told only the whole list (a walkthrough): the close field is named first."""
    path = tmp_path / "c.yaml"
    path.write_text("mask_ration: 0.5\n")
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_yaml(path, overrides=["hiden_dim=64", "bogus=1"])
    lines = str(info.value).splitlines()
    assert any(l.startswith(f"{path}: unknown key 'mask_ration' (did you mean 'mask_ratio'?); valid keys: ")
               for l in lines), lines
    assert any(l.startswith("--set hiden_dim=64: unknown key 'hiden_dim' (did you mean 'hidden_dim'?)")
               for l in lines), lines
    assert any(l.startswith("--set bogus=1: unknown key 'bogus'; valid keys: ") for l in lines), lines
    # a wrong hint is worse than none: difflib's default cutoff told ema_decay to mean weight_decay (the review)
    from trainer.config import did_you_mean

    names = TrainConfig.field_names()
    hints = {k: did_you_mean(k, names) for k in ("ema_decay", "warmup", "use_distill", "LR", "cca", "w_kd")}
    assert hints == {"ema_decay": "", "warmup": " (did you mean 'warmup_epochs'?)", "w_kd": "",
                     "use_distill": " (did you mean 'distill'?)", "LR": " (did you mean 'lr'?)",
                     "cca": " (did you mean one of cca_dim, cca_ridge, cca_k?)"}  # fmt: skip


def test_a_set_given_twice_with_two_values_is_said(tmp_path):
    """`--set lr=0.003 --set lr=0.004` trained 0.004 without a word (a walkthrough). The last is used, as for any
    flag given twice (a script's base flags, then one changed: our own tests do it), and said; the same value twice
    is not."""
    from trainer.config import repeated_sets

    assert TrainConfig.from_yaml(EXAMPLE, overrides=["lr=0.003", "lr = 0.004"]).lr == 0.004
    assert repeated_sets(["lr=0.003", "epochs=2", "lr = 0.004", "lr=1e-3", "epochs=2.0", "bad"]) == [
        "--set lr is given 3 times (0.003, 0.004, 0.001): the last, 0.001, is used"]
    assert repeated_sets(["tau=0.1", "tau=0.2"]) == ["--set tau is given twice (0.1, 0.2): the last, 0.2, is used"]
    with pytest.raises(ConfigError, match=r"^--set lr: expected key=value$"):  # (it said "override 'lr'")
        TrainConfig.from_yaml(EXAMPLE, overrides=["lr"])
