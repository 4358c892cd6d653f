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

import json
from collections.abc import Sequence
from pathlib import Path

import zarr

from colorfeat.config import BackboneConfig
from colorfeat.disk import feature_bytes_needed, require_free
from colorfeat.errors import UserError
from colorfeat.parallel import SUCCESS, commit
from colorfeat.store import schema
from colorfeat.store.codecs import FEATURE_CODEC, images_per_chunk
from colorfeat.trunk.backbone import create_trunk
from colorfeat.trunk.blocks import Block, pending_blocks
from colorfeat.trunk.cluster import Job, cluster_client, cluster_devices, run_tasks
from colorfeat.trunk.devices import configure_threads, local_threads, resolve_devices
from colorfeat.trunk.engine import BF16_TOLERANCE, Compute
from colorfeat.trunk.graph import Trunk
from colorfeat.trunk.markers import MARKERS, finish
from colorfeat.trunk.output import FEATURES_GROUP, feature_array
from colorfeat.trunk.pipeline import extract_blocks
from colorfeat.trunk.provenance import describe_trunk
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
    trunk = create_trunk(backbone)
    src = _open_images(images)
    splits = _split_names(images, src)
    c, h, w = feature_shape(backbone)
    chunk_n = chunk_images or images_per_chunk(c * h * w * 2, None)
    n_total = sum(src[schema.split_path(s, schema.RGB)].shape[0] for s in splits)
    run = Compute.choose(devices[0], precision, chunk_n, batch_size, compile_trunk, n_total)
    root = zarr.open_group(str(partial / FEATURES_GROUP), mode="a")
    shapes: dict[str, list[int]] = {}
    blocks: list[Block] = []
    for split in splits:
        arr = feature_array(
            root,
            split,
            src[schema.split_path(split, schema.RGB)],
            trunk,
            backbone,
            chunk_n,
            run,
            partial,
        )
        shapes[split] = list(arr.shape)
        blocks += pending_blocks(split, arr, run.batch, partial / MARKERS / split)
    pending = sum(b.stop - b.start for b in blocks) * c * h * w  # float16 values to store
    require_free(partial, feature_bytes_needed(pending), f"the {backbone.name} features")
    if blocks and (dask_address or len(devices) > 1):
        _run_on_cluster(images, backbone, partial, blocks, run, devices, dask_address)
    elif blocks:
        configure_threads(devices[0], 1)
        extract_blocks(trunk, src, root, backbone.name, blocks, run, partial / MARKERS)
    finish(root, partial, splits)
    result = _stage_result(out_dir, trunk, backbone, run, shapes)
    return commit(partial, out_dir, result)


def _run_on_cluster(
    images: dict, backbone: BackboneConfig, partial: Path, blocks: list[Block], run: Compute,
    devices: Sequence[str], dask_address: str | None,
) -> None:  # fmt: skip
    """The blocks as Dask tasks: on the cluster at `dask_address`, or a local one per device."""
    threads = local_threads(dask_address, devices)
    here = partial.resolve()  # the workers' paths: the same file system, another directory
    features, markers = str(here / FEATURES_GROUP), str(here / MARKERS)
    job = Job(str(Path(images["path"]).resolve()), features, markers, backbone, run, threads)
    with cluster_client(dask_address, devices) as client:
        run_tasks(client, job, blocks)


def _stage_result(
    out_dir: Path, trunk: Trunk, backbone: BackboneConfig, run: Compute, shapes: dict
) -> dict:
    """The features stage's result: where the arrays are and how they were made."""
    return {
        "path": str(out_dir.resolve() / FEATURES_GROUP),
        "name": backbone.name,
        "backbone": backbone.to_dict(),
        "weights": trunk.weights_id,
        "weights_hash": trunk.weights_hash,
        "trunk": describe_trunk(trunk, backbone, run.amp),
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
