"""The compute of the features stage: uint8 RGB blocks in, float16 feature maps out.

`Engine` is one module from the stored pixels to the stored dtype and layout; `create_engine`
makes it from a trunk for a `Compute` (BatchNorm folded into the convs, channels_last, bf16
autocast where it pays, torch.compile when asked); `run_block` runs one padded batch.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from colorfeat.config import resolve_precision
from colorfeat.constants import COMPILE_MIN_IMAGES
from colorfeat.errors import UserError
from colorfeat.trunk.fuse import fuse_batchnorm
from colorfeat.trunk.preprocess import prepare_input

# bf16 autocast vs fp32, resnet101.layer2 on natural photos: relative L2 error of the features.
BF16_TOLERANCE = 2e-2


def autocast_dtype(device: str, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype of the trunk, or None for plain fp32 (see config.resolve_precision).

    "auto" is bf16 on CUDA and fp32 on every CPU, so that features do not depend on the CPU
    model; bf16 on a CPU with native bf16 matmul (AVX512-BF16 / AMX) is asked for explicitly
    (benchmarks/extract.py measured it faster there, within BF16_TOLERANCE relative L2 of fp32).
    """
    return torch.bfloat16 if resolve_precision(precision, device) == "bf16" else None


@dataclass(frozen=True)
class Compute:
    """How the trunk runs: device, images per (padded) batch, autocast dtype, compiled or eager."""

    device: str
    batch: int  # every block is run as one batch of exactly this many images (zero-padded)
    amp: str  # "bf16" or "fp32"
    compiled: bool

    def describe(self) -> str:
        kind = "bfloat16 autocast" if self.amp == "bf16" else "float32"
        return kind + (", torch.compile (inductor, frozen)" if self.compiled else "")

    @classmethod
    def choose(
        cls, device: str, precision: str, chunk_n: int, batch_size: int,
        compile_trunk: bool | None, n: int,
    ) -> Compute:  # fmt: skip
        """Batches rounded up to whole chunks (one static shape); compiled on CPU from
        COMPILE_MIN_IMAGES images on, where its one-off ~30 s pays, unless `compile_trunk` says."""
        amp = "bf16" if autocast_dtype(device, precision) else "fp32"
        if compile_trunk is None:
            compile_trunk = device == "cpu" and n >= COMPILE_MIN_IMAGES
        return cls(device, chunk_n * math.ceil(batch_size / chunk_n), amp, compile_trunk)


class Engine(torch.nn.Module):
    """uint8 RGB (B, S, S, 3) -> float16 features (B, C, H, W), NCHW, and whether all are finite.

    The overflow check runs on the device where that is cheap (CUDA); on the CPU it returns None
    and the writer thread checks the float16 bits (`all_finite`), ~10x cheaper than
    torch.isfinite on float16 there and off the thread that runs the trunk.
    """

    def __init__(self, trunk: torch.nn.Module, amp: torch.dtype | None) -> None:
        super().__init__()
        self.trunk = trunk
        self.amp = amp

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = prepare_input(rgb)  # (B, 3, S, S) channels_last
        enabled = self.amp is not None
        with torch.autocast(rgb.device.type, dtype=self.amp or torch.float32, enabled=enabled):
            y = self.trunk(x)  # (B, C, H, W) channels_last
        # cast and NHWC -> NCHW in one pass
        y = y.to(torch.float16, memory_format=torch.contiguous_format)  # (B, C, H, W) NCHW
        finite = torch.isfinite(y).all() if y.device.type != "cpu" else None  # |x| > 65504: inf
        return y, finite


def create_engine(trunk: torch.nn.Module, run: Compute) -> Engine:
    """The engine of `trunk` on `run.device`: BatchNorm folded, channels_last, compiled if asked."""
    fused = fuse_batchnorm(trunk).to(torch.device(run.device), memory_format=torch.channels_last)
    if run.compiled:  # the trunk only: compiling the whole Engine measured slower
        fused = torch.compile(fused, dynamic=False)
    return Engine(fused, torch.bfloat16 if run.amp == "bf16" else None)


def compile_settings(compiled: bool) -> contextlib.AbstractContextManager:
    """Inductor with frozen weights (constant-folded, prepacked for oneDNN); it must be set while
    the first call compiles (`options=` does not reach it)."""
    if not compiled:
        return contextlib.nullcontext()
    import torch._inductor.config

    return torch._inductor.config.patch(freezing=True)


def run_block(
    engine: torch.nn.Module, host: torch.Tensor, dev: torch.device, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (n, C, H, W) float16 of a block of uint8 RGB (n, S, S, 3), as one padded batch,
    and whether they are all finite; both on the host, copied asynchronously on CUDA (the
    writer reads them after the block's event, so the main thread never waits for the device)."""
    cuda = dev.type == "cuda"
    n = host.shape[0]
    rgb = host.to(dev, non_blocking=cuda)  # (n, S, S, 3) uint8
    if n < batch_size:  # one static shape for every batch: pad the last block with black images
        rgb = torch.cat([rgb, rgb.new_zeros((batch_size - n, *rgb.shape[1:]))])
    y, finite = engine(rgb)  # (B, C, H, W) float16, () bool
    y = y[:n]  # (n, C, H, W)
    return (_to_pinned(y), _to_pinned(finite)) if cuda else (y, finite)


def all_finite(features: np.ndarray) -> bool:
    """Whether a float16 array holds no inf or NaN: no value has all five exponent bits set."""
    bits = features.view(np.uint16)
    return bool(bits.size == 0 or np.max(bits & np.uint16(0x7FFF)) < 0x7C00)


def require_finite(finite: bool) -> None:
    """UserError when the features overflowed float16."""
    if not finite:
        raise UserError(
            "trunk features overflow float16 (|x| > 65504): random-init deep layers grow without "
            "bound; use --weights imagenet or FILE, or an earlier --layer"
        )


def _to_pinned(y: torch.Tensor) -> torch.Tensor:
    host = torch.empty(y.shape, dtype=y.dtype, pin_memory=True)
    host.copy_(y, non_blocking=True)
    return host
