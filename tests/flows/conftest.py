"""Fixtures for flow tests: Prefect isolated under a temporary home, an embedded API, tiny sources.

Prefect reads its home at import, so the environment is set when this file is imported, before
any test module imports Prefect; nothing is written to the user's ~/.prefect.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from flows.embedded import embedded_api, isolate

PREFECT_HOME = Path(tempfile.mkdtemp(prefix="colorfeat-test-prefect-"))
isolate(PREFECT_HOME)

# A rebuild small enough to run in seconds on two CPU cores, fully offline.
TINY = {
    "source": "synthetic",
    "limit": 24,
    "image_size": 64,
    "backbone": "resnet18",
    "layer": "layer2",
    "weights": "none",
    "device": "cpu",
    "batch_size": 16,
}


@pytest.fixture(scope="session", autouse=True)
def _remove_prefect_home():
    yield
    shutil.rmtree(PREFECT_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """The URL of an embedded Prefect API (SQLite in the temporary home) for in-process flows."""
    with embedded_api(PREFECT_HOME / "embedded") as api:
        yield api.url


@pytest.fixture
def tiny(tmp_path: Path) -> dict:
    """Parameters of a tiny synthetic rebuild into tmp_path/store, work dir tmp_path/work."""
    return {**TINY, "store": str(tmp_path / "store"), "work_dir": str(tmp_path / "work")}
