"""The trainer's typed configuration: one dataclass, validated once, all problems reported together.

Every field carries a help text with its sensible range and what goes wrong outside it
(`describe()` prints them; the search-space loader checks names against `field_names()`).
A config is a plain object: a search builds one in code with `TrainConfig.from_dict(...)`,
a user writes YAML and overrides single keys with `key=value`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from .yamlfile import load_yaml, wrong_kind, yaml_problem

_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
AUTO_CCA_DIM = 16  # the auto CCA head size cap (see the cca_dim help)
AUTO_FIELDS = ("cca_dim", "cca_k", "ema_momentum")  # 0 = auto: TrainConfig.resolve fills them in for the data
ABOVE_ZERO = "above 0"
# fields the trainer reads only when other fields take certain values: field -> its conditions, each (that field,
# the values under which it is read, or ABOVE_ZERO); it is read only when all of them hold. A search space that
# searches one without a matching `when` spends trials on values that change nothing (and Optuna's importances
# then credit noise to it): hsc_search's start says so, and the report says "not used" of it.
_LEARNED = ("learned", "learned_raw")
USED_ONLY_WHEN: dict[str, tuple[tuple[str, Any], ...]] = {
    "w_rec": (("loss_weighting", ("fixed",)), ("use_rec", (True,)), ("mask_ratio", ABOVE_ZERO)),  # (nothing masked:
    "w_dcca": (("loss_weighting", ("fixed",)), ("use_dcca", (True,))),  # no reconstruction loss)
    "w_nce": (("loss_weighting", ("fixed",)), ("use_nce", (True,))),
    "w_distill": (("loss_weighting", ("fixed",)), ("distill", ("relational", "embedding"))),
    **{n: (("loss_weighting", _LEARNED),) for n in ("weight_lr", "weight_warmup_epochs", "logvar_floor")},
    "tau": (("use_nce", (True,)),),  # the InfoNCE loss's alone (a walkthrough: searched with use_nce false, unsaid)
    "topk": (("use_nce", (True,)),),
    "tau_teacher": (("use_nce", (True,)), ("topk", ABOVE_ZERO)),  # the teacher's soft top-k targets: topk 0 is
    "self_weight": (("use_nce", (True,)), ("topk", ABOVE_ZERO)),  # plain InfoNCE
}  # fmt: skip
AUTO_EMA_CEILING = 0.99  # the auto starting EMA momentum of long runs (see the ema_momentum help)


# YAML 1.1 reads on/off, yes/no, true/false (any case) as booleans: a text field given `on` got True
YAML_BOOLEANS = "YAML reads on/off, yes/no and true/false as booleans"
YAML_BOOL_HINT = f" ({YAML_BOOLEANS}: quote the word, e.g. 'on')"


class ConfigError(ValueError):
    """A configuration is invalid; the message lists every problem found, one per line.

    Attributes:
        problems: the lines of the message.
    """

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__(capped("\n".join(self.problems)))


def quoted_bool(value: Any) -> str:
    """The hint for a boolean written in quotes ("true", 'no'), which YAML reads as text, or ""."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "on", "off"):
        return " (text, not a boolean: in a YAML file, write it without quotes)"
    return ""


SHOWN_PROBLEMS = 20


def capped(message: str, limit: int = SHOWN_PROBLEMS) -> str:
    """A message of one problem per line, its first `limit` lines and a count of the others (a config of
    100,000 unknown keys printed 100,000 lines, each with every valid name: a walkthrough)."""
    lines = message.split("\n")
    if len(lines) <= limit + 1:
        return message
    return "\n".join([*lines[:limit], f"... and {len(lines) - limit} more problems (the first {limit} are above)"])


# other tools' and papers' names for trainer fields (a walkthrough's space named learning_rate and was told the list
# of every field)
OTHER_NAMES = {"learning_rate": "lr", "learningrate": "lr", "batch": "batch_size", "batchsize": "batch_size",
               "wd": "weight_decay", "temperature": "tau", "mask_rate": "mask_ratio", "masking_ratio": "mask_ratio",
               "warmup": "warmup_epochs", "hidden_size": "hidden_dim", "embedding_dim": "embed_dim",
               "random_seed": "seed"}  # fmt: skip


