"""The colorizer learns colour from language: synthetic source, real stages, CPU, about a minute.

The synthetic palette is isoluminant (equal L* and equal BT.601 luma), so the grayscale features
carry no hint of any shape's colour: only the caption can tell. FiLM must colour >= 90% of the
held-out single-object pictures in the colour their caption names, and follow a swapped colour
word just as well; the no-language baseline must stay within 15 points of chance.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from colortrain.learnability import run


@pytest.mark.slow
def test_film_learns_colour_from_language_and_nolang_does_not(tmp_path: Path) -> None:
    result = run(tmp_path, models=("film", "nolang"), limit=1000, image_size=96, epochs=6)
    film, nolang = result["models"]["film"], result["models"]["nolang"]
    chance = result["chance"]
    summary = {
        k: {m: round(v[m], 3) for m in v if "accuracy" in m} for k, v in result["models"].items()
    }
    assert film["single_object_pictures"] >= 100, summary
    assert film["caption_accuracy_single"] >= 0.90, summary
    assert film["swap_accuracy_single"] >= 0.90, summary
    assert abs(nolang["caption_accuracy_single"] - chance) <= 0.15, summary
    assert abs(nolang["caption_accuracy"] - chance) <= 0.15, summary
    # Language is what makes the difference, on every object too.
    assert film["caption_accuracy"] > nolang["caption_accuracy"] + 0.3, summary
