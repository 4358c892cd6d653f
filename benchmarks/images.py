"""Throughput of the images stage (images/s) with 1 and 2 Dask workers, on synthetic data.

Also prints what the synthetic source produces at the given limit: pictures, captions, the
captions that name a colour, and the images stage's counts.

    .venv/bin/python benchmarks/images.py [--limit 2000] [--image-size 224] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from colorfeat.captions import captions_stage
from colorfeat.constants import PRIORS_DIR
from colorfeat.images import images_stage
from colorfeat.parallel import executor
from colorfeat.sources import acquire
from colorfeat.vocab import vocab_stage


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
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
        with executor(2):
            pass
        t_cluster = time.perf_counter() - t0
        print(f"local Dask cluster of 2 processes: {t_cluster:.1f} s to start and stop")
        rates = {}
        for workers in (1, 2):
            best = float("inf")
            for r in range(args.repeat):
                out = work / f"images-{workers}-{r}"
                t0 = time.perf_counter()
                res = images_stage(src, caps, voc, out, image_size=args.image_size, workers=workers)
                best = min(best, time.perf_counter() - t0)
            rates[workers] = n / best
            extra = ""
            if workers > 1:
                extra = f"; {n / max(best - t_cluster, 1e-9):.0f} images/s without cluster start"
            print(
                f"images stage S={args.image_size}, {workers} worker(s): {n} images in "
                f"{best:.2f} s = {rates[workers]:.0f} images/s{extra}"
            )
        print(f"  counts: {json.dumps(res['counts'])}")
        print(f"speed-up 2 vs 1 worker: {rates[2] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
