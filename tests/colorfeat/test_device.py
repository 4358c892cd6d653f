"""`--device` values resolve to one torch.device, for the extractor and the trainer alike; the
CPU allocator keeps freed memory while models run."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from colorfeat.device import resolve_device
from colorfeat.errors import UserError


def test_device_names_resolve_to_torch_devices() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == torch.device(expected)
    with pytest.raises(UserError, match="--device must be auto, cpu or cuda, got 'gpu'"):
        resolve_device("gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_without_a_gpu_is_one_clear_error() -> None:
    for name in ("cuda", "cuda:1"):
        with pytest.raises(UserError, match=f"--device {name} was asked for, but no CUDA GPU"):
            resolve_device(name)


_FAULTS = """
import resource, torch
from colorfeat.device import keep_freed_memory

def faults():  # page faults of five 64 MB tensors, each freed at once
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.ones(16 << 20)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

faults()
before = faults()
assert keep_freed_memory() and keep_freed_memory()
after = [faults() for _ in range(6)][-1]  # once the heap has grown to the working set
print(before, after)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")
def test_kept_freed_memory_is_reused_without_faulting_pages_in_again() -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    out = subprocess.run([sys.executable, "-c", _FAULTS], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    before, after = map(int, out.stdout.split())
    assert before >= 5 * (64 << 20) // os.sysconf("SC_PAGE_SIZE") // 2  # every tensor faulted
    assert after < before / 10
