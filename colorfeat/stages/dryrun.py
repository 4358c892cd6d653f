"""What `colorfeat run --dry-run` prints: each stage's fate, download size, disk needed, time.

Everything here reads (the work dir's stage markers, the store's LATEST, the shipped table of
official COCO archive sizes) and writes nothing. Times are estimates from RATES, measured once on
one machine; the features stage's time follows the trunk's multiply-adds (TRUNK_MACS) and the
CPU cores at hand.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from colorfeat.config import BackboneConfig, PipelineConfig
from colorfeat.constants import COMPILE_MIN_IMAGES
from colorfeat.disk import feature_bytes_needed, free_bytes, human_bytes
from colorfeat.stages import is_features, planned_device, stages_for
from colorfeat.stages.plan import Preflight, feature_chunks, pending_feature_chunks

# Seconds per stage, each measured once on the 2-core x86-64 VM without a GPU:
# - startup, acquire_per_picture, embeddings, priors: wall time of `colorfeat run --source
#   synthetic --limit 600 --image-size 64 --weights none --device cpu`, stage by stage (a shared
#   machine, best of the runs);
# - images_cpu_s_per_picture and features_gmac_per_cpu_s_compiled: `benchmarks/scale.py --sizes
#   4000,8000,16000 --workers 2 --image-size 224 --weights none` on the quiet machine
#   (docs/performance.md): 16,000 COCO-like 640 px JPEGs through the images stage in 47.5 s on 2
#   cores, and resnet101.layer2 over the 10,009 pictures kept (18,194 GMAC) in 143.4 s on 2 cores,
#   fp32 under torch.compile (from COMPILE_MIN_IMAGES pictures on), the trunk's set-up included;
# - features_gmac_per_cpu_s (eager, smaller runs): `colorfeat.trunk.extract.features_stage` (fp32,
#   batch 64) over 65 natural 224 px pictures, resnet101.layer2: 117.9 GMAC in 3.9 s of CPU time.
#   The same stage did resnet18.layer2 over 768 pictures of 64 px (62.2 GMAC) in 1.9 s of CPU
#   time: the cost follows the trunk's multiply-adds (TRUNK_MACS).
#   A run's features take GMAC / (rate x the CPU cores this process may use), counting every
#   picture as kept (an upper bound: on COCO about 63% keep a colour caption); a busy machine is
#   slower; on a GPU the features are not estimated (no GPU measurement yet);
# - download_bytes_per_s: an assumed 50 MB/s link to images.cocodataset.org (not measured).
RATES = {
    "startup": 15.0,  # Prefect, the embedded API, PyTorch
    "acquire_per_picture": 2.5 / 600,  # synthetic generation
    "download_bytes_per_s": 50e6,
    "embeddings": 3.5,
    "images_cpu_s_per_picture": 47.5 * 2 / 16_000,
    "priors": 2.0,
    "features_setup": 3.0,  # building the trunk (docs/performance.md)
    "features_gmac_per_cpu_s": 117.9 / 3.9,
    "features_gmac_per_cpu_s_compiled": 18_194 / (143.4 * 2),
}
# Multiply-adds per input pixel of each trunk up to the end of each layer (convolutions; the same
# for every S that is a multiple of 32), counted with forward hooks on torchvision's models at
# 224 px. A backbone missing here is costed as the largest trunk.
TRUNK_MACS = {
    "resnet18": {"layer1": 11_568, "layer2": 19_760, "layer3": 27_952, "layer4": 36_144},
    "resnet34": {"layer1": 16_176, "layer2": 33_584, "layer3": 60_208, "layer4": 73_008},
    "resnet50": {"layer1": 15_664, "layer2": 36_144, "layer3": 65_328, "layer4": 81_456},
    "resnet101": {"layer1": 15_664, "layer2": 36_144, "layer3": 139_312, "layer4": 155_440},
    "resnet152": {"layer1": 15_664, "layer2": 53_552, "layer3": 213_296, "layer4": 229_424},
}
OFFICIAL_IMAGES = {"coco2014": 82_783 + 40_504, "coco2017": 118_287 + 5_000}
SYNTHETIC_BYTES_PER_PICTURE = 30_000  # a generated JPEG with its caption records


def features_gmac(config: PipelineConfig, n: int) -> float:
    """Billions of multiply-adds the trunks spend on n pictures at the run's image size.

    Each feature set runs its own trunk, in whole batches of whole chunks, zero-padded: n is
    rounded up to them.
    """
    from colorfeat.store.codecs import images_per_chunk

    total = 0.0
    for trunk in config.trunks:
        c, h, w = _feature_shape(trunk)
        chunk = images_per_chunk(c * h * w * 2)  # as colorfeat.trunk.extract chunks float16 maps
        batch = chunk * math.ceil(config.batch_size / chunk)
        # Measured for torchvision's ResNets; another trunk is costed as the deepest ResNet's.
        macs = TRUNK_MACS.get(trunk.backbone, TRUNK_MACS["resnet152"])
        per_pixel = macs.get(trunk.layer, max(macs.values()))
        total += math.ceil(n / batch) * batch * config.image_size**2 * per_pixel / 1e9
    return total


def _feature_shape(trunk: BackboneConfig) -> tuple[int, int, int]:
    """(C, H, W) of one picture's feature map, from a meta-device trace (no weights, no compute)."""
    from colorfeat.trunk.backbone import feature_shape

    return feature_shape(trunk)


