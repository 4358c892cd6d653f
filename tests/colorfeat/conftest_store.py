"""Tiny stage outputs for the feature-store tests, made by the stages themselves.

`write_source(root, splits, size)` writes a COCO-layout source of colourful PNG pictures (already
S x S, so the images stage keeps them byte for byte), two colour captions each; `make_stage_parts`
runs the real captions, vocab, embeddings, images and priors stages on it and returns their
results by stage name; `write_images_zarr` runs the stages up to images. `version_parts` and
`publish_parts` hand results to the store the way the publish stage does.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from colorfeat.config import PipelineConfig
from colorfeat.stages import STAGES, version_parts
from colorfeat.stages.captions import captions_stage
from colorfeat.stages.embeddings import embeddings_stage
from colorfeat.stages.images import images_stage
from colorfeat.stages.priors import priors_stage
from colorfeat.stages.vocab import vocab_stage
from colorfeat.store import publish

COLOURS = ["red", "blue", "green"]
THINGS = ["bus", "car", "kite"]
SPLIT_NAMES = {"train": "train2014", "val": "val2014"}


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


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def write_source(root: Path, splits: dict[str, int], size: int, seed: int = 0) -> dict:
    """A COCO-layout source under `root` and its acquire result; image ids 1000(k+1) + i."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for k, (split, n) in enumerate(splits.items()):
        folder = SPLIT_NAMES[split]
        (root / folder).mkdir(exist_ok=True)
        images, anns = [], []
        for i, rgb in enumerate(make_images(n, size, seed + k)):
            image_id, name = 1000 * (k + 1) + i, f"{split}_{i:03d}.png"
            (root / folder / name).write_bytes(_png(rgb))
            images.append({"id": image_id, "file_name": name, "width": size, "height": size})
            for j in range(2):
                colour, thing = COLOURS[(i + j) % 3], THINGS[(i + 2 * j) % 3]
                text = f"a {colour} {thing} on the road" if j else f"the {thing} is {colour}"
                anns.append({"id": len(anns) + 1, "image_id": image_id, "caption": text})
        doc = {"images": images, "annotations": anns}
        (root / "annotations" / f"captions_{folder}.json").write_text(json.dumps(doc))
    chosen = {SPLIT_NAMES[s]: s for s in splits}
    return {"root": str(root), "splits": chosen, "identity": f"fixture-{seed}"}


def write_images_zarr(path: Path, splits: dict[str, int], size: int, seed: int = 0) -> dict:
    """The images stage's result for a generated source, built next to `path` (its "path" is the
    stage's own images.zarr)."""
    work = Path(path).parent / f"{Path(path).stem}-stages"
    parts = _run_until_images(work, splits, size, seed)
    return parts["images"]


def _run_until_images(work: Path, splits: dict[str, int], size: int, seed: int) -> dict:
    source = write_source(work / "source", splits, size, seed)
    lexicon = PipelineConfig().lexicon
    captions = captions_stage(source, lexicon, work / "captions")
    vocab = vocab_stage(captions, work / "vocab")
    images = images_stage(source, captions, vocab, work / "images", image_size=size, max_len=8)
    return {"acquire": source, "captions": captions, "vocab": vocab, "images": images}


def make_stage_parts(work: Path, splits: dict[str, int] | None = None, size: int = 32) -> dict:
    """Every stage result publish needs but the features, by stage name, plus "keys"."""
    work.mkdir(parents=True, exist_ok=True)
    got = _run_until_images(work, splits or {"train": 12, "val": 5}, size, 0)
    got["embeddings"] = embeddings_stage(got["captions"], got["vocab"], work / "emb", dim=16)
    got["priors"] = priors_stage(got["images"], work / "priors")
    keys = {"images": "images-test", "vocab": "vocab-test", "embeddings": "emb-test"}
    return {**got, "keys": {**keys, "priors": "pri-test"}}


def publish_parts(root: str | Path, parts: dict, attrs: dict | None = None, **kw) -> dict:
    """Publish stage results (`parts`: by stage name, "features" a list, "keys") as the publish
    stage does: each row's part with its result."""
    results = {name: r for name, r in parts.items() if name not in ("features", "keys")}
    for i, feature in enumerate(parts.get("features") or []):
        results["features" if i == 0 else f"features:{feature['name']}"] = feature
    rows = {name: STAGES.get(name) or STAGES["features"] for name in results}
    return publish(
        str(root), version_parts(rows, results), keys=parts["keys"],
        attrs=attrs if attrs is not None else version_attrs(), **kw,
    )  # fmt: skip


def version_attrs(counts: dict | None = None) -> dict:
    """The attrs a flow hands to publish."""
    return {
        "source": {"name": "fixture", "identity": "fixture-0"},
        "config": {"limit": None, "image_size": 32},
        "lexicon": ["red", "blue", "green"],
        "counts": counts or {},
        "skipped": [],
    }
