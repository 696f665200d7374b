"""The project as a researcher installs it outside this repository: a wheel built from the checkout, run from an
empty folder. A walkthrough found that a wheel's `hsc-search run` failed with no flags: the shipped search spaces
(`search_spaces/`, beside the code) were not in it ("space 'quick': neither a shipped space () nor a file")."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic:ave?n_train=64&n_val=32&n_test=32&dim_audio=8&dim_visual=8&num_classes=4&seed=1"


def _tracked_copy(dest: Path) -> Path:
    """The checkout's tracked files as they are now (uncommitted edits included), without .git or build output."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        src = ROOT / name
        if src.is_file():  # (a file deleted in the working tree is still listed until committed)
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(src.read_bytes())
    return dest


def test_a_wheel_carries_what_it_needs_and_searches_from_an_empty_folder(tmp_path, _cache_dir):
    import pytest

    if not (ROOT / ".git").exists():  # (an sdist's tests: it is built from a checkout)
        pytest.skip("builds the wheel from a git checkout's tracked files")
    src = _tracked_copy(tmp_path / "src")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                            str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("hsc_search-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    spaces = sorted(p.name for p in (ROOT / "search_spaces").glob("*.yaml"))
    assert spaces and {f"hsc_search/search_spaces/{s}" for s in spaces} <= names, sorted(names)
    assert "trainer/configs/example.yaml" in names and "hsc_search/cli.py" in names, sorted(names)
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "docs/", "search_spaces/"))], sorted(names)
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "hsc-search = hsc_search.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()

    site = tmp_path / "site"  # the wheel installed (its files unpacked), ahead of this checkout's editable install
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "empty"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "HSC_CACHE_DIR": str(_cache_dir), "PYTHONUNBUFFERED": "1"}
    program = "import sys; from hsc_search.cli import main; sys.argv[0] = 'hsc-search'; main()"
    proc = subprocess.run([sys.executable, "-c", program, "run", "--num-samples", "2", "--max-epochs", "1",
                           "--data", DATA, "--no-mlflow", "--name", "w"], cwd=work, env=env, capture_output=True,
                          text=True, timeout=420)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"space {site / 'hsc_search' / 'search_spaces' / 'quick.yaml'}" in proc.stdout, proc.stdout[:2000]
    assert "trials: 2 completed" in proc.stdout, proc.stdout[-2000:]
    assert (work / "ray_results" / "w" / "best_config.yaml").is_file()
