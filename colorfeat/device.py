"""Which torch device a `--device` option means, for the extractor and the trainer alike."""

from __future__ import annotations

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
