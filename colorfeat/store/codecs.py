"""The compression and chunking of feature arrays, and the candidates they were chosen from.

`benchmarks/compression.py` measures every candidate in `CANDIDATES` (bytes per image, write and
read MB/s) on feature maps; `FEATURE_CODEC` names the one the store uses, and the numbers behind
that choice are in docs/feature-store.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from zarr.codecs import BloscCodec, ZstdCodec

# Chunks hold whole images (chunked along N only) and about this many uncompressed bytes.
TARGET_CHUNK_BYTES = 4 << 20

CANDIDATES: dict[str, Callable[[], list]] = {
    "none": lambda: [],
    "zstd-1": lambda: [ZstdCodec(level=1)],
    "zstd-3": lambda: [ZstdCodec(level=3)],
    "zstd-9": lambda: [ZstdCodec(level=9)],
    "blosc-zstd1-shuffle": lambda: [BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")],
    "blosc-zstd3-noshuffle": lambda: [BloscCodec(cname="zstd", clevel=3, shuffle="noshuffle")],
    "blosc-zstd3-shuffle": lambda: [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")],
    "blosc-zstd3-bitshuffle": lambda: [BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")],
    "blosc-zstd5-bitshuffle": lambda: [BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")],
    "blosc-lz4-noshuffle": lambda: [BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle")],
    "blosc-lz4-shuffle": lambda: [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")],
    "blosc-lz4-bitshuffle": lambda: [BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")],
}

FEATURE_CODEC = "zstd-1"


def feature_compressors(name: str = FEATURE_CODEC) -> list:
    """Fresh zarr v3 compressor codecs for a feature array."""
    return CANDIDATES[name]()


def images_per_chunk(bytes_per_image: int, n_images: int | None = None) -> int:
    """How many images make one chunk of about TARGET_CHUNK_BYTES (at least 1, at most N)."""
    per = max(1, math.ceil(TARGET_CHUNK_BYTES / max(1, bytes_per_image)))
    return per if n_images is None else max(1, min(per, n_images))
