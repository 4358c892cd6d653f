"""What `colorfeat run --dry-run` prints: each stage's fate, download size, disk needed, time.

Everything here reads (the work dir's stage markers, the store's LATEST, the shipped table of
official COCO archive sizes) and writes nothing. Each stage's cost (seconds, work-dir bytes,
bytes it adds to a version) is declared by its row of the stage table (`Stage.cost`, with the
measurements behind it beside the stage); this module adds them up for the stages left to run.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from colorfeat.config import PipelineConfig
from colorfeat.disk import free_bytes, human_bytes
from colorfeat.sources import SourceEstimate
from colorfeat.stages import Cost, Estimate, is_features, planned_device, stages_for
from colorfeat.stages.plan import Preflight, feature_chunks

STARTUP_S = 15.0  # Prefect, the embedded API, PyTorch (measured as the stages' rates were)


def source_estimate(config: PipelineConfig, check: Preflight) -> SourceEstimate:
    """What the source's kind says it costs: pictures (None: unknown before it is downloaded),
    download bytes (None: an unprobed mirror), and the time and disk generating it takes."""
    from colorfeat.sources import estimate

    return estimate(
        config.source, check.source, limit=config.limit, seed=config.seed,
        options=config.source_options,
    )  # fmt: skip


def estimate(config: PipelineConfig, found: SourceEstimate) -> Estimate:
    """What the stages' costs are computed from."""
    device = planned_device(config.device)
    n, down = found.pictures or 0, found.download_bytes or 0
    return Estimate(config, n, down, cpu_cores(), device, found.generate_s, found.generate_bytes)


def costs(config: PipelineConfig, est: Estimate) -> dict[str, Cost]:
    """Every stage's cost, by row name (a row without a cost counts nothing)."""
    return {
        name: stage.cost(est) if stage.cost is not None else Cost()
        for name, stage in stages_for(config).items()
    }


def stage_bytes(config: PipelineConfig, n: int) -> dict[str, int]:
    """Work-dir bytes of each stage's output for n pictures (those that write any)."""
    est = Estimate(config, n, 0, cpu_cores(), planned_device(config.device))
    return {name: c.work_bytes for name, c in costs(config, est).items() if c.work_bytes}


def report(config: PipelineConfig, check: Preflight) -> list[str]:
    """The dry-run report, one line per fact."""
    source = source_estimate(config, check)
    n = source.pictures
    done = set(check.reused)
    lines = [f"source {config.source}: {n if n is not None else 'an unknown number of'} pictures"]
    for stage in list(stages_for(config))[:-1]:
        fate = "reused" if stage in done else "runs"
        if stage not in done and stage in check.stages:
            chunks_done, total = feature_chunks(check.stages[stage])
            fate += f" ({chunks_done} of {total} chunks done)" if total else ""
        key = f" ({check.stages[stage].key})" if stage in check.stages else ""
        lines.append(f"  {stage:<10} {fate}{key}")
    publish = "reuses published version" if check.published else "publishes version"
    lines.append(f"  {'publish':<10} {publish} {check.version or '(id known after acquire)'}")
    lines.append(f"LATEST now: {check.latest or '(none)'}")
    down = source.download_bytes
    lines.append(f"download: {human_bytes(down) if down is not None else 'unknown (mirror)'}")
    lines += _weights_lines(config, done)
    est = estimate(config, source)
    found = costs(config, est)
    lines += _disk_lines(config, check, found)
    lines.append(_time_line(config, check, est, found))
    return lines


def _weights_lines(config: PipelineConfig, done: set[str]) -> list[str]:
    """Where each trunk still to run gets its weights: cached, a download, a file, the problem."""
    from colorfeat.trunk.weights import describe_weights

    names = list(stages_for(config))
    rows = [name for name in names if is_features(name)]
    return [
        f"weights {trunk.name}: {describe_weights(trunk)}"
        for name, trunk in zip(rows, config.trunks, strict=True)
        if name not in done
    ]


def _left(check: Preflight, costs: dict[str, Cost]) -> dict[str, float]:
    """The share of each stage still to run: 1, less the chunks an unfinished one has done."""
    done = set(check.reused)
    left = {}
    for name in costs:
        if name in done:
            continue
        plan = check.stages.get(name)
        chunks_done, total = feature_chunks(plan) if plan is not None else (0, 0)
        left[name] = 1 - chunks_done / total if total else 1.0
    return left


def _time_line(config: PipelineConfig, check: Preflight, est: Estimate, found: dict) -> str:
    if check.nothing_to_do:
        return "estimated time: 0 s (nothing to do)"
    left = _left(check, found)
    on_gpu = est.device == "cuda"
    gpu = sorted({stages_for(config)[n].key_name for n in left if found[n].on_device})
    seconds = STARTUP_S + sum(
        found[n].seconds * share for n, share in left.items() if not (on_gpu and found[n].on_device)
    )
    took = human_duration(math.ceil(seconds))
    if on_gpu and gpu:
        stages = ", ".join(gpu)
        return f"estimated time: about {took}, plus the {stages} stage on the GPU (not estimated)"
    return f"estimated time: about {took} with {est.cores} CPU cores and no GPU"


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


def _disk_lines(config: PipelineConfig, check: Preflight, found: dict[str, Cost]) -> list[str]:
    work = sum(found[name].work_bytes for name in _left(check, found))
    linked = "://" not in config.store and _device(config.store) == _device(config.work_dir)
    store = 0
    if not check.published:
        store = sum(c.store_bytes for c in found.values() if not (c.linked and linked))
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


def _device(path: str) -> int:
    probe = Path(path).resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe.stat().st_dev
