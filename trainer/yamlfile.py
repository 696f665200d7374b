"""Reading the YAML files people write (trainer configs, search spaces, search configs): PyYAML's safe loader,
except that a key given twice in one mapping is an error (PyYAML keeps the last one without a word: a space with
`lr:` twice searched only the second range), and a syntax error is one line."""

from __future__ import annotations

from typing import Any

import yaml


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


def load_yaml(text: str) -> Any:
    """The document in `text`, as `yaml.safe_load` reads it; raises yaml.YAMLError also for a duplicate key."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def yaml_problem(e: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: what went wrong and where."""
    mark = getattr(e, "problem_mark", None)
    what = "; ".join(str(x) for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x) or str(e)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return " ".join(f"{what}{where}".split())
