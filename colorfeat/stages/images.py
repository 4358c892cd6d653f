"""The images stage: pictures and captions into `images.zarr`, the store's per-split arrays.

Writes out_dir/images.zarr, a zarr v3 group laid out as a version's per-split arrays
(colorfeat.store.schema: image_id, rgb squash-resized with INTER_AREA in RGB order, ab_bins =
colorfeat.lab.ab_targets of rgb at S/4, and captions/{image_index,text,tokens,length}), and
group attrs `counts` and `skipped` ([{"file", "reason"}]). Arrays are chunked along N only and
zstd-compressed. Its row's function, what it adds to a version and its cost:
colorfeat.stages.images_part.

Two passes, both as Dask tasks over disjoint, chunk-aligned regions: decode the candidate
pictures into a staging group (blocks of STAGING_BLOCK pictures, each block's outcome saved so an
interrupted run resumes), then assemble the final arrays from the pictures that decoded. Which
task ran where cannot change a byte: chunk boundaries and contents depend only on the inputs.

A rebuild decodes only the pictures the previous images output of the same image size does not
hold (colorfeat.reuse): a picture is known by its path, size and modification time, or else by
the SHA-256 of its bytes; every other row is taken from that output, whole unchanged chunks as
hard links, in the order rule of colorfeat.reuse.

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

from colorfeat import __version__, pictures
from colorfeat import reuse as reusing
from colorfeat.constants import DEFAULT_IMAGE_SIZE, STORE_SCHEMA, TARGET_STRIDE
from colorfeat.lab import ab_targets
from colorfeat.parallel import commit, completed, executor, partial_dir, write_atomic
from colorfeat.reuse import Rows
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


def _decode_block(task: dict) -> dict:
    """Decode pictures [start, start + n) of the staging list; save the outcome ->
    {"status": [None or why skipped], "digests": [SHA-256 of the bytes, or None]}."""
    status_file = Path(task["status"])
    if status_file.is_file():
        saved = json.loads(status_file.read_text())
        if isinstance(saved, dict):
            return saved
    stage = zarr.open_group(task["staging"], mode="r+")
    size, t = task["size"], schema.target_side(task["size"])
    n = len(task["files"])
    rgb = np.zeros((n, size, size, 3), np.uint8)  # (n, S, S, 3)
    ab = np.zeros((n, t, t), np.uint16)  # (n, S/4, S/4)
    outcome: dict[str, list] = {"status": [], "digests": []}
    for i, file in enumerate(task["files"]):
        path = picture_path(task["root"], file)
        data = "outside source" if path is None else read_picture(path)
        name = None if isinstance(data, str) else reusing.digest(data)
        picture, reason = (None, data) if isinstance(data, str) else decode_picture(data)
        if picture is not None:
            rgb[i] = squash_resize(picture, size)
            ab[i] = ab_targets(rgb[i])
        outcome["status"].append(reason)
        outcome["digests"].append(name)
    s = task["start"]
    stage[schema.RGB][s : s + n] = rgb
    stage[schema.AB_BINS][s : s + n] = ab
    write_atomic(status_file, json.dumps(outcome))
    return outcome


def _assemble_region(task: dict) -> dict[str, int]:
    """Rows [start, stop) of a split's image_id, rgb and ab_bins (whole chunks of each): rows of
    the previous output where `sources` names one (unchanged chunks hard-linked), staging rows
    (`staged`) for the pictures decoded now."""
    out = zarr.open_group(task["out"], mode="r+")
    before = zarr.open_group(task["before"], mode="r") if task["before"] else None
    stage = zarr.open_group(task["staging"], mode="r") if task["staging"] else None
    lo, hi = task["start"], task["stop"]
    staged = dict(zip(range(lo, hi), task["staged"], strict=True))
    done = {"linked": 0, "written": 0}
    for name in (schema.RGB, schema.AB_BINS):

        def fresh(rows: np.ndarray, name: str = name) -> np.ndarray:
            return reusing.read_rows(stage[name], np.array([staged[r] for r in rows]))

        old = before[name] if before is not None else None
        made = reusing.assemble(out[name], lo, hi, old, task["sources"], fresh)
        done = {k: done[k] + made[k] for k in done}
    ids = np.asarray(task["ids"], np.int64)
    old = before[schema.IMAGE_ID] if before is not None else None
    reusing.assemble(out[schema.IMAGE_ID], lo, hi, old, task["id_sources"], lambda r: ids[r - lo])
    return done


# --------------------------------------------------------------------------- stage


def _decode_split(ex, root: str, cands: list[dict], stage_path: Path, size: int) -> dict:
    """Pass 1: the pictures to decode into the staging arrays -> {"status", "digests"}."""
    n, t = len(cands), schema.target_side(size)
    status_dir = stage_path.with_name(stage_path.name + "-status")
    files = [c["file"] for c in cands]
    listed = reusing.reuse_key(files=files)
    stage = zarr.open_group(stage_path, mode="a")
    if stage.attrs.get("files") != listed:  # a staging area of another list: start afresh
        shutil.rmtree(stage_path, ignore_errors=True)
        shutil.rmtree(status_dir, ignore_errors=True)
        stage = zarr.open_group(stage_path, mode="a")
        rgb_shape = (n, size, size, 3)
        _array(stage, schema.RGB, rgb_shape, STAGING_BLOCK, np.uint8, 0, STAGING_COMPRESSOR)
        _array(stage, schema.AB_BINS, (n, t, t), STAGING_BLOCK, np.uint16, 0, STAGING_COMPRESSOR)
        stage.attrs["files"] = listed
    status_dir.mkdir(parents=True, exist_ok=True)
    tasks = [
        {
            "root": root,
            "staging": str(stage_path),
            "status": str(status_dir / f"{s}.json"),
            "size": size,
            "start": s,
            "files": files[s : s + STAGING_BLOCK],
        }
        for s in range(0, n, STAGING_BLOCK)
    ]
    blocks = ex.map(_decode_block, tasks, desc=f"decoding {stage_path.name} pictures")
    return {k: [v for block in blocks for v in block[k]] for k in ("status", "digests")}


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
    before: Rows | None  # the previous output of the same reuse key, if any
    rows: Rows  # what this one records


def _known_digests(job: _Job, cands: list[dict]) -> tuple[list[str | None], list]:
    """Each candidate's picture digest where it needs no decoding to know: the previous output
    recorded its file with the same size and modification time, or (with a previous output) the
    bytes are read and hashed; None: the picture is decoded. And each file's [size, mtime]."""
    known = job.before.files if job.before else {}
    out: list[str | None] = []
    stats: list = []
    for c in cands:
        path = picture_path(job.source_root, c["file"])
        try:
            st = path.stat() if path is not None else None
        except OSError:
            st = None
        name = None
        if st is not None:
            seen = known.get(c["file"])
            if seen and seen[:2] == [st.st_size, st.st_mtime_ns]:
                name = seen[2]
            elif job.before is not None:
                data = read_picture(path)
                name = None if isinstance(data, str) else reusing.digest(data)
        stats.append(None if st is None else [st.st_size, st.st_mtime_ns])
        out.append(name)
    return out, stats


