"""The colorizer learns colour from language: synthetic source, real stages, CPU, a few minutes.

The synthetic palette is isoluminant (equal L* and equal BT.601 luma), so the grayscale features
carry no hint of any shape's colour: only the caption can tell. FiLM must colour >= 90% of the
held-out objects in the colour their caption names, on pictures with one object and on pictures
with several (where the caption binds each colour to its object: "a red circle on the left and a
blue star on the right"), and follow a swapped colour word just as well; the no-language baseline
must stay within 15 points of chance.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from colortrain.learnability import run

# 1,600 training pictures for 10 epochs: about 4 minutes on a 2-core CPU (the benchmark trains
# 16 epochs). The timeout leaves room for a machine shared with other jobs.
EPOCHS = 10


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_film_learns_colour_from_language_and_nolang_does_not(tmp_path: Path) -> None:
    result = run(tmp_path, models=("film", "nolang"), limit=2000, image_size=96, epochs=EPOCHS)
    film, nolang = result["models"]["film"], result["models"]["nolang"]
    chance = result["chance"]
    summary = {
        k: {m: round(v[m], 3) for m in v if "accuracy" in m} for k, v in result["models"].items()
    }
    assert film["objects"] >= 300 and film["single_object_pictures"] >= 50, summary
    assert film["caption_accuracy"] >= 0.90, summary
    assert film["swap_accuracy"] >= 0.90, summary
    assert film["caption_accuracy_multi"] >= 0.85, summary  # several colours bound by place
    assert abs(nolang["caption_accuracy"] - chance) <= 0.15, summary
    assert abs(nolang["swap_accuracy"] - chance) <= 0.15, summary
