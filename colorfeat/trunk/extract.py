"""The features stage: frozen-trunk feature maps of every stored image, as float16 Zarr arrays.

Writes `out_dir/features.zarr/<split>/<name>` (N, C, H, W) float16 (`colorfeat.trunk.output`)
and returns what it made. The work is a plan of fixed blocks of whole chunks
(`colorfeat.trunk.blocks`), run by the threaded loop of `colorfeat.trunk.pipeline` on one device,
or as Dask tasks on a cluster or a local worker per device (`colorfeat.trunk.cluster`); each
block's chunks are marked done once durable (`colorfeat.trunk.markers`), so a killed run
restarted recomputes only unmarked blocks and ends byte-identical to an uninterrupted run. The
whole output is built in `out_dir.partial` and renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr
from distributed import Client

from colorfeat import reuse as reusing
from colorfeat.config import BackboneConfig
from colorfeat.disk import feature_bytes_needed, require_free
from colorfeat.errors import UserError
from colorfeat.hashing import content_of
from colorfeat.parallel import SUCCESS, commit, write_atomic
from colorfeat.store import schema
from colorfeat.store.codecs import FEATURE_CODEC, images_per_chunk
from colorfeat.trunk.backbone import create_trunk
from colorfeat.trunk.blocks import Block, pending_blocks
from colorfeat.trunk.cluster import Job, cluster_client, cluster_devices, run_tasks, trunk_made_by
from colorfeat.trunk.devices import configure_threads, local_threads, resolve_devices
from colorfeat.trunk.engine import BF16_TOLERANCE, Compute
from colorfeat.trunk.graph import Trunk
from colorfeat.trunk.markers import MARKERS, finish
from colorfeat.trunk.output import FEATURES_GROUP, feature_array, feature_attrs
from colorfeat.trunk.pipeline import extract_blocks
from colorfeat.trunk.provenance import made_by
from colorfeat.trunk.shapes import feature_shape
from colorfeat.trunk.version import FEATURES_VERSION

__all__ = ["BF16_TOLERANCE", "features_stage"]


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
    dask_address: str | None = None,
) -> dict:
    """Extract `backbone` features of every image in `images` into out_dir/features.zarr.

    `precision` is "auto" (see `engine.autocast_dtype`), "bf16" or "fp32". `compile_trunk` runs
    the trunk through torch.compile (default: see `engine.Compute.choose`; `batch_size` is rounded
    up to whole chunks so that every batch has one static shape). `devices` forces an explicit
    device list (a local Dask worker per entry when several); by default it is every CUDA device
    when `device` resolves to cuda, else the one device. `chunk_images` overrides the chunk length
    along N (default: about colorfeat.store.codecs.TARGET_CHUNK_BYTES per chunk). `dask_address`
    runs the work as tasks on that Dask cluster (`colorfeat.trunk.cluster`), on its GPU workers
    when the trunk runs on CUDA ("auto": when any worker offers a GPU).
    """
    out_dir = Path(out_dir)
    done = out_dir / SUCCESS
    if done.exists():
        return json.loads(done.read_text())
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    devices = (
        cluster_devices(dask_address, device) if dask_address else resolve_devices(device, devices)
    )
    partial = out_dir.with_name(out_dir.name + ".partial")
    src = _open_images(images)
    splits = _split_names(images, src)
    c, h, w = feature_shape(backbone)
    chunk_n = chunk_images or images_per_chunk(c * h * w * 2, None)
    n_total = sum(src[schema.split_path(s, schema.RGB)].shape[0] for s in splits)
    run = Compute.choose(devices[0], precision, chunk_n, batch_size, compile_trunk, n_total)
    job = _Extraction(backbone, chunk_n, run, devices, dask_address)
    rows = _rows(images, backbone, run, chunk_n)
    before = reusing.previous(out_dir, rows.reuse) if rows else None
    with job.closing:
        if before is None:
            shapes, extracted = _extract(job, str(images["path"]), src, splits, partial)
            counts = {"extracted": extracted, "reused": 0}
        else:
            shapes, counts = _extract_changed(job, src, splits, partial, rows, before)
    if rows:
        rows.save(partial)
    result = _stage_result(out_dir, job.made_by(before), backbone, run, shapes)
    result.update(counts, previous=before.path.name if before else None)
    return commit(partial, out_dir, result)


@dataclass
class _Extraction:
    """How this stage runs the trunk: what every extraction of it shares. The trunk is built
    when first asked for, here or (on a cluster) by the workers only: a rebuild with no picture
    to extract builds none. The cluster's client is opened when first needed, and closed by
    `closing` (around the whole stage)."""

    backbone: BackboneConfig
    chunk_n: int
    run: Compute
    devices: Sequence[str]
    dask_address: str | None
    closing: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def on_cluster(self) -> bool:
        return bool(self.dask_address) or len(self.devices) > 1

    @functools.cached_property
    def trunk(self) -> Trunk:
        return create_trunk(self.backbone)

    @functools.cached_property
    def client(self) -> Client:
        return self.closing.enter_context(cluster_client(self.dask_address, self.devices))

    @functools.cached_property
    def made(self) -> dict:
        """What the arrays say of the trunk (`colorfeat.trunk.provenance.made_by`)."""
        if self.on_cluster:
            return trunk_made_by(self.client, self.backbone, self.run)
        return made_by(self.trunk, self.backbone, self.run.amp)

    def attrs(self) -> dict:
        return feature_attrs(self.made, self.backbone, self.run)

    def made_by(self, before: reusing.Rows | None) -> dict:
        """What the stage result says of the trunk: from the previous output of the same reuse
        key when this one asked for no trunk (the same trunk, by its key)."""
        if "made" not in self.__dict__ and before is not None:
            done = json.loads((before.path / SUCCESS).read_text())
            return {k: done[k] for k in ("weights", "weights_hash", "trunk")}
        return self.made


def _extract(
    job: _Extraction, src_path: str, src: zarr.Group, splits: Sequence[str], partial: Path
) -> tuple[dict[str, list[int]], int]:
    """Features of every picture of `src` into partial/features.zarr (resuming from its markers);
    -> (each split's array shape, the pictures extracted now)."""
    backbone, run = job.backbone, job.run
    root = zarr.open_group(str(partial / FEATURES_GROUP), mode="a")
    shapes: dict[str, list[int]] = {}
    blocks: list[Block] = []
    for split in splits:
        rgb = src[schema.split_path(split, schema.RGB)]
        arr = feature_array(root, split, rgb, backbone, job.chunk_n, partial, job.attrs())
        shapes[split] = list(arr.shape)
        blocks += pending_blocks(split, arr, run.batch, partial / MARKERS / split)
    pending = sum(b.stop - b.start for b in blocks) * math.prod(feature_shape(backbone))
    require_free(partial, feature_bytes_needed(pending), f"the {backbone.name} features")
    if blocks and job.on_cluster:
        _run_on_cluster(job, src_path, partial, blocks)
    elif blocks:
        configure_threads(job.devices[0], 1)
        extract_blocks(job.trunk, src, root, backbone.name, blocks, run, partial / MARKERS)
    finish(root, partial, splits)
    return shapes, sum(b.stop - b.start for b in blocks)


def _rows(images: dict, backbone: BackboneConfig, run: Compute, chunk_n: int):
    """This output's row record (colorfeat.reuse): the images' rows under the features' reuse key
    (everything a picture's features depend on besides its pixels: the trunk by its config, its
    weights by content as in the stage key); None without image rows."""
    found = reusing.Rows.load(Path(images["path"]).parent) if images.get("reuse") else None
    if found is None:
        return None
    key = reusing.reuse_key(
        stage="features", backbone=backbone.to_dict() | {"weights": content_of(backbone.weights)},
        compute=[run.amp, run.compiled, run.batch, run.device.split(":")[0]], chunk=chunk_n,
        version=FEATURES_VERSION, images=images["reuse"],
    )  # fmt: skip
    return reusing.Rows(key, found.splits)


def _extract_changed(
    job: _Extraction, src: zarr.Group, splits: Sequence[str], partial: Path,
    rows: reusing.Rows, before: reusing.Rows,
) -> tuple[dict[str, list[int]], dict[str, int]]:  # fmt: skip
    """Features of the pictures `before` does not hold, then every split assembled from both
    (colorfeat.reuse.assemble: unchanged chunks hard-linked) -> (shapes, counts).

    The new pictures of every split are extracted together, as one array (`_FRESH`): a few
    pictures of each split fill one padded batch, not one per split. A picture's features do
    not depend on the others in its batch, only on the batch's one shape, which stays the same.
    """
    fresh_dir = partial / "_fresh"
    sources = {
        s: reusing.source_rows(rows.digests(s), before.digests(s) if s in before.splits else [])
        for s in splits
    }
    todo = {s: [r for r, k in enumerate(sources[s]) if k is None] for s in splits}
    extracted, done = 0, fresh_dir / SUCCESS
    if any(todo.values()) and not done.is_file():  # else finished before the stage was stopped
        staged = _stage_fresh(src, fresh_dir / "images.zarr", todo)
        extracted = _extract(job, str(fresh_dir / "images.zarr"), staged, [_FRESH], fresh_dir)[1]
        write_atomic(done, "")
    made_now = fresh_dir / FEATURES_GROUP
    fresh_root = zarr.open_group(str(made_now), mode="r") if made_now.is_dir() else None
    root = zarr.open_group(str(partial / FEATURES_GROUP), mode="a")
    old = zarr.open_group(str(before.path / FEATURES_GROUP), mode="r")
    shapes: dict[str, list[int]] = {}
    counts = {"extracted": extracted, "reused": 0, "chunks_linked": 0, "chunks_written": 0}
    name = job.backbone.name
    computed = fresh_root[_FRESH][name] if any(todo.values()) else None
    offset = 0  # where the split's new pictures start in the fresh array
    for split in splits:
        rgb = src[schema.split_path(split, schema.RGB)]
        previous = old[split][name] if split in before.splits else None
        attrs = dict(previous.attrs) if previous is not None else job.attrs()  # the same trunk's
        arr = feature_array(root, split, rgb, job.backbone, job.chunk_n, partial, attrs)
        shapes[split] = list(arr.shape)
        at = {r: offset + i for i, r in enumerate(todo[split])}
        offset += len(todo[split])

        def fresh(wanted, at=at):
            return reusing.read_rows(computed, [at[r] for r in wanted])

        made = reusing.assemble(arr, 0, arr.shape[0], previous, sources[split], fresh)
        counts["chunks_linked"] += made["linked"]
        counts["chunks_written"] += made["written"]
        counts["reused"] += arr.shape[0] - len(todo[split])
    shutil.rmtree(fresh_dir, ignore_errors=True)
    return shapes, counts


_FRESH = "fresh"  # the one split of the pictures a rebuild extracts (every split's, in order)


def _stage_fresh(src: zarr.Group, path: Path, todo: dict[str, list[int]]) -> zarr.Group:
    """The pictures to extract, every split's in split order, as the one split `_FRESH` of an
    images group of their own (kept when it is complete)."""
    group = zarr.open_group(str(path), mode="a")
    listed = reusing.reuse_key(todo=todo)
    if group.attrs.get("rows") == listed and schema.split_path(_FRESH, schema.RGB) in group:
        return group
    parts = [
        reusing.read_rows(src[schema.split_path(split, schema.RGB)], wanted)
        for split, wanted in todo.items()
        if wanted
    ]
    data = np.concatenate(parts)  # (n, S, S, 3) uint8
    rgb = src[schema.split_path(next(iter(todo)), schema.RGB)]
    chunk = (max(1, min(rgb.chunks[0], len(data))), *data.shape[1:])
    group.create_array(schema.split_path(_FRESH, schema.RGB), data=data, chunks=chunk,
                       overwrite=True)  # fmt: skip
    group.attrs["rows"] = listed
    return group


def _run_on_cluster(job: _Extraction, images: str, partial: Path, blocks: list[Block]) -> None:
    """The blocks as Dask tasks: on the cluster at `dask_address`, or a local one per device."""
    threads = local_threads(job.dask_address, job.devices)
    here = partial.resolve()  # the workers' paths: the same file system, another directory
    features, markers = str(here / FEATURES_GROUP), str(here / MARKERS)
    task = Job(str(Path(images).resolve()), features, markers, job.backbone, job.run, threads)
    run_tasks(job.client, task, blocks)


def _stage_result(
    out_dir: Path, made_by: dict, backbone: BackboneConfig, run: Compute, shapes: dict
) -> dict:
    """The features stage's result: where the arrays are and how they were made (`made_by`:
    the trunk's weights id and hash and its description)."""
    return {
        "path": str(out_dir.resolve() / FEATURES_GROUP),
        "name": backbone.name,
        "backbone": backbone.to_dict(),
        **made_by,
        "shapes": shapes,
        "codec": FEATURE_CODEC,
        "compute": run.describe(),
        "code_version": FEATURES_VERSION,
    }


def _open_images(images: dict) -> zarr.Group:
    path = images.get("path")
    if not path or not Path(path).exists():
        raise UserError(f"images stage output not found: {path}")
    return zarr.open_group(str(path), mode="r")


def _split_names(images: dict, src: zarr.Group) -> list[str]:
    names = list(images.get("splits") or sorted(k for k, _ in src.groups()))
    missing = [s for s in names if schema.split_path(s, schema.RGB) not in src]
    if missing:
        raise UserError(f"images store {images.get('path')} has no rgb array for {missing}")
    return names
