"""The features stage: frozen-trunk feature maps of every stored image, as float16 Zarr arrays.

Writes `out_dir/features.zarr/<split>/<name>` (N, C, H, W) float16, chunked along N only and
compressed (colorfeat.store.codecs), with attrs that say exactly how the features were made.

The engine overlaps its work: a prefetch thread reads uint8 RGB blocks from the images Zarr (into
pinned memory on CUDA), the main thread turns them into normalised grayscale on the device and runs
the trunk (BatchNorm folded into the convs, inference_mode, channels_last, bf16 autocast where it
pays), and a writer thread compresses and stores each chunk, then marks it done. Work is split
into fixed blocks of whole chunks, so a killed run restarted on the same machine recomputes only
unmarked blocks with the same batches, and ends byte-identical to an uninterrupted run. With
several devices, blocks are split into contiguous ranges, one process per device.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import shutil
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr

from colorfeat.config import BackboneConfig, resolve_precision
from colorfeat.constants import COMPILE_MIN_IMAGES
from colorfeat.device import keep_freed_memory, resolve_device
from colorfeat.disk import feature_bytes_needed, require_free
from colorfeat.errors import UserError
from colorfeat.parallel import SUCCESS, commit, fsync_dir, is_stray
from colorfeat.stages import FEATURES_VERSION
from colorfeat.store.codecs import FEATURE_CODEC, feature_compressors, images_per_chunk
from colorfeat.trunk.backbone import (
    INPUT_DESCRIPTION,
    Trunk,
    create_trunk,
    describe_trunk,
    feature_shape,
    fuse_batchnorm,
    prepare_input,
)

# Declared with the stage table, so that planning a rebuild imports no PyTorch; bump it there.
CODE_VERSION = FEATURES_VERSION
_MARKERS = "_chunks_done"
_PREFETCH_BLOCKS = 2


# bf16 autocast vs fp32, resnet101.layer2 on natural photos: relative L2 error of the features.
BF16_TOLERANCE = 2e-2


def autocast_dtype(device: str, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype of the trunk, or None for plain fp32 (see config.resolve_precision).

    "auto" is bf16 on CUDA and fp32 on every CPU, so that features do not depend on the CPU
    model; bf16 on a CPU with native bf16 matmul (AVX512-BF16 / AMX) is asked for explicitly
    (benchmarks/extract.py measured it faster there, within BF16_TOLERANCE relative L2 of fp32).
    """
    return torch.bfloat16 if resolve_precision(precision, device) == "bf16" else None


def split_chunk_ranges(n_chunks: int, n_devices: int) -> list[range]:
    """Split chunk indices 0..n_chunks-1 into n_devices contiguous, near-equal ranges."""
    if n_devices < 1:
        raise ValueError("n_devices must be at least 1")
    base, extra = divmod(n_chunks, n_devices)
    ranges, start = [], 0
    for i in range(n_devices):
        stop = start + base + (1 if i < extra else 0)
        ranges.append(range(start, stop))
        start = stop
    return ranges


@dataclass(frozen=True)
class Compute:
    """How the trunk runs: device, images per (padded) batch, autocast dtype, compiled or eager."""

    device: str
    batch: int  # every block is run as one batch of exactly this many images (zero-padded)
    amp: str  # "bf16" or "fp32"
    compiled: bool

    def describe(self) -> str:
        kind = "bfloat16 autocast" if self.amp == "bf16" else "float32"
        return kind + (", torch.compile (inductor, frozen)" if self.compiled else "")


@dataclass(frozen=True)
class Block:
    """A fixed run of whole chunks of one split: the unit of compute, resume and device split."""

    split: str
    start: int  # first image
    stop: int  # one past the last image
    chunks: tuple[int, ...]


