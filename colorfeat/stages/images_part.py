"""The images stage's row: its function (`colorfeat.stages.images.images_stage` on the
context), what it adds to a version (every per-split array: image ids, pictures, targets,
captions; the root attrs `splits` and `skipped`) and what it costs for the dry run.

Cost: IMAGES_CPU_S_PER_PICTURE from `benchmarks/scale.py --sizes 4000,8000,16000 --workers 2
--image-size 224 --weights none` on the quiet 2-core machine (docs/performance.md): 16,000
COCO-like 640 px JPEGs through the images stage in 47.5 s on 2 cores.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import zarr

from colorfeat.errors import UserError
from colorfeat.stages.context import Context, Cost, Estimate
from colorfeat.stages.images import images_stage
from colorfeat.store import schema
from colorfeat.store.parts import Build, Check, Part

IMAGES_CPU_S_PER_PICTURE = 47.5 * 2 / 16_000
ARRAYS = tuple(spec for spec in schema.ARRAYS.values() if spec.per_split and "*" not in spec.path)


def run(ctx: Context) -> dict:
    """The stage function of the table: `images_stage` on the source, captions and vocabulary."""
    cfg, got = ctx.config, ctx.inputs
    return images_stage(
        got["acquire"], got["captions"], got["vocab"], ctx.out_dir, image_size=cfg.image_size,
        max_len=cfg.max_len, workers=cfg.workers, dask_address=cfg.dask_address,
    )  # fmt: skip


def _listed(results: Sequence[dict]) -> dict:
    (result,) = results
    images = Path(result["path"])
    if not (images / "zarr.json").is_file():
        raise UserError(f"images stage output is not a zarr group: {images}")
    group = zarr.open_group(str(images), mode="r")
    splits = list(result.get("splits") or sorted(k for k, _ in group.groups()))
    return {schema.ATTR_SPLITS: splits, "skipped": list(group.attrs.get("skipped", []))}


def _write(build: Build, results: Sequence[dict]) -> None:
    for result in results:
        for split in build.splits:
            build.link(Path(result["path"]) / split, split)


def _check(check: Check) -> None:
    for split in check.splits:
        rgb = check.group[schema.split_path(split, schema.RGB)]
        s = rgb.shape[1]
        check.need(rgb.shape[1:] == (s, s, 3), f"{split}/{schema.RGB} shape {rgb.shape}")
        bins = check.group[schema.split_path(split, schema.AB_BINS)]
        t = schema.target_side(s)
        check.need(bins.shape[1:] == (t, t), f"{split}/{schema.AB_BINS} shape {bins.shape}")


def cost(est: Estimate) -> Cost:
    """Decoding on the CPU cores; uncompressed pictures and targets (an upper bound)."""
    s, n = est.config.image_size, est.pictures
    size = n * (s * s * 3 + schema.target_side(s) ** 2 * 2)
    return Cost(n * IMAGES_CPU_S_PER_PICTURE / est.cores, size, size)


PART = Part("images", _write, arrays=ARRAYS, check=_check, listed=_listed)
