"""Where the shipped search spaces are, and their one-line descriptions: light (no torch, no YAML), for the CLI's
help text."""

from __future__ import annotations

import re
from pathlib import Path

# search_spaces/ of the repository (a checkout, an editable install), which a wheel carries as
# hsc_search/search_spaces/ (pyproject.toml); a wheel's install found none of them before (`--space quick` failed)
_HERE = Path(__file__).resolve().parent
SPACES_DIR = _HERE / "search_spaces" if (_HERE / "search_spaces").is_dir() else _HERE.parent / "search_spaces"


def shipped_spaces() -> dict[str, str]:
    """The shipped spaces, name -> the `description:` line of each file (read as text, not parsed)."""
    out = {}
    for f in sorted(SPACES_DIR.glob("*.yaml")):
        m = re.search(r'^description:\s*"?(.*?)"?\s*$', f.read_text(), re.M)
        out[f.stem] = m.group(1) if m else ""
    return out
