"""What `colorfeat run --dry-run` prints: each stage's fate, download size, disk needed, time.

Everything here reads (the work dir's stage markers, the store's LATEST, the shipped table of
official COCO archive sizes) and writes nothing. Times are estimates from RATES, measured once.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from colorfeat.config import PipelineConfig
from colorfeat.disk import free_bytes, human_bytes
from flows.plan import STAGES, Preflight, feature_chunks

# Seconds per stage on the machine below: fixed + per million input pixels (images, features at
# the run's --image-size) or per picture (synthetic generation). Measured with `colorfeat run
# --source synthetic --limit 600 --image-size 64 --weights none --device cpu` (resnet18.layer2)
# on a shared 2-core x86-64 VM without a GPU; a GPU extracts features 20-50x faster.
RATES_MACHINE = "shared 2-core x86-64 CPU VM, no GPU"
RATES = {
    "startup": 15.0,  # Prefect, the embedded API, PyTorch
    "acquire_per_picture": 2.5 / 600,  # synthetic generation
    "download_bytes_per_s": 50e6,  # an assumed 50 MB/s link to images.cocodataset.org
    "embeddings": 3.5,
    "images_per_mpixel": 1.5 / (600 * 64 * 64 / 1e6),
    "priors": 2.0,
    "features_per_mpixel": 19.5 / (600 * 64 * 64 / 1e6),
}
OFFICIAL_IMAGES = {"coco2014": 82_783 + 40_504, "coco2017": 118_287 + 5_000}
SYNTHETIC_BYTES_PER_PICTURE = 30_000  # a generated JPEG with its caption records


def n_pictures(config: PipelineConfig, check: Preflight) -> int | None:
    """How many pictures the run reads (None: unknown before the source is downloaded)."""
    from colorfeat.synthetic import DEFAULT_LIMIT

    if config.source == "synthetic":
        return config.limit or DEFAULT_LIMIT
    known = OFFICIAL_IMAGES.get(config.source)
    if check.source is not None:
        root = Path(check.source["root"])
        known = sum(_count_files(root / split) for split in check.source["splits"])
    return min(known, config.limit) if known and config.limit else known or config.limit


def _count_files(path: Path) -> int:
    if not path.is_dir():
        return 0
    with os.scandir(path) as entries:
        return sum(1 for e in entries if e.is_file())


def download_bytes(config: PipelineConfig, check: Preflight) -> int | None:
    """Bytes to download (0 when the source is local or ready; None for an unprobed mirror)."""
    from colorfeat.download import official_checksums
    from colorfeat.sources import OFFICIAL

    if check.source is not None or config.source == "synthetic":
        return 0
    if config.source in OFFICIAL:
        year = OFFICIAL[config.source]
        names = (f"train{year}.zip", f"val{year}.zip", f"annotations_trainval{year}.zip")
        table = official_checksums()
        return sum(table[name].size or 0 for name in names)
    return None if config.source.startswith(("http://", "https://")) else 0


def stage_bytes(config: PipelineConfig, n: int) -> dict[str, int]:
    """Uncompressed bytes of the images and features stage outputs for n pictures (upper bound)."""
    from colorfeat.backbone import feature_shape  # a meta-device trace: no weights, no compute

    s = config.image_size
    c, h, w = feature_shape(config.backbone)
    return {
        "images": n * (s * s * 3 + (s // 4) ** 2 * 2),
        "features": n * c * h * w * 2,  # float16
    }


def report(config: PipelineConfig, check: Preflight) -> list[str]:
    """The dry-run report, one line per fact."""
    n = n_pictures(config, check)
    done = set(check.reused)
    lines = [f"source {config.source}: {n if n is not None else 'an unknown number of'} pictures"]
    for stage in STAGES[:-1]:
        fate = "reused" if stage in done else "runs"
        if stage == "features" and stage not in done and stage in check.stages:
            chunks_done, total = feature_chunks(check.stages[stage])
            fate += f" ({chunks_done} of {total} chunks done)" if total else ""
        key = f" ({check.stages[stage].key})" if stage in check.stages else ""
        lines.append(f"  {stage:<10} {fate}{key}")
    publish = "reuses published version" if check.published else "publishes version"
    lines.append(f"  {'publish':<10} {publish} {check.version or '(id known after acquire)'}")
    lines.append(f"LATEST now: {check.latest or '(none)'}")
    down = download_bytes(config, check)
    lines.append(f"download: {human_bytes(down) if down is not None else 'unknown (mirror)'}")
    lines += _disk_lines(config, check, n, down)
    lines.append(f"estimated time: {_estimate_s(config, check, n, down):.0f} s on {RATES_MACHINE}")
    return lines


def _disk_lines(
    config: PipelineConfig, check: Preflight, n: int | None, down: int | None
) -> list[str]:
    done = set(check.reused)
    sizes = stage_bytes(config, n or 0)
    work = sum(size for stage, size in sizes.items() if stage not in done)
    if "acquire" not in done:
        work += 2 * (down or 0)  # archives, then what they extract to
        work += SYNTHETIC_BYTES_PER_PICTURE * (n or 0) if config.source == "synthetic" else 0
    store = 0 if check.published else _store_copy_bytes(config, sum(sizes.values()))
    lines = []
    for what, path, need in (("work dir", config.work_dir, work), ("store", config.store, store)):
        if "://" in str(path):
            lines.append(f"disk {what} {path}: needs {human_bytes(need)} (free space not known)")
            continue
        free = free_bytes(path)
        verdict = "ok" if need <= free else "NOT ENOUGH"
        lines.append(
            f"disk {what} {path}: needs {human_bytes(need)}, {human_bytes(free)} free: {verdict}"
        )
    return lines


def _store_copy_bytes(config: PipelineConfig, total: int) -> int:
    """0 where publishing hardlinks the stage outputs (same local file system), else `total`."""
    if "://" in config.store:
        return total
    return 0 if _device(config.store) == _device(config.work_dir) else total


def _device(path: str) -> int:
    probe = Path(path).resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe.stat().st_dev


def _estimate_s(config: PipelineConfig, check: Preflight, n: int | None, down: int | None) -> float:
    if check.nothing_to_do:
        return 0.0
    done, n = set(check.reused), n or 0
    mpixels = n * config.image_size**2 / 1e6
    seconds = RATES["startup"]
    if "acquire" not in done:
        seconds += (down or 0) / RATES["download_bytes_per_s"]
        seconds += n * RATES["acquire_per_picture"] if config.source == "synthetic" else 0
    seconds += 0 if "embeddings" in done else RATES["embeddings"]
    seconds += 0 if "images" in done else mpixels * RATES["images_per_mpixel"]
    seconds += 0 if "priors" in done else RATES["priors"]
    if "features" not in done:
        left = 1.0
        if "features" in check.stages:
            chunks_done, total = feature_chunks(check.stages["features"])
            left = 1 - chunks_done / total if total else 1.0
        seconds += mpixels * RATES["features_per_mpixel"] * left
    return math.ceil(seconds)
