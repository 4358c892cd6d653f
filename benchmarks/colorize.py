"""Pictures/s of `colortrain colorize` one picture at a time against batched, in one run; with
`--memory`, its peak memory against megapixels.

Writes a checkpoint with random weights (a `--weights none` trunk and a freshly initialised FiLM
model: speed does not depend on the weights' values) at the given backbone, image size and preset,
then colorizes `--pictures` generated pictures of mixed sizes through `colorize_files` (decode,
trunk, model, full-resolution decode, write) with `--batch-size 1` and with each size in
`--batch-sizes`, and prints pictures/s and the ratio to batch 1. The first pass of each size is a
warm-up and is not timed.

    .venv/bin/python benchmarks/colorize.py --work-dir /tmp/colorize-bench
    .venv/bin/python benchmarks/colorize.py --memory 1,4,16,32

`--memory` colorizes one JPEG of each size (in megapixels, 3:2) in a fresh process and prints how
much its resident memory grew over the process with the model loaded and warmed up: the peak
while decoding, running and writing that one picture, in MB and in bytes per pixel. On a 2-core
CPU (resnet18, S = 128): 7.9 bytes a pixel at 16 MP, 7.8 at 32 MP (249 MB): the decoded picture
(Pillow holds 4 bytes a pixel while it is copied out), the result and Pillow's copy of it while it
is written.
    .venv/bin/python benchmarks/colorize.py --backbone resnet101 --image-size 224 --preset paper \\
        --device cuda --pictures 256 --batch-sizes 8,32
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from colorfeat.config import BackboneConfig
from colorfeat.constants import PAD_TOKEN, UNK_TOKEN
from colorfeat.lab import ab_grid
from colorfeat.trunk.backbone import create_trunk, feature_shape
from colortrain.checkpoint import FORMAT, save_checkpoint
from colortrain.colorize import colorize_files
from colortrain.config import _PRESET_WIDTHS, ModelConfig
from colortrain.model import create_model

WORDS = [PAD_TOKEN, UNK_TOKEN, "a", "red", "bus", "parked", "by", "white", "house"]
CAPTION = "a red bus parked by a white house"


def random_checkpoint(path: Path, backbone: BackboneConfig, preset: str) -> Path:
    """A complete colortrain checkpoint with random weights."""
    trunk = create_trunk(backbone)
    c, h, _ = feature_shape(backbone)
    widths = _PRESET_WIDTHS[preset]
    config = ModelConfig(
        kind="film", preset=preset, feature_channels=c, feature_size=h, target_size=2 * h,
        vocab_size=len(WORDS), embedding_dim=300, num_bins=len(ab_grid()),
        width=widths["width"] or c, lstm_hidden=widths["lstm_hidden"],
        num_blocks=widths["num_blocks"],
    )  # fmt: skip
    torch.manual_seed(0)
    model = create_model(config)
    grid = torch.from_numpy(ab_grid())
    return save_checkpoint(path, {
        "format": FORMAT,
        "model": {"config": config.to_dict(), "state": model.state_dict()},
        "vocab": WORDS,
        "features": {"name": backbone.name, "attrs": {}},
        "trunk": {"config": backbone.to_dict(), "state": trunk.state_dict(),
                  "hash": trunk.weights_hash},
        "lab": {"grid": grid, "weights": torch.ones(len(grid))},
    })  # fmt: skip


def write_pictures(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """`n` JPEGs of mixed sizes between 240 and 640 pixels a side."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        h, w = (int(v) for v in rng.integers(240, 641, 2))
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        paths.append(folder / f"p{i:04d}.jpg")
        Image.fromarray(rgb).save(paths[-1], quality=90)
    return paths


def pictures_per_s(pictures: list[Path], ckpt: Path, out: Path, batch: int, device: str) -> float:
    colorize_files(pictures[:batch], CAPTION, ckpt, out_dir=out, device=device, batch_size=batch)
    start = time.perf_counter()
    colorize_files(pictures, CAPTION, ckpt, out_dir=out, device=device, batch_size=batch)
    if device == "cuda":
        torch.cuda.synchronize()
    return len(pictures) / (time.perf_counter() - start)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def memory_child(ckpt: Path, picture: Path, out: Path) -> None:
    """In this process: warm up on a small picture, then colorize `picture`; print the growth."""
    small = out.parent / "warm.jpg"
    Image.fromarray(np.full((64, 96, 3), 128, np.uint8)).save(small)
    colorize_files([small], CAPTION, ckpt, out=out.parent / "warm.png", device="cpu")
    before = _rss_bytes()
    colorize_files([picture], CAPTION, ckpt, out=out, device="cpu")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"grew": max(0, peak - before)}))


def measure_memory(work: Path, ckpt: Path, megapixels: list[float]) -> None:
    """Peak memory of colorizing one picture of each size, each in a fresh process."""
    rng = np.random.default_rng(0)
    print(f"{'MP':>6} {'file MB':>8} {'peak MB':>8} {'bytes/pixel':>12}")
    for mp in megapixels:
        w = int(round((mp * 1e6 * 1.5) ** 0.5))
        h = int(round(mp * 1e6 / w))
        tile = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
        picture = work / f"mp{mp:g}.jpg"
        Image.fromarray(np.tile(tile, (h // 256 + 1, w // 256 + 1, 1))[:h, :w]).save(picture)
        cmd = [sys.executable, __file__, "--child-memory", str(ckpt), str(picture),
               str(work / f"mp{mp:g}.png")]  # fmt: skip
        grew = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        size = picture.stat().st_size / 1e6
        print(f"{h * w / 1e6:6.1f} {size:8.1f} {grew['grew'] / 1e6:8.0f} "
              f"{grew['grew'] / (h * w):12.1f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/colorize-bench"))
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--preset", default="small", choices=sorted(_PRESET_WIDTHS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pictures", type=int, default=48)
    parser.add_argument("--batch-sizes", default="8,16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory", help="megapixels, comma-separated: measure peak memory")
    parser.add_argument("--child-memory", nargs=3, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child_memory:
        return memory_child(*args.child_memory)
    backbone = BackboneConfig(args.backbone, "layer2", "none", args.image_size)
    ckpt = random_checkpoint(args.work_dir / "checkpoint.pt", backbone, args.preset)
    if args.memory:
        return measure_memory(args.work_dir, ckpt, [float(m) for m in args.memory.split(",")])
    pictures = write_pictures(args.work_dir / "in", args.pictures)
    print(f"{args.pictures} pictures (240-640 px a side), {backbone.name} at S={args.image_size}, "
          f"{args.preset} preset, {args.device}, {args.threads} threads")  # fmt: skip
    base = pictures_per_s(pictures, ckpt, args.work_dir / "out", 1, args.device)
    print(f"batch  1: {base:7.2f} pictures/s")
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        rate = pictures_per_s(pictures, ckpt, args.work_dir / "out", batch, args.device)
        print(f"batch {batch:2d}: {rate:7.2f} pictures/s  ({rate / base:.2f}x batch 1)")


if __name__ == "__main__":
    main()
