"""Batches of (features, one caption per image, ab-bin targets) read from a feature-store version.

The store is read through colorfeat.store.StoreVersion (opened once by the caller, or here from
a path), so any published version (local or an fsspec URL) works. Batches are built by a
chunk-aware sampler: chunk order and rows within each chunk are shuffled per epoch, and a batch
takes consecutive rows of that order, so each batch decodes one or two chunks instead of one chunk
per row. A dataset sent to DataLoader workers (started with `spawn`) opens the store again there,
so each worker holds its own handle.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from colorfeat.errors import UserError
from colorfeat.store import StoreVersion, open_store, schema


def store_shapes(version: StoreVersion, features: str, split: str = "train") -> dict[str, int]:
    """The model-relevant shapes of a store version, for create_model_config."""
    _, c, h, w = version.features(split, features).shape
    _, th, tw = version.array(split, schema.AB_BINS).shape
    if h != w or th != tw:
        raise UserError(f"expected square maps, got features {h}x{w} and targets {th}x{tw}")
    v, d = version.table(schema.VOCAB_EMBEDDINGS).shape
    return {
        "feature_channels": int(c),
        "feature_size": int(h),
        "target_size": int(th),
        "vocab_size": int(v),
        "embedding_dim": int(d),
        "num_bins": int(version.table(schema.LAB_GRID).shape[0]),
    }


@dataclass(frozen=True)
class CaptionIndex:
    """Which caption rows belong to each image: rows[offsets[i]:offsets[i + 1]]."""

    rows: np.ndarray  # (M,) int64, caption rows grouped by image
    offsets: np.ndarray  # (N + 1,) int64

    @classmethod
    def build(cls, image_index: np.ndarray, num_images: int) -> CaptionIndex:
        image_index = np.asarray(image_index, dtype=np.int64)
        rows = np.argsort(image_index, kind="stable")
        counts = np.bincount(image_index, minlength=num_images)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(rows=rows, offsets=offsets)

    def choose(self, images: np.ndarray, seed: int, epoch: int) -> np.ndarray:
        """One caption row per image, drawn at random; the same for the same (seed, epoch)."""
        out = np.empty(len(images), dtype=np.int64)
        for k, i in enumerate(images):
            lo, hi = self.offsets[i], self.offsets[i + 1]
            if hi <= lo:
                raise UserError(f"image row {int(i)} has no caption in the store")
            pick = np.random.default_rng([seed, epoch, int(i)]).integers(hi - lo)
            out[k] = self.rows[lo + pick]
        return out


class ChunkShuffleSampler(Sampler):
    """Yields (epoch, image rows) batches: chunk order and rows within chunks shuffled per epoch.

    Deterministic in (seed, epoch). Under DDP each rank takes every world_size-th batch of the same
    order (the batch count is cut to a multiple of world_size). `start_batch` skips the batches an
    interrupted epoch already trained on.
    """

    def __init__(
        self,
        num_rows: int,
        chunk_rows: int,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.num_rows = num_rows
        self.chunk_rows = max(1, chunk_rows)
        self.batch_size = batch_size
        self.shuffle = shuffle
        # Keep a partial batch when the split is smaller than one batch.
        self.drop_last = drop_last and num_rows >= batch_size * world_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def order(self) -> np.ndarray:
        """All rows in this epoch's order."""
        rows = np.arange(self.num_rows, dtype=np.int64)
        if not self.shuffle:
            return rows
        rng = np.random.default_rng([self.seed, self.epoch, 0x5EED])
        chunks = [rows[i : i + self.chunk_rows] for i in range(0, self.num_rows, self.chunk_rows)]
        return np.concatenate([rng.permutation(chunks[c]) for c in rng.permutation(len(chunks))])

    def _batches(self) -> list[np.ndarray]:
        order = self.order()
        n = len(order)
        count = n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
        count -= count % self.world_size
        count = max(count, 1) if self.world_size == 1 else count
        batches = [order[i * self.batch_size : (i + 1) * self.batch_size] for i in range(count)]
        return batches[self.rank :: self.world_size]

    def __len__(self) -> int:
        return len(self._batches())

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        for batch in self._batches()[self.start_batch :]:
            yield self.epoch, batch


