"""The model kinds: one registry entry per kind of colorizer, which everything else iterates.

`colortrain fit --model`'s choices and validation, the model's construction and the checkpoint's
config all read MODEL_KINDS; export needs nothing of a kind. Adding a kind is one `register`
call with a `ModelKind` (see `registered` for doing so for a block of code, as tests do):

    register(ModelKind("gated", "FiLM with a sigmoid gate.", block=make_gated_block))

Kept free of torch: the command line reads it to show its choices.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from colorfeat.errors import UserError

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class ModelKind:
    """One kind of colorizer.

    `block(width, cond_dim)` makes one of its residual blocks: a module called as
    `block(x, cond)` with features x (B, width, h, w) and the caption vector cond (B, cond_dim),
    or None when `uses_caption` is false (then cond_dim is 0), returning (B, width, h, w).
    """

    name: str
    help: str
    block: Callable[[int, int], nn.Module]
    uses_caption: bool = True


def _res_block(conditioning: str) -> Callable[[int, int], nn.Module]:
    def make(width: int, cond_dim: int) -> nn.Module:
        from colortrain.blocks import ResBlock

        return ResBlock(width, conditioning, cond_dim)

    return make


MODEL_KINDS: dict[str, ModelKind] = {
    kind.name: kind
    for kind in (
        ModelKind("film", "the paper's model: FiLM from the caption", _res_block("film")),
        ModelKind("concat", "baseline: caption tiled and concatenated", _res_block("concat")),
        ModelKind("nolang", "baseline: no caption", _res_block("plain"), uses_caption=False),
    )
}
DEFAULT_KIND = "film"


def model_kind(name: str) -> ModelKind:
    """The registered kind called `name`, or a UserError naming the kinds there are."""
    if name not in MODEL_KINDS:
        raise UserError(f"--model must be one of {', '.join(MODEL_KINDS)}, got {name!r}")
    return MODEL_KINDS[name]


def register(kind: ModelKind) -> ModelKind:
    """Add a kind (a name taken already is an error)."""
    if kind.name in MODEL_KINDS:
        raise ValueError(f"model kind {kind.name!r} is registered already")
    MODEL_KINDS[kind.name] = kind
    return kind


@contextmanager
def registered(kind: ModelKind) -> Iterator[ModelKind]:
    """`kind` registered for the block's duration."""
    register(kind)
    try:
        yield kind
    finally:
        MODEL_KINDS.pop(kind.name, None)
