"""The features stage on a Dask cluster: one task per group of whole-chunk blocks.

Each task opens the images Zarr and the feature arrays (created, with their `zarr.json`, by the
coordinator before any task runs), runs the threaded loop of `colorfeat.trunk.pipeline` over its
blocks, and marks each block's chunks done once durable, so that a rerun or a task rescheduled
after its worker died skips what is marked and redoes only the rest. Tasks own whole chunks:
no two tasks ever write the same object. When the trunk runs on CUDA every task asks for one
`GPU` resource, so it runs only on workers started with `--resources GPU=1` (one per GPU) and
never two at once on one of them; workers without it take none. A `WorkerPlugin` builds the
trunk once per worker, on its first task. Each finished task logs its worker, pid and times.
The coordinator builds no trunk: what the arrays say of it comes from a worker (`trunk_made_by`).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zarr
from distributed import Client, WorkerPlugin, get_worker, wait

from colorfeat.config import BackboneConfig
from colorfeat.errors import UserError, first_line
from colorfeat.trunk.blocks import Block
from colorfeat.trunk.engine import Compute
from colorfeat.trunk.markers import marked_chunks

log = logging.getLogger(__name__)

RESOURCE = "GPU"  # what a worker declares, one per GPU: `dask worker ADDR --resources GPU=1`
PLUGIN = "colorfeat-trunks"
TASK_RETRIES = 1  # a task that fails of its own accord is tried again once, anywhere
# Tasks: at least TASKS_PER_WORKER per worker, so that workers even out, and at most
# TASK_PICTURES pictures each (about a second of a GPU's work, a few minutes of a CPU's).
TASKS_PER_WORKER = 4
TASK_PICTURES = 4096


@dataclass(frozen=True)
class Job:
    """What every task of one features stage needs (sent to the workers)."""

    images: str  # the images Zarr
    features: str  # the feature Zarr group in the stage's partial directory
    markers: str
    backbone: BackboneConfig
    run: Compute
    torch_threads: int | None = None  # set on CPU workers that share one machine


class TrunkPlugin(WorkerPlugin):
    """Builds the trunk and its engine once per worker process, when its first task asks, and
    keeps them for the tasks that follow, in this stage and later ones (the last ones only: a
    long-lived worker serves one feature set after another)."""

    def engine(self, backbone: BackboneConfig, run: Compute) -> tuple[Any, Any]:
        """The trunk of `backbone` and its engine for `run`."""
        with _LOCK:
            if (backbone, run) not in _BUILT:
                from colorfeat.trunk.backbone import create_trunk
                from colorfeat.trunk.engine import create_engine

                _BUILT.clear()
                trunk = create_trunk(backbone)
                _BUILT[backbone, run] = trunk, create_engine(trunk, run)
            return _BUILT[backbone, run]


_BUILT: dict[tuple[BackboneConfig, Compute], tuple[Any, Any]] = {}  # per worker process
_LOCK = threading.Lock()


def task_resources(device: str) -> dict[str, int] | None:
    """What an extraction task asks of its worker: one GPU when the trunk runs on CUDA."""
    return {RESOURCE: 1} if device.startswith("cuda") else None


def trunk_made_by(client: Client, backbone: BackboneConfig, run: Compute) -> dict[str, Any]:
    """What the feature arrays say of the trunk (`colorfeat.trunk.provenance.made_by`), from a
    worker that will run it: the worker keeps the trunk it builds for its first task."""
    resources = task_resources(run.device)
    if resources:
        _require_resource(client)
    client.register_plugin(TrunkPlugin(), name=PLUGIN)
    future = client.submit(
        describe_task, backbone, run, key=f"features-trunk-{os.urandom(4).hex()}",
        resources=resources, retries=TASK_RETRIES, pure=False,
    )  # fmt: skip
    wait([future])
    if future.status == "error":
        raise UserError(str(future.exception()).splitlines()[0])
    return future.result()


def describe_task(backbone: BackboneConfig, run: Compute) -> dict[str, Any]:
    """On a worker: its trunk of `backbone`, built if needed, as the feature arrays describe it."""
    from colorfeat.trunk.provenance import made_by

    worker = get_worker()
    try:
        trunk, _ = worker.plugins[PLUGIN].engine(backbone, run)
    except Exception as exc:  # noqa: BLE001 - one line naming the worker
        first = first_line(exc)
        raise UserError(f"building the {backbone.name} trunk failed on worker "
                        f"{worker.address}: {first}") from exc  # fmt: skip
    return made_by(trunk, backbone, run.amp)


def run_tasks(client: Client, job: Job, blocks: Sequence[Block]) -> list[dict]:
    """Extract `blocks` as tasks on `client`'s cluster (after `trunk_made_by`, which checks for
    the resource and registers the plugin); the finished tasks' records, in order."""
    resources = task_resources(job.run.device)
    per = _blocks_per_task(client, len(blocks), job.run.batch, resources)
    groups = [tuple(blocks[i : i + per]) for i in range(0, len(blocks), per)]
    futures = [
        client.submit(
            extract_task,
            job,
            group,
            key=f"features-{_describe(group)}-{os.urandom(4).hex()}",
            resources=resources,
            retries=TASK_RETRIES,
            pure=False,
        )  # fmt: skip
        for group in groups
    ]
    wait(futures)
    failed = [f for f in futures if f.status == "error"]
    if failed:
        raise UserError(str(failed[0].exception()).splitlines()[0])
    records = client.gather(futures)
    for record in records:
        log.info("features task %(blocks)s on %(worker)s pid %(pid)d", record, extra=record)
    return records


