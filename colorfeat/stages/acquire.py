"""The acquire stage: a source made ready as a COCO-layout folder (colorfeat.sources), and what
that costs for the dry run.

Cost: ACQUIRE_S_PER_PICTURE is the wall time of synthetic generation in `colorfeat run --source
synthetic --limit 600 --image-size 64 --weights none --device cpu` (a shared machine, best of the
runs); DOWNLOAD_BYTES_PER_S an assumed 50 MB/s link to images.cocodataset.org (not measured).
"""

from __future__ import annotations

from pathlib import Path

from colorfeat import sources
from colorfeat.stages.context import Context, Cost, Estimate

ACQUIRE_S_PER_PICTURE = 2.5 / 600  # synthetic generation
DOWNLOAD_BYTES_PER_S = 50e6
SYNTHETIC_BYTES_PER_PICTURE = 30_000  # a generated JPEG with its caption records


def run(ctx: Context) -> dict:
    """The source of `ctx.config`, downloaded, generated or found -> {"root", "splits", ...}."""
    cfg = ctx.config
    return sources.acquire(cfg.source, Path(cfg.work_dir), limit=cfg.limit, seed=cfg.seed)


def cost(est: Estimate) -> Cost:
    """The download (archives, then what they extract to), or the generation of a synthetic set."""
    seconds = est.download_bytes / DOWNLOAD_BYTES_PER_S
    work = 2 * est.download_bytes
    if est.config.source == "synthetic":
        seconds += est.pictures * ACQUIRE_S_PER_PICTURE
        work += est.pictures * SYNTHETIC_BYTES_PER_PICTURE
    return Cost(seconds, work, 0)