def features_stage(
    images: dict,
    backbone: BackboneConfig,
    out_dir: Path,
    *,
    device: str = "auto",
    batch_size: int = 64,
    precision: str = "auto",
    compile_trunk: bool | None = None,
    devices: Sequence[str] | None = None,
    chunk_images: int | None = None,
) -> dict:
    """Extract `backbone` features of every image in `images` into out_dir/features.zarr.

    `precision` is "auto" (see `autocast_dtype`), "bf16" or "fp32". `compile_trunk` runs the trunk
    through torch.compile (default: on CPU when there are at least COMPILE_MIN_IMAGES images, where
    its one-off ~30 s pays for itself; `batch_size` is rounded up to whole chunks so that every
    batch has one static shape). `devices` forces an explicit
    device list (one process per entry when several); by default it is every CUDA device when
    `device` resolves to cuda, else the one device. `chunk_images` overrides the chunk length along
    N (default: about colorfeat.store.codecs.TARGET_CHUNK_BYTES per chunk).
    """
    out_dir = Path(out_dir)
    done = out_dir / SUCCESS
    if done.exists():
        return json.loads(done.read_text())
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    devices = _devices(device, devices)
    partial = out_dir.with_name(out_dir.name + ".partial")
    trunk = create_trunk(backbone)
    src = _open_images(images)
    splits = _split_names(images, src)
    c, h, w = feature_shape(backbone)
    chunk_n = chunk_images or images_per_chunk(c * h * w * 2, None)
    n_total = sum(src[f"{s}/rgb"].shape[0] for s in splits)
    run = _compute(devices[0], precision, chunk_n, batch_size, compile_trunk, n_total)
    root = zarr.open_group(str(partial / "features.zarr"), mode="a")
    blocks: list[Block] = []
    shapes: dict[str, list[int]] = {}
    for split in splits:
        rgb = src[f"{split}/rgb"]
        arr = _feature_array(root, split, rgb, trunk, backbone, chunk_n, run, partial)
        shapes[split] = list(arr.shape)
        blocks += _pending_blocks(split, arr, run.batch, partial / _MARKERS / split)

    pending = sum(b.stop - b.start for b in blocks) * c * h * w  # float16 values to store
    require_free(partial, feature_bytes_needed(pending), f"the {backbone.name} features")
    if len(devices) > 1 and len(blocks) > 1:
        _run_multiprocess(images, backbone, partial, blocks, devices, run)
    elif blocks:
        _configure_threads(devices[0], 1)
        extract_blocks(trunk, src, root, backbone.name, blocks, run, partial / _MARKERS)
    _finish(root, partial, splits)
    result = _stage_result(out_dir, trunk, backbone, run, shapes)
    return commit(partial, out_dir, result)


def _devices(device: str, devices: Sequence[str] | None) -> list[str]:
    """The resolved devices to run on: `devices`, else every CUDA device when `device` resolves
    to cuda, else the one device."""
    device = str(resolve_device(device))  # "cpu", "cuda" or "cuda:N"
    if devices is None:
        n_gpu = torch.cuda.device_count() if device == "cuda" else 0
        devices = [f"cuda:{i}" for i in range(n_gpu)] if n_gpu > 1 else [device]
    return [str(resolve_device(d)) for d in devices]


def _compute(
    device: str, precision: str, chunk_n: int, batch_size: int, compile_trunk: bool | None, n: int
) -> Compute:
    """How the trunk runs: batches rounded up to whole chunks; compiled on CPU from
    COMPILE_MIN_IMAGES images on unless `compile_trunk` says."""
    amp = "bf16" if autocast_dtype(device, precision) else "fp32"
    if compile_trunk is None:
        compile_trunk = device == "cpu" and n >= COMPILE_MIN_IMAGES
    return Compute(device, chunk_n * math.ceil(batch_size / chunk_n), amp, compile_trunk)


def _stage_result(
    out_dir: Path, trunk: Trunk, backbone: BackboneConfig, run: Compute, shapes: dict
) -> dict:
    """The features stage's result: where the arrays are and how they were made."""
    return {
        "path": str(out_dir.resolve() / "features.zarr"),
        "name": backbone.name,
        "backbone": backbone.to_dict(),
        "weights": trunk.weights_id,
        "weights_hash": trunk.weights_hash,
        "trunk": describe_trunk(trunk, backbone, run.amp),
        "shapes": shapes,
        "codec": FEATURE_CODEC,
        "compute": run.describe(),
        "code_version": CODE_VERSION,
    }


