"""--quick's smaller settings, for the options a command line did not give.

A benchmark's --quick (a smoke run) shrinks its work: fewer trials, epochs, rounds, smaller data. Flags given
with it win: `--quick --trials 8` runs 8 trials (they were replaced without a word by --quick's own values).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence


def given_options(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> set[str]:
    """The `dest` of every option the command line gave (`--trials 8`, `--trials=8`, an abbreviation argparse
    accepts such as `--tri 8`: a unique prefix of one option; an option typed in full is that option, not also a
    longer one it begins, `--epochs` beside `--epochs-short`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    typed = {a.split("=", 1)[0] for a in argv if a.startswith("--") and len(a) > 2}
    options = {opt: action.dest for action in parser._actions  # argparse's options (stable since Python 3.2)
               for opt in action.option_strings if opt.startswith("--")}  # fmt: skip
    out = set()
    for t in typed:
        if t in options:
            out.add(options[t])
            continue
        begun = [opt for opt in options if opt.startswith(t)]
        if len(begun) == 1:  # argparse takes a unique prefix only
            out.add(options[begun[0]])
    return out


def _shown(value: Any, action: argparse.Action) -> str:
    """A value as the command line gives it: a list of several arguments (nargs) spaced, of one text with commas."""
    if isinstance(value, (list, tuple)):
        return (" " if action.nargs not in (None, "?") else ",").join(map(str, value))
    return str(value)


def quick_defaults(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str] | None = None,
                   **values: Any) -> list[str]:  # fmt: skip
    """Sets each of `values` (dest -> --quick's value) on `args` unless the command line gave that option; says
    on stderr which given flags --quick left as they are, and returns their dests."""
    given = given_options(parser, argv)
    actions = {action.dest: action for action in parser._actions}
    flags = {d: next((o for o in a.option_strings if o.startswith("--")), d) for d, a in actions.items()}
    kept = [dest for dest in values if dest in given]
    for dest, value in values.items():
        if dest not in given:
            setattr(args, dest, value)
    if kept:
        said = [flags[d] if getattr(args, d) is True else f"{flags[d]} {_shown(getattr(args, d), actions[d])}"
                for d in kept]  # fmt: skip
        print(f"quick run: {', '.join(said)} as given (--quick's own values for the rest)", file=sys.stderr)
    return kept