def _blocks_per_task(client: Client, n_blocks: int, batch: int, resources: dict | None) -> int:
    workers = client.scheduler_info().get("workers", {}).values()
    n_workers = sum(1 for w in workers if not resources or w.get("resources", {}).get(RESOURCE))
    spread = math.ceil(n_blocks / (TASKS_PER_WORKER * max(1, n_workers)))
    return max(1, min(spread, TASK_PICTURES // batch))


def extract_task(job: Job, blocks: tuple[Block, ...]) -> dict:
    """One task: extract `blocks` on this worker; a record of who did it and when."""
    from colorfeat.trunk.pipeline import extract_blocks

    worker = get_worker()
    start = time.time()
    try:
        trunk, engine = worker.plugins[PLUGIN].engine(job.backbone, job.run)
        threads = job.torch_threads or _omp_threads(job.run.device)
        if threads:
            import torch

            torch.set_num_threads(threads)
        src = zarr.open_group(job.images, mode="r")
        dst = zarr.open_group(job.features, mode="r+")
        todo = [b for b in blocks if not _marked(b, Path(job.markers))]  # a rerun of this task
        name, markers = job.backbone.name, Path(job.markers)
        extract_blocks(trunk, src, dst, name, todo, job.run, markers, engine=engine)
    except Exception as exc:  # noqa: BLE001 - one line naming the work and the worker
        first = first_line(exc)
        raise UserError(
            f"feature extraction of {_describe(blocks)} failed on worker {worker.address}: {first}"
        ) from exc
    return {
        "blocks": _describe(blocks),
        "blocks_run": len(todo),
        "chunks": {b.split: list(b.chunks) for b in blocks},
        "worker": worker.address,
        "pid": os.getpid(),
        "start": start,
        "end": time.time(),
    }


@contextmanager
def cluster_client(address: str | None, devices: Sequence[str]) -> Iterator[Client]:
    """A client of the cluster at `address`, or of a local one with a worker per device (each
    CUDA worker sees only its own GPU and offers one GPU resource)."""
    if address:
        try:
            client = Client(address, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise UserError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        with client:
            yield client
        return
    from distributed import Nanny, Scheduler, SpecCluster

    cpu_workers = sum(not d.startswith("cuda") for d in devices)
    workers = {
        f"device-{i}": {"cls": Nanny, "options": _worker_options(device, cpu_workers)}
        for i, device in enumerate(devices)
    }
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
    with (
        SpecCluster(workers, scheduler, silence_logs=logging.ERROR) as cluster,
        Client(cluster) as client,
    ):
        yield client


def cluster_devices(address: str, device: str) -> list[str]:
    """The device the cluster's workers run the trunk on, as one entry: `--device` as given
    (the coordinator needs no GPU of its own), "auto" being cuda when any worker offers a GPU."""
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise UserError(f"--device must be auto, cpu or cuda, got {device!r}")
    if device != "auto":
        return ["cuda" if device.startswith("cuda") else "cpu"]
    with cluster_client(address, []) as client:
        return ["cuda" if _offers_resource(client) else "cpu"]


def _omp_threads(device: str) -> int | None:
    """A CPU worker's trunk threads: its OMP_NUM_THREADS (Dask starts workers with 1; a local
    cluster gives each CPU worker its share of the cores), which PyTorch does not always read."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if device == "cpu" and value.isdecimal() and int(value) > 0 else None


def _worker_options(device: str, cpu_workers: int = 1) -> dict[str, Any]:
    """A local worker: one task at a time; on CUDA its own GPU, on the CPU its share of the
    cores for the trunk's threads (Dask starts workers with OMP_NUM_THREADS=1, which would leave
    a lone CPU worker one core)."""
    options: dict[str, Any] = {"nthreads": 1}
    if device.startswith("cuda"):
        index = device.partition(":")[2] or "0"
        options |= {"resources": {RESOURCE: 1}, "env": {"CUDA_VISIBLE_DEVICES": index}}
    else:
        threads = max(1, (os.cpu_count() or 1) // max(1, cpu_workers))
        options |= {"env": {"OMP_NUM_THREADS": str(threads)}}
    return options


def _offers_resource(client: Client) -> bool:
    workers = client.scheduler_info().get("workers", {})
    return any(w.get("resources", {}).get(RESOURCE) for w in workers.values())


def _require_resource(client: Client) -> None:
    if not _offers_resource(client):
        raise UserError(
            f"no worker of the Dask cluster offers a {RESOURCE} resource, so the features "
            f"cannot be extracted there: start one worker per GPU with "
            f"`dask worker {client.scheduler.address} --resources {RESOURCE}=1`"
        )


def _marked(block: Block, markers: Path) -> bool:
    return set(block.chunks) <= set(marked_chunks(markers / block.split))


def _describe(blocks: Sequence[Block]) -> str:
    """The chunk range of a group of blocks of one or more splits, e.g. `train[0:96]`."""
    spans: dict[str, list[int]] = {}
    for b in blocks:
        lo, hi = spans.get(b.split, [b.start, b.stop])
        spans[b.split] = [min(lo, b.start), max(hi, b.stop)]
    return "+".join(f"{split}[{lo}:{hi}]" for split, (lo, hi) in spans.items())
