"""Proof that the colorizer learns colour from language, on the synthetic source (CPU).

For each seed, builds a store from the synthetic source through the real stages (isoluminant
palette: the grayscale picture carries no hint of any shape's colour; features in fp32), trains
the `small` FiLM model and the `small` no-language baseline on it (one thread, deterministic
kernels), colorizes the held-out pictures, and prints

- caption-colour accuracy: each object's mean predicted ab, assigned to the nearest palette colour,
  against the colour its caption names;
- the swap test: the same pictures with another palette colour word in the caption;

for all objects, for single-object pictures and for pictures with several objects (whose caption
binds each colour to its object by place: "a red circle on the left and a blue star on the
right"), with the chance level (1 / palette size); then, over the seeds, the mean, the standard
deviation and the range of each figure. The seed changes the pictures, the word vectors, the
random trunk, the initialisation and the batch order. Writes work-dir/learnability.json.

    .venv/bin/python benchmarks/learnability.py --work-dir /tmp/learnability --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from colortrain.config import EMBEDDING_INITS
from colortrain.learnability import BASELINE_EPOCHS, EPOCHS, IMAGE_SIZE, LIMIT, LR, run

COLUMNS = [
    ("caption all", "caption_accuracy"), ("swap all", "swap_accuracy"),
    ("caption 1-obj", "caption_accuracy_single"), ("swap 1-obj", "swap_accuracy_single"),
    ("caption multi", "caption_accuracy_multi"), ("swap multi", "swap_accuracy_multi"),
]  # fmt: skip


def _row(label: str, values: list[str]) -> str:
    return f"{label:16}" + "".join(f"{v:>15}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/colortrain-learnability"))
    parser.add_argument("--limit", type=int, default=LIMIT, help="synthetic pictures (train + val)")
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--baseline-epochs", type=int, default=BASELINE_EPOCHS, help="nolang")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=LR)
    parser.add_argument("--schedule", choices=("cosine", "constant"), default="cosine")
    parser.add_argument("--embedding-init", choices=EMBEDDING_INITS, default=EMBEDDING_INITS[0])
    parser.add_argument("--seeds", default="0", help="comma-separated, e.g. 0,1,2")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (0: PyTorch default)")
    parser.add_argument(
        "--models", default="film,nolang", help="comma-separated: film,concat,nolang"
    )
    args = parser.parse_args()
    runs: dict[int, dict] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        t0 = time.perf_counter()
        result = run(
            args.work_dir / f"seed-{seed}", models=tuple(args.models.split(",")),
            limit=args.limit, image_size=args.image_size, epochs=args.epochs,
            baseline_epochs=args.baseline_epochs, batch_size=args.batch_size, lr=args.lr,
            schedule=args.schedule, embedding_init=args.embedding_init, seed=seed, progress=True,
            threads=args.threads or None,
        )  # fmt: skip
        result["seconds"] = time.perf_counter() - t0
        runs[seed] = result
        chance = result["chance"]
        print(f"\nseed {seed}: {result['seconds']:.0f} s; store {result['store']}")
        print(_row("model", [title for title, _ in COLUMNS]))
        for kind, m in result["models"].items():
            print(_row(kind, [f"{100 * m[key]:.1f}%" for _, key in COLUMNS]))
    print(f"\nchance (1 / {round(1 / chance)} palette colours): {100 * chance:.1f}%")
    print(f"over seeds {args.seeds}: mean +- standard deviation [min, max]")
    for kind in runs[next(iter(runs))]["models"]:
        print(kind)
        for title, key in COLUMNS:
            v = 100 * np.array([r["models"][kind][key] for r in runs.values()])
            print(f"  {title:14} {v.mean():5.1f}% +- {v.std():.1f} [{v.min():.1f}, {v.max():.1f}]")
    seconds = [r["seconds"] for r in runs.values()]
    print(f"seconds per seed: {', '.join(f'{s:.0f}' for s in seconds)}")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    (args.work_dir / "learnability.json").write_text(json.dumps(runs, indent=2) + "\n")


if __name__ == "__main__":
    main()
