"""Which devices the features stage runs on, and how CPU threads are shared between workers."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from colorfeat.device import resolve_device


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


def local_threads(dask_address: str | None, devices: Sequence[str]) -> int | None:
    """Torch threads per worker of a local cluster whose workers share this machine's CPU cores
    (None: as the worker's machine has them)."""
    cpu_workers = sum(d == "cpu" for d in devices)
    if dask_address or cpu_workers < 2:
        return None
    return max(1, (os.cpu_count() or 1) // cpu_workers)
