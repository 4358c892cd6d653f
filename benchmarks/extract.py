"""Feature extraction: the features stage against the original approach, on the same images.

The original approach (as in the earlier colourisation code): the trunk in float64, each batch
converted to grayscale and normalised in numpy on the host, float32 features written uncompressed
to HDF5 with h5py. Ours:
`colorfeat.trunk.extract.features_stage` (grayscale on the device, channels_last,
bf16 autocast where native, prefetch and writer threads, float16 compressed Zarr). Both read the
same uint8 images from a Zarr array and are timed end to end, model construction included.

    .venv/bin/python benchmarks/extract.py [--n 96] [--size 224] [--batch-size 16] [--device cpu]
        [--rounds 6] [--overlap-only] [--skip-original]

First, the model alone (the stage's Engine on in-memory batches) against the stage's own loop
on the same images, paired round by round, and their ratio (`overlap`, see there). Then the
comparison with the original approach: images/s of each (wall clock, and per CPU-second of
this process, which a busy machine distorts less), the ratios to the original, and stored bytes
per image. Rounds interleave the engines and the best round of each is kept; a warm-up run of
each (untimed) pays one-off costs such as the first torch.compile, whose duration is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import torch
import zarr

from colorfeat.config import BackboneConfig
from colorfeat.constants import IMAGENET_MEAN, IMAGENET_STD, LUMA_601
from colorfeat.device import keep_freed_memory
from colorfeat.stages.images import layout
from colorfeat.store import schema
from colorfeat.store.codecs import FEATURE_CODEC, feature_compressors, images_per_chunk
from colorfeat.trunk import engine as compute
from colorfeat.trunk import markers, pipeline
from colorfeat.trunk.backbone import create_trunk
from colorfeat.trunk.blocks import pending_blocks
from colorfeat.trunk.engine import Compute, Engine, autocast_dtype
from colorfeat.trunk.extract import features_stage
from colorfeat.trunk.fuse import fuse_batchnorm
from colorfeat.trunk.graph import Trunk
from colorfeat.trunk.pipeline import extract_blocks
from colorfeat.trunk.shapes import feature_shape

sys.path.insert(0, str(Path(__file__).parent))
from compression import natural_images  # noqa: E402

ORIGINAL = "original (float64, numpy, h5py float32)"


def write_images(path: Path, rgb: np.ndarray) -> dict:
    """An images-stage-like Zarr with train/rgb chunked as the images stage chunks it."""
    group = zarr.open_group(str(path), mode="w")
    chunk = min(len(rgb), layout(rgb.shape[1], 20)["rgb"])
    group.require_group("train").create_array(schema.RGB, data=rgb, chunks=(chunk,) + rgb.shape[1:])
    return {"path": str(path), "splits": {"train": len(rgb)}}


def original(images: dict, cfg: BackboneConfig, out: Path, batch_size: int) -> Path:
    """float64 model, per-batch numpy preprocessing, float32 uncompressed HDF5."""
    model = create_trunk(cfg).double()
    rgb_arr = zarr.open_group(images["path"], mode="r")[schema.split_path("train", schema.RGB)]
    n = rgb_arr.shape[0]
    c, h, w = feature_shape(cfg)
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


def padded_batch(cfg: BackboneConfig, batch_size: int) -> int:
    """The batch features_stage runs: batch_size rounded up to whole feature chunks."""
    c, h, w = feature_shape(cfg)
    chunk = images_per_chunk(c * h * w * 2)
    return chunk * -(-batch_size // chunk)


def fused_trunk(trunk: torch.nn.Module, device: str) -> torch.nn.Module:
    return fuse_batchnorm(trunk).to(torch.device(device), memory_format=torch.channels_last)


def in_memory_batches(rgb: np.ndarray, device: str, batch: int) -> list[torch.Tensor]:
    """uint8 batches of exactly `batch` images on the device, the last one zero-padded."""
    padded = np.concatenate([rgb, np.zeros((-len(rgb) % batch, *rgb.shape[1:]), rgb.dtype)])
    return [torch.from_numpy(padded[i : i + batch]).to(device) for i in range(0, len(rgb), batch)]


def time_engine(engine: Engine, batches: list[torch.Tensor], device: str) -> float:
    """Seconds to run `engine` over `batches` (after one untimed warm-up batch), with the
    allocator set as the stage sets it (`keep_freed_memory`), so that both compare alike."""
    keep_freed_memory()
    with torch.inference_mode():
        engine(batches[0])
        _sync(device)
        t = time.perf_counter()
        for b in batches:
            engine(b)
        _sync(device)
    return time.perf_counter() - t


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_stage_loop(
    trunk: Trunk, images: dict, cfg: BackboneConfig, out: Path, run: Compute, codec: str
) -> float:
    """Seconds of the features stage once set up: `extract_blocks` (prefetch thread, trunk,
    writer and marker threads, durable chunks and markers) over every image into a fresh array
    compressed with `codec`; trunk construction and array creation are not timed."""
    src = zarr.open_group(images["path"], mode="r")
    c, h, w = feature_shape(cfg)
    n = src[schema.split_path("train", schema.RGB)].shape[0]
    chunk = images_per_chunk(c * h * w * 2)
    dst = zarr.open_group(str(out / "features.zarr"), mode="w")
    dst.require_group("train").create_array(
        cfg.name, shape=(n, c, h, w), chunks=(chunk, c, h, w), dtype="float16",
        compressors=feature_compressors(FEATURE_CODEC if codec == "-" else codec), fill_value=0.0,
        config={"write_empty_chunks": True},
    )  # fmt: skip
    arr = dst[f"train/{cfg.name}"]
    blocks = pending_blocks("train", arr, run.batch, out / "markers" / "train")
    t = time.perf_counter()
    extract_blocks(trunk, src, dst, cfg.name, blocks, run, out / "markers")
    return time.perf_counter() - t


@contextlib.contextmanager
def ablated(kind: str) -> Iterator[None]:
    """The stage loop with a part taken out, to show what that part costs (`--ablate`): "no
    fsync" flushes neither chunks nor markers; "nothing stored" computes and checks each block's
    features, then drops them (nothing compressed, written or marked)."""
    saved = []
    if kind.endswith(("no fsync", "nothing stored")):
        saved += [(markers, "_fsync_chunks", lambda arr, chunks: None)]
        saved += [(markers, "fsync_dir", lambda path: None)]
    if kind.endswith("nothing stored"):
        saved += [(pipeline, "_write_blocks", _check_and_drop)]
    saved = [(module, name, getattr(module, name), new) for module, name, new in saved]
    for module, name, _, new in saved:
        setattr(module, name, new)
    try:
        yield
    finally:
        for module, name, old, _ in saved:
            setattr(module, name, old)


def _check_and_drop(dst, name, writes, marks, stop, errors) -> None:  # noqa: ANN001
    """pipeline._write_blocks without the store: wait for each block, check it, drop it."""
    try:
        while (item := writes.get()) is not None:
            _, out, finite, event = item
            if event is not None:
                event.synchronize()
            compute.require_finite(compute.all_finite(out.numpy()) if finite is None else finite)
    except BaseException as exc:  # noqa: BLE001 - handed to the main thread
        errors.append(exc)
        stop.set()


def overlap(args: argparse.Namespace, cfg: BackboneConfig, work: Path) -> None:
    """Model alone against the stage's own loop on the same N images, paired.

    The speed of this kind of machine drifts by tens of percent within seconds (a shared host),
    so timings taken minutes apart do not compare. Each round times the Engine alone on N
    in-memory images and the stage's loop on the same N images (Zarr uint8 in, float16 Zarr out,
    chunks and markers made durable) back to back, in alternating order; the figure is the median
    of the per-round ratios, with its range. A second loop writes uncompressed chunks, to show
    what compression costs, and one whole `features_stage` run (set-up included) follows.
    """
    rgb = natural_images(args.n, args.size)
    images = write_images(work / "overlap-images.zarr", rgb)
    batch = padded_batch(cfg, args.batch_size)
    trunk = create_trunk(cfg)
    amp = autocast_dtype(args.device, "auto")
    engine = Engine(fused_trunk(trunk, args.device), amp)
    batches = in_memory_batches(rgb, args.device, batch)
    run = Compute(args.device, batch, "bf16" if amp else "fp32", compiled=False)
    kinds = {"stage loop": FEATURE_CODEC, "stage loop, uncompressed": "none"}
    if args.ablate:
        kinds |= {"stage loop, no fsync": FEATURE_CODEC, "stage loop, nothing stored": "-"}
    seconds: dict[str, list[float]] = {"model alone": [], **{k: [] for k in kinds}}
    ratios: dict[str, list[float]] = {k: [] for k in kinds}
    time_stage_loop(trunk, images, cfg, work / "overlap-warm", run, FEATURE_CODEC)  # warm-up
    for r in range(args.rounds):
        for i, (kind, codec) in enumerate(kinds.items()):
            out = work / f"overlap-{r}-{i}"
            with ablated(kind):
                if (r * len(kinds) + i) % 2:  # model first in every other pair
                    model = time_engine(engine, batches, args.device)
                    stage = time_stage_loop(trunk, images, cfg, out, run, codec)
                else:
                    stage = time_stage_loop(trunk, images, cfg, out, run, codec)
                    model = time_engine(engine, batches, args.device)
            seconds["model alone"].append(model)
            seconds[kind].append(stage)
            ratios[kind].append(model / stage)
            shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    features_stage(images, cfg, work / "overlap-whole", device=args.device,
                   batch_size=args.batch_size, precision="auto", compile_trunk=False)  # fmt: skip
    whole = time.perf_counter() - t
    print(f"# model alone vs the features stage, {args.n} images, auto precision, eager, batch "
          f"{batch}, {args.rounds} paired rounds, median [range]")  # fmt: skip
    print(f"{'':<48} {'images/s':>22} {'ratio to the model alone':>28}")
    for kind, times in seconds.items():
        rates = [args.n / t for t in times]
        rate = f"{statistics.median(rates):7.1f} [{min(rates):.0f}-{max(rates):.0f}]"
        label = "model alone (Engine, in memory)"
        if kind in kinds:
            label = kind if kinds[kind] == "-" else f"{kind} ({kinds[kind]})"
        ratio = ""
        if kind in ratios:
            rs = ratios[kind]
            ratio = f"{statistics.median(rs):.2f} [{min(rs):.2f}-{max(rs):.2f}]"
        print(f"{label:<48} {rate:>22} {ratio:>28}")
    print(f"{'whole features_stage run (set-up included)':<48} {args.n / whole:>14.1f}")


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
    p.add_argument(
        "--rounds",
        type=int,
        default=6,
        help="paired rounds of the model alone vs the stage (median kept); then "
        "interleaved rounds of the comparison with the original (best kept)",
    )
    p.add_argument("--skip-original", action="store_true", help="only time our engine")
    p.add_argument("--overlap-only", action="store_true", help="only model alone vs end to end")
    p.add_argument(
        "--ablate",
        action="store_true",
        help="also the stage loop without fsyncs and without storing anything",
    )
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
        overlap(args, cfg, work)
        if args.overlap_only:
            return
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
