"""The images stage: pictures and captions into `images.zarr`, the store's per-split arrays.

Writes out_dir/images.zarr, a zarr v3 group laid out as a version's per-split arrays
(colorfeat.store.schema: image_id, rgb squash-resized with INTER_AREA in RGB order, ab_bins =
colorfeat.lab.ab_targets of rgb at S/4, and captions/{image_index,text,tokens,length}), and
group attrs `counts` and `skipped` ([{"file", "reason"}]). Arrays are chunked along N only and
zstd-compressed. Its row's function, what it adds to a version and its cost:
colorfeat.stages.images_part.

Two passes, both as Dask tasks over disjoint, chunk-aligned regions: decode every candidate
picture into a staging group (blocks of STAGING_BLOCK pictures, each block's outcome saved so an
interrupted run resumes), then copy the pictures that decoded into the final arrays. Which task
ran where cannot change a byte: chunk boundaries and contents depend only on the inputs.

A picture is skipped, with its reason recorded, only for a problem of its own: a name outside the
source, a missing file, not an image, undecodable or truncated data, too large, grayscale. A
fault of the environment (an I/O error, a permission, memory) raises: the block's outcome is not
saved, the stage fails and a retry or rerun decodes that block again.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from colorfeat import pictures
from colorfeat.constants import DEFAULT_IMAGE_SIZE, TARGET_STRIDE
from colorfeat.lab import ab_targets
from colorfeat.parallel import commit, completed, executor, partial_dir, write_atomic
from colorfeat.sources.coco import picture_path
from colorfeat.stages.captions import load_captions, tokenize
from colorfeat.stages.vocab import encode, load_vocab
from colorfeat.store import schema
from colorfeat.store.codecs import TARGET_CHUNK_BYTES  # also the size of ab_bins, caption chunks

RGB_CHUNK_BYTES = 8 << 20  # target uncompressed bytes of an rgb chunk
STAGING_BLOCK = 32  # pictures per decoding task
COMPRESSOR = ZstdCodec(level=3)
STAGING_COMPRESSOR = BloscCodec(cname="lz4", clevel=1, shuffle="noshuffle")  # speed over size
# Bumped when an unchanged source may give different arrays or skips: 2, an environment fault
# fails the stage instead of being recorded as a corrupt picture, and paths must stay in the source.
STAGE_VERSION = 2


# --------------------------------------------------------------------------- one picture


def read_picture(path: str | Path) -> bytes | str:
    """The bytes of a picture file, or why it cannot be used; a fault of the environment raises."""
    try:
        return pictures.read_bytes(path)
    except pictures.PictureError as exc:
        return exc.reason


def decode_picture(data: bytes) -> tuple[np.ndarray | None, str | None]:
    """(RGB uint8 (H, W, 3), None), or (None, why the picture cannot be used: "grayscale" for
    one without colour); only faults of the environment raise (colorfeat.pictures)."""
    try:
        arr = pictures.decode_rgb(data)
    except pictures.PictureError as exc:
        return None, exc.reason
    return (None, "grayscale") if pictures.is_gray(arr) else (arr, None)


def decode_image(path: str | Path) -> tuple[np.ndarray | None, str | None]:
    """read_picture, then decode_picture: (RGB (H, W, 3), None) or (None, reason)."""
    data = read_picture(path)
    return (None, data) if isinstance(data, str) else decode_picture(data)


def squash_resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) -> (size, size, 3), aspect ratio not kept, OpenCV INTER_AREA."""
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)


def process_image(path: str | Path, size: int) -> tuple[np.ndarray, np.ndarray] | str:
    """(rgb (S, S, 3) uint8, ab_bins (S/4, S/4) uint16) of a picture, or why it is skipped.

    Raises for a fault of the environment (see decode_picture), which is never a skip.
    """
    rgb, reason = decode_image(path)
    if rgb is None:
        return reason or "unreadable"
    small = squash_resize(rgb, size)
    return small, ab_targets(small)


# --------------------------------------------------------------------------- layout


def chunk_rows(row_bytes: int, target: int) -> int:
    """Rows per chunk so that a chunk holds about `target` bytes (at least one row)."""
    return max(1, round(target / row_bytes))


def layout(size: int, max_len: int) -> dict[str, int]:
    """Rows per chunk of each array: ab_bins chunks are a whole number of rgb chunks."""
    rgb = chunk_rows(size * size * 3, RGB_CHUNK_BYTES)
    t = schema.target_side(size)
    ab = rgb * max(1, round(TARGET_CHUNK_BYTES / (rgb * t * t * 2)))
    captions = chunk_rows(max_len * 4, TARGET_CHUNK_BYTES)
    return {schema.RGB: rgb, schema.AB_BINS: ab, schema.CAPTIONS: captions}


