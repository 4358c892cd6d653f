"""The store-backed loader: version resolution, chunk-aware order, caption draws, workers."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from colorfeat.errors import UserError
from colorfeat.store import open_store
from colortrain.data import (
    CaptionIndex,
    ChunkShuffleSampler,
    StoreDataset,
    make_loader,
    store_shapes,
)

FEATURES = "resnet18.layer2"


def test_dataset_follows_latest_and_takes_an_open_version(
    tiny_store: Path, tiny_version: Path
) -> None:
    assert StoreDataset(str(tiny_store), "val", FEATURES).path == str(tiny_version)
    version = open_store(tiny_store)
    assert StoreDataset(version, "val", FEATURES).path == str(tiny_version)
    with pytest.raises(UserError, match="not a feature store root: .* use "):
        StoreDataset(str(tiny_store / "versions"), "val", FEATURES)
    with pytest.raises(UserError, match="no split 'test'"):
        StoreDataset(version, "test", FEATURES)


def test_store_shapes_and_feature_choice(tiny_version: Path) -> None:
    version = open_store(tiny_version)
    assert version.feature_set() == FEATURES
    with pytest.raises(UserError, match="no feature set 'vgg'"):
        version.feature_set("vgg")
    shapes = store_shapes(version, FEATURES)
    assert shapes == {
        "feature_channels": 128,
        "feature_size": 4,
        "target_size": 8,
        "vocab_size": 14,
        "embedding_dim": 16,
        "num_bins": 625,
    }


def test_sampler_shuffles_chunks_and_rows_within_chunks() -> None:
    sampler = ChunkShuffleSampler(100, chunk_rows=10, batch_size=10, seed=3)
    order0 = sampler.order()
    assert sorted(order0.tolist()) == list(range(100))
    assert not np.array_equal(order0, np.arange(100))
    # Rows stay grouped by chunk: each run of 10 is one chunk, in a shuffled order.
    chunks = order0.reshape(10, 10) // 10
    assert (chunks == chunks[:, :1]).all()
    assert sorted(chunks[:, 0].tolist()) == list(range(10))
    batches = [b for _, b in sampler]
    assert len(batches) == len(sampler) == 10
    assert all(len(np.unique(b // 10)) == 1 for b in batches)  # one chunk per batch
    sampler.set_epoch(1)
    assert not np.array_equal(sampler.order(), order0)
    sampler.set_epoch(0)
    np.testing.assert_array_equal(sampler.order(), order0)  # deterministic in (seed, epoch)


def test_sampler_resumes_mid_epoch_and_splits_ranks() -> None:
    full = ChunkShuffleSampler(50, chunk_rows=8, batch_size=4, seed=1)
    full.set_epoch(2)
    batches = [b.tolist() for _, b in full]
    full.set_epoch(2, start_batch=5)
    assert [b.tolist() for _, b in full] == batches[5:]
    ranks = [ChunkShuffleSampler(50, 8, 4, seed=1, rank=r, world_size=2) for r in range(2)]
    for r in ranks:
        r.set_epoch(2)
    parts = [[b.tolist() for _, b in r] for r in ranks]
    assert len(parts[0]) == len(parts[1]) == 6  # 12 full batches, split evenly
    seen = [i for p in parts for b in p for i in b]
    assert len(seen) == len(set(seen)) == 48


def test_small_split_keeps_a_partial_batch() -> None:
    sampler = ChunkShuffleSampler(5, chunk_rows=4, batch_size=8, seed=0)
    assert [len(b) for _, b in sampler] == [5]


def test_caption_choice_is_seeded_by_epoch() -> None:
    index = CaptionIndex.build(np.array([0, 1, 0, 1, 0, 2]), 3)
    assert index.rows.tolist() == [0, 2, 4, 1, 3, 5]
    images = np.arange(3)
    draws = {tuple(index.choose(images, seed=0, epoch=e)) for e in range(20)}
    assert len(draws) > 1
    for rows in draws:
        assert rows[0] in (0, 2, 4) and rows[1] in (1, 3) and rows[2] == 5
    np.testing.assert_array_equal(index.choose(images, 0, 7), index.choose(images, 0, 7))


def test_dataset_batch_contents(tiny_version: Path) -> None:
    ds = StoreDataset(str(tiny_version), "train", FEATURES, with_rgb=True)
    group = zarr.open_group(str(tiny_version), mode="r")
    rows = np.array([5, 17, 2])
    batch = ds[(0, rows)]
    assert batch["features"].dtype == torch.float16 and batch["features"].shape == (3, 128, 4, 4)
    np.testing.assert_array_equal(
        batch["features"].numpy(), group[f"train/features/{FEATURES}"][:][rows]
    )
    np.testing.assert_array_equal(batch["targets"].numpy(), group["train/ab_bins"][:][rows])
    assert batch["targets"].dtype == torch.int64
    np.testing.assert_array_equal(batch["rgb"].numpy(), group["train/rgb"][:][rows])
    image_index = group["train/captions/image_index"][:]
    assert (image_index[batch["caption"].numpy()] == rows).all()
    tokens = group["train/captions/tokens"][:][batch["caption"].numpy()]
    np.testing.assert_array_equal(batch["tokens"].numpy(), tokens)
    assert (batch["lengths"].numpy() == (tokens > 0).sum(1)).all()


def test_in_memory_matches_lazy_reads(tiny_store: Path) -> None:
    lazy = StoreDataset(str(tiny_store), "val", FEATURES, seed=4)
    ram = StoreDataset(str(tiny_store), "val", FEATURES, seed=4, in_memory=True)
    rows = np.array([7, 0, 3])
    for key, value in lazy[(2, rows)].items():
        torch.testing.assert_close(value, ram[(2, rows)][key])


def test_spawned_workers_give_the_same_batches(tiny_store: Path) -> None:
    ds = StoreDataset(str(tiny_store), "train", FEATURES, seed=1)
    serial, sampler = make_loader(ds, 8, shuffle=True, seed=1, workers=0)
    spawned, sampler2 = make_loader(ds, 8, shuffle=True, seed=1, workers=1)
    assert spawned.multiprocessing_context.get_start_method() == "spawn"
    sampler.set_epoch(1)
    sampler2.set_epoch(1)
    a, b = list(serial), list(spawned)
    assert len(a) == len(b) == 3
    for x, y in zip(a, b, strict=True):
        for key in x:
            torch.testing.assert_close(x[key], y[key])


def test_docs_example_reads_the_store_through_colorfeat_store(
    tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # ```py blocks: the ```python example there must import nothing of ours (tests/colorfeat).
    docs = (Path(__file__).resolve().parents[2] / "docs" / "feature-store.md").read_text()
    (code,) = re.findall(r"```py\n(.*?)```", docs, flags=re.S)
    (tmp_path / "store").symlink_to(tiny_store)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/feature-store.md", "exec"), {})
    header, shapes, caption = capsys.readouterr().out.splitlines()
    assert header == "0123456789abcdef ['train', 'val'] ['resnet18.layer2']"
    assert shapes == "resnet18.layer2 (24, 128, 4, 4) 24 images 48"
    words, ab = caption.split(" | ")
    assert words.split()[-1] in ("disc", "ball", "floor", "circle") and ab == "(8, 8, 2)"
