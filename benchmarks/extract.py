"""Feature extraction: the features stage against the original approach, on the same images.

The original approach (as in the earlier colourisation code): the trunk in float64, each batch
converted to grayscale and normalised in numpy on the host, float32 features written uncompressed
to HDF5 with h5py. Ours: `colorfeat.extract.features_stage` (grayscale on the device, channels_last,
bf16 autocast where native, prefetch and writer threads, float16 compressed Zarr). Both read the
same uint8 images from a Zarr array and are timed end to end, model construction included.

    .venv/bin/python benchmarks/extract.py [--n 48] [--size 224] [--batch-size 16] [--device cpu]

Prints images/s of each, the ratio, and stored bytes per image.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
import zarr

from colorfeat.backbone import create_trunk, feature_shape
from colorfeat.config import BackboneConfig
from colorfeat.constants import IMAGENET_MEAN, IMAGENET_STD, LUMA_601
from colorfeat.extract import features_stage
from colorfeat.images import layout

sys.path.insert(0, str(Path(__file__).parent))
from compression import natural_images  # noqa: E402


def write_images(path: Path, rgb: np.ndarray) -> dict:
    """An images-stage-like Zarr with train/rgb chunked as the images stage chunks it."""
    group = zarr.open_group(str(path), mode="w")
    chunk = min(len(rgb), layout(rgb.shape[1], 20)["rgb"])
    group.require_group("train").create_array("rgb", data=rgb, chunks=(chunk,) + rgb.shape[1:])
    return {"path": str(path), "splits": {"train": len(rgb)}}


def original(images: dict, cfg: BackboneConfig, out: Path, batch_size: int) -> Path:
    """float64 model, per-batch numpy preprocessing, float32 uncompressed HDF5."""
    model = create_trunk(cfg).double()
    rgb_arr = zarr.open_group(images["path"], mode="r")["train/rgb"]
    n = rgb_arr.shape[0]
    c, h, w = feature_shape(create_trunk(cfg), cfg.image_size)
    mean = np.array(IMAGENET_MEAN).reshape(1, 3, 1, 1)
    std = np.array(IMAGENET_STD).reshape(1, 3, 1, 1)
    with h5py.File(out, "w") as f:
        ds = f.create_dataset("train", shape=(n, c, h, w), dtype="float32")
        for i in range(0, n, batch_size):
            rgb = rgb_arr[i : i + batch_size]  # (B, S, S, 3) uint8
            gray = rgb.astype(np.float64) @ np.array(LUMA_601) / 255.0  # (B, S, S)
            x = (gray[:, None] - mean) / std  # (B, 3, S, S)
            with torch.no_grad():
                ds[i : i + len(rgb)] = model(torch.from_numpy(x)).numpy().astype(np.float32)
    return out


def stored_bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(
        p.stat().st_size for p in path.rglob("*") if p.is_file()
    )  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=48)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--backbone", default="resnet101")
    p.add_argument("--layer", default="layer2")
    p.add_argument("--weights", default="none")
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds; best kept")
    p.add_argument("--skip-original", action="store_true", help="only time our engine")
    args = p.parse_args()
    cfg = BackboneConfig(args.backbone, args.layer, args.weights, args.size)
    rgb = natural_images(args.n, args.size)
    print(
        f"# {cfg.name} weights={args.weights}, {args.n} images {args.size}x{args.size}, batch "
        f"{args.batch_size}, device {args.device}, torch threads {torch.get_num_threads()}, "
        f"cuda available {torch.cuda.is_available()}"
    )
    engines = {"ours (auto precision)": "auto", "ours (fp32)": "fp32"}
    if not args.skip_original:
        engines["original (float64, numpy, h5py float32)"] = None
    best: dict[str, tuple[float, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        images = write_images(work / "images.zarr", rgb)
        warm = write_images(work / "warm.zarr", rgb[: args.batch_size])
        features_stage(warm, cfg, work / "warm", device=args.device, batch_size=args.batch_size)
        outputs = {}
        # rounds interleave the engines, so that a busy machine slows them alike; best of rounds
        for r in range(args.rounds):
            for name, precision in engines.items():
                out = work / f"{r}-{name.split()[0]}-{precision}"
                t = time.perf_counter()
                if precision is None:
                    path = original(images, cfg, out.with_suffix(".h5"), args.batch_size)
                else:
                    res = features_stage(
                        images, cfg, out, device=args.device, batch_size=args.batch_size,
                        precision=precision,
                    )  # fmt: skip
                    path = Path(res["path"])
                dt = time.perf_counter() - t
                if name not in best or dt < best[name][0]:
                    best[name] = (dt, stored_bytes(path))
                outputs[name] = path
        ours = zarr.open_group(str(outputs["ours (fp32)"]), mode="r")[f"train/{cfg.name}"][:]
        auto = zarr.open_group(str(outputs["ours (auto precision)"]), mode="r")[f"train/{cfg.name}"]
        print(f"# auto precision computes in {auto.attrs['compute']}")
        if not args.skip_original:
            with h5py.File(outputs["original (float64, numpy, h5py float32)"], "r") as f:
                ref = f["train"][:]
            for name, feats in (("fp32", ours), ("auto", auto[:])):
                err = np.linalg.norm(feats.astype(np.float32) - ref) / np.linalg.norm(ref)
                print(f"# ours {name} vs original: relative L2 difference {err:.2e}")
    rows = best
    base = rows.get("original (float64, numpy, h5py float32)")
    print(f"{'engine':<42} {'seconds':>8} {'images/s':>9} {'KB/image':>9} {'speed-up':>9}")
    for name, (dt, size) in rows.items():
        ratio = f"{base[0] / dt:>8.1f}x" if base else ""
        print(f"{name:<42} {dt:>8.2f} {args.n / dt:>9.2f} {size / args.n / 1e3:>9.1f} {ratio:>9}")


if __name__ == "__main__":
    main()
