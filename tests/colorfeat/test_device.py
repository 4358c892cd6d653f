"""`--device` values resolve to one torch.device, for the extractor and the trainer alike."""

from __future__ import annotations

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
