"""Which torch device a `--device` option means, for the extractor and the trainer alike, and
how the CPU's memory allocator is set while a model runs there."""

from __future__ import annotations

import ctypes
import functools
import platform
import sys

import torch

from colorfeat.errors import UserError


def resolve_device(name: str) -> torch.device:
    """auto -> CUDA when present, else CPU; cpu, cuda, cuda:N as given; CUDA without a GPU fails."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and name != "cuda" and not name.startswith("cuda:"):
        raise UserError(f"--device must be auto, cpu or cuda, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} was asked for, but no CUDA GPU is available")
    try:
        return torch.device(name)
    except RuntimeError as exc:  # e.g. cuda:x
        raise UserError(f"--device {name!r} is not a device: {exc}") from exc


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


@functools.cache  # once per process (a second mallopt would change nothing)
def keep_freed_memory() -> bool:
    """From now on, glibc keeps freed memory for the next allocation; returns whether it does.

    A CPU forward pass allocates its large activations afresh on every batch. glibc serves each
    one over its mmap threshold (at most 32 MB; 58 MB for resnet101's first layer at batch 18
    and 224 px) with a new mmap and unmaps it when freed, so every batch pays the kernel to
    fault in and zero all its pages again: about a quarter of the CPU time of resnet101.layer2
    on the 2-core machine went to the kernel (docs/performance.md). Afterwards, allocations come
    from the heap and freed memory stays mapped for reuse, as with the GLIBC_TUNABLES
    `glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=...` often advised for PyTorch on a
    CPU. It lasts for the process: the heap keeps its peak size (setting glibc's values back
    would not restore its adaptive thresholds, and left later batches slower than before).
    Elsewhere than glibc (macOS, musl) nothing changes.
    """
    libc = _glibc()
    if libc is None:
        return False
    return libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1


def _glibc() -> ctypes.CDLL | None:
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None
