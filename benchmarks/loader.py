"""Samples/s of the training loader alone (no model), against a naive per-row loader.

Reads the train split of a store version (`--store`), or first writes a stand-in version with the
published layout, chunking and codec at the paper's shapes (S = 224: features 512 x 28 x 28
float16, post-ReLU-like so they compress like real ones). For each configuration it iterates the
loader for `--batches` batches of `--batch-size` and prints samples/s and MB/s of decoded features:

- chunk-aware: colortrain.data (ChunkShuffleSampler + whole-batch reads), lazy or --in-memory;
- naive: a map-style dataset reading one row per item in uniformly shuffled order, default
  collation (what a first implementation does), which decodes a whole chunk for every row.

With `--train PRESET` it also measures training steps (the FiLM model, rebalanced loss, Adam,
bf16 autocast on CUDA) fed by the loader, against the same steps on one batch kept on the device:
if the fed rate is well below the device-only rate, the loader is the bottleneck. On CUDA it samples
GPU utilisation with nvidia-smi while training.

    .venv/bin/python benchmarks/loader.py --work-dir /tmp/loader-bench [--store P] [--workers 0,2]
    .venv/bin/python benchmarks/loader.py --workers 8 --train paper --device cuda
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import zarr
from torch.utils.data import DataLoader, Dataset

from colorfeat.store import open_store, schema
from colortrain.data import StoreDataset, make_loader, store_shapes

FEATURES = "resnet101.layer2"


def write_standin(root: Path, n: int, size: int, seed: int = 0) -> str:
    """A store version with the published layout at image size `size`; returns its path."""
    from colorfeat.lab import ab_grid
    from colorfeat.store import STORE_SCHEMA
    from colorfeat.store.codecs import feature_compressors, images_per_chunk

    version = root / "versions" / "standin"
    if (version / "zarr.json").exists():
        return str(version)
    rng = np.random.default_rng(seed)
    attrs = {"schema": STORE_SCHEMA, "splits": ["train"], "features": [FEATURES]}
    g = zarr.open_group(str(version), mode="w", attributes=attrs)
    t = size // 4
    c, h = 512, size // 8
    g.create_array(schema.LAB_GRID, data=ab_grid())
    g.create_array(schema.LAB_WEIGHTS, data=np.ones(625, np.float32))
    emb = rng.normal(size=(100, 300)).astype(np.float32)
    g.create_array(schema.VOCAB_EMBEDDINGS, data=emb)
    tokens = g.create_array(schema.VOCAB_TOKENS, shape=(100,), dtype=str)
    tokens[:] = np.array([f"w{i}" for i in range(100)], dtype=object)
    chunk = images_per_chunk(c * h * h * 2, n)
    feats = g.create_array(
        schema.features_path("train", FEATURES), shape=(n, c, h, h), chunks=(chunk, c, h, h),
        dtype="float16", compressors=feature_compressors(),
    )  # fmt: skip
    bins = g.create_array(
        schema.split_path("train", schema.AB_BINS), shape=(n, t, t), chunks=(256, t, t),
        dtype="uint16",
    )  # fmt: skip
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        x = np.maximum(rng.normal(size=(hi - lo, c, h, h)), 0).astype(np.float16)  # ~half zeros
        feats[lo:hi] = x
    bins[:] = rng.integers(0, 625, (n, t, t)).astype(np.uint16)
    m = 3 * n
    captions = {
        schema.CAPTION_IMAGE_INDEX: np.repeat(np.arange(n, dtype=np.int32), 3),
        schema.CAPTION_TOKENS: rng.integers(2, 100, (m, 20)).astype(np.int32),
        schema.CAPTION_LENGTH: np.full(m, 20, np.int32),
    }
    for name, data in captions.items():
        g.create_array(schema.split_path("train", name), data=data)
    return str(version)


class NaiveRows(Dataset):
    """One row per item, straight from zarr (opened lazily per worker)."""

    def __init__(self, path: str, features: str) -> None:
        self.path, self.features = path, features
        self.arrays = None
        self.n = open_store(path).features("train", features).shape[0]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self.arrays is None:
            v = open_store(self.path)
            self.arrays = (v.features("train", self.features), v.array("train", schema.AB_BINS))
        f, b = self.arrays
        return {
            "features": torch.from_numpy(f[i]),
            "targets": torch.from_numpy(b[i].astype(np.int64)),
        }

    def __getstate__(self):
        return {**self.__dict__, "arrays": None}


def measure(loader, batches: int, batch_size: int) -> tuple[float, float]:
    """(samples/s, MB/s of float16 features) over `batches` batches after one warm-up batch."""
    it = iter(loader)
    first = next(it)
    mb_per_sample = first["features"][0].numel() * 2 / 1e6
    t0, seen = time.perf_counter(), 0
    for _ in range(batches):
        try:
            batch = next(it)
        except StopIteration:
            break
        batch["features"].float()  # what the trainer does first (on the device in practice)
        seen += len(batch["targets"])
    rate = seen / (time.perf_counter() - t0)
    shutdown = getattr(it, "_shutdown_workers", None)
    if shutdown is not None:  # stop the workers now, not while the interpreter exits
        shutdown()
    return rate, rate * mb_per_sample


def train_rate(loader, preset: str, store: str, name: str, device: str, steps: int) -> dict:
    """Training samples/s fed by `loader`, and on one device-resident batch; GPU utilisation."""
    import subprocess
    import threading

    from colorfeat.device import resolve_device
    from colortrain.config import create_model_config
    from colortrain.metrics import rebalanced_loss
    from colortrain.model import create_model
    from colortrain.train import forward_batch

    dev = resolve_device(device)
    version = open_store(store)
    model = create_model(create_model_config("film", preset, store_shapes(version, name))).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    weights = torch.from_numpy(version.lab_weights).to(dev)

    def step(batch) -> int:
        loss = rebalanced_loss(forward_batch(model, batch, dev), batch["targets"].to(dev), weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return len(batch["targets"])

    def timed(batches) -> float:
        seen, t0 = 0, None
        for i, batch in enumerate(batches):
            if i == 2:  # after warm-up
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t0, seen = time.perf_counter(), 0
            seen += step(batch)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return seen / (time.perf_counter() - t0)

    util: list[float] = []
    stop = threading.Event()

    def sample_gpu() -> None:
        while not stop.wait(0.5):
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if out.returncode == 0 and out.stdout.strip():
                util.append(float(out.stdout.split()[0]))

    it = iter(loader)
    fed_batches = (next(it) for _ in range(steps + 2))
    sampler = threading.Thread(target=sample_gpu, daemon=True)
    if dev.type == "cuda":
        sampler.start()
    fed = timed(fed_batches)
    stop.set()
    one = next(it)
    one = {k: v.to(dev) if k != "lengths" else v for k, v in one.items()}
    device_only = timed(one for _ in range(steps + 2))
    return {
        "fed": fed,
        "device_only": device_only,
        "gpu_util_mean": sum(util) / len(util) if util else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/colortrain-loader-bench"))
    parser.add_argument("--store", help="a store root or version (default: write a stand-in)")
    parser.add_argument("--images", type=int, default=768, help="stand-in train images")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--batches", type=int, default=24)
    parser.add_argument("--workers", default="0,2", help="comma-separated worker counts")
    parser.add_argument("--train", choices=["paper", "small"], help="also time training steps")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()

    t0 = time.perf_counter()
    store = args.store or write_standin(args.work_dir, args.images, args.image_size)
    version = open_store(store)
    name = version.feature_set()
    feats = version.features("train", name)
    print(f"store {store}: {name} {feats.shape} chunks of {feats.chunks[0]} rows "
          f"(ready in {time.perf_counter() - t0:.0f} s)")  # fmt: skip
    rows = []
    for workers in (int(w) for w in args.workers.split(",")):
        naive = DataLoader(
            NaiveRows(store, name), batch_size=args.batch_size, shuffle=True,
            num_workers=workers, multiprocessing_context="spawn" if workers else None,
        )  # fmt: skip
        rows.append(
            (f"naive per-row, {workers} workers", *measure(naive, args.batches, args.batch_size))
        )
        for in_memory in (False, True) if workers == 0 else (False,):  # in-memory: no workers
            ds = StoreDataset(store, "train", name, in_memory=in_memory)
            loader, sampler = make_loader(ds, args.batch_size, shuffle=True, workers=workers)
            label = f"chunk-aware{' in-memory' if in_memory else ''}, {workers} workers"
            rows.append((label, *measure(loader, args.batches, args.batch_size)))
    base = rows[0][1]
    print(f"{'loader':40} {'samples/s':>10} {'MB/s':>8} {'x naive(0)':>11}")
    for label, rate, mbs in rows:
        print(f"{label:40} {rate:10.0f} {mbs:8.0f} {rate / base:11.1f}")
    if args.train:
        for workers in (int(w) for w in args.workers.split(",")):
            for in_memory in (False, True) if workers == 0 else (False,):
                ds = StoreDataset(store, "train", name, in_memory=in_memory)
                loader, _ = make_loader(ds, args.batch_size, shuffle=True, workers=workers,
                                        pin_memory=torch.cuda.is_available())  # fmt: skip
                r = train_rate(loader, args.train, store, name, args.device, args.steps)
                util = "" if r["gpu_util_mean"] is None else f", GPU util {r['gpu_util_mean']:.0f}%"
                print(
                    f"train {args.train} fed by chunk-aware{' in-memory' if in_memory else ''} "
                    f"({workers} workers): {r['fed']:.0f} samples/s; on one device-resident "
                    f"batch: {r['device_only']:.0f} samples/s{util}"
                )


if __name__ == "__main__":
    main()
