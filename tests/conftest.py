"""Shared test fixtures: the reference data copied into tests/data/reference."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REFERENCE = Path(__file__).resolve().parent / "data" / "reference"


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
