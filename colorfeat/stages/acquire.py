"""The acquire stage: a source made ready as a COCO-layout folder (colorfeat.sources), and what
that costs for the dry run.

Cost: the download at DOWNLOAD_BYTES_PER_S, an assumed 50 MB/s link to images.cocodataset.org
(not measured), and the generation a generated source still needs (from the source's estimate).
"""

from __future__ import annotations

from pathlib import Path

from colorfeat import sources
from colorfeat.stages.context import Context, Cost, Estimate

DOWNLOAD_BYTES_PER_S = 50e6


def run(ctx: Context) -> dict:
    """The source of `ctx.config`, downloaded, generated or found -> {"root", "splits", ...}."""
    cfg = ctx.config
    return sources.acquire(
        cfg.source, Path(cfg.work_dir), limit=cfg.limit, seed=cfg.seed,
        options=cfg.source_options,
    )  # fmt: skip


def cost(est: Estimate) -> Cost:
    """The download (archives, then what they extract to), or the generation of a data set."""
    seconds = est.download_bytes / DOWNLOAD_BYTES_PER_S + est.generate_s
    return Cost(seconds, 2 * est.download_bytes + est.generate_bytes, 0)