def extract_blocks(
    trunk: Trunk,
    src: zarr.Group,
    dst: zarr.Group,
    name: str,
    blocks: Sequence[Block],
    run: Compute,
    markers: Path,
) -> None:
    """Run the trunk over `blocks` of src/<split>/rgb into dst/<split>/<name>; mark chunks done."""
    dev = torch.device(run.device)
    cuda = dev.type == "cuda"
    fused = fuse_batchnorm(trunk).to(dev, memory_format=torch.channels_last)
    if run.compiled:  # the trunk only: compiling the whole Engine measured slower
        fused = torch.compile(fused, dynamic=False)
    engine = Engine(fused, torch.bfloat16 if run.amp == "bf16" else None)
    reads: queue.Queue = queue.Queue(maxsize=_PREFETCH_BLOCKS)
    writes: queue.Queue = queue.Queue(maxsize=_PREFETCH_BLOCKS)
    stop = threading.Event()
    errors: list[BaseException] = []
    reader = threading.Thread(
        target=_read_blocks, args=(src, blocks, cuda, reads, stop, errors),
        name="features-prefetch", daemon=True,
    )  # fmt: skip
    marks: queue.Queue = queue.Queue()  # unbounded: blocks stored, waiting to be made durable
    writer = threading.Thread(
        target=_write_blocks, args=(dst, name, writes, marks, stop, errors),
        name="features-writer", daemon=True,
    )  # fmt: skip
    marker = threading.Thread(
        target=_mark_blocks, args=(dst, name, markers, marks, errors),
        name="features-marker", daemon=True,
    )  # fmt: skip
    keep_freed_memory()  # every batch's buffers reused, not faulted in again
    for thread in (reader, writer, marker):
        thread.start()
    try:
        with torch.inference_mode(), _compile_settings(run.compiled):
            while not errors and (item := reads.get()) is not None:
                b, host = item
                out, finite = _run_block(engine, host, dev, run.batch)  # (n, C, H, W) fp16
                event = torch.cuda.Event() if cuda else None
                if event is not None:
                    event.record()
                _put(writes, (b, out, finite, event), stop)
        _put(writes, None, stop, final=True)
        writer.join()
    finally:
        stop.set()
        if writer.is_alive():
            _put(writes, None, stop, final=True)
            writer.join()
        marks.put(None)  # after the writer: every block it stored is marked before we return
        marker.join()
        reader.join(timeout=10)
    if errors:
        raise errors[0]


def _read_blocks(
    src: zarr.Group, blocks: Sequence[Block], cuda: bool, reads: queue.Queue,
    stop: threading.Event, errors: list[BaseException],
) -> None:  # fmt: skip
    """The prefetch thread: each block's uint8 RGB into `reads` (pinned on CUDA), then None."""
    try:
        rows: dict[str, ChunkReader] = {}
        for b in blocks:
            if stop.is_set():
                break
            if b.split not in rows:
                rows[b.split] = ChunkReader(src[f"{b.split}/rgb"])
            host = torch.from_numpy(rows[b.split].read(b.start, b.stop))  # (n, S, S, 3) uint8
            _put(reads, (b, host.pin_memory() if cuda else host), stop)
    except BaseException as exc:  # noqa: BLE001 - handed to the main thread
        errors.append(exc)
    _put(reads, None, stop, final=True)