def _image_split(ex, job: _Job, split: str, cands: list[dict]) -> tuple[dict, list[dict]]:
    """Decode what is new, assemble the arrays and write the captions of one split -> (its
    counts, its skipped pictures)."""
    before = job.before if job.before and split in job.before.splits else None
    held = set(before.digests(split)) if before else set()
    skips = job.before.skipped if job.before else {}
    digests, stats = _known_digests(job, cands)
    status: list[str | None] = [None if d in held else skips.get(d) for d in digests]
    todo = [i for i, d in enumerate(digests) if d is None or (d not in held and d not in skips)]
    decoded = _decode_split(ex, job.source_root, [cands[i] for i in todo], job.staging / split,
                            job.size)  # fmt: skip
    for j, i in enumerate(todo):
        status[i], digests[i] = decoded["status"][j], decoded["digests"][j]
        if status[i] and digests[i]:  # a fault of the picture: it stays one
            job.rows.skipped[digests[i]] = status[i]
    for c, d, st in zip(cands, digests, stats, strict=True):
        if d is not None and st is not None:
            job.rows.files[c["file"]] = [*st, d]
    kept = {cands[i]["image_id"]: i for i, r in enumerate(status) if r is None}
    order = reusing.order_rows(before.ids(split) if before else None, list(kept))
    row_digests = [digests[kept[i]] for i in order]
    staged = {i: j for j, i in enumerate(todo)}
    job.rows.splits[split] = {"ids": order, "digests": row_digests}
    g = job.out.require_group(split)
    linked = _write_split(ex, job, g, split, before, order, row_digests,
                          [staged.get(kept[i]) for i in order])  # fmt: skip
    c = _caption_arrays(g, [cands[kept[i]] for i in order], job.vocab_index, job.max_len,
                        job.chunks[schema.CAPTIONS])  # fmt: skip
    g.attrs.update({"images": len(order), "captions": c["captions"]})
    reasons = Counter(r.split(":")[0] for r in status if r)
    counts = {
        "candidates": len(cands), "images": len(order), **c,
        "skipped": dict(sorted(reasons.items())), "decoded": len(todo),
        "reused": len(order) - sum(1 for i in order if kept[i] in staged), **linked,
    }  # fmt: skip
    return counts, [{"file": cands[i]["file"], "reason": r} for i, r in enumerate(status) if r]


