"""Feature extraction: the features stage against the original approach, on the same images.

The original approach (as in the earlier colourisation code): the trunk in float64, each batch
converted to grayscale and normalised in numpy on the host, float32 features written uncompressed
to HDF5 with h5py. Ours: `colorfeat.extract.features_stage` (grayscale on the device, channels_last,
bf16 autocast where native, prefetch and writer threads, float16 compressed Zarr). Both read the
same uint8 images from a Zarr array and are timed end to end, model construction included.

    .venv/bin/python benchmarks/extract.py [--n 96] [--size 224] [--batch-size 16] [--device cpu]

Prints images/s of each (wall clock, and per CPU-second of this process, which a busy machine
distorts less), the ratios to the original, and stored bytes per image. Rounds interleave the
engines and the best round of each is kept; a warm-up run of each (untimed) pays one-off costs
such as the first torch.compile, whose duration is printed.
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

ORIGINAL = "original (float64, numpy, h5py float32)"


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
    p.add_argument("--n", type=int, default=96)
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
    engines: dict[str, dict | None] = {
        "ours (fp32, eager)": {"precision": "fp32", "compile_trunk": False},
        "ours (auto precision, eager)": {"precision": "auto", "compile_trunk": False},
        "ours (auto precision, torch.compile)": {"precision": "auto", "compile_trunk": True},
    }
    if not args.skip_original:
        engines[ORIGINAL] = None
    best: dict[str, tuple[float, float, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        images = write_images(work / "images.zarr", rgb)
        warm = write_images(work / "warm.zarr", rgb[: args.batch_size])
        for name, kw in engines.items():  # warm-up, not timed: oneDNN set-up, the first compile
            t = time.perf_counter()
            if kw is None:
                original(warm, cfg, work / "warm.h5", args.batch_size)
            else:
                features_stage(warm, cfg, work / f"warm-{len(best)}-{name}", device=args.device,
                               batch_size=args.batch_size, **kw)  # fmt: skip
            print(f"# warm-up {name}: {time.perf_counter() - t:.1f} s")
        outputs = {}
        # rounds interleave the engines, so that a busy machine slows them alike; best of rounds
        for r in range(args.rounds):
            for i, (name, kw) in enumerate(engines.items()):
                out = work / f"{r}-{i}"
                t, cpu = time.perf_counter(), time.process_time()
                if kw is None:
                    path = original(images, cfg, out.with_suffix(".h5"), args.batch_size)
                else:
                    res = features_stage(images, cfg, out, device=args.device,
                                         batch_size=args.batch_size, **kw)  # fmt: skip
                    path = Path(res["path"])
                dt, dcpu = time.perf_counter() - t, time.process_time() - cpu
                if name not in best or dt < best[name][0]:
                    best[name] = (dt, dcpu, stored_bytes(path))
                outputs[name] = path
        if not args.skip_original:
            with h5py.File(outputs[ORIGINAL], "r") as f:
                ref = f["train"][:]
            for name in engines:
                if name != ORIGINAL:
                    arr = zarr.open_group(str(outputs[name]), mode="r")[f"train/{cfg.name}"]
                    feats = arr[:].astype(np.float32)
                    err = np.linalg.norm(feats - ref) / np.linalg.norm(ref)
                    print(f"# {name}: computes in {arr.attrs['compute']}; relative L2 "
                          f"difference to the original {err:.2e}")  # fmt: skip
    base = best.get(ORIGINAL)
    print(f"{'engine':<38} {'wall s':>7} {'images/s':>9} {'img/cpu-s':>10} {'KB/image':>9} "
          f"{'speed-up wall':>14} {'per cpu-s':>10}")  # fmt: skip
    for name, (dt, cpu, size) in best.items():
        ratio = f"{base[0] / dt:>13.1f}x {base[1] / cpu:>9.1f}x" if base else ""
        print(f"{name:<38} {dt:>7.2f} {args.n / dt:>9.2f} {args.n / cpu:>10.2f} "
              f"{size / args.n / 1e3:>9.1f} {ratio}")  # fmt: skip


if __name__ == "__main__":
    main()
