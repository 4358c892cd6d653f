"""Tiny stage outputs in the binding layout, for the feature-store tests.

`make_stage_parts(work)` writes what the images, vocab, embeddings and priors stages hand to the
features stage and to publish: images.zarr (<split>/image_id, rgb, ab_bins, captions/*), vocab.json,
embeddings.npy and a priors dir, and returns the stage result dicts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import zarr

from colorfeat.lab import ab_targets
from colorfeat.priors import bin_counts, prior_from_counts, rebalance_weights

TOKENS = ["<pad>", "<unk>", "a", "red", "blue", "bus", "car", "green", "the", "on"]


def make_images(n: int, size: int, seed: int) -> np.ndarray:
    """(n, S, S, 3) uint8 pictures with structure: gradients plus a coloured square."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        base = 255 * (0.5 + 0.5 * np.sin(6 * xx * rng.uniform(0.5, 2) + 4 * yy + i))
        img = np.stack([base, base[::-1], base.T], axis=-1)
        y0, x0 = rng.integers(0, size // 2, 2)
        img[y0 : y0 + size // 3, x0 : x0 + size // 3] = rng.integers(0, 256, 3)
        out[i] = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    return out


def write_images_zarr(path: Path, splits: dict[str, int], size: int, seed: int = 0) -> dict:
    """An images-stage output at `path` (images.zarr) and its result dict."""
    root = zarr.open_group(str(path), mode="w")
    counts = {}
    for k, (split, n) in enumerate(splits.items()):
        rgb = make_images(n, size, seed + k)
        g = root.require_group(split)
        g.create_array(
            "image_id", data=np.arange(1000 * (k + 1), 1000 * (k + 1) + n, dtype=np.int64)
        )
        g.create_array("rgb", data=rgb, chunks=(max(1, min(n, 16)), size, size, 3))
        bins = (
            np.stack([ab_targets(im) for im in rgb]) if n else np.zeros((0, size // 4, size // 4))
        )
        g.create_array(
            "ab_bins", data=bins.astype(np.uint16), chunks=(max(1, min(n, 64)),) + bins.shape[1:]
        )
        m = 2 * n
        rng = np.random.default_rng(seed + 10 + k)
        lengths = rng.integers(2, 7, m).astype(np.int32)
        tokens = np.zeros((m, 8), np.int32)
        for j, length in enumerate(lengths):
            tokens[j, :length] = rng.integers(2, len(TOKENS), length)
        text = np.array(
            [" ".join(TOKENS[t] for t in row[:ln]) for row, ln in zip(tokens, lengths, strict=True)]
        )
        c = g.require_group("captions")
        c.create_array("image_index", data=np.repeat(np.arange(n, dtype=np.int32), 2))
        c.create_array("text", shape=(m,), dtype=str, chunks=(max(1, m),))[:] = text.astype(str)
        c.create_array("tokens", data=tokens)
        c.create_array("length", data=lengths)
        counts[split] = {"images": n, "captions": m}
    root.attrs.update({"counts": counts, "skipped": []})
    return {"path": str(path), "splits": dict(splits), "counts": counts, "skipped": 0}


def make_stage_parts(work: Path, splits: dict[str, int] | None = None, size: int = 32) -> dict:
    """Every non-feature part publish needs, written under `work` (parts dict, no features)."""
    work.mkdir(parents=True, exist_ok=True)
    images = write_images_zarr(
        work / "images" / "images.zarr", splits or {"train": 12, "val": 5}, size
    )
    (work / "vocab").mkdir()
    (work / "vocab" / "vocab.json").write_text(json.dumps(TOKENS))
    (work / "embeddings").mkdir()
    emb = np.random.default_rng(0).normal(size=(len(TOKENS), 16)).astype(np.float32)
    emb[0] = 0
    np.save(work / "embeddings" / "embeddings.npy", emb)
    pri = work / "priors"
    pri.mkdir()
    counts = bin_counts(zarr.open_group(images["path"], mode="r")["train/ab_bins"][:])
    prior = prior_from_counts(counts)
    np.save(pri / "counts.npy", counts)
    np.save(pri / "prior.npy", prior)
    np.save(pri / "weights.npy", rebalance_weights(prior).astype(np.float32))
    return {
        "images": images,
        "vocab": {"path": str(work / "vocab" / "vocab.json")},
        "embeddings": {"path": str(work / "embeddings" / "embeddings.npy")},
        "priors": {
            "path": str(pri),
            "alpha": 1.0,
            "gamma": 0.5,
            "nonzero_bins": int((counts > 0).sum()),
        },
        "keys": {
            "images": "images-test",
            "vocab": "vocab-test",
            "embeddings": "emb-test",
            "priors": "pri-test",
        },
    }


def version_attrs(counts: dict | None = None) -> dict:
    """The attrs a flow hands to publish."""
    return {
        "source": {"name": "fixture", "identity": "fixture-0"},
        "config": {"limit": None, "image_size": 32},
        "lexicon": ["red", "blue", "green"],
        "counts": counts or {},
        "skipped": [],
    }
