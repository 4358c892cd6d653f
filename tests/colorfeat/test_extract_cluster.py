"""The features stage as Dask tasks: GPU-resource workers (declared, running the CPU path here),
one task at a time per worker, every chunk once, the bytes of a single-process build, a killed
worker's tasks redone elsewhere, a rerun that runs only what is missing."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zarr
from distributed import Client, LocalCluster, Nanny, Scheduler, SpecCluster

from colorfeat.config import BackboneConfig
from colorfeat.errors import UserError
from colorfeat.trunk import cluster, extract
from colorfeat.trunk.extract import features_stage

sys.path.insert(0, str(Path(__file__).parent))
from conftest_store import write_images_zarr  # noqa: E402

R18 = BackboneConfig(backbone="resnet18", layer="layer1", weights="none", image_size=32)
ONE_CHUNK_BLOCKS = {"device": "cpu", "batch_size": 1, "chunk_images": 1, "precision": "fp32"}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict:
    return write_images_zarr(
        tmp_path_factory.mktemp("images") / "images.zarr", {"train": 24, "val": 6}, size=32
    )


@pytest.fixture(scope="module")
def gpu_cluster():
    """Two workers that each declare one GPU, and one that declares none."""
    spec = {"cls": Nanny, "options": {"nthreads": 1, "resources": {"GPU": 1}}}
    workers = {"gpu-0": spec, "gpu-1": spec, "plain": {"cls": Nanny, "options": {"nthreads": 1}}}
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
    spec_cluster = SpecCluster(workers, scheduler, silence_logs=logging.ERROR)
    try:
        with Client(spec_cluster) as client:
            client.wait_for_workers(3)
        yield spec_cluster
    finally:  # a busy machine may take long to stop three worker processes
        spec_cluster.close(timeout=180)


@pytest.fixture
def as_if_cuda(monkeypatch):
    """Tasks ask for a GPU, as they do when the trunk runs on CUDA; one block per task."""
    monkeypatch.setattr(cluster, "task_resources", lambda device: {cluster.RESOURCE: 1})
    monkeypatch.setattr(cluster, "TASK_PICTURES", 1)


class _Tasks:
    """The records of the extraction tasks that ran, as the stage logged them."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog

    def __call__(self) -> list[dict]:
        return [r.__dict__ for r in self.caplog.records if r.name == cluster.__name__]


@pytest.fixture
def tasks(caplog) -> _Tasks:
    caplog.set_level(logging.INFO, logger=cluster.__name__)
    return _Tasks(caplog)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def single(images, tmp_path_factory) -> dict[str, bytes]:
    result = features_stage(images, R18, tmp_path_factory.mktemp("one") / "f", **ONE_CHUNK_BLOCKS)
    return _files(Path(result["path"]))


def _addresses(spec_cluster: SpecCluster) -> dict[str, str]:
    with Client(spec_cluster) as client:
        info = client.scheduler_info()["workers"]
    return {w["name"]: address for address, w in info.items()}


def test_tasks_run_one_at_a_time_per_gpu_worker_and_write_each_chunk_once(
    images, gpu_cluster, as_if_cuda, tasks, single, tmp_path, monkeypatch
) -> None:
    address = gpu_cluster.scheduler_address

    def no_trunk_here(config):
        raise AssertionError("the coordinator built a trunk: the workers have theirs")

    monkeypatch.setattr(extract, "create_trunk", no_trunk_here)  # the arrays' attrs: a worker's
    result = features_stage(images, R18, tmp_path / "f", dask_address=address, **ONE_CHUNK_BLOCKS)
    assert _files(Path(result["path"])) == single
    records = tasks()
    written = [(split, c) for r in records for split, cs in r["chunks"].items() for c in cs]
    assert sorted(written) == sorted(
        [("train", c) for c in range(24)] + [("val", c) for c in range(6)]
    )
    names = _addresses(gpu_cluster)
    assert {r["worker"] for r in records} <= {names["gpu-0"], names["gpu-1"]}  # never "plain"
    for pid in {r["pid"] for r in records}:
        spans = sorted((r["start"], r["end"]) for r in records if r["pid"] == pid)
        assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:], strict=False))


def test_a_rerun_runs_only_the_tasks_of_unmarked_chunks(
    images, gpu_cluster, as_if_cuda, tasks, single, tmp_path
) -> None:
    address = gpu_cluster.scheduler_address
    features_stage(images, R18, tmp_path / "f", dask_address=address, **ONE_CHUNK_BLOCKS)
    partial = tmp_path / "f.partial"
    (tmp_path / "f").rename(partial)  # as a killed run leaves it: four chunks never marked
    (partial / "_SUCCESS").unlink()
    unmarked = {("train", 3), ("train", 17), ("train", 18), ("val", 5)}
    for split, n in (("train", 24), ("val", 6)):
        (partial / "_chunks_done" / split).mkdir(parents=True)
        for c in range(n):
            if (split, c) not in unmarked:
                (partial / "_chunks_done" / split / str(c)).touch()
    tasks.caplog.clear()
    result = features_stage(images, R18, tmp_path / "f", dask_address=address, **ONE_CHUNK_BLOCKS)
    ran = {(split, c) for r in tasks() for split, cs in r["chunks"].items() for c in cs}
    assert len(tasks()) == len(unmarked) and ran == unmarked
    assert _files(Path(result["path"])) == single