def _array(group, name, shape, chunk, dtype, fill=0, compressor=COMPRESSOR):
    chunks = (max(1, min(chunk, shape[0])),) + tuple(shape[1:])
    kw = {"compressors": compressor} if dtype is not str else {}
    return group.create_array(
        name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill, overwrite=True, **kw
    )


# --------------------------------------------------------------------------- tasks


def _decode_block(task: dict) -> list[str | None]:
    """Decode pictures [start, start + n) of a split into the staging arrays; save the outcome."""
    status_file = Path(task["status"])
    if status_file.is_file():
        return json.loads(status_file.read_text())
    stage = zarr.open_group(task["staging"], mode="r+")
    size, t = task["size"], schema.target_side(task["size"])
    n = len(task["files"])
    rgb = np.zeros((n, size, size, 3), np.uint8)  # (n, S, S, 3)
    ab = np.zeros((n, t, t), np.uint16)  # (n, S/4, S/4)
    status: list[str | None] = []
    for i, file in enumerate(task["files"]):
        path = picture_path(task["root"], file)
        out = "outside source" if path is None else process_image(path, size)
        if isinstance(out, str):
            status.append(out)
        else:
            rgb[i], ab[i] = out
            status.append(None)
    s = task["start"]
    stage[schema.RGB][s : s + n] = rgb
    stage[schema.AB_BINS][s : s + n] = ab
    write_atomic(status_file, json.dumps(status))
    return status


def _copy_region(task: dict) -> None:
    """Copy the kept staging rows `rows` into final rows [start, start + len(rows))."""
    stage = zarr.open_group(task["staging"], mode="r")
    out = zarr.open_group(task["out"], mode="r+")
    rows = np.asarray(task["rows"], dtype=np.int64)
    lo, hi, s = int(rows[0]), int(rows[-1]) + 1, task["start"]
    for name in (schema.RGB, schema.AB_BINS):
        block = stage[name][lo:hi][rows - lo]  # (len(rows), ...)
        out[name][s : s + len(rows)] = block


# --------------------------------------------------------------------------- stage


def _decode_split(ex, root: str, cands: list[dict], stage_path: Path, size: int) -> list:
    """Pass 1: every candidate of a split into the staging arrays -> its status (None = kept)."""
    n, t = len(cands), schema.target_side(size)
    status_dir = stage_path.with_name(stage_path.name + "-status")
    status_dir.mkdir(parents=True, exist_ok=True)
    stage = zarr.open_group(stage_path, mode="a")
    if schema.RGB not in stage:
        rgb_shape = (n, size, size, 3)
        _array(stage, schema.RGB, rgb_shape, STAGING_BLOCK, np.uint8, 0, STAGING_COMPRESSOR)
        _array(stage, schema.AB_BINS, (n, t, t), STAGING_BLOCK, np.uint16, 0, STAGING_COMPRESSOR)
    tasks = [
        {
            "root": root,
            "staging": str(stage_path),
            "status": str(status_dir / f"{s}.json"),
            "size": size,
            "start": s,
            "files": [c["file"] for c in cands[s : s + STAGING_BLOCK]],
        }
        for s in range(0, n, STAGING_BLOCK)
    ]
    blocks = ex.map(_decode_block, tasks, desc=f"decoding {stage_path.name} pictures")
    return [r for block in blocks for r in block]


def _write_split(ex, g, out: Path, stage_path: Path, rows, cands, size: int, chunks) -> None:
    """Pass 2: the kept staging rows into pre-allocated final arrays, one task per region."""
    k, t = len(rows), schema.target_side(size)
    ids = np.asarray([cands[i]["image_id"] for i in rows], np.int64)
    ab_chunk = chunks[schema.AB_BINS]
    _array(g, schema.IMAGE_ID, (k,), ab_chunk, np.int64)[:] = ids
    _array(g, schema.RGB, (k, size, size, 3), chunks[schema.RGB], np.uint8)
    _array(g, schema.AB_BINS, (k, t, t), ab_chunk, np.uint16)
    step = min(ab_chunk, max(k, 1))  # whole chunks of both arrays
    copies = [
        {"staging": str(stage_path), "out": str(out), "start": s, "rows": rows[s : s + step]}
        for s in range(0, k, step)
    ]
    ex.map(_copy_region, copies)


