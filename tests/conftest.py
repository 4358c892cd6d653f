"""Shared test fixtures: the reference data copied into tests/data/reference; a cache of the
tests' own, shared by every test and test process of a session and the commands they start
(the embedded Prefect API's template database, flows.embedded), instead of the user's."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REFERENCE = Path(__file__).resolve().parent / "data" / "reference"
CACHE = Path(tempfile.gettempdir()) / f"colorfeat-tests-{os.getuid()}" / "cache"
os.environ["XDG_CACHE_HOME"] = str(CACHE)  # inherited by the commands the tests start


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """Outside facts for conformance tests (the original grid and prior, real COCO captions)."""
    return REFERENCE


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow tests first: under `pytest -n 2` the longest one starts at once on one worker while
    the other worker works through the rest, instead of starting last and running alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