def _write_split(ex, job: _Job, g, split: str, before: Rows | None, order: list[int],
                 digests: list[str], staged: list[int | None]) -> dict[str, int]:  # fmt: skip
    """Pass 2: the split's image_id, rgb and ab_bins, one task per region of whole chunks."""
    k, t, chunks = len(order), schema.target_side(job.size), job.chunks
    ab_chunk = chunks[schema.AB_BINS]
    _array(g, schema.IMAGE_ID, (k,), ab_chunk, np.int64)
    _array(g, schema.RGB, (k, job.size, job.size, 3), chunks[schema.RGB], np.uint8)
    _array(g, schema.AB_BINS, (k, t, t), ab_chunk, np.uint16)
    sources = reusing.source_rows(digests, before.digests(split) if before else [])
    old_ids = before.ids(split) if before else []
    id_sources = [r if r < len(old_ids) and old_ids[r] == i else None for r, i in enumerate(order)]
    old = str(before.path / "images.zarr" / split) if before else None
    step = min(ab_chunk, max(k, 1))  # whole chunks of every array
    tasks = [
        {
            "out": str(job.out_path / split),
            "before": old,
            "start": s,
            "stop": min(s + step, k),
            "staging": str(job.staging / split),
            "sources": sources[s : s + step],
            "staged": staged[s : s + step],
            "ids": order[s : s + step],
            "id_sources": id_sources[s : s + step],
        }  # fmt: skip
        for s in range(0, k, step)
    ]
    made = ex.map(_assemble_region, tasks)
    return {f"chunks_{k}": sum(m[k] for m in made) for k in ("linked", "written")}


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
    key = reuse_key(image_size)
    job = _Job(
        source_root=source["root"],
        out=zarr.open_group(out_path, mode="a"),
        out_path=out_path,
        staging=partial / "_staging",
        size=image_size,
        max_len=max_len,
        chunks=layout(image_size, max_len),
        vocab_index={w: i for i, w in enumerate(load_vocab(vocab))},
        before=reusing.previous(out_dir, key),
        rows=Rows(key),
    )
    counts: dict = {}
    skipped: list[dict] = []
    with executor(workers, dask_address, processes=processes) as ex:
        for split in sorted(doc["splits"]):
            counts[split], split_skipped = _image_split(ex, job, split, doc["splits"][split])
            skipped += split_skipped
    job.rows.save(partial)
    return commit(partial, out_dir, _finish(job, out_dir, counts, skipped))


def reuse_key(image_size: int) -> str:
    """What an images output's rows depend on besides the pictures."""
    return reusing.reuse_key(
        stage="images", image_size=image_size, version=STAGE_VERSION, package=__version__,
        schema=STORE_SCHEMA, layout=layout(image_size, 1)[schema.RGB],
    )  # fmt: skip


def _finish(job: _Job, out_dir: Path, counts: dict, skipped: list[dict]) -> dict:
    """Record the counts and skips on the store, drop the staging arrays -> the stage result."""
    attrs = {"image_size": job.size, "target_stride": TARGET_STRIDE, "max_len": job.max_len}
    job.out.attrs.update({"counts": counts, "skipped": skipped, **attrs})
    shutil.rmtree(job.staging, ignore_errors=True)
    return {
        "path": str(Path(out_dir) / "images.zarr"),
        "splits": {s: counts[s]["images"] for s in counts},
        "counts": counts,
        "skipped": len(skipped),
        "image_size": job.size,
        "max_len": job.max_len,
        "rows": str(Path(out_dir) / reusing.ROWS),
        "reuse": job.rows.reuse,
        "previous": job.before.path.name if job.before else None,
    }
