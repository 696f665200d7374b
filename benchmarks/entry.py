"""A benchmark script's entry point: the project's own errors (a bad --space, --set, --data, --orders, ...) as
one line naming the script, exit 2, instead of a traceback after minutes of set-up."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable


OUTPUT_FOLDERS = ("--out", "--workdir", "--keep-curves")  # flags naming a folder a script writes (created if missing)
OUTPUT_FILES = ("--json",)  # and a file


def at_least(low: int):
    """An argparse `type`: a whole number >= `low` (`--rounds 0` ran no round, then wrote its empty tables over the
    recorded results and exited 0; a walkthrough)."""
    def parse(text: str) -> int:
        import argparse

        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value}: must be at least {low}")
        return value

    parse.__name__ = f"at least {low}"
    return parse


def int_list(low: int):
    """An argparse `type`: whole numbers >= `low` separated by commas, at least one (`--counts bogus` was a
    traceback after the first searches, `--seeds ""` an empty run written over the recorded one)."""
    def parse(text: str) -> list[int]:
        import argparse

        parts = [t.strip() for t in text.split(",") if t.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"empty; expected whole numbers separated by commas, e.g. "
                                             f"{low},{low + 1},{low + 2}")  # (0,1,2 where 0 is refused: a review)
        try:
            values = [int(t) for t in parts]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected whole numbers separated by commas") from None
        small = [v for v in values if v < low]
        if small:
            raise argparse.ArgumentTypeError(f"{small[0]}: each must be at least {low}")
        return values

    parse.__name__ = "list"
    return parse


def output_problem(argv: list[str]) -> str | None:
    """What stops a script writing where its flags say (a folder under a file, a file where a folder goes, a
    folder that cannot be written), checked before it measures: found when it wrote its results, it was a
    traceback after the whole run (a walkthrough: 71 s of a --quick run, minutes of a full one)."""
    import os

    for i, arg in enumerate(argv):
        typed, eq, value = arg.partition("=")
        # argparse takes a unique prefix of an option (`--wor` for --workdir): one of these flags' only
        begun = [f for f in OUTPUT_FOLDERS + OUTPUT_FILES if f.startswith(typed)] if len(typed) > 2 else []
        if len(begun) != 1 or not typed.startswith("--"):
            continue
        flag = begun[0]
        value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
        if not value or value.startswith("--"):
            continue  # argparse says it
        path = Path(value).absolute()  # (as the scripts take it: `--out=~/x` is ./~/x, the shell left it)
        if path.exists() and (path.is_dir() != (flag in OUTPUT_FOLDERS)):
            return f"{flag} {value}: is a {'folder' if path.is_dir() else 'file'}; expected a " + (
                "folder" if flag in OUTPUT_FOLDERS else "file name")
        ancestor = path if path.is_dir() else path.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            return f"{flag} {value}: {ancestor} is a file, not a folder"
        if not os.access(ancestor, os.W_OK | os.X_OK):
            return f"{flag} {value}: the folder {ancestor} cannot be written"
    return None


def run(main: Callable[[], int | None]) -> int:
    problem = output_problem(sys.argv[1:])
    if problem:
        print(f"{Path(sys.argv[0]).name}: error: {problem}", file=sys.stderr)
        return 2
    from hsc_search.driver import SearchError
    from hsc_search.preflight import PreflightError
    from hsc_search.replay import ReplayError
    from hsc_search.settings import SettingsError
    from hsc_search.space import SpaceError
    from hsc_search.storage import StorageError
    from hsc_search.transfer import TransferError
    from trainer import ConfigError, DataError

    try:
        return main() or 0
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback (a script that keeps partial results says so first)
        print(f"{Path(sys.argv[0]).name}: interrupted; the results it writes when it ends were not written",
              file=sys.stderr)  # fmt: skip
        return 130
    except SystemExit as e:  # a script's own refusal (`raise SystemExit("--out X: ...")`): as the others, exit 2
        if not isinstance(e.code, str):
            raise
        print(f"{Path(sys.argv[0]).name}: error: {e.code}", file=sys.stderr)
        return 2
    except (ConfigError, DataError, SettingsError, SpaceError, PreflightError, ReplayError, StorageError,
            SearchError, TransferError) as e:  # fmt: skip
        print(f"{Path(sys.argv[0]).name}: error: {e}", file=sys.stderr)
        return 2
