"""Synthetic audio-visual benchmark with known ground truth (`synthetic:ave`, `synthetic:vegas`).

The data make the method's problems real, so that its components can be told apart, and the
ground truth of each problem is stored next to the features (group `latent`) so tests can check it.

Generative process, per clip i of a split (one `numpy.random.default_rng(seed)` drives it all):

1. Shared event content: a primary event y_i (uniform over classes) with class prototype
   p_y ~ N(0, I) in a LATENT_DIM-dimensional latent space, plus within-class variation
   u_i ~ N(0, WITHIN_CLASS_STD^2 I) that is shared by both modalities of the clip.
2. Multi-event clips: a fraction `multi_event` of the clips also holds a second, different event
   at weight SECOND_EVENT_WEIGHT. The label is the primary event, or the multi-hot of both events
   when `multi_label` is set.
3. Shared nuisance s_i ~ N(0, nuisance_scale^2 I) of `nuisance_dim` dims, fed to both modalities:
   strongly correlated across modalities, independent of the label (spurious co-occurrence that a
   correlation objective happily latches onto).
4. Private nuisance: N(0, PRIVATE_STD^2 I) of `nuisance_dim` dims per modality, independent.
5. Nonlinear modality-specific mixing: [content, shared nuisance, private nuisance] goes through a
   fixed random 2-layer network per modality (leaky-ReLU for audio, tanh for visual; different
   weights), whose outputs are scaled to roughly zero mean and unit variance per feature dim. The
   networks are drawn once per seed and shared by train, val and test.
6. Weak pairing: a fraction `mismatch` of TRAIN pairs take their visual features from another
   random clip of the same split (it may by chance share the class). Val and test pairs are all
   matched, so retrieval is evaluated on clean pairs.
7. Additive Gaussian noise of std `noise` on every feature entry (relative to the unit signal std).

With `seq_len` T > 0 the features are (N, T, D) sequences, AVE style: each event is active on a
random contiguous window of at least T // 3 steps (both modalities share the window), the content is
zero outside it, nuisances are constant over the clip and the noise is drawn per step.

Knobs (keyword arguments of `make_synthetic`, also `synthetic:ave?key=value&...` options):

- n_train, n_val, n_test: clips per split; defaults from PRESETS. n_val = 0 writes no val split
  (the reader then carves one from train, and the carved val inherits train's mismatched pairs). n_train >= 2, n_test >= 1.
- dim_audio, dim_visual: feature dims (>= 1); public releases use 128 (VGGish) and 1024.
- num_classes: number of event classes (>= 2).
- seq_len: 0 = vector features; T > 0 = (N, T, D) sequences. AVE uses T = 10.
- multi_event: fraction of clips with a second event, in [0, 1]. 0.1-0.5 is realistic; at 1 every
  clip is ambiguous.
- multi_label: labels are the multi-hot of all events instead of the primary event.
- nuisance_dim: dims of the shared (and of each private) nuisance, >= 0. 0 removes them; 2-8 is
  sensible, more starts to rival the LATENT_DIM content dims.
- nuisance_scale: std of the shared nuisance, >= 0 (content latent dims have std ~1.2). 1.5-3
  makes it the highest-variance shared direction; 0 switches the spurious correlation off.
- mismatch: fraction of train pairs that are mismatched, in [0, 1). 0-0.3 is sensible; above ~0.5
  pairing carries little signal.
- noise: std of the additive noise, >= 0 (the clean features have unit std). 0.1-1; at 2 a linear
  classifier's accuracy roughly halves, at 4 the classes mostly blur.
- seed: seed of the whole process; the same seed and options give byte-identical arrays.

CLI: `python -m trainer.synthetic ave out.h5 [--set key=value ...]`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable

import h5py
import numpy as np

from .config import did_you_mean

GENERATOR_VERSION = 1  # bump when the generative process changes: it invalidates cached files
LATENT_DIM = 24  # dims of the shared event space
HIDDEN_DIM = 128  # hidden width of the random mixing networks
WITHIN_CLASS_STD = 0.7  # per-clip variation around the class prototype (prototypes have std 1)
SECOND_EVENT_WEIGHT = 0.5  # the second event of a multi-event clip is weaker than the primary one
PRIVATE_STD = 1.0  # std of each modality's private nuisance
_CALIBRATION_CLIPS = 2048  # clips used once per seed to scale the mixing outputs to unit variance

PRESETS: dict[str, dict[str, int]] = {
    "ave": dict(n_train=3339, n_val=402, n_test=402, dim_audio=128, dim_visual=1024, num_classes=15),
    # The public VEGAS release has train (22,482) and test only. Its synthetic twin writes the val split a reader
    # would carve (10% of train) as a matched split: a val carved from the weakly paired train split holds
    # mismatched pairs, which corrupts every model-selection number (benchmarks/results/quality.md, finding 4).
    "vegas": dict(n_train=20234, n_val=2248, n_test=5621, dim_audio=128, dim_visual=1024, num_classes=10),
}
# Knobs that every preset shares; PRESETS fill the ones set to None.
DEFAULTS: dict[str, Any] = dict(
    n_train=None, n_val=None, n_test=None, dim_audio=None, dim_visual=None, num_classes=None,
    seq_len=0, multi_event=0.3, multi_label=False, nuisance_dim=4, nuisance_scale=2.0, mismatch=0.1,
    noise=0.5, seed=0,
)  # fmt: skip
OPTION_TYPES: dict[str, type] = {
    **{k: int for k in ("n_train", "n_val", "n_test", "dim_audio", "dim_visual", "num_classes")},
    **{k: int for k in ("seq_len", "nuisance_dim", "seed")},
    **{k: float for k in ("multi_event", "nuisance_scale", "mismatch", "noise")},
    "multi_label": bool,
}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def parse_options(items: Iterable[str]) -> dict[str, Any]:
    """Parses `key=value` strings into typed options.

    Args:
        items: strings such as "n_train=800" or "multi_label=true".

    Returns:
        Option name -> value converted to its type in OPTION_TYPES.

    Raises:
        ValueError: malformed item, unknown or repeated option, or a value of the wrong type; the
            message lists the valid options.
    """
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or not key:
            raise ValueError(f"option {item!r} is not key=value; valid options: {', '.join(OPTION_TYPES)}")
        if key not in OPTION_TYPES:
            raise ValueError(f"unknown option {key!r}{did_you_mean(key, list(OPTION_TYPES))}; valid options: "
                             f"{', '.join(OPTION_TYPES)}")
        if key in options:
            raise ValueError(f"option {key!r} given twice")
        kind = OPTION_TYPES[key]
        try:
            if kind is bool:
                if text.lower() not in _TRUE | _FALSE:
                    raise ValueError
                options[key] = text.lower() in _TRUE
            else:
                options[key] = kind(text)
        except ValueError:
            raise ValueError(f"option {key!r}: expected {kind.__name__}, got {text!r}") from None
    return options


def resolve_options(name: str, **options: Any) -> dict[str, Any]:
    """Fills preset defaults and checks every knob; cheap (generates nothing).

    Args:
        name: "ave" or "vegas".
        **options: any subset of DEFAULTS; None means the preset's value.

    Returns:
        Every knob of DEFAULTS with its final value (a stable dict, also used as the cache key).

    Raises:
        ValueError: unknown name or option, or a value out of range; the message lists valid ones.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown synthetic dataset {name!r}; valid names: {', '.join(PRESETS)}")
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        hint = did_you_mean(unknown[0], list(DEFAULTS)) if len(unknown) == 1 else ""
        raise ValueError(f"unknown option(s) {unknown}{hint}; valid options: {', '.join(DEFAULTS)}")
    resolved = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    resolved = {k: PRESETS[name][k] if v is None else v for k, v in resolved.items()}
    for key, value in resolved.items():
        kind = OPTION_TYPES[key]
        ok = isinstance(value, bool) if kind is bool else (
            isinstance(value, (int, np.integer)) and not isinstance(value, bool)
            if kind is int else isinstance(value, (int, float, np.number)) and not isinstance(value, bool))
        if not ok:
            raise ValueError(f"option {key!r}: expected {kind.__name__}, got {value!r}")
        resolved[key] = kind(value)
    checks = [
        ("n_train", resolved["n_train"] >= 2, ">= 2"),
        ("n_val", resolved["n_val"] >= 0, ">= 0"),
        ("n_test", resolved["n_test"] >= 1, ">= 1"),
        ("dim_audio", resolved["dim_audio"] >= 1, ">= 1"),
        ("dim_visual", resolved["dim_visual"] >= 1, ">= 1"),
        ("num_classes", resolved["num_classes"] >= 2, ">= 2"),
        ("seq_len", resolved["seq_len"] >= 0, ">= 0"),
        ("multi_event", 0.0 <= resolved["multi_event"] <= 1.0, "in [0, 1]"),
        ("nuisance_dim", resolved["nuisance_dim"] >= 0, ">= 0"),
        ("nuisance_scale", resolved["nuisance_scale"] >= 0.0, ">= 0"),
        ("mismatch", 0.0 <= resolved["mismatch"] < 1.0, "in [0, 1)"),
        ("noise", resolved["noise"] >= 0.0, ">= 0"),
        ("seed", resolved["seed"] >= 0, ">= 0"),
    ]
    for key, ok, expected in checks:
        if not ok:
            raise ValueError(f"option {key!r} must be {expected}, got {resolved[key]!r}")
    return resolved