def test_a_worker_killed_mid_stage_loses_only_its_task(
    images, gpu_cluster, as_if_cuda, single, tmp_path
) -> None:
    address = gpu_cluster.scheduler_address
    with Client(address) as client:
        pids = client.run(os.getpid)
        done: dict = {}
        stage = threading.Thread(
            target=lambda: done.update(
                features_stage(
                    images, R18, tmp_path / "f", dask_address=address, **ONE_CHUNK_BLOCKS
                )
            )
        )
        stage.start()
        marks = tmp_path / "f.partial" / "_chunks_done" / "train"
        busy: list[str] = []
        while stage.is_alive() and not busy:  # a worker in the middle of a task, after the first
            if marks.is_dir() and any(marks.iterdir()):
                busy = [w for w, keys in client.processing().items() if keys]
            time.sleep(0.02)
        assert busy, "the stage ended before any worker could be killed"
        os.kill(pids[busy[0]], signal.SIGKILL)
        stage.join(timeout=300)
    assert not stage.is_alive()
    assert _files(Path(done["path"])) == single


def test_a_cluster_without_gpu_workers_is_one_line_before_any_work(
    images, as_if_cuda, tmp_path
) -> None:
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
    ) as plain:
        with pytest.raises(UserError) as err:
            features_stage(
                images, R18, tmp_path / "f", dask_address=plain.scheduler_address,
                **ONE_CHUNK_BLOCKS,
            )  # fmt: skip
    msg = str(err.value)
    assert "\n" not in msg and "--resources GPU=1" in msg
    assert not list((tmp_path / "f.partial" / "_chunks_done").rglob("*"))


@pytest.fixture(scope="module")
def external_cluster(tmp_path_factory):
    """`dask scheduler` and two `dask worker --resources GPU=1`, each its own process group, as
    on separate machines; the scheduler's address."""
    home = tmp_path_factory.mktemp("dask")
    dask = [sys.executable, "-m", "dask"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True}
    file = str(home / "scheduler.json")
    procs = [
        subprocess.Popen(
            [*dask, "scheduler", "--scheduler-file", file, "--port", "0", "--no-dashboard"],
            cwd=home,
            **quiet,
        )  # fmt: skip
    ]
    try:
        for i in range(2):
            procs.append(
                subprocess.Popen(
                    [
                        *dask,
                        "worker",
                        "--scheduler-file",
                        file,
                        "--resources",
                        "GPU=1",
                        "--nthreads",
                        "1",
                        "--no-dashboard",
                        "--name",
                        f"gpu-{i}",
                    ],
                    cwd=home,
                    **quiet,
                )  # fmt: skip
            )
        with Client(scheduler_file=file, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
            yield client.scheduler.address
    finally:
        for proc in procs[::-1]:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)


def test_an_external_scheduler_and_workers_build_the_same_bytes(
    images, external_cluster, as_if_cuda, tasks, single, tmp_path
) -> None:
    result = features_stage(
        images, R18, tmp_path / "f", dask_address=external_cluster, **ONE_CHUNK_BLOCKS
    )
    assert _files(Path(result["path"])) == single
    records = tasks()
    assert len(records) == 30 and len({r["pid"] for r in records}) <= 2
    for pid in {r["pid"] for r in records}:
        spans = sorted((r["start"], r["end"]) for r in records if r["pid"] == pid)
        assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:], strict=False))


def test_a_task_that_fails_of_its_own_accord_is_one_line_naming_its_chunks_and_worker(
    images, gpu_cluster, as_if_cuda, tmp_path
) -> None:
    broken = tmp_path / "images.zarr"
    shutil.copytree(images["path"], broken)
    (broken / "train" / "rgb" / "c" / "0" / "0" / "0" / "0").write_bytes(b"not zstd")
    rows = zarr.open_group(str(broken), mode="r")["train/rgb"].chunks[0]  # pictures per chunk
    with pytest.raises(UserError) as err:
        features_stage(
            {**images, "path": str(broken)}, R18, tmp_path / "f",
            dask_address=gpu_cluster.scheduler_address, **ONE_CHUNK_BLOCKS,
        )  # fmt: skip
    msg = str(err.value)
    names = _addresses(gpu_cluster)
    assert "\n" not in msg and "failed on worker " in msg
    assert any(f"worker {names[n]}" in msg for n in ("gpu-0", "gpu-1"))
    first = int(msg.split("train[")[1].split(":")[0])
    assert 0 <= first < rows  # a picture of the broken (first) chunk