class StoreDataset(Dataset):
    """Map-style dataset whose items are whole batches: (epoch, image rows) -> dict of tensors.

    Keys: features (B, C, h, w) float16, targets (B, H, W) int64, tokens (B, T) int64,
    lengths (B,) int64, index (B,) image rows, caption (B,) caption rows, and rgb (B, S, S, 3)
    uint8 with `with_rgb`. Features stay float16 until they reach the device.
    """

    def __init__(
        self,
        store: StoreVersion | str,
        split: str,
        features: str,
        *,
        seed: int = 0,
        in_memory: bool = False,
        with_rgb: bool = False,
    ) -> None:
        version = store if isinstance(store, StoreVersion) else open_store(store)
        self.path = version.path
        self.split = split
        self.features = features
        self.seed = seed
        self.in_memory = in_memory
        self.with_rgb = with_rgb
        feats = version.features(split, features)
        self.num_rows = int(feats.shape[0])
        self.chunk_rows = int(feats.chunks[0])
        image_index = version.array(split, schema.CAPTION_IMAGE_INDEX)[:]
        self.captions = CaptionIndex.build(image_index, self.num_rows)
        self._version: StoreVersion | None = version
        self._arrays: dict[str, Any] | None = None
        if in_memory:
            self._arrays = self._load(version, into_memory=True)

    def _load(self, version: StoreVersion, into_memory: bool) -> dict[str, Any]:
        names = {
            "features": schema.feature_name_path(self.features),
            "targets": schema.AB_BINS,
            "tokens": schema.CAPTION_TOKENS,
            "lengths": schema.CAPTION_LENGTH,
        }
        if self.with_rgb:
            names["rgb"] = schema.RGB
        arrays = {k: version.array(self.split, v) for k, v in names.items()}
        if into_memory:
            arrays = {k: a[:] for k, a in arrays.items()}
        else:  # caption arrays are small; keep them in memory everywhere
            arrays["tokens"] = arrays["tokens"][:]
            arrays["lengths"] = arrays["lengths"][:]
        return arrays

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_version"] = None  # each process opens its own handle
        if not self.in_memory:
            state["_arrays"] = None
        return state

    def __len__(self) -> int:
        return self.num_rows

    def arrays(self) -> dict[str, Any]:
        if self._arrays is None:
            if self._version is None:
                self._version = open_store(self.path)
            self._arrays = self._load(self._version, into_memory=False)
        return self._arrays

    def __getitem__(self, item: tuple[int, np.ndarray]) -> dict[str, torch.Tensor]:
        epoch, rows = item
        rows = np.asarray(rows, dtype=np.int64)
        arrays = self.arrays()
        caption_rows = self.captions.choose(rows, self.seed, epoch)
        batch = {
            "features": torch.from_numpy(_take(arrays["features"], rows)),
            "targets": torch.from_numpy(_take(arrays["targets"], rows).astype(np.int64)),
            "tokens": torch.from_numpy(arrays["tokens"][caption_rows].astype(np.int64)),
            "lengths": torch.from_numpy(arrays["lengths"][caption_rows].astype(np.int64)),
            "index": torch.from_numpy(rows),
            "caption": torch.from_numpy(caption_rows),
        }
        if self.with_rgb:
            batch["rgb"] = torch.from_numpy(_take(arrays["rgb"], rows))
        return batch


def _take(array: Any, rows: np.ndarray) -> np.ndarray:
    """array[rows] for numpy or zarr; a zarr read decodes each touched chunk once."""
    if isinstance(array, np.ndarray):
        return array[rows]
    lo, hi = int(rows.min()), int(rows.max()) + 1
    if hi - lo <= 2 * len(rows):  # dense (rows of one or two neighbouring chunks): one slice
        return array[lo:hi][rows - lo]
    unique, inverse = np.unique(rows, return_inverse=True)
    return array.get_orthogonal_selection((unique,))[inverse]


def make_loader(
    dataset: StoreDataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> tuple[DataLoader, ChunkShuffleSampler]:
    """A DataLoader over `dataset` with its chunk-aware sampler (spawned workers if any).

    An in-memory dataset is sliced in this process: spawning workers would copy the whole split
    into each of them, and slicing RAM is faster than any worker hand-off.
    """
    if dataset.in_memory:
        workers = 0
    sampler = ChunkShuffleSampler(
        dataset.num_rows,
        dataset.chunk_rows,
        batch_size,
        shuffle=shuffle,
        drop_last=shuffle,
        seed=seed,
        rank=rank,
        world_size=world_size,
    )
    extra: dict[str, Any] = {}
    if workers > 0:
        extra = {
            "multiprocessing_context": "spawn",
            "persistent_workers": True,
            "prefetch_factor": 4,
        }
    loader = DataLoader(
        dataset,
        sampler=sampler,
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        # Its own generator: creating an iterator must not draw from the global RNG, which
        # drives dropout and is restored on resume.
        generator=torch.Generator().manual_seed(seed),
        **extra,
    )
    return loader, sampler
