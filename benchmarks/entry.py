"""A benchmark script's entry point: the project's own errors (a bad --space, --set, --data, --orders, ...) as
one line naming the script, exit 2, instead of a traceback after minutes of set-up."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable


def run(main: Callable[[], int | None]) -> int:
    from hsc_search.driver import SearchError
    from hsc_search.preflight import PreflightError
    from hsc_search.replay import ReplayError
    from hsc_search.settings import SettingsError
    from hsc_search.space import SpaceError
    from hsc_search.storage import StorageError
    from trainer import ConfigError, DataError

    try:
        return main() or 0
    except (ConfigError, DataError, SettingsError, SpaceError, PreflightError, ReplayError, StorageError,
            SearchError) as e:  # fmt: skip
        print(f"{Path(sys.argv[0]).name}: error: {e}", file=sys.stderr)
        return 2
