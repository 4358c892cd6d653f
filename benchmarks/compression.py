"""Which codec for float16 feature maps: bytes per image, write and read speed per candidate.

Extracts features of natural photographs (random crops of scikit-image's bundled photos, squashed to
S x S like the images stage does) with the store's own engine settings, then writes them once per
candidate in colorfeat.store.codecs.CANDIDATES,
chunked as the store chunks them, and reads them back.

    .venv/bin/python benchmarks/compression.py [--n 60] [--weights none] [--layer layer2]

Prints one row per candidate; the store uses colorfeat.store.codecs.FEATURE_CODEC.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import zarr

from colorfeat.config import BackboneConfig
from colorfeat.store.codecs import CANDIDATES, FEATURE_CODEC, images_per_chunk
from colorfeat.trunk.backbone import create_trunk, prepare_input

PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "cat", "hubble_deep_field", "camera",
    "immunohistochemistry", "retina", "brick", "grass", "gravel", "moon", "clock", "coins",
)  # fmt: skip


def natural_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, S, S, 3) uint8 RGB: random crops (scale, aspect, flip) of bundled photographs."""
    import skimage.data

    photos = []
    for name in PHOTOS:
        im = getattr(skimage.data, name)()
        photos.append(np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im[..., :3])
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        im = photos[i % len(photos)]
        h, w = im.shape[:2]
        ch, cw = int(h * rng.uniform(0.4, 1.0)), int(w * rng.uniform(0.4, 1.0))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = im[y : y + ch, x : x + cw]
        crop = crop[:, ::-1] if rng.random() < 0.5 else crop
        out[i] = cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_AREA)
    return out


def extract(cfg: BackboneConfig, rgb: np.ndarray, bf16: bool, batch: int = 16) -> np.ndarray:
    """(N, C, H, W) float16 features, computed as the features stage computes them."""
    trunk = create_trunk(cfg).to(memory_format=torch.channels_last)
    outs = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for i in range(0, len(rgb), batch):
            y = trunk(prepare_input(torch.from_numpy(rgb[i : i + batch])))  # (B, C, H, W)
            outs.append(y.half().contiguous().numpy())
    return np.concatenate(outs)


def measure(feats: np.ndarray, name: str, work: Path, repeats: int = 3) -> dict:
    """Write `feats` with one candidate codec; bytes on disk, write MB/s, read MB/s (best of n)."""
    n = feats.shape[0]
    chunk = images_per_chunk(feats[0].nbytes, n)
    path = work / name
    best_w = best_r = float("inf")
    for _ in range(repeats):
        shutil.rmtree(path, ignore_errors=True)
        arr = zarr.create_array(
            str(path), shape=feats.shape, chunks=(chunk,) + feats.shape[1:], dtype="float16",
            compressors=CANDIDATES[name](), fill_value=0.0,
        )  # fmt: skip
        t = time.perf_counter()
        arr[:] = feats
        best_w = min(best_w, time.perf_counter() - t)
        t = time.perf_counter()
        back = zarr.open_array(str(path), mode="r")[:]
        best_r = min(best_r, time.perf_counter() - t)
    assert np.array_equal(back.view(np.uint16), feats.view(np.uint16))
    stored = sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.name != "zarr.json")
    mb = feats.nbytes / 1e6
    return {
        "codec": name,
        "bytes_per_image": stored / n,
        "ratio": feats.nbytes / stored,
        "write_MBps": mb / best_w,
        "read_MBps": mb / best_r,
        "read_images_per_s": n / best_r,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=60)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--backbone", default="resnet101")
    p.add_argument("--layer", default="layer2")
    p.add_argument("--weights", default="none")
    p.add_argument("--bf16", action="store_true", help="features computed under bf16 autocast")
    args = p.parse_args()
    cfg = BackboneConfig(args.backbone, args.layer, args.weights, args.size)
    rgb = natural_images(args.n, args.size)
    t = time.perf_counter()
    feats = extract(cfg, rgb, args.bf16)
    print(f"# {cfg.name} weights={args.weights} bf16={args.bf16}: {feats.shape} float16 in "
          f"{time.perf_counter() - t:.1f} s; zeros {np.mean(feats == 0):.1%}; "
          f"float32 would be {feats[0].size * 4 / 1e6:.2f} MB/image; torch threads "
          f"{torch.get_num_threads()}")  # fmt: skip
    print(f"{'codec':<24} {'KB/image':>9} {'ratio':>6} {'write MB/s':>11} {'read MB/s':>10} "
          f"{'read img/s':>11}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for name in CANDIDATES:
            r = measure(feats, name, Path(tmp))
            mark = "  <- store" if name == FEATURE_CODEC else ""
            print(f"{name:<24} {r['bytes_per_image'] / 1e3:>9.1f} {r['ratio']:>6.2f} "
                  f"{r['write_MBps']:>11.0f} {r['read_MBps']:>10.0f} "
                  f"{r['read_images_per_s']:>11.0f}{mark}")  # fmt: skip


if __name__ == "__main__":
    main()
