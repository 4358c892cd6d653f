"""The threaded extraction loop: blocks of stored pictures in, stored and marked features out.

Three threads keep the trunk busy: a prefetch thread reads uint8 RGB blocks from the images Zarr
(into pinned memory on CUDA), the calling thread runs the engine on the device, a writer thread
checks and stores each block's chunks and a marker thread makes them durable, then marks them
done. Queues between them are bounded, so memory stays flat whatever the number of blocks.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr

from colorfeat.device import keep_freed_memory
from colorfeat.store import schema
from colorfeat.trunk import engine as compute
from colorfeat.trunk import markers as marking
from colorfeat.trunk.blocks import Block
from colorfeat.trunk.engine import Compute

_PREFETCH_BLOCKS = 2


def extract_blocks(
    trunk: torch.nn.Module, src: zarr.Group, dst: zarr.Group, name: str, blocks: Sequence[Block],
    run: Compute, markers: Path, *, engine: compute.Engine | None = None,
) -> None:  # fmt: skip
    """Run the trunk over `blocks` of src/<split>/rgb into dst/<split>/<name>; mark chunks done.

    `engine`: the trunk's engine for `run`, when one was made before (else it is made here).
    """
    dev = torch.device(run.device)
    cuda = dev.type == "cuda"
    engine = engine or compute.create_engine(trunk, run)
    reads: queue.Queue = queue.Queue(maxsize=_PREFETCH_BLOCKS)
    writes: queue.Queue = queue.Queue(maxsize=_PREFETCH_BLOCKS)
    marks: queue.Queue = queue.Queue()  # unbounded: blocks stored, waiting to be made durable
    stop = threading.Event()
    errors: list[BaseException] = []
    reader, writer, marker = (
        threading.Thread(target=target, args=args, name=f"features-{role}", daemon=True)
        for role, target, args in (
            ("prefetch", _read_blocks, (src, blocks, cuda, reads, stop, errors)),
            ("writer", _write_blocks, (dst, name, writes, marks, stop, errors)),
            ("marker", _mark_blocks, (dst, name, markers, marks, errors)),
        )
    )
    keep_freed_memory()  # every batch's buffers reused, not faulted in again
    for thread in (reader, writer, marker):
        thread.start()
    try:
        with torch.inference_mode(), compute.compile_settings(run.compiled):
            while not errors and (item := reads.get()) is not None:
                b, host = item
                out, finite = compute.run_block(engine, host, dev, run.batch)  # (n, C, H, W)
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
                rows[b.split] = ChunkReader(src[schema.split_path(b.split, schema.RGB)])
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
            compute.require_finite(compute.all_finite(data) if finite is None else bool(finite))
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
                marking.mark_chunks(dst[f"{b.split}/{name}"], b.chunks, markers / b.split)
    except BaseException as exc:  # noqa: BLE001 - handed to the main thread
        errors.append(exc)


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
