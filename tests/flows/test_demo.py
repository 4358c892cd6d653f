"""`make demo`'s choice of pictures and captions to recolour."""

from __future__ import annotations

from colorfeat.sources import synthetic
from flows.cli.demo import _recolour, pick_held_out


def test_recolour_replaces_colour_words_and_fixes_articles() -> None:
    swap = {"teal": "orange", "orange": "teal"}
    assert (
        _recolour("two shapes: a teal diamond on the left and an orange star on the right", swap)
        == "two shapes: an orange diamond on the left and a teal star on the right"
    )
    assert _recolour("A red square against a dotted pattern.", {"red": "orange"}) == (
        "An orange square against a dotted pattern."
    )
    assert _recolour("The circle on the left is red.", {"red": "blue"}) == (
        "The circle on the left is blue."
    )


def test_picks_one_single_and_one_two_shape_picture_with_changed_captions(tmp_path) -> None:
    synthetic.generate(tmp_path, limit=60, seed=0)
    single, double = pick_held_out(tmp_path)
    truth = {r["id"]: r for r in synthetic.load_ground_truth(tmp_path, "val")["images"]}
    assert len(truth[single["id"]]["objects"]) == 1 and single["file"].is_file()
    objects = truth[double["id"]]["objects"]
    assert len(objects) == 2
    left, right = (o["color"] for o in objects)
    assert double["colours"] == [f"{left}-{right}", f"{right}-{left}"]
    original, swapped = double["captions"]
    assert original.index(left) < original.index(right)  # named left to right
    assert swapped.index(right) < swapped.index(left)  # the colours trade places
    assert single["colours"][0] != single["colours"][1]