def make_synthetic(
    name: str,
    *,
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    dim_audio: int | None = None,
    dim_visual: int | None = None,
    num_classes: int | None = None,
    seq_len: int = 0,
    multi_event: float = 0.3,
    multi_label: bool = False,
    nuisance_dim: int = 4,
    nuisance_scale: float = 2.0,
    mismatch: float = 0.1,
    noise: float = 0.5,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Generates one synthetic dataset in the HDF5 layout of the public feature releases.

    Args:
        name: "ave" or "vegas" (selects the preset sizes); the other knobs are described in the
            module docstring.

    Returns:
        `audio_<split>` (N, D_a) or (N, T, D_a) float32, `visual_<split>` likewise with D_v,
        `lab_<split>` (N,) int64 primary event or (N, C) float32 multi-hot when multi_label, for
        split in train, val (absent when n_val == 0), test; plus the ground truth
        `latent/nuisance_<split>` (N, nuisance_dim) float32 shared nuisance of the AUDIO clip,
        `latent/pair_index_<split>` (N,) int64 index of the clip whose visual content was used
        (== arange except for mismatched train pairs) and `latent/events_<split>` (N, C) float32
        multi-hot of the events present in the audio clip.

    Raises:
        ValueError: unknown name or option value out of range.
    """
    opts = resolve_options(
        name, n_train=n_train, n_val=n_val, n_test=n_test, dim_audio=dim_audio, dim_visual=dim_visual,
        num_classes=num_classes, seq_len=seq_len, multi_event=multi_event, multi_label=multi_label,
        nuisance_dim=nuisance_dim, nuisance_scale=nuisance_scale, mismatch=mismatch, noise=noise, seed=seed,
    )  # fmt: skip
    rng = np.random.default_rng(opts["seed"])
    # Draw order is fixed (prototypes, networks, calibration, then splits) so a seed pins everything.
    prototypes = rng.standard_normal((opts["num_classes"], LATENT_DIM))
    in_dim = LATENT_DIM + 2 * opts["nuisance_dim"]
    nets = {
        "audio": _random_net(rng, in_dim, opts["dim_audio"], "leaky_relu"),
        "visual": _random_net(rng, in_dim, opts["dim_visual"], "tanh"),
    }
    calib = _clip_latents(rng, _CALIBRATION_CLIPS, prototypes, opts, seq_len=0, mismatch=0.0)
    for modality, net in nets.items():
        clean = _mix(net, _net_input(calib, modality))
        net["out_mean"], net["out_std"] = clean.mean(0), clean.std(0) + 1e-6

    out: dict[str, np.ndarray] = {}
    for split in ("train", "val", "test"):
        n = opts[f"n_{split}"]
        if n == 0:
            continue
        mismatch_here = opts["mismatch"] if split == "train" else 0.0  # val/test pairs stay matched
        lat = _clip_latents(rng, n, prototypes, opts, seq_len=opts["seq_len"], mismatch=mismatch_here)
        for modality, net in nets.items():
            clean = (_mix(net, _net_input(lat, modality)) - net["out_mean"]) / net["out_std"]
            noisy = clean + opts["noise"] * rng.standard_normal(clean.shape, dtype=np.float32)
            out[f"{modality}_{split}"] = noisy.astype(np.float32)
        events = lat["events"]
        out[f"lab_{split}"] = events.copy() if opts["multi_label"] else lat["primary"]
        out[f"latent/nuisance_{split}"] = lat["nuisance"].astype(np.float32)
        out[f"latent/pair_index_{split}"] = lat["pair"]
        out[f"latent/events_{split}"] = events
    return out


def _random_net(rng: np.random.Generator, in_dim: int, out_dim: int, activation: str) -> dict[str, Any]:
    """A fixed random 2-layer network; 1/fan-in weight variance keeps pre-activations O(1)."""
    return {
        "w1": (rng.standard_normal((in_dim, HIDDEN_DIM)) / np.sqrt(in_dim)).astype(np.float32),
        "b1": (0.5 * rng.standard_normal(HIDDEN_DIM)).astype(np.float32),
        "w2": (rng.standard_normal((HIDDEN_DIM, out_dim)) / np.sqrt(HIDDEN_DIM)).astype(np.float32),
        "activation": activation,
    }


def _mix(net: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Applies a random network to (..., in_dim) latents; returns (..., out_dim) float32."""
    h = x.astype(np.float32) @ net["w1"] + net["b1"]
    h = np.tanh(h) if net["activation"] == "tanh" else np.where(h > 0, h, 0.1 * h)
    return h @ net["w2"]


def _net_input(lat: dict[str, np.ndarray], modality: str) -> np.ndarray:
    """[content, shared nuisance, private nuisance] of each clip, (N, L + 2K) or (N, T, L + 2K).

    The visual side reads the content and shared nuisance of its pair clip: that is what makes a
    mismatched pair carry another clip's visual content.
    """
    pair = lat["pair"] if modality == "visual" else np.arange(len(lat["pair"]))
    content, nuisance, private = lat["content"][pair], lat["nuisance"][pair], lat[f"private_{modality}"]
    if content.ndim == 3:  # nuisances are constant over the time steps of a clip
        steps = content.shape[1]
        nuisance = np.repeat(nuisance[:, None], steps, axis=1)
        private = np.repeat(private[:, None], steps, axis=1)
    return np.concatenate([content, nuisance, private], axis=-1)


def _clip_latents(
    rng: np.random.Generator, n: int, prototypes: np.ndarray, opts: dict[str, Any], *, seq_len: int, mismatch: float
) -> dict[str, np.ndarray]:
    """Draws the latent factors of n clips (see the module docstring for the process)."""
    num_classes, k = prototypes.shape[0], opts["nuisance_dim"]
    primary = rng.integers(0, num_classes, n)
    # Exact counts (not Bernoulli draws) so the realised fractions match the requested ones.
    has_second = np.zeros(n, dtype=bool)
    has_second[rng.permutation(n)[: int(round(opts["multi_event"] * n))]] = True
    second = (primary + rng.integers(1, num_classes, n)) % num_classes  # always a different class
    within = WITHIN_CLASS_STD * rng.standard_normal((n, LATENT_DIM))
    nuisance = opts["nuisance_scale"] * rng.standard_normal((n, k))
    private_audio = PRIVATE_STD * rng.standard_normal((n, k))
    private_visual = PRIVATE_STD * rng.standard_normal((n, k))

    pair = np.arange(n)
    mismatched = rng.permutation(n)[: int(round(mismatch * n))]
    pair[mismatched] = (mismatched + rng.integers(1, n, len(mismatched))) % n  # another clip, never itself

    event1 = prototypes[primary] + within  # (N, L)
    event2 = SECOND_EVENT_WEIGHT * prototypes[second] * has_second[:, None]  # (N, L), zero for single-event clips
    if seq_len > 0:
        active1, active2 = _windows(rng, n, seq_len), _windows(rng, n, seq_len)  # (N, T) each
        content = active1[..., None] * event1[:, None] + active2[..., None] * event2[:, None]  # (N, T, L)
    else:
        content = event1 + event2
    events = np.zeros((n, num_classes), dtype=np.float32)
    events[np.arange(n), primary] = 1.0
    events[np.flatnonzero(has_second), second[has_second]] = 1.0
    return {
        "primary": primary.astype(np.int64), "events": events, "content": content, "nuisance": nuisance,
        "private_audio": private_audio, "private_visual": private_visual, "pair": pair.astype(np.int64),
    }  # fmt: skip


def _windows(rng: np.random.Generator, n: int, steps: int) -> np.ndarray:
    """(n, steps) float masks, each a random contiguous window of at least steps // 3 steps."""
    length = rng.integers(max(1, steps // 3), steps + 1, n)
    start = rng.integers(0, steps - length + 1)  # per-clip upper bound keeps the window inside
    t = np.arange(steps)
    return ((t >= start[:, None]) & (t < (start + length)[:, None])).astype(np.float64)


def os_words(exc: OSError) -> str:
    """An OSError in the system's words ("No space left on device"), also when HDF5 raised it: h5py's errors
    read "Can't synchronously write data (file write failed: time = ..., filename = ..., file
    descriptor = 3, errno = 28, error message = 'No space left on device', buf = 0x..., ...)"."""
    import re

    said = str(exc.strerror or exc)
    m = re.search(r"error message = '([^']+)'", said)
    return m.group(1) if m else (said.strip().splitlines() or [type(exc).__name__])[0]


def write_synthetic(path: str | os.PathLike, name: str, **options: Any) -> Path:
    """Generates a dataset and writes it to HDF5 atomically (temp file in the same dir, os.replace).

    Concurrent writers of the same path are safe: each replaces the file with a complete one.

    Args:
        path: output file; parent directories are created.
        name: "ave" or "vegas".
        **options: knobs of `make_synthetic`.

    Returns:
        The path written. Latents go to the group `latent`; attributes record name, options and
        GENERATOR_VERSION.
    """
    resolved = resolve_options(name, **options)
    arrays = make_synthetic(name, **resolved)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            for key, value in arrays.items():
                f.create_dataset(key, data=value)
            f.attrs["synthetic_name"] = name
            f.attrs["synthetic_options"] = repr(sorted(resolved.items()))
            f.attrs["generator_version"] = GENERATOR_VERSION
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; the result is a normal data file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def describe(name: str, options: dict[str, Any]) -> str:
    """One line: sizes, dims, classes of a resolved option dict."""
    o = options
    shape = f"sequences T={o['seq_len']}" if o["seq_len"] else "vectors"
    val = o["n_val"] if o["n_val"] else "none (carved by the reader)"
    return (
        f"synthetic:{name}: train {o['n_train']} / val {val} / test {o['n_test']} clip{'' if o['n_test'] == 1 else 's'}, "
        f"audio {o['dim_audio']}-d, visual {o['dim_visual']}-d ({shape}), "
        f"{o['num_classes']} class{'' if o['num_classes'] == 1 else 'es'}, "
        f"multi_event {o['multi_event']}, mismatch {o['mismatch']}, seed {o['seed']}"
    )


def main(argv: list[str] | None = None) -> int:
    """CLI: writes a synthetic dataset file. Returns the exit code (2 on bad options or I/O errors)."""
    parser = argparse.ArgumentParser(
        prog="python -m trainer.synthetic",
        description="Write a synthetic audio-visual benchmark to HDF5 (layout of the AVE / VEGAS feature releases).",
        epilog=__doc__[__doc__.index("Knobs (") : __doc__.index("CLI:")],  # the knob ranges, from the docstring
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", help=f"dataset preset: {', '.join(PRESETS)} (a 'synthetic:' prefix is accepted)")
    parser.add_argument("out", help="output .h5 file")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a knob (repeatable); the knobs and their ranges are listed below",
    )  # fmt: skip
    parser.add_argument("--force", action="store_true", help="replace the output file if it exists")
    args = parser.parse_args(argv)
    name = args.name.removeprefix("synthetic:")
    if Path(args.out).suffix.lower() not in (".h5", ".hdf5") and not os.path.isdir(args.out):
        print(f"error: {args.out}: the data is written as HDF5, which the trainer knows by the name's extension; "
              "name it .h5 or .hdf5", file=sys.stderr)  # fmt: skip
        return 2
    # as given: `miss/../x.h5` needs miss (abspath folded it away, and the write made it: a review)
    folder = os.path.dirname(args.out) or "."
    if not os.path.isdir(folder):  # a mistyped folder was made without a word (a walkthrough): refused, as the
        # other commands refuse a missing parent
        shown = folder if os.path.isabs(folder) else os.path.join(os.getcwd(), folder)  # (not folded: miss/..)
        up = Path(shown)  # a file on the way (afile/sub/x.h5) cannot be made a folder: named (a review)
        while not os.path.lexists(up) and up != up.parent:
            up = up.parent
        what = ("is not a folder" if up == Path(shown) else f"cannot be made ({up} is a file)") if not up.is_dir() \
            else "does not exist; create it first"
        print(f"error: {args.out}: its folder {shown} {what} (nothing written)", file=sys.stderr)
        return 2
    if os.path.lexists(args.out) and not (args.force and not os.path.isdir(args.out)):
        what = "is a folder" if os.path.isdir(args.out) else "exists already"
        hint = "; pass --force to replace it" if what == "exists already" else ""
        print(f"error: {args.out} {what}: not overwritten (the file to write{hint})", file=sys.stderr)
        return 2
    try:
        options = resolve_options(name, **parse_options(args.overrides))
        path = write_synthetic(args.out, name, **options)
    except OSError as exc:  # named by OUT and its folder, not by the temporary file the data is written to first
        folder = os.path.dirname(os.path.abspath(args.out))
        print(f"error: {args.out}: cannot write in {folder} ({os_words(exc)})", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    print(describe(name, options))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