def n_pictures(config: PipelineConfig, check: Preflight) -> int | None:
    """How many pictures the run reads (None: unknown before the source is downloaded)."""
    from colorfeat.sources import estimate

    return estimate(config.source, check.source, limit=config.limit, seed=config.seed).pictures


def download_bytes(config: PipelineConfig, check: Preflight) -> int | None:
    """Bytes to download (0 when the source is local or ready; None for an unprobed mirror)."""
    from colorfeat.sources import estimate

    found = estimate(config.source, check.source, limit=config.limit, seed=config.seed)
    return found.download_bytes


def stage_bytes(config: PipelineConfig, n: int) -> dict[str, int]:
    """Bytes of the images and features stage outputs for n pictures.

    Images: uncompressed (an upper bound; the stage also keeps a staging copy while it runs).
    Features: compressed, as the features stage itself asks for them (`feature_bytes_needed`).
    """
    s = config.image_size
    values = sum(math.prod(_feature_shape(trunk)) for trunk in config.trunks)
    return {
        "images": n * (s * s * 3 + (s // 4) ** 2 * 2),
        "features": feature_bytes_needed(n * values),
    }


def report(config: PipelineConfig, check: Preflight) -> list[str]:
    """The dry-run report, one line per fact."""
    n = n_pictures(config, check)
    done = set(check.reused)
    lines = [f"source {config.source}: {n if n is not None else 'an unknown number of'} pictures"]
    for stage in list(stages_for(config))[:-1]:
        fate = "reused" if stage in done else "runs"
        if is_features(stage) and stage not in done and stage in check.stages:
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
    lines.append(_time_line(config, check, n, down))
    return lines


def _time_line(config: PipelineConfig, check: Preflight, n: int | None, down: int | None) -> str:
    if check.nothing_to_do:
        return "estimated time: 0 s (nothing to do)"
    on_gpu = planned_device(config.device) == "cuda" and _features_left(check)
    took = human_duration(_estimate_s(config, check, n, down, on_gpu))
    if on_gpu:
        return f"estimated time: about {took}, plus the features stage on the GPU (not estimated)"
    return f"estimated time: about {took} with {cpu_cores()} CPU cores and no GPU"


def _features_left(check: Preflight) -> bool:
    """Whether a features stage is still to run (all of them, before the source is ready)."""
    names = check.stages or {"features": None}
    return any(is_features(name) and name not in check.reused for name in names)


def cpu_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0))


def human_duration(seconds: float) -> str:
    """53391 -> '14 h 50 min'; 150 -> '2 min 30 s'; 42 -> '42 s'; days from 48 h on."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s" if s < 600 and s % 60 else f"{round(s / 60)} min"
    m = round(s / 60)
    if m < 48 * 60:
        return f"{m // 60} h {m % 60} min" if m % 60 else f"{m // 60} h"
    h = round(s / 3600)
    return f"{h // 24} d {h % 24} h" if h % 24 else f"{h // 24} d"


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


def _estimate_s(
    config: PipelineConfig, check: Preflight, n: int | None, down: int | None, on_gpu: bool
) -> float:
    """Seconds the stages left to run take, leaving out a GPU's features stage when `on_gpu`."""
    done, n = set(check.reused), n or 0
    seconds = RATES["startup"]
    if "acquire" not in done:
        seconds += (down or 0) / RATES["download_bytes_per_s"]
        seconds += n * RATES["acquire_per_picture"] if config.source == "synthetic" else 0
    seconds += 0 if "embeddings" in done else RATES["embeddings"]
    seconds += 0 if "images" in done else n * RATES["images_cpu_s_per_picture"] / cpu_cores()
    seconds += 0 if "priors" in done else RATES["priors"]
    if _features_left(check) and not on_gpu:
        chunks_done, total = pending_feature_chunks(check)
        left = 1 - chunks_done / total if total else 1.0
        compiled = n >= COMPILE_MIN_IMAGES  # as colorfeat.trunk.extract decides on a CPU
        rate = RATES["features_gmac_per_cpu_s_compiled" if compiled else "features_gmac_per_cpu_s"]
        compute = features_gmac(config, n) / (rate * cpu_cores())
        seconds += RATES["features_setup"] + compute * left
    return math.ceil(seconds)