def did_you_mean(name: str, names: list[str]) -> str:
    """The hint for a mistyped field name, " (did you mean 'x'?)", or "": the field it is, case aside (LR: lr), the
    field that is a word of it (use_distill: distill), the fields it is a word of (warmup: warmup_epochs), else a
    close spelling (hiden_dim: hidden_dim). difflib's default cutoff (0.6) told ema_decay to mean weight_decay and
    warmup amp (the review): a wrong hint is worse than none."""
    key = name.lower()
    other = OTHER_NAMES.get(key.replace("-", "_"))  # another tool's name for a field (learning_rate: lr)
    if other in names:
        return f" (did you mean '{other}'?)"
    words = ([key] if key in names else  # LR: lr
             [n for n in names if key.startswith(n + "_") or key.endswith("_" + n)]  # use_distill: distill
             or [n for n in names if n.startswith(key + "_") or n.endswith("_" + key)])  # fmt: skip
    if len(words) > 1:
        return f" (did you mean one of {', '.join(words)}?)"
    near = words or difflib.get_close_matches(key, names, n=1, cutoff=0.75)
    return f" (did you mean '{near[0]}'?)" if near else ""


def select_metrics() -> tuple[str, ...]:
    """The metrics `TrainConfig.select_metric` takes."""
    return next(f for f in dataclasses.fields(TrainConfig) if f.name == "select_metric").metadata["choices"]


def select_mode(metric: str) -> str:
    """The direction in which a selection metric (`TrainConfig.select_metric`) is better."""
    return "min" if metric.startswith("loss/") else "max"


def _f(default: Any, help: str, choices: tuple | None = None):
    return field(default=default, metadata={"help": help, "choices": choices})


def why_unwritable(folder: str | Path) -> str | None:
    """Why this process cannot make files in `folder`: None when it can, else "read-only file system" (a
    read-only mount: no permission would help; it was called "permission denied") or "permission denied"."""
    if os.access(folder, os.W_OK | os.X_OK):
        return None
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    return "read-only file system" if read_only else "permission denied"


