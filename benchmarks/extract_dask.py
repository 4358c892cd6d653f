"""Feature extraction as Dask tasks against the single-process stage, on the same images.

Paired rounds: each round runs `features_stage` once in this process and once as tasks on a
local Dask cluster of `--workers` workers (one per device: CPU workers here, or one per GPU with
`--device cuda`), back to back in alternating order, and prints pictures/s of each with the median
of the per-round ratios (Dask over single process) and its range. Both include everything the
stage does (trunk built, arrays created, chunks stored and marked); the cluster is started once,
before the rounds, and its workers keep the trunk they built (as a long-lived cluster does).

    PYTHONPATH=. .venv/bin/python benchmarks/extract_dask.py [--n 192] [--size 224]
        [--batch-size 16] [--rounds 5] [--device cpu] [--workers 1]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from colorfeat.config import BackboneConfig
from colorfeat.trunk.cluster import cluster_client
from colorfeat.trunk.extract import features_stage

sys.path.insert(0, str(Path(__file__).parent))
from compression import natural_images  # noqa: E402
from extract import write_images  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=192)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--backbone", default="resnet101")
    p.add_argument("--layer", default="layer2")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=1, help="Dask workers (one per GPU on cuda)")
    args = p.parse_args()
    cfg = BackboneConfig(args.backbone, args.layer, "none", args.size)
    kw = {"device": args.device, "batch_size": args.batch_size, "precision": "auto"}
    kw["compile_trunk"] = False
    devices = [f"cuda:{i}" if args.device == "cuda" else "cpu" for i in range(args.workers)]
    print(f"# {cfg.name}, {args.n} images {args.size}x{args.size}, batch {args.batch_size}, "
          f"device {args.device}, {args.workers} Dask worker(s), torch threads "
          f"{torch.get_num_threads()}, {args.rounds} paired rounds, median [range]")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, cluster_client(None, devices) as client:
        work = Path(tmp)
        images = write_images(work / "images.zarr", natural_images(args.n, args.size))
        address = client.scheduler.address
        runs = {
            "single process": {"devices": [args.device]},
            "Dask tasks": {"dask_address": address},
        }
        for name, extra in runs.items():  # warm-up: oneDNN set-up, the workers' first trunk
            features_stage(images, cfg, work / f"warm-{len(name)}", **kw, **extra)
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        for r in range(args.rounds):
            order = list(runs.items()) if r % 2 == 0 else list(runs.items())[::-1]
            for name, extra in order:
                out = work / f"{r}-{len(name)}"
                t = time.perf_counter()
                features_stage(images, cfg, out, **kw, **extra)
                seconds[name].append(time.perf_counter() - t)
                shutil.rmtree(out, ignore_errors=True)
    for name, times in seconds.items():
        rates = [args.n / t for t in times]
        print(f"{name:<16} {statistics.median(rates):8.1f} pictures/s "
              f"[{min(rates):.1f}-{max(rates):.1f}]")  # fmt: skip
    ratios = [a / b for a, b in zip(seconds["single process"], seconds["Dask tasks"], strict=True)]
    print(
        f"Dask / single process: {statistics.median(ratios):.3f} "
        f"[{min(ratios):.3f}-{max(ratios):.3f}] (pictures/s ratio; 1.0 = the same speed)"
    )


if __name__ == "__main__":
    main()
