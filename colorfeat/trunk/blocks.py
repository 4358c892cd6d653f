"""The block plan of the features stage: fixed runs of whole chunks, the unit of compute and resume.

A split's chunks are cut into blocks of at most one batch of images each, always the same way for
the same array and batch, so a killed run recomputes only the blocks with unmarked chunks, with
the same batches, and ends byte-identical to an uninterrupted run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import zarr

from colorfeat.trunk.markers import marked_chunks


@dataclass(frozen=True)
class Block:
    """A fixed run of whole chunks of one split: the unit of compute and resume."""

    split: str
    start: int  # first image
    stop: int  # one past the last image
    chunks: tuple[int, ...]


def pending_blocks(split: str, arr: zarr.Array, batch_size: int, markers: Path) -> list[Block]:
    """Fixed blocks of whole chunks (at most batch_size images) that still have unmarked chunks."""
    n, chunk_n = arr.shape[0], arr.chunks[0]
    n_chunks = math.ceil(n / chunk_n)
    per_block = max(1, batch_size // chunk_n)
    marked = set(marked_chunks(markers))
    blocks = []
    for first in range(0, n_chunks, per_block):
        chunks = tuple(range(first, min(first + per_block, n_chunks)))
        if not set(chunks) <= marked:
            blocks.append(Block(split, first * chunk_n, min(n, (chunks[-1] + 1) * chunk_n), chunks))
    return blocks