class ChunkReader:
    """Rows of an (N, ...) Zarr array read in increasing order, each chunk decoded only once.

    Feature blocks are whole feature chunks (a few images), image chunks are larger (~8 MB: 56
    pictures at 224 px): slicing the array block by block would decode every image chunk about
    three times. This keeps the chunks the current read touches and drops those behind it.
    """

    def __init__(self, arr: zarr.Array) -> None:
        self.arr = arr
        self.rows = arr.chunks[0]
        self.cache: dict[int, np.ndarray] = {}

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as one C-contiguous array."""
        n = self.rows
        first, last = start // n, (stop - 1) // n
        self.cache = {c: v for c, v in self.cache.items() if c >= first}
        missing = [c for c in range(first, last + 1) if c not in self.cache]
        if missing:  # one read, so that zarr decodes the chunks concurrently
            lo, hi = missing[0], missing[-1]
            data = self.arr[lo * n : min((hi + 1) * n, self.arr.shape[0])]
            for c in range(lo, hi + 1):
                self.cache[c] = data[(c - lo) * n : (c - lo + 1) * n]
        parts = [
            self.cache[c][max(start - c * n, 0) : stop - c * n] for c in range(first, last + 1)
        ]
        return np.ascontiguousarray(parts[0]) if len(parts) == 1 else np.concatenate(parts)


def _write_blocks(
    dst: zarr.Group, name: str, writes: queue.Queue, marks: queue.Queue, stop: threading.Event,
    errors: list[BaseException],
) -> None:  # fmt: skip
    """The writer thread: check and store each block from `writes` until None; hand it on to be
    marked (the marker thread's fsyncs would otherwise hold up the trunk: about 15% on a CPU)."""
    try:
        while (item := writes.get()) is not None:
            b, out, finite, event = item
            if event is not None:
                event.synchronize()
            data = out.numpy()  # (n, C, H, W) float16
            _require_finite(all_finite(data) if finite is None else bool(finite))
            dst[f"{b.split}/{name}"][b.start : b.stop] = data  # whole chunks, encoded concurrently
            marks.put(b)
    except BaseException as exc:  # noqa: BLE001 - handed to the main thread
        errors.append(exc)
        stop.set()


def _mark_blocks(
    dst: zarr.Group, name: str, markers: Path, marks: queue.Queue, errors: list[BaseException]
) -> None:
    """The marker thread: make each stored block's chunks durable, then mark them done, until
    None. A marker never outlives the chunk it vouches for; after a kill, chunks stored but not
    yet marked are simply computed again."""
    try:
        while (b := marks.get()) is not None:
            if not errors:
                _mark_block(dst[f"{b.split}/{name}"], b, markers / b.split)
    except BaseException as exc:  # noqa: BLE001 - handed to the main thread
        errors.append(exc)


def _compile_settings(compiled: bool) -> contextlib.AbstractContextManager:
    """Inductor with frozen weights (constant-folded, prepacked for oneDNN); it must be set while
    the first call compiles (`options=` does not reach it)."""
    if not compiled:
        return contextlib.nullcontext()
    import torch._inductor.config

    return torch._inductor.config.patch(freezing=True)


def _mark_block(arr: zarr.Array, b: Block, markers: Path) -> None:
    """Flush a stored block's chunks, then mark each done (an empty file appears whole or not at
    all; one directory fsync makes the block's markers durable)."""
    _fsync_chunks(arr, b.chunks)  # a marker must never outlive the chunk it vouches for
    markers.mkdir(parents=True, exist_ok=True)
    for c in b.chunks:
        (markers / str(c)).touch()
    fsync_dir(markers)


def _fsync_chunks(arr: zarr.Array, chunks: Sequence[int]) -> None:
    folder = Path(arr.store.root, arr.path)
    for c in chunks:
        key = arr.metadata.encode_chunk_key((c,) + (0,) * (arr.ndim - 1))
        try:
            fd = os.open(folder / key, os.O_RDONLY)
        except FileNotFoundError:  # an all-fill chunk zarr did not store (publishing adds it)
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Engine(torch.nn.Module):
    """uint8 RGB (B, S, S, 3) -> float16 features (B, C, H, W), NCHW, and whether all are finite.

    One module from the stored pixels to the stored dtype and layout. The overflow check runs on
    the device where that is cheap (CUDA); on the CPU it returns None and the writer thread checks
    the float16 bits (`all_finite`), ~10x cheaper than torch.isfinite on float16 there and off the
    thread that runs the trunk.
    """

    def __init__(self, trunk: torch.nn.Module, amp: torch.dtype | None) -> None:
        super().__init__()
        self.trunk = trunk
        self.amp = amp

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = prepare_input(rgb)  # (B, 3, S, S) channels_last
        enabled = self.amp is not None
        with torch.autocast(rgb.device.type, dtype=self.amp or torch.float32, enabled=enabled):
            y = self.trunk(x)  # (B, C, H, W) channels_last
        # cast and NHWC -> NCHW in one pass
        y = y.to(torch.float16, memory_format=torch.contiguous_format)  # (B, C, H, W) NCHW
        finite = torch.isfinite(y).all() if y.device.type != "cpu" else None  # |x| > 65504: inf
        return y, finite


def all_finite(features: np.ndarray) -> bool:
    """Whether a float16 array holds no inf or NaN: no value has all five exponent bits set."""
    bits = features.view(np.uint16)
    return bool(bits.size == 0 or np.max(bits & np.uint16(0x7FFF)) < 0x7C00)


def _run_block(
    engine: torch.nn.Module, host: torch.Tensor, dev: torch.device, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (n, C, H, W) float16 of a block of uint8 RGB (n, S, S, 3), as one padded batch,
    and whether they are all finite; both on the host, copied asynchronously on CUDA (the
    writer reads them after the block's event, so the main thread never waits for the device)."""
    cuda = dev.type == "cuda"
    n = host.shape[0]
    rgb = host.to(dev, non_blocking=cuda)  # (n, S, S, 3) uint8
    if n < batch_size:  # one static shape for every batch: pad the last block with black images
        rgb = torch.cat([rgb, rgb.new_zeros((batch_size - n, *rgb.shape[1:]))])
    y, finite = engine(rgb)  # (B, C, H, W) float16, () bool
    y = y[:n]  # (n, C, H, W)
    return (_to_pinned(y), _to_pinned(finite)) if cuda else (y, finite)


def _require_finite(finite: bool) -> None:
    if not finite:
        raise UserError(
            "trunk features overflow float16 (|x| > 65504): random-init deep layers grow without "
            "bound; use --weights imagenet or FILE, or an earlier --layer"
        )


def _to_pinned(y: torch.Tensor) -> torch.Tensor:
    host = torch.empty(y.shape, dtype=y.dtype, pin_memory=True)
    host.copy_(y, non_blocking=True)
    return host


def _put(q: queue.Queue, item: Any, stop: threading.Event, *, final: bool = False) -> None:
    """Put into a bounded queue; once `stop` is set give up (or make room for a `final` item)."""
    while True:
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            if stop.is_set():
                if not final:
                    return
                with contextlib.suppress(queue.Empty):
                    q.get_nowait()


def _open_images(images: dict) -> zarr.Group:
    path = images.get("path")
    if not path or not Path(path).exists():
        raise UserError(f"images stage output not found: {path}")
    return zarr.open_group(str(path), mode="r")


def _split_names(images: dict, src: zarr.Group) -> list[str]:
    names = list(images.get("splits") or sorted(k for k, _ in src.groups()))
    missing = [s for s in names if f"{s}/rgb" not in src]
    if missing:
        raise UserError(f"images store {images.get('path')} has no rgb array for {missing}")
    return names


def _feature_array(
    root: zarr.Group,
    split: str,
    rgb: zarr.Array,
    trunk: Trunk,
    backbone: BackboneConfig,
    chunk_n: int,
    run: Compute,
    partial: Path,
) -> zarr.Array:
    """Open the split's feature array in the partial dir, or create it (again, if it differs)."""
    _check_rgb(split, rgb, backbone)
    n, c, h, w = rgb.shape[0], *feature_shape(backbone)
    shape, chunks = (n, c, h, w), (max(1, min(chunk_n, n)), c, h, w)
    attrs = _feature_attrs(trunk, backbone, run)
    key = f"{split}/{backbone.name}"
    if key in root:
        arr = root[key]
        if arr.shape == shape and arr.chunks == chunks and dict(arr.attrs) == attrs:
            return arr
        # made with other settings (chunking, weights, precision): start this split afresh
        shutil.rmtree(partial / "features.zarr" / split / backbone.name, ignore_errors=True)
        shutil.rmtree(partial / _MARKERS / split, ignore_errors=True)
        root = zarr.open_group(str(partial / "features.zarr"), mode="a")
    group = root.require_group(split)
    return group.create_array(
        backbone.name,
        shape=shape,
        chunks=chunks,
        dtype="float16",
        compressors=feature_compressors(),
        fill_value=0.0,
        attributes=attrs,
        dimension_names=("image", "channel", "y", "x"),
        config={"write_empty_chunks": True},
    )


def _check_rgb(split: str, rgb: zarr.Array, backbone: BackboneConfig) -> None:
    """UserError unless `rgb` is (N, S, S, 3) uint8 at the trunk's image size."""
    s = rgb.shape[1] if rgb.ndim > 1 else None
    if rgb.ndim != 4 or rgb.shape[2] != s or rgb.shape[3] != 3 or rgb.dtype != np.uint8:
        raise UserError(f"{split}/rgb must be (N, S, S, 3) uint8, got {rgb.shape} {rgb.dtype}")
    if s != backbone.image_size:
        raise UserError(
            f"images are {s}x{s} but the backbone config says --image-size {backbone.image_size}"
        )


def _feature_attrs(trunk: Trunk, backbone: BackboneConfig, run: Compute) -> dict[str, Any]:
    """What a feature array says about how it was made."""
    return {
        "backbone": backbone.backbone,
        "layer": backbone.layer,
        "name": backbone.name,
        "weights": trunk.weights_id,
        "weights_hash": trunk.weights_hash,
        "input_size": backbone.image_size,
        **INPUT_DESCRIPTION,
        "dtype": "float16",
        "compute": run.describe(),
        "trunk": describe_trunk(trunk, backbone, run.amp),
        "codec": FEATURE_CODEC,
        "code_version": CODE_VERSION,
    }


def _pending_blocks(split: str, arr: zarr.Array, batch_size: int, markers: Path) -> list[Block]:
    """Fixed blocks of whole chunks (at most batch_size images) that still have unmarked chunks."""
    n, chunk_n = arr.shape[0], arr.chunks[0]
    n_chunks = math.ceil(n / chunk_n)
    per_block = max(1, batch_size // chunk_n)
    marked = set(_marked_chunks(markers))
    blocks = []
    for first in range(0, n_chunks, per_block):
        chunks = tuple(range(first, min(first + per_block, n_chunks)))
        if not set(chunks) <= marked:
            blocks.append(Block(split, first * chunk_n, min(n, (chunks[-1] + 1) * chunk_n), chunks))
    return blocks


def _configure_threads(device: str, n_processes: int) -> None:
    if device == "cpu" and n_processes > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // n_processes))


def _run_multiprocess(
    images: dict,
    backbone: BackboneConfig,
    partial: Path,
    blocks: list[Block],
    devices: Sequence[str],
    run: Compute,
) -> None:
    ranges = split_chunk_ranges(len(blocks), len(devices))
    work = [(devices[i], [blocks[j] for j in r]) for i, r in enumerate(ranges) if len(r)]
    import torch.multiprocessing as mp

    try:
        mp.spawn(
            _worker,
            args=(images, backbone, str(partial), work, run),
            nprocs=len(work),
            join=True,
        )
    except mp.ProcessRaisedException as exc:
        last = str(exc).strip().splitlines()[-1]
        raise UserError(f"feature extraction failed in a worker process: {last}") from exc


def _worker(
    rank: int,
    images: dict,
    backbone: BackboneConfig,
    partial: str,
    work: list[tuple[str, list[Block]]],
    run: Compute,
) -> None:
    device, blocks = work[rank]
    _configure_threads(device, len(work))
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    trunk = create_trunk(backbone)
    root = zarr.open_group(str(Path(partial) / "features.zarr"), mode="r+")
    markers = Path(partial) / _MARKERS
    src = _open_images(images)
    run = Compute(device, run.batch, run.amp, run.compiled)
    extract_blocks(trunk, src, root, backbone.name, blocks, run, markers)


def _finish(root: zarr.Group, partial: Path, splits: list[str]) -> None:
    """Check every chunk is marked, then drop markers and stray temporary files of killed writes."""
    for split in splits:
        for _, arr in root[split].arrays():
            n_chunks = math.ceil(arr.shape[0] / arr.chunks[0])
            have = set(_marked_chunks(partial / _MARKERS / split))
            missing = [c for c in range(n_chunks) if c not in have]
            if missing:
                raise RuntimeError(f"feature chunks {missing[:5]} of {split} were never written")
    shutil.rmtree(partial / _MARKERS, ignore_errors=True)
    for stray in _stray_files(partial / "features.zarr"):
        with contextlib.suppress(OSError):  # an NFS `.nfs*` file stays while someone holds it
            stray.unlink()


def _marked_chunks(markers: Path) -> Iterator[int]:
    """The chunk indices marked done in a marker folder; other files there are not markers."""
    if markers.is_dir():
        yield from (int(p.name) for p in markers.iterdir() if p.name.isdecimal())


def _stray_files(path: Path) -> Iterator[Path]:
    """Files a killed or concurrent writer left among the chunks (`x.partial`, `.nfs1234`)."""
    yield from (p for p in path.rglob("*") if is_stray(p.name) and p.is_file())
