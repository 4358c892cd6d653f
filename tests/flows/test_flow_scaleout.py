"""Scale-out gives the same store: CPU stages on a Dask cluster, extraction over several devices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from colorfeat.store import open_store
from flows.pipeline import rebuild


def _files(version: Path) -> dict[str, bytes]:
    return {str(p.relative_to(version)): p.read_bytes() for p in version.rglob("*") if p.is_file()}


def assert_same_version(a: str, b: str) -> None:
    """Two published versions hold the same files with the same bytes (creation time aside)."""
    fa, fb = _files(Path(a)), _files(Path(b))
    assert sorted(fa) == sorted(fb)
    attrs_a, attrs_b = (json.loads(f.pop("zarr.json"))["attributes"] for f in (fa, fb))
    attrs_a.pop("created"), attrs_b.pop("created")
    assert attrs_a == attrs_b
    differ = [name for name in fa if fa[name] != fb[name]]
    assert differ == []


@pytest.fixture
def local(prefect_api, tiny) -> dict:
    """A tiny rebuild with every stage in this process."""
    return rebuild(tiny)


def test_a_dask_cluster_of_two_processes_publishes_the_identical_version(local, tiny, tmp_path):
    from distributed import LocalCluster

    elsewhere = {**tiny, "store": str(tmp_path / "dask-store"), "work_dir": str(tmp_path / "dw")}
    with LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
    ) as cluster:
        on_dask = rebuild({**elsewhere, "dask_address": cluster.scheduler_address})
    assert on_dask["executed"] == local["executed"]
    assert on_dask["version"] == local["version"]
    assert_same_version(local["path"], on_dask["path"])


def test_extraction_split_over_two_devices_publishes_the_identical_version(local, tiny, tmp_path):
    elsewhere = {**tiny, "store": str(tmp_path / "two-store"), "work_dir": str(tmp_path / "tw")}
    two = rebuild({**elsewhere, "devices": ["cpu", "cpu"]})  # a Dask worker per device, as per GPU
    assert two["version"] == local["version"]
    version = open_store(two["path"])
    assert version.features("train").shape == open_store(local["path"]).features("train").shape
    assert_same_version(local["path"], two["path"])


def test_extraction_over_gpus_matches_one_gpu(prefect_api, tiny, tmp_path):
    """On a GPU machine: one Dask worker per device (two on one GPU if there is only one)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here")
    n = torch.cuda.device_count()
    devices = [f"cuda:{i}" for i in range(n)] if n > 1 else ["cuda:0", "cuda:0"]
    gpu = {**tiny, "device": "cuda"}
    one = rebuild({**gpu, "devices": ["cuda:0"]})
    spread = {**gpu, "store": str(tmp_path / "gpus-store"), "work_dir": str(tmp_path / "gw")}
    many = rebuild({**spread, "devices": devices})
    assert many["version"] == one["version"]
    assert_same_version(one["path"], many["path"])
