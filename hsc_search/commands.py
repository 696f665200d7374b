"""How a command of this environment is written in what we print or write, so that it works when pasted."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path


def exe(name: str, relative: bool = True) -> str:
    """One of this environment's commands (`python`, `hsc-search`, `mlflow`): the bare name when the shell finds
    this very one on PATH, else its path: relative to the working directory when it lies below it
    (`.venv/bin/mlflow`, for what is printed now) unless `relative` is False (absolute: for what is written into
    a file, which may be read from anywhere)."""
    path = Path(sys.executable).parent / name
    found = shutil.which(name)
    if found and Path(found).resolve() == path.resolve():
        return name
    if relative:
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            pass
    return shlex.quote(os.fspath(path))
