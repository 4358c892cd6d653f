"""`make demo`'s choice of pictures and captions to recolour."""

from __future__ import annotations

import re

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


def test_the_total_time_and_cpu_minutes_come_after_the_last_step(monkeypatch, capsys, tmp_path):
    import colortrain.learnability
    from flows.cli import demo

    def step(name, result=None):
        return lambda *args, **kwargs: print(name) or result

    monkeypatch.setattr(demo, "build_store", step("store", str(tmp_path / "versions" / "v1")))
    monkeypatch.setattr(demo, "train_and_evaluate", step("fit", tmp_path / "evaluation.json"))
    monkeypatch.setattr(demo, "source_root", step("source", tmp_path))
    monkeypatch.setattr(demo, "colorize_held_out", step("colorize", ([], tmp_path / "sheet")))
    monkeypatch.setattr(colortrain.learnability, "caption_colour_accuracy", step("probe", {}))
    monkeypatch.setattr(demo, "report", step("report: evaluation report written"))
    demo.main(["--out", str(tmp_path)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[:-2] == [
        "store",
        "fit",
        "source",
        "colorize",
        "probe",
        "report: evaluation report written",
    ]
    assert lines[-2] == "" and re.fullmatch(r"== done: \d+ s, \d+\.\d CPU-minutes", lines[-1])
