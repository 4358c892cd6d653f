"""The whole rebuild at growing sizes: per-stage time, throughput, peak memory and bytes written.

Each size runs in a fresh subprocess on a COCO-like source (`benchmarks.cocolike`, generated once
per size under --work, not timed), running the stage table with the library's runner
(`colorfeat.stages.runner.run_stages`: the stages the Prefect flow wraps, in its order, without the
orchestration). Per stage: wall seconds, items/s, peak RSS of the process while the
stage ran (sampled every 10 ms, children included), bytes the stage wrote per picture. Then the
growth exponents between consecutive sizes (log ratio: 1 = linear time, 0 = flat memory) and an
extrapolation to COCO 2014 (82,783 + 40,504 pictures). `--captions-full` also runs the caption
stages on the annotations of a full-size COCO 2014 (617k captions, no pictures).

    python benchmarks/scale.py --sizes 1000,4000,16000 --captions-full [--weights none]
        [--image-size 224] [--workers 2] [--device cpu] [--work /tmp/scale] [--out docs/scale]
        [--format webdataset|karpathy|table] [--until images]

`--format` also runs each size from the same pictures and captions written as that kind of
source (`cocolike.write_format`, not timed) and compares, in the same run, the images stage's
pictures/s from it and from the COCO-layout directory, with the time its acquire stage takes
(reading the shards or the file and linking the pictures into the COCO layout).

writes OUT.md (the tables) and OUT.png (log-log plot of time and peak memory per stage).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

COCO2014_PICTURES = 82_783 + 40_504
# The 16-core, one-GPU machine of the extrapolation (assumptions, stated in the output).
TARGET_CORES = 16
TARGET_GPU_PICTURES_S = 5000.0  # resnet101.layer2 bf16 at 224 px: the goal, not yet measured
PARALLEL_STAGES = ("images", "priors")  # Dask threads, GIL released: assumed linear in cores
REPO = Path(__file__).resolve().parent.parent


class PeakRSS:
    """Peak resident memory (this process and its children) since the last `reset`."""

    def __init__(self, every_s: float = 0.01) -> None:
        import psutil

        self.proc, self.every_s, self.peak = psutil.Process(), every_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def rss(self) -> int:
        total = self.proc.memory_info().rss
        for child in self.proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except Exception:  # noqa: BLE001 - a child that just ended
                pass
        return total

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, self.rss())

    def reset(self) -> None:
        self.peak = self.rss()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def du(path: Path) -> int:
    path = Path(path)
    files = [path] if path.is_file() else (p for p in path.rglob("*") if p.is_file())
    return sum(p.stat().st_size for p in files)


def stage_items(name: str, results: dict[str, dict]) -> int:
    """What a stage's items/s counts, from its result and its inputs' (by stage name)."""
    if name == "acquire":  # a converted source: the pictures it wrote into the COCO layout
        return sum(results["acquire"]["counts"]["pictures"].values())
    if name == "captions":
        counts = results["captions"]["counts"]
        return sum(counts[s]["captions_seen"] for s in ("train", "val", "test") if s in counts)
    if name in ("vocab", "embeddings"):
        return results["captions"]["counts"]["train"]["captions_kept"]
    if name == "priors":
        return results["images"]["splits"]["train"]
    return sum(results["images"]["splits"].values())  # images, features, publish: every picture


def run_stages(spec: dict) -> dict:
    """In this process: the stage table on spec['source'], each stage timed -> {stage: figures}."""
    from colorfeat.config import BackboneConfig, PipelineConfig
    from colorfeat.stages import Context, Stage
    from colorfeat.stages.runner import call_stage
    from colorfeat.stages.runner import run_stages as run_table

    cfg = PipelineConfig(
        source=spec["source"],
        store=spec["store"],
        work_dir=spec["work"],
        backbone=BackboneConfig(weights=spec["weights"], image_size=spec["image_size"]),
        device=spec["device"],
        workers=spec["workers"],
        batch_size=spec["batch_size"],
    )
    out: dict[str, dict] = {}
    rss = PeakRSS()

    def timed(stage: Stage, context: Context) -> dict:
        rss.reset()
        t = time.perf_counter()
        result = call_stage(stage, context)
        seconds = time.perf_counter() - t
        if stage.name == "acquire" and spec.get("format", "coco") == "coco":
            return result  # the source's identity, like its generation, is not timed
        out[stage.name] = {
            "seconds": seconds,
            "items": stage_items(stage.name, {**context.inputs, stage.name: result}),
            "peak_rss": rss.peak,
            "bytes": du(context.out_dir) if context.out_dir else 0,
        }
        print(f"# {spec['label']}: {stage.name} {seconds:.1f} s", file=sys.stderr, flush=True)
        return result

    try:
        run_table(cfg, timed, until="embeddings" if spec["captions_only"] else spec.get("until"))
    finally:
        rss.close()
    return out


def measure(args: argparse.Namespace, n: int, captions_only: bool, fmt: str = "coco") -> dict:
    """Generate (once) a source of n pictures, then run the stages on it in a fresh process."""
    import cocolike  # beside this script

    label = f"{n}-captions-only" if captions_only else str(n)
    base = Path(args.work) / label
    source = base / "source"
    n_val = round(n * cocolike.COCO2014["val2014"] / COCO2014_PICTURES)
    if not (source / "annotations" / "captions_val2014.json").exists():
        t = time.perf_counter()
        cocolike.generate(
            source,
            n_train=n - n_val,
            n_val=n_val,
            seed=0,
            pictures=not captions_only,
            workers=args.workers,
        )
        print(f"# generated {label} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    work, store = base / f"work-{fmt}", base / f"store-{fmt}"
    if fmt != "coco":
        label, source = f"{label}-{fmt}", cocolike.write_format(source, fmt)
    for stale in (work, store):
        subprocess.run(["rm", "-rf", str(stale)], check=True)
    spec = {
        "label": label,
        "format": fmt,
        "source": str(source),
        "work": str(work),
        "store": str(store),
        "weights": args.weights,
        "image_size": args.image_size,
        "device": args.device,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "captions_only": captions_only,
        "until": args.until,
    }
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        env=env,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return {"n": n, "stages": json.loads(proc.stdout.strip().splitlines()[-1])}


def exponent(a: float, b: float, na: int, nb: int) -> float:
    return math.log(b / a) / math.log(nb / na) if a > 0 and b > 0 and nb != na else float("nan")


def tables(runs: list[dict], captions_full: dict | None, args: argparse.Namespace) -> str:
    """The markdown report: per-stage figures, growth exponents, extrapolation to COCO 2014."""
    lines = [
        "| pictures | stage | wall s | items/s | peak RSS MB | bytes written / picture |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for run in runs + ([captions_full] if captions_full else []):
        for stage, f in run["stages"].items():
            rate = f["items"] / f["seconds"] if f["seconds"] else float("nan")
            lines.append(
                f"| {run['n']:,}{' (captions only)' if run is captions_full else ''} | "
                f"{stage} | {f['seconds']:.2f} | {rate:,.0f} | {f['peak_rss'] / 2**20:,.0f}"
                f" | {f['bytes'] / run['n']:,.0f} |"
            )
    pairs = list(zip(runs, runs[1:], strict=False))
    head = " | ".join(f"{a['n']:,} -> {b['n']:,}" for a, b in pairs)
    lines += [
        "",
        "Growth exponents between sizes, time / peak memory (1 = linear, 0 = flat):",
        "",
        f"| stage | {head} |",
        "|---|" + "---:|" * len(pairs),
    ]
    for stage in runs[0]["stages"]:
        cells = []
        for a, b in pairs:
            fa, fb = a["stages"][stage], b["stages"][stage]
            t = exponent(fa["seconds"], fb["seconds"], a["n"], b["n"])
            m = exponent(fa["peak_rss"], fb["peak_rss"], a["n"], b["n"])
            cells.append(f"{t:.2f} / {m:.2f}")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines + ["", *extrapolation(runs, captions_full, args)])


def coco_seconds(stage: str, runs: list[dict]) -> float:
    """A stage's seconds at COCO 2014 size: the largest run plus the marginal cost per picture
    between the two largest runs (fixed costs counted once), or linear from one run."""
    last = runs[-1]
    t, n = last["stages"][stage]["seconds"], last["n"]
    per_picture = t / n
    if len(runs) > 1:
        prev = runs[-2]
        marginal = (t - prev["stages"][stage]["seconds"]) / (n - prev["n"])
        per_picture = marginal if marginal > 0 else per_picture
    return t + (COCO2014_PICTURES - n) * per_picture


def extrapolation(runs: list[dict], captions_full: dict | None, args: argparse.Namespace) -> list:
    """Seconds per stage for COCO 2014: here (`coco_seconds`, or the full-size caption run) and
    on a TARGET_CORES-core machine with one GPU (assumptions listed)."""
    last = runs[-1]
    cores = min(args.workers, os.cpu_count() or 1)
    lines = [
        f"Extrapolation to COCO 2014 ({COCO2014_PICTURES:,} pictures): the {last['n']:,}-picture "
        "run plus the marginal seconds per picture between the two largest runs"
        + (", caption stages as measured at full size" if captions_full else "")
        + ":",
        "",
        f"| stage | this machine ({cores} workers) | {TARGET_CORES} cores + 1 GPU |",
        "|---|---:|---:|",
    ]
    total_here = total_there = 0.0
    for stage in last["stages"]:
        if captions_full and stage in captions_full["stages"]:
            here = captions_full["stages"][stage]["seconds"]
        else:
            here = coco_seconds(stage, runs)
        there = here
        if stage in PARALLEL_STAGES:
            there = here * cores / TARGET_CORES
        elif stage == "features":
            there = COCO2014_PICTURES / TARGET_GPU_PICTURES_S
        total_here, total_there = total_here + here, total_there + there
        lines.append(f"| {stage} | {_hms(here)} | {_hms(there)} |")
    lines += [
        f"| **total** | **{_hms(total_here)}** | **{_hms(total_there)}** |",
        "",
        f"Assumptions for the {TARGET_CORES}-core machine: {', '.join(PARALLEL_STAGES)} "
        f"scale linearly from {cores} to {TARGET_CORES} Dask threads; features run at "
        f"{TARGET_GPU_PICTURES_S:,.0f} pictures/s on the GPU (the goal; not measured); the "
        "other stages are single-threaded and run at this machine's speed per core.",
    ]
    return lines


def _hms(seconds: float) -> str:
    h, rest = divmod(int(round(seconds)), 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.5))
    sizes = [r["n"] for r in runs]
    for stage in runs[0]["stages"]:
        ax_t.plot(sizes, [r["stages"][stage]["seconds"] for r in runs], "o-", label=stage)
        ax_m.plot(sizes, [r["stages"][stage]["peak_rss"] / 2**20 for r in runs], "o-", label=stage)
    ax_t.plot(
        sizes,
        [runs[0]["stages"]["images"]["seconds"] * n / sizes[0] for n in sizes],
        "k:",
        label="linear",
    )
    for ax, what in ((ax_t, "wall seconds"), (ax_m, "peak RSS (MB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("pictures")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=8)
    fig.suptitle("colorfeat rebuild: time and memory per stage against size")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def format_table(runs: list[dict], other: list[dict], fmt: str) -> str:
    """The images stage from the COCO-layout directory against from `fmt`, same pictures."""
    lines = [
        f"| pictures | images stage from a COCO directory | from {fmt} | {fmt} acquire |",
        "|---:|---:|---:|---:|",
    ]
    for coco, conv in zip(runs, other, strict=True):
        a, b = coco["stages"]["images"], conv["stages"]["images"]
        acquire = conv["stages"]["acquire"]["seconds"]
        lines.append(
            f"| {coco['n']:,} | {a['items'] / a['seconds']:.0f} pictures/s "
            f"| {b['items'] / b['seconds']:.0f} pictures/s | {acquire:.1f} s |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,4000,16000", help="pictures per run, comma-separated")
    p.add_argument("--captions-full", action="store_true", help="caption stages on 617k captions")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--weights", default="none")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--work", default="/tmp/colorfeat-scale")
    p.add_argument("--out", default=str(REPO / "docs" / "scale"), help="writes OUT.md and OUT.png")
    p.add_argument("--format", default="coco", help="also from webdataset, karpathy or table")
    p.add_argument("--until", default=None, help="stop after this stage (e.g. images)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(run_stages(json.loads(args.child))))
        return
    runs = [measure(args, int(n), captions_only=False) for n in args.sizes.split(",")]
    full = measure(args, COCO2014_PICTURES, captions_only=True) if args.captions_full else None
    cmd = "python benchmarks/scale.py " + " ".join(sys.argv[1:])
    report = f"`{cmd}` on {os.cpu_count()} CPUs\n\n" + tables(runs, full, args) + "\n"
    if args.format != "coco":
        other = [measure(args, int(n), False, args.format) for n in args.sizes.split(",")]
        report += "\n" + format_table(runs, other, args.format) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".md").write_text(report)
    plot(runs, Path(args.out + ".png"))
    Path(args.out + ".json").write_text(json.dumps({"runs": runs, "captions_full": full}))
    print(report)


if __name__ == "__main__":
    main()
