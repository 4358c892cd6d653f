"""Feature extraction over several devices of one machine: one process per device, each taking
a contiguous range of the pending blocks and writing its own chunks and markers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import zarr

from colorfeat.config import BackboneConfig
from colorfeat.device import resolve_device
from colorfeat.errors import UserError
from colorfeat.trunk.backbone import create_trunk
from colorfeat.trunk.blocks import Block, split_chunk_ranges
from colorfeat.trunk.engine import Compute
from colorfeat.trunk.markers import MARKERS
from colorfeat.trunk.output import FEATURES_GROUP
from colorfeat.trunk.pipeline import extract_blocks


def resolve_devices(device: str, devices: Sequence[str] | None) -> list[str]:
    """The resolved devices to run on: `devices`, else every CUDA device when `device` resolves
    to cuda, else the one device."""
    device = str(resolve_device(device))  # "cpu", "cuda" or "cuda:N"
    if devices is None:
        n_gpu = torch.cuda.device_count() if device == "cuda" else 0
        devices = [f"cuda:{i}" for i in range(n_gpu)] if n_gpu > 1 else [device]
    return [str(resolve_device(d)) for d in devices]


def configure_threads(device: str, n_processes: int) -> None:
    """Share the CPU's cores between processes that run trunks on it."""
    if device == "cpu" and n_processes > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // n_processes))


def run_multiprocess(
    images: dict, backbone: BackboneConfig, partial: Path, blocks: list[Block],
    devices: Sequence[str], run: Compute,
) -> None:  # fmt: skip
    """Extract `blocks` split into contiguous ranges, one spawned process per device."""
    ranges = split_chunk_ranges(len(blocks), len(devices))
    work = [(devices[i], [blocks[j] for j in r]) for i, r in enumerate(ranges) if len(r)]
    import torch.multiprocessing as mp

    try:
        mp.spawn(
            _worker,
            args=(images, backbone, str(partial), work, run),
            nprocs=len(work),
            join=True,
        )
    except mp.ProcessRaisedException as exc:
        last = str(exc).strip().splitlines()[-1]
        raise UserError(f"feature extraction failed in a worker process: {last}") from exc


def _worker(
    rank: int, images: dict, backbone: BackboneConfig, partial: str,
    work: list[tuple[str, list[Block]]], run: Compute,
) -> None:  # fmt: skip
    device, blocks = work[rank]
    configure_threads(device, len(work))
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    trunk = create_trunk(backbone)
    root = zarr.open_group(str(Path(partial) / FEATURES_GROUP), mode="r+")
    src = zarr.open_group(str(images["path"]), mode="r")
    run = Compute(device, run.batch, run.amp, run.compiled)
    extract_blocks(trunk, src, root, backbone.name, blocks, run, Path(partial) / MARKERS)