def _caption_arrays(group, images: list[dict], index: dict[str, int], max_len: int, chunk: int):
    texts, tokens, lengths, owner = [], [], [], []
    truncated = 0
    for row, img in enumerate(images):
        for text in img["captions"]:
            words = tokenize(text)
            truncated += len(words) > max_len
            texts.append(text)
            tokens.append(encode(words, index, max_len))
            lengths.append(min(len(words), max_len))
            owner.append(row)
    m = len(texts)
    group.require_group(schema.CAPTIONS)
    _array(group, schema.CAPTION_IMAGE_INDEX, (m,), chunk, np.int32)[:] = np.asarray(
        owner, np.int32
    )
    tok = np.stack(tokens) if tokens else np.zeros((0, max_len), np.int32)  # (M, T)
    _array(group, schema.CAPTION_TOKENS, (m, max_len), chunk, np.int32)[:] = tok
    _array(group, schema.CAPTION_LENGTH, (m,), chunk, np.int32)[:] = np.asarray(lengths, np.int32)
    text_arr = _array(group, schema.CAPTION_TEXT, (m,), chunk, str, fill="")
    if m:
        text_arr[:] = np.asarray(texts, dtype=np.dtypes.StringDType())
    return {"captions": m, "captions_truncated": truncated}


@dataclass(frozen=True)
class _Job:
    """What every split of one images stage shares."""

    source_root: str
    out: zarr.Group  # the images.zarr being written
    out_path: Path
    staging: Path
    size: int
    max_len: int
    chunks: dict[str, int]
    vocab_index: dict[str, int]


def _image_split(ex, job: _Job, split: str, cands: list[dict]) -> tuple[dict, list[dict]]:
    """Both passes and the captions of one split -> (its counts, its skipped pictures)."""
    stage_path = job.staging / split
    status = _decode_split(ex, job.source_root, cands, stage_path, job.size)
    kept_rows = [i for i, r in enumerate(status) if r is None]
    g = job.out.require_group(split)
    _write_split(ex, g, job.out_path / split, stage_path, kept_rows, cands, job.size, job.chunks)
    kept = [cands[i] for i in kept_rows]
    c = _caption_arrays(g, kept, job.vocab_index, job.max_len, job.chunks[schema.CAPTIONS])
    g.attrs.update({"images": len(kept), "captions": c["captions"]})
    reasons = Counter(r.split(":")[0] for r in status if r)
    counts = {
        "candidates": len(cands),
        "images": len(kept),
        **c,
        "skipped": dict(sorted(reasons.items())),
    }
    return counts, [{"file": cands[i]["file"], "reason": r} for i, r in enumerate(status) if r]


def images_stage(
    source: dict,
    captions: dict,
    vocab: dict,
    out_dir: Path,
    *,
    image_size: int = DEFAULT_IMAGE_SIZE,
    max_len: int = 20,
    workers: int = 1,
    dask_address: str | None = None,
    processes: bool = False,
) -> dict:
    """Decode, resize and target every captioned picture -> {"path", "splits", "counts", ...}."""
    if done := completed(out_dir):
        return done
    if image_size % TARGET_STRIDE:
        raise ValueError(f"image_size must be divisible by {TARGET_STRIDE}, got {image_size}")
    doc = load_captions(captions)
    partial = partial_dir(out_dir)
    out_path = partial / "images.zarr"
    job = _Job(
        source_root=source["root"],
        out=zarr.open_group(out_path, mode="a"),
        out_path=out_path,
        staging=partial / "_staging",
        size=image_size,
        max_len=max_len,
        chunks=layout(image_size, max_len),
        vocab_index={w: i for i, w in enumerate(load_vocab(vocab))},
    )
    counts: dict = {}
    skipped: list[dict] = []
    with executor(workers, dask_address, processes=processes) as ex:
        for split in sorted(doc["splits"]):
            counts[split], split_skipped = _image_split(ex, job, split, doc["splits"][split])
            skipped += split_skipped
    return commit(partial, out_dir, _finish(job, out_dir, counts, skipped))


def _finish(job: _Job, out_dir: Path, counts: dict, skipped: list[dict]) -> dict:
    """Record the counts and skips on the store, drop the staging arrays -> the stage result."""
    attrs = {"image_size": job.size, "target_stride": TARGET_STRIDE, "max_len": job.max_len}
    job.out.attrs.update({"counts": counts, "skipped": skipped, **attrs})
    shutil.rmtree(job.staging)
    return {
        "path": str(Path(out_dir) / "images.zarr"),
        "splits": {s: counts[s]["images"] for s in counts},
        "counts": counts,
        "skipped": len(skipped),
        "image_size": job.size,
        "max_len": job.max_len,
    }
