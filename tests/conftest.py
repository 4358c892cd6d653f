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
