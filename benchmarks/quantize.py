"""Quantisation speed: the vectorised `quantize_ab` against the original per-label loop.

The original rounded each ab pair to a multiple of 10 and searched the grid for the matching row,
one label at a time. Both run here on the same targets (a batch of 56 x 56 ab maps); the script
checks that they agree and prints labels/s of each and the ratio.

    .venv/bin/python benchmarks/quantize.py [--images 8]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from colorfeat.lab import ab_grid, quantize_ab


def original_quantize(ab: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """A faithful re-implementation of the original per-label lookup."""
    rounded = np.round(ab, -1)
    out = np.zeros(len(ab), dtype=np.int64)
    for i, point in enumerate(rounded):
        hit = np.where((grid == point).all(axis=1))[0]
        out[i] = hit[0] if len(hit) else 0
    return out


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="56 x 56 target maps to quantise")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    ab = rng.normal(0, 30, size=(args.images * 56 * 56, 2)).clip(-120, 120)  # (P, 2)
    grid = ab_grid().astype(np.int64)

    fast = quantize_ab(ab)
    slow = original_quantize(ab, grid)
    if not np.array_equal(fast, slow):
        raise SystemExit("the two implementations disagree")

    t_fast = best_of(lambda: quantize_ab(ab), repeats=5)
    t_slow = best_of(lambda: original_quantize(ab, grid), repeats=1)
    n = len(ab)
    print(f"labels            {n:,}")
    print(f"original loop     {n / t_slow:14,.0f} labels/s")
    print(f"vectorised        {n / t_fast:14,.0f} labels/s")
    print(f"ratio             {t_slow / t_fast:14,.1f}x")


if __name__ == "__main__":
    main()
