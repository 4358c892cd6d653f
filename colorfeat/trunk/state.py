"""State dicts of trunks: read from untrusted files, loaded into a trunk, hashed.

Every file is read with `torch.load(weights_only=True)`: no file runs code when loaded. A file may
hold the full model's keys or the trunk's only, bare or under "state_dict"/"model", with or
without DataParallel's "module." prefix.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from colorfeat.errors import UserError, first_line


def load_state_file(
    path: Path, what: str = "", advice: str = "use 'imagenet' or 'none'"
) -> dict[str, torch.Tensor]:
    """A state dict of tensors from a file, read with `weights_only=True` (runs no pickle code)."""
    what = what or f"--weights {path}"
    if not path.is_file():
        raise UserError(f"{what}: no such file ({advice})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and format errors all mean "not a state dict"
        first = first_line(exc, 160)
        raise UserError(f"{what} is not a readable state-dict file ({first}): {advice}") from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{what} does not hold a state dict of tensors ({advice})")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_into(trunk: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Load the trunk's keys from a full-model or trunk-only state dict; fail clearly otherwise."""
    wanted = trunk.state_dict()
    picked = {k: v for k, v in state.items() if k in wanted}  # others: cut-away layers, the head
    missing = sorted(set(wanted) - set(picked))
    bad_shape = sorted(k for k in picked if picked[k].shape != wanted[k].shape)
    if missing or bad_shape:
        detail = "; ".join(
            f"{what} {len(keys)} (e.g. {', '.join(keys[:3])})"
            for what, keys in (
                ("missing", missing),
                ("wrong shape", bad_shape),
            )
            if keys
        )
        raise UserError(f"--weights {source} does not fit this trunk: {detail}")
    trunk.load_state_dict(picked, strict=True)


def has_unsaved_buffers(module: nn.Module) -> bool:
    """Whether the module holds buffers its state dict does not carry (they need a real init)."""
    saved = set(module.state_dict())
    return any(name not in saved for name, _ in module.named_buffers())


def state_dict_hash(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over (key, dtype, shape, bytes) of every tensor, in key order."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
