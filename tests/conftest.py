"""Shared fixtures: a small synthetic dataset (generated once per session) and an isolated cache dir."""

from __future__ import annotations

import os

import pytest

SMALL = "synthetic:ave?n_train=600&n_val=150&n_test=150&dim_audio=16&dim_visual=24&num_classes=6&seed=1"


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    """Synthetic datasets go to a per-session cache, never the user's ~/.cache."""
    path = tmp_path_factory.mktemp("hsc_cache")
    old = os.environ.get("HSC_CACHE_DIR")
    os.environ["HSC_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("HSC_CACHE_DIR", None)
    else:
        os.environ["HSC_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def small_spec() -> str:
    return SMALL


@pytest.fixture(scope="session")
def small_data(_cache_dir):
    from trainer import load_data

    return load_data(SMALL)
