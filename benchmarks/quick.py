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
    accepts such as `--tri 8`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    typed = {a.split("=", 1)[0] for a in argv if a.startswith("-") and a != "-"}
    out = set()
    for action in parser._actions:  # argparse's list of the parser's options (stable since Python 3.2)
        for opt in action.option_strings:
            if opt in typed or (opt.startswith("--") and any(len(t) > 2 and t.startswith("--") and opt.startswith(t)
                                                             for t in typed)):  # fmt: skip
                out.add(action.dest)
    return out


def quick_defaults(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str] | None = None,
                   **values: Any) -> list[str]:  # fmt: skip
    """Sets each of `values` (dest -> --quick's value) on `args` unless the command line gave that option; says
    on stderr which given flags --quick left as they are, and returns their dests."""
    given = given_options(parser, argv)
    kept = [dest for dest in values if dest in given]
    for dest, value in values.items():
        if dest not in given:
            setattr(args, dest, value)
    if kept:
        print("quick run: " + ", ".join(f"--{d.replace('_', '-')} {getattr(args, d)}" for d in kept)
              + " as given (--quick's own values for the rest)", file=sys.stderr)  # fmt: skip
    return kept
