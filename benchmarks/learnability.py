"""Proof that the colorizer learns colour from language, on the synthetic source (CPU).

Builds a store from the synthetic source through the real stages (isoluminant palette: the
grayscale picture carries no hint of any shape's colour), trains the `small` FiLM model and the
`small` no-language baseline on it, colorizes the held-out pictures, and prints

- caption-colour accuracy: each object's mean predicted ab, assigned to the nearest palette colour,
  against the colour its caption names;
- the swap test: the same pictures with another palette colour word in the caption;

for all objects, for single-object pictures and for pictures with several objects (whose caption
binds each colour to its object by place: "a red circle on the left and a blue star on the
right"), with the chance level (1 / palette size). Goals: FiLM >= 90% caption and swap accuracy;
no-language within 15 points of chance. Writes work-dir/learnability.json.

    .venv/bin/python benchmarks/learnability.py --work-dir /tmp/learnability
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from colortrain.config import EMBEDDING_INITS
from colortrain.learnability import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/colortrain-learnability"))
    parser.add_argument("--limit", type=int, default=2000, help="synthetic pictures (train + val)")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--schedule", choices=("cosine", "constant"), default="cosine")
    parser.add_argument("--embedding-init", choices=EMBEDDING_INITS, default=EMBEDDING_INITS[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (0: PyTorch default)")
    parser.add_argument(
        "--models", default="film,nolang", help="comma-separated: film,concat,nolang"
    )
    args = parser.parse_args()
    t0 = time.perf_counter()
    result = run(
        args.work_dir, models=tuple(args.models.split(",")), limit=args.limit,
        image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        schedule=args.schedule, embedding_init=args.embedding_init,
        seed=args.seed, progress=True, threads=args.threads or None,
    )  # fmt: skip
    result["seconds"] = time.perf_counter() - t0
    chance = result["chance"]
    print(f"store: {result['store']}")
    print(f"chance (1 / {round(1 / chance)} palette colours): {100 * chance:.1f}%")
    columns = [
        ("caption all", "caption_accuracy"), ("swap all", "swap_accuracy"),
        ("caption 1-obj", "caption_accuracy_single"), ("swap 1-obj", "swap_accuracy_single"),
        ("caption multi", "caption_accuracy_multi"), ("swap multi", "swap_accuracy_multi"),
    ]  # fmt: skip
    print(f"{'model':8}" + "".join(f"{title:>15}" for title, _ in columns))
    for kind, m in result["models"].items():
        print(f"{kind:8}" + "".join(f"{100 * m[key]:14.1f}%" for _, key in columns))
    for kind, m in result["models"].items():
        gap = 100 * (m["caption_accuracy"] - chance)
        print(f"{kind}: {gap:+.1f} points over chance (all objects)")
    print(f"total {result['seconds']:.0f} s; pictures probed: "
          f"{next(iter(result['models'].values()))['pictures']}")  # fmt: skip
    (args.work_dir / "learnability.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
