"""Throughput of the images stage (images/s) with 1 and 2 Dask workers, on synthetic data.

Also prints what the synthetic source produces at the given limit: pictures, captions, the
captions that name a colour, and the images stage's counts. Two workers run as a local cluster of
two processes (each imports the pipeline afresh) and as two threads of this process. The load
average is printed too: on a shared machine the wall-clock numbers are only as good as it is quiet.

    .venv/bin/python benchmarks/images.py [--limit 2000] [--image-size 224] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from colorfeat.constants import PRIORS_DIR
from colorfeat.parallel import executor
from colorfeat.sources import acquire
from colorfeat.stages.captions import captions_stage
from colorfeat.stages.images import images_stage
from colorfeat.stages.vocab import vocab_stage

RUNS = ((1, True, "1 worker (inline)"), (2, True, "2 worker processes"), (2, False, "2 threads"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        src = acquire("synthetic", work, limit=args.limit, seed=0)
        t_gen = time.perf_counter() - t0
        caps = captions_stage(src, PRIORS_DIR / "color_words.txt", work / "captions")
        voc = vocab_stage(caps, work / "vocab")
        c = caps["counts"]
        n = c["images_kept"]
        print(f"synthetic --limit {args.limit}: generated in {t_gen:.1f} s")
        for split in ("train", "val"):
            s = c[split]
            print(
                f"  {split}: {s['images_seen']} pictures, {s['captions_seen']} captions, "
                f"{s['captions_kept']} name a colour, {s['images_kept']} pictures kept"
            )
        print(f"  colour words: {json.dumps(c['colour_words'])}")
        t0 = time.perf_counter()
        with executor(2, processes=True):
            pass
        print(f"local Dask cluster of 2 processes: {time.perf_counter() - t0:.1f} s to start/stop")
        rates = {}
        for workers, processes, label in RUNS:
            best, cpu = float("inf"), 0.0
            for r in range(args.repeat):
                out = work / f"images-{workers}-{processes}-{r}"
                t0, c0 = time.perf_counter(), time.process_time()
                res = images_stage(
                    src,
                    caps,
                    voc,
                    out,
                    image_size=args.image_size,
                    workers=workers,
                    processes=processes,
                )
                if time.perf_counter() - t0 < best:
                    best, cpu = time.perf_counter() - t0, time.process_time() - c0
            rates[label] = n / best
            print(
                f"images stage S={args.image_size}, {label}: {n} images in {best:.2f} s = "
                f"{rates[label]:.0f} images/s (this process's CPU: {1000 * cpu / n:.2f} ms/image)"
            )
        print(f"  counts: {json.dumps(res['counts'])}")
        base = rates[RUNS[0][2]]
        ups = ", ".join(f"{k} {v / base:.2f}x" for k, v in rates.items())
        print(f"speed-up vs 1 worker: {ups}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