@dataclass
class TrainConfig:
    """Everything one HSC-MAE training run needs besides the data."""

    # --- run ---
    seed: int = _f(0, "Seed for initialisation, shuffling and masking. Same seed, same data, same device: same run.")
    epochs: int = _f(30, "Training epochs (>= 1). ASHA's budget unit. 20-100 is typical; AVE-size data saturates by ~40.")
    batch_size: int = _f(
        256,
        "Clips per step (>= 8). Must exceed cca_dim (DCCA covariances need more samples than dims). "
        "Clamped to the train-split size. An epoch trains whole batches only: the last (train clips mod batch_size) "
        "clips of its shuffled order sit that epoch out. 128-1024; larger batches give InfoNCE more negatives.",
    )
    # --- model ---
    hidden_dim: int = _f(512, "Width of the encoder/decoder MLPs (and of the sequence transformer). 128-1024.")
    embed_dim: int = _f(128, "Size of the shared embedding e each encoder returns. 64-256.")
    proj_dim: int = _f(128, "Size of the contrastive head z (InfoNCE, distillation, retrieval by default). 64-256.")
    cca_dim: int = _f(
        0,
        "k_out, size of the CCA head h. 0 = auto: min(16, audio dim, visual dim, batch_size - 1). "
        "Must be below batch_size; 8-64. DCCA estimates the correlations on each batch, and with more dims per "
        "clip they fit the batch, not the data: at batch 256, 16 beat 32 by 0.02 mAP on synthetic AVE and 0.03 on "
        "VEGAS (quality benchmark).",
    )
    seq_layers: int = _f(1, "Transformer layers over time steps, used only for (N, T, D) sequence features. 1-4.")
    # --- losses on/off (ablations) ---
    use_rec: bool = _f(True, "Masked feature reconstruction (sample level). Off = no MAE loss; mask_ratio 0 turns it "
                       "off too (nothing is masked to reconstruct).")
    use_dcca: bool = _f(True, "DCCA on the unmasked student CCA path (global level). Off = no CCA loss.")
    use_nce: bool = _f(True, "Soft top-k InfoNCE on the masked student path (local level). Off = no contrastive loss.")
    distill: str = _f(
        "none",
        "Teacher-to-student distillation: none; relational (MSE between cross-modal similarity matrices); "
        "embedding (mean over clips of the squared distance between normalised embeddings, 2 - 2 cos, in [0, 4]).",
        choices=("none", "relational", "embedding"),
    )
    # --- masking ---
    mask_ratio: float = _f(
        0.5,
        "Fraction of feature entries (vectors) or time steps (sequences) masked on the student MAE path, in [0, 1). "
        "0.3-0.75; above ~0.9 the student sees too little to match its pair. 0: no masking and no reconstruction "
        "loss (loss/rec is not reported).",
    )
    # --- DCCA ---
    cca_ridge: float = _f(
        1e-3,
        "Ridge r added to both auto-covariances (> 0). 1e-4-1e-1; below ~1e-5 small batches give unstable whitening.",
    )
    cca_k: int = _f(0, "Number of top canonical correlations in the DCCA loss; 0 = all cca_dim of them.")
    # --- soft top-k InfoNCE ---
    tau: float = _f(
        0.3,
        "Student InfoNCE temperature (> 0). 0.1-1.0. Low values weight the hardest negatives most, and those are "
        "clips of the same class: at 0.1 validation mAP peaks in the first epochs and then falls (quality "
        "benchmark: 0.3 beats 0.1 by 0.07 mAP on synthetic AVE and 0.20 on VEGAS). Below ~0.02 logits overflow.",
    )
    topk: int = _f(
        5,
        "Teacher neighbours used as soft positives per clip (>= 0, below batch_size). 0 = plain symmetric InfoNCE (CLIP).",
    )
    tau_teacher: float = _f(0.05, "Temperature of the teacher's softmax over its top-k affinities (> 0). 0.01-0.2.")
    self_weight: float = _f(
        0.7, "Target mass on the true pair, in (0, 1]; the rest is spread over the top-k neighbours. 0.5-0.9."
    )
    # --- EMA teacher ---
    ema_momentum: float = _f(
        0.0,
        "Initial teacher EMA momentum m; rises to 1.0 on a cosine schedule over all steps (DINO). 0 = auto: "
        "max(0, min(0.99, 1 - 10 / total steps)) (runs of 10 steps or fewer start at 0: the teacher follows the "
        "student, and their config.yaml says 0.0), i.e. the teacher's averaging window 1 / (1 - m) is at most a tenth of the "
        "run (starting at 0.99 on the cosine rise, a 90-step run ends with a teacher that still carries ~63% of its random init); the effective "
        "value is written to the run's config.yaml. Any other value in (0, 1) is trained exactly as written, so "
        "distinct searched values train differently. 0.9-0.999 (DINO and BYOL: 0.996 over thousands of steps); "
        "a window 1 / (1 - m) longer than the run leaves the teacher near its initialisation.",
    )
    # --- loss weighting ---
    loss_weighting: str = _f(
        "learned",
        "learned: homoscedastic-uncertainty weights (Kendall et al. 2018) on each loss relative to its first-step "
        "value R_i, exp(-s_i) L_i / R_i + s_i; learned_raw: the same on the raw losses (the paper's form: the "
        "weights then rank losses by size, not use); fixed: the w_* below.",
        choices=("learned", "learned_raw", "fixed"),
    )
    weight_lr: float = _f(0.01, "Learning rate of the learned log-variances s_i (Adam). 1e-3-5e-2.")
    weight_warmup_epochs: int = _f(1, "Epochs during which the learned s_i stay at their initial 0 (>= 0).")
    logvar_floor: float = _f(
        -2.0,
        "Lower bound on each s_i, i.e. at most exp(-floor) times the starting weight (e^2 = 7.4 by default). "
        "Without it a loss that approaches 0 gets an exploding weight (the optimum is s_i = log of the weighted "
        "loss). -4 to 0.",
    )
    w_rec: float = _f(1.0, "Fixed weight of the reconstruction loss (loss_weighting=fixed). >= 0.")
    w_dcca: float = _f(1.0, "Fixed weight of the DCCA loss (loss_weighting=fixed). >= 0.")
    w_nce: float = _f(1.0, "Fixed weight of the InfoNCE loss (loss_weighting=fixed). >= 0.")
    w_distill: float = _f(1.0, "Fixed weight of the distillation loss (loss_weighting=fixed). >= 0.")
    # --- optimisation ---
    lr: float = _f(1e-3, "Peak AdamW learning rate (> 0). 1e-4-1e-2; above it training degrades fast (3e-2 at or near "
                   "chance), and from ~1e-1 the reconstruction loss blows up, mostly without the non-finite loss that "
                   "would stop the run.")
    weight_decay: float = _f(0.05, "AdamW weight decay (>= 0). 0-0.2.")
    warmup_epochs: float = _f(1.0, "Linear learning-rate warm-up, in epochs (>= 0); then cosine decay.")
    min_lr_ratio: float = _f(0.01, "Final learning rate as a fraction of lr, in [0, 1].")
    grad_clip: float = _f(1.0, "Max global gradient norm; 0 disables clipping.")
    amp: bool = _f(True, "bfloat16 autocast on CUDA, for training and evaluation (the DCCA algebra stays float64, on "
                         "bf16 embeddings: val mAP and cca/rho then differ from a float32 run, by about 1e-4 to 1e-3 emulated on a CPU). "
                         "Ignored on CPU.")
    # --- evaluation ---
    eval_model: str = _f(
        "teacher",
        "Which network embeds clips for evaluation: teacher (the EMA copy) or student. The teacher lags the student "
        "by about 1/(1 - ema_momentum) steps, so very short runs may score better with the student.",
        choices=("teacher", "student"),
    )
    eval_embedding: str = _f(
        "z",
        "Which embedding retrieval uses: z (contrastive head: needs use_nce or distill), h (CCA head: needs "
        "use_dcca) or e (encoder output). A head no active loss trains is a random projection: refused.",
        choices=("z", "h", "e"),
    )
    eval_projection: str = _f(
        "none",
        "none: cosine on the embedding; cca: a linear CCA fitted on the train split's embeddings projects both "
        "modalities first (needed to judge DCCA-only models, whose raw outputs are not cosine-comparable).",
        choices=("none", "cca"),
    )
    select_metric: str = _f(
        "val/map_avg",
        "The metric that selects the epoch whose checkpoint is tested and kept: the best one (a validation mAP or "
        "cca/mean: highest; loss/total, the training epoch's: lowest). A search sets it to its --metric when it "
        "is one of these.",
        choices=("val/map_avg", "val/map_a2v", "val/map_v2a", "cca/mean", "loss/total"),
    )
    val_fraction: float = _f(0.1, "Fraction of train carved (seeded) as validation when the data has no val split.")

    # ------------------------------------------------------------------ construction
    def __post_init__(self) -> None:
        """Every TrainConfig is valid: construction checks all fields at once (see `problems`)."""
        problems = self.problems()
        if problems:
            raise ConfigError([f"config: {p}" for p in problems])

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config", origins: dict[str, str] | None = None
                  ) -> "TrainConfig":  # fmt: skip
        """Builds a config; unknown keys, wrong types and invalid values are all reported together.

        Args:
            values: field: value.
            source: names where the values came from in every message (a file, "trial config", ...).
            origins: per key, a different source to blame (e.g. "--set lr=x" for a command-line override).
        """
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: expected a mapping of field: value, got {type(values).__name__}")
        origins = origins or {}
        problems: list[str] = []
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in values.items():
            where = origins.get(key, source)
            if key not in fields:
                near = did_you_mean(str(key), list(fields))  # a typo'd key among ~35 (a walkthrough)
                problems.append(f"{where}: unknown key '{key}'{near}; valid keys: {', '.join(fields)}")
                continue
            try:
                kwargs[key] = _coerce(value, fields[key])
            except (TypeError, ValueError) as e:
                problems.append(f"{where}: {key}: {e}")
        # fields that failed coercion keep their defaults, so the value checks still run on the rest
        candidate = cls.__new__(cls)
        candidate.__dict__.update({**{n: f.default for n, f in fields.items()}, **kwargs})
        for keys, msg in candidate._keyed_problems():  # a rule over two fields: the one given by a flag, if any
            where = next((origins[k] for k in keys.split("|") if k in origins), source)
            problems.append(f"{where}: {msg}")
        if problems:
            raise ConfigError(problems)
        return candidate  # checked above: the same checks __post_init__ runs, run once

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Iterable[str] = (),
                  if_empty: Callable[[], None] | None = None) -> "TrainConfig":  # fmt: skip
        """Reads a YAML file (a flat mapping) and applies `key=value` overrides on top; a problem with an
        override is reported against the flag (`--set key=value`), not the file. `if_empty`: called when the
        file sets no field (empty, or all comments), the file read once (a pipe or FIFO can be read only once)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{path}: cannot read config file ({e.strerror})") from None
        except UnicodeDecodeError as e:  # e.g. the data file given as --config
            raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); expected a YAML trainer config") from None
        try:
            values = load_yaml(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {yaml_problem(e)}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of field: value at the top level")
        wrong = wrong_kind(path, values, "trainer")
        if wrong:
            raise ConfigError(wrong)
        if not values and if_empty is not None:
            if_empty()
        return cls.with_overrides(values, overrides, source=str(path))

    @classmethod
    def with_overrides(cls, values: dict[str, Any], overrides: Iterable[str] = (),
                       source: str = "config") -> "TrainConfig":  # fmt: skip
        """`values` (from `source`) with `key=value` overrides on top, each problem blamed on where it came from."""
        overrides = list(overrides)
        parsed = parse_overrides(overrides)
        origins = {k: f"--set {item.strip()}" for item in overrides for k in parse_overrides([item])}
        return cls.from_dict({**values, **parsed}, source=source, origins=origins)

    def replace(self, **changes: Any) -> "TrainConfig":
        """A validated copy with some fields changed."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:  # whole or not at all: a full disk left an empty config.yaml, which a run then took
            path = Path(path)  # for someone else's file and refused to replace (a walkthrough)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                tmp.write_text(text)
                os.replace(tmp, path)
            except OSError as e:  # named as the file it was to be
                tmp.unlink(missing_ok=True)
                raise OSError(e.errno, e.strerror, str(path)) from None
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        return text

    # ------------------------------------------------------------------ validation
    def validate(self, source: str = "config") -> None:
        """Raises ConfigError listing every problem (not just the first). Construction already calls it."""
        problems = self.problems()
        if problems:
            raise ConfigError([f"{source}: {p}" for p in problems])

    def problems(self) -> list[str]:
        """Every problem with the values, one line each (empty when valid)."""
        return [msg for _, msg in self._keyed_problems()]

    def _keyed_problems(self) -> list[tuple[str, str]]:
        """(field to blame, message) for every problem; a rule between fields names them all: "topk|batch_size"."""
        p: list[tuple[str, str]] = []

        def need(cond: bool, key: str, msg: str) -> None:
            if not cond:
                p.append((key, msg))

        need(self.epochs >= 1, "epochs", f"epochs must be >= 1, got {self.epochs}")
        need(self.batch_size >= 8, "batch_size", f"batch_size must be >= 8, got {self.batch_size}")
        for name in ("hidden_dim", "embed_dim", "proj_dim", "seq_layers"):
            need(getattr(self, name) >= 1, name, f"{name} must be >= 1, got {getattr(self, name)}")
        need(self.cca_dim >= 0, "cca_dim", f"cca_dim must be >= 0 (0 = auto), got {self.cca_dim}")
        if self.cca_dim > 0:
            need(
                self.batch_size > self.cca_dim,
                "cca_dim|batch_size",
                f"batch_size ({self.batch_size}) must exceed cca_dim ({self.cca_dim}): DCCA covariances need more "
                "samples than dimensions",
            )
        need(self.cca_k >= 0, "cca_k", f"cca_k must be >= 0 (0 = all), got {self.cca_k}")
        if self.cca_dim > 0:
            need(self.cca_k <= self.cca_dim, "cca_k", f"cca_k ({self.cca_k}) must not exceed cca_dim ({self.cca_dim})")
        need(0.0 <= self.mask_ratio < 1.0, "mask_ratio", f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        need(self.cca_ridge > 0, "cca_ridge", f"cca_ridge must be > 0, got {self.cca_ridge}")
        need(self.tau > 0, "tau", f"tau must be > 0, got {self.tau}")
        need(self.tau_teacher > 0, "tau_teacher", f"tau_teacher must be > 0, got {self.tau_teacher}")
        need(self.topk >= 0, "topk", f"topk must be >= 0, got {self.topk}")
        need(self.topk < self.batch_size, "topk|batch_size", f"topk ({self.topk}) must be below batch_size ({self.batch_size})")
        need(0.0 < self.self_weight <= 1.0, "self_weight", f"self_weight must be in (0, 1], got {self.self_weight}")
        need(0.0 <= self.ema_momentum < 1.0, "ema_momentum",
             f"ema_momentum must be 0 (auto) or in (0, 1), got {self.ema_momentum}")  # fmt: skip
        need(self.weight_lr > 0, "weight_lr", f"weight_lr must be > 0, got {self.weight_lr}")
        need(self.weight_warmup_epochs >= 0, "weight_warmup_epochs",
             f"weight_warmup_epochs must be >= 0, got {self.weight_warmup_epochs}")  # fmt: skip
        for name in ("w_rec", "w_dcca", "w_nce", "w_distill", "weight_decay", "warmup_epochs", "grad_clip"):
            need(getattr(self, name) >= 0, name, f"{name} must be >= 0, got {getattr(self, name)}")
        need(self.lr > 0, "lr", f"lr must be > 0, got {self.lr}")
        need(0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio", f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        need(0.0 < self.val_fraction < 1.0, "val_fraction", f"val_fraction must be in (0, 1), got {self.val_fraction}")
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                p.append((f.name, f"{f.name} must be one of {list(choices)}, got {getattr(self, f.name)!r}"))
        need(
            bool(self.active_losses()),
            "use_rec",
            "no loss is active: enable at least one of use_rec (with mask_ratio > 0), use_dcca, use_nce, distill",
        )
        # a head no active loss trains keeps its random initialisation: retrieval on it scores a random projection
        # (a DCCA-only model judged on z looked like a trained baseline)
        active = set(self.active_losses())
        if active:
            need(self.eval_embedding != "z" or bool(active & {"nce", "distill"}), "eval_embedding|use_nce|distill",
                 "eval_embedding z: the contrastive head z is trained only by InfoNCE (use_nce) or distillation "
                 "(distill), and this config has neither, so z is a random projection; evaluate h (the DCCA head, "
                 "with eval_projection cca) or e (the encoder output)")  # fmt: skip
            need(self.eval_embedding != "h" or "dcca" in active, "eval_embedding",
                 "eval_embedding h: the CCA head h is trained only by DCCA (use_dcca), which is off, so h is a "
                 "random projection; evaluate z or e (the encoder output)")  # fmt: skip
        need(self.logvar_floor <= 0, "logvar_floor",
             f"logvar_floor must be <= 0 (each s_i starts at 0 and may not go below the floor), got {self.logvar_floor}")
        return p

    @property
    def select_mode(self) -> str:
        """How `select_metric` is better: min for a loss, max otherwise."""
        return select_mode(self.select_metric)

    def active_losses(self) -> list[str]:
        """Names of the losses this config trains with, in a fixed order (rec, dcca, nce, distill)."""
        names = []
        if self.use_rec and self.mask_ratio > 0:
            names.append("rec")
        if self.use_dcca:
            names.append("dcca")
        if self.use_nce:
            names.append("nce")
        if self.distill != "none":
            names.append("distill")
        return names

    def resolve(self, n_train: int, audio_dim: int, visual_dim: int) -> "TrainConfig":
        """Fills the data-dependent fields: batch size clamped to the train split, auto cca_dim, cca_k and
        ema_momentum. The result is what trains, and what a run folder's config.yaml records.

        Raises ConfigError if an explicit value cannot work with this data.
        """
        if n_train < 8:
            raise ConfigError(f"data: the train split has {n_train} clips; training needs at least 8")
        batch = min(self.batch_size, n_train)
        cca_dim = self.cca_dim or max(1, min(AUTO_CCA_DIM, audio_dim, visual_dim, batch - 1))
        if batch <= cca_dim:
            raise ConfigError(  # (only an explicit cca_dim reaches here: auto is below the batch; it was blamed
                # on "config" when --set gave it, a walkthrough)
                f"data: the train split has {n_train} clips, so batches of {batch}, which must exceed cca_dim "
                f"{cca_dim}: a smaller cca_dim (0 picks one below the batch) or more training clips"
            )
        if self.cca_dim == 0 and self.cca_k > cca_dim:  # (an explicit cca_dim is checked with the config; this was
            # "config: cca_k (40) must not exceed cca_dim (16)", a cca_dim no one gave: a walkthrough)
            raise ConfigError(
                f"data: cca_k {self.cca_k} exceeds cca_dim {cca_dim}, which auto (cca_dim 0) picked for this data "
                f"(min({AUTO_CCA_DIM}, audio dim {audio_dim}, visual dim {visual_dim}, batch {batch} - 1)): a cca_k "
                f"of at most {cca_dim}, 0 (all), or an explicit cca_dim"
            )
        cca_k = self.cca_k or cca_dim
        ema = self.ema_momentum or auto_ema_momentum(self.epochs * (n_train // batch))
        return self.replace(batch_size=batch, cca_dim=cca_dim, cca_k=cca_k, topk=min(self.topk, batch - 1),
                            ema_momentum=ema)  # fmt: skip


def auto_ema_momentum(total_steps: int, ceiling: float = AUTO_EMA_CEILING, window_fraction: float = 0.1) -> float:
    """The auto starting EMA momentum (ema_momentum 0): `ceiling`, lowered so that the teacher's averaging window
    1 / (1 - m) is at most `window_fraction` of the run's steps (never below 0).

    Without this a short run (1,000 clips, batch 256, 30 epochs: 90 steps) starting at m = 0.99 ends with a teacher
    that still carries ~63% of its random initialisation (the product of m over the steps, m rising on the cosine
    schedule; 0.99^90 = 40% at a constant m). VEGAS-size runs (~2,400 steps) get the ceiling.
    """
    return max(0.0, min(ceiling, 1.0 - 1.0 / (window_fraction * max(1, total_steps))))


def _coerce(value: Any, f: dataclasses.Field) -> Any:
    """Checks/converts one YAML value to the field's type (int accepts integral floats like 1e3; numbers must be
    finite: inf and nan are never a valid setting)."""
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise TypeError(f"expected true or false, got {value!r}{quoted_bool(value)}")
    if kind in ("int", "float"):
        number = value
        if isinstance(value, str):
            try:
                number = float(value)  # YAML 1.1 reads "1e3" and "1e-3" as strings
            except ValueError:
                number = None
        expected = "an integer" if kind == "int" else "a number"
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise TypeError(f"expected {expected}, got {value!r}")
        if not math.isfinite(number):
            raise ValueError(f"expected a finite {expected.split()[-1]}, got {value!r}")
        if kind == "int":
            if float(number) != int(number):
                raise TypeError(f"expected an integer, got {value!r}")
            return int(number)
        return float(number)
    if kind == "str":
        choices = f.metadata.get("choices")
        if isinstance(value, bool) and choices:  # `distill: on` was told to quote 'on', not one of its choices
            raise TypeError(f"expected one of {', '.join(choices)}, got {value!r} ({YAML_BOOLEANS})")
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {value!r}{YAML_BOOL_HINT if isinstance(value, bool) else ''}")
        return value
    raise TypeError(f"unsupported field type {kind}")  # pragma: no cover - guards new field types


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Parses `key=value` strings; values are read as YAML scalars (numbers, true/false, strings)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected key=value")  # (the flag, as every other --set problem)
        key, raw = item.split("=", 1)
        try:
            value = load_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            if "read by YAML 1.1 as" in str(getattr(e, "problem", "")):  # 010: octal (trainer.yamlfile)
                raise ConfigError(f"--set {item}: {e.problem}") from None
            value = raw
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        out[key.strip()] = value  # given twice: the last, as for any flag (`repeated_sets` says so)
    return out


def repeated_sets(items: Iterable[str]) -> list[str]:
    """A note per key that `--set` gives more than once with different values: the last one is used, as for any
    flag given twice (a script's base flags, then one changed), but it trained without a word (a walkthrough)."""
    seen: dict[str, list] = {}
    for item in items:
        try:
            for key, value in parse_overrides([item]).items():
                seen.setdefault(key, []).append(value)
        except ConfigError:  # said by the parse of them all
            continue
    return [f"--set {key} is given {'twice' if len(values) == 2 else f'{len(values)} times'} "
            f"({', '.join(map(repr, values))}): the last, {values[-1]!r}, is used"
            for key, values in seen.items() if any(v != values[-1] for v in values)]  # fmt: skip


def describe() -> str:
    """Every field with its default and help text, for `--help-config`."""
    lines = []
    for f in dataclasses.fields(TrainConfig):
        choices = f" [choices: {', '.join(f.metadata['choices'])}]" if f.metadata.get("choices") else ""
        lines.append(f"{f.name} (default {f.default!r}){choices}: {f.metadata['help']}")
    return "\n".join(lines)
