"""Reading the YAML files people write (trainer configs, search spaces, search configs): PyYAML's safe loader,
except that a key given twice in one mapping is an error (PyYAML keeps the last one without a word: a space with
`lr:` twice searched only the second range), and a syntax error is one line."""

from __future__ import annotations

from typing import Any, Iterable

import yaml

# The top-level keys of the two kinds of file hsc-search reads beside the trainer's configs (kept equal to
# hsc_search.space.TOP_KEYS and hsc_search.settings.SearchSettings's fields by tests/test_settings.py; the trainer
# does not import hsc_search): a file given as the wrong kind is named as what it is.
SPACE_KEYS = frozenset({"description", "fixed", "params"})
SEARCH_CONFIG_KEYS = frozenset({
    "address", "checkpoint_every_s", "cpus_per_trial", "data", "experiment", "gpus_per_trial", "grace_period",
    "keep_checkpoints", "max_concurrent", "max_epochs", "max_failures", "metric", "mlflow", "mode", "name",
    "num_samples", "reduction_factor", "scheduler", "seed", "set", "space", "storage", "tracking_uri", "warm_start",
})  # fmt: skip
KINDS = {  # what each kind is, and the option that takes it
    "trainer": ("a trainer config", "the trainer's --config"),
    "space": ("a search space", "hsc-search run's --space"),
    "search": ("a search config", "hsc-search run's --config"),
}


def other_kind(keys: Iterable[Any], own: str) -> str | None:
    """Which other kind of file (`KINDS`) a mapping with these top-level keys is, when it is clearly one: that
    kind knows every key and more of them than `own` does, and `own` knows none of them or at least two are
    foreign to it. None when it is not clear (e.g. a typo, or one misplaced key)."""
    from .config import TrainConfig

    known = {"trainer": set(TrainConfig.field_names()), "space": SPACE_KEYS, "search": SEARCH_CONFIG_KEYS}
    keys = {str(k) for k in keys}
    if not keys or own not in known:
        return None
    mine = len(keys & known[own])
    foreign = len(keys) - mine
    if not (mine == 0 or foreign >= 2):
        return None
    for kind, names in known.items():
        if kind != own and keys <= names and len(keys) > mine:
            return kind
    return None


def wrong_kind(path: Any, keys: Iterable[Any], own: str) -> str | None:
    """One line for a file of another kind given where `own` was expected, else None."""
    kind = other_kind(keys, own)
    if kind is None:
        return None
    return f"{path}: this is {KINDS[kind][0]} ({KINDS[kind][1]} takes it), not {KINDS[own][0]}"


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: its keys may be overridden
                    continue
                key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: PyYAML says so itself
                    continue
                if first is not None:
                    where = f"line {line}" if first == line else f"lines {first} and {line}"
                    raise yaml.constructor.ConstructorError(
                        None, None, f"{key!r} is given twice ({where}); keep one", key_node.start_mark)  # fmt: skip
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


    def construct_yaml_int(self, node):
        # YAML 1.1 (PyYAML) reads 032 as octal 26 and 1:30 as 90 (base 60): a researcher writing hidden_dim 064 or
        # seed 010 trained 52 or 8 without a word. Refused, as YAML 1.2 no longer reads them so.
        text = str(node.value).replace("_", "")
        digits = text.lstrip("+-")
        if (len(digits) > 1 and digits[0] == "0" and digits[1:].isdigit()) or ":" in text:
            read = super().construct_yaml_int(node)
            fix = f"write {int(text, 10)} without the leading zeros" if ":" not in text else f"write {read} if meant"
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.value} is read by YAML 1.1 as {read} ({'octal' if ':' not in text else 'base 60'}); "
                f"{fix}, or quote it as text", node.start_mark)  # fmt: skip
        return super().construct_yaml_int(node)


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)


def load_yaml(text: str) -> Any:
    """The document in `text`, as `yaml.safe_load` reads it; raises yaml.YAMLError also for a duplicate key."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def yaml_problem(e: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: what went wrong and where."""
    mark, opened = getattr(e, "problem_mark", None), getattr(e, "context_mark", None)
    what = "; ".join(str(x) for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x) or str(e)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    context = str(getattr(e, "context", None) or "")
    if (opened is not None and mark is not None and opened.line != mark.line  # an unclosed {, [ or quote: where
            and context.startswith(("while parsing a flow", "while scanning a quoted"))):  # it opened  # fmt: skip
        what_opened = str(getattr(e, "context", None) or "block").removeprefix("while parsing ").removeprefix(
            "while scanning ")  # "a flow mapping" (an unclosed {), "a flow sequence" ([)
        where += f"; {what_opened} that starts at line {opened.line + 1}, column {opened.column + 1}"
    return " ".join(f"{what}{where}".split())
