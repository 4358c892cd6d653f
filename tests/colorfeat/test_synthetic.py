"""The synthetic source: isoluminant palette, varied pictures and captions, ground truth, seeds."""

from __future__ import annotations

import hashlib
import json
from itertools import combinations
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from colorfeat.constants import AB_BINS_PER_AXIS, LUMA_601, PRIORS_DIR
from colorfeat.lab import ab_targets, quantize_ab, rgb_to_lab
from colorfeat.sources import synthetic
from colorfeat.stages.captions import colour_words, load_lexicon


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(root, limit=60, seed=5)
    return root


def test_palette_is_isoluminant_in_gamut_and_well_separated():
    assert len(synthetic.PALETTE) >= 6
    assert max(synthetic.gamut_errors().values()) < synthetic.GAMUT_TOLERANCE
    lexicon = load_lexicon(PRIORS_DIR / "color_words.txt")
    bins = {}
    for name, rgb in synthetic.PALETTE.items():
        assert name in lexicon
        lab = rgb_to_lab(np.array(rgb, dtype=np.uint8))
        assert abs(lab[0] - synthetic.PALETTE_L) < 0.5  # one lightness for all
        bins[name] = int(quantize_ab(lab[1:]))
    luma = np.array(list(synthetic.PALETTE.values())) @ np.array(LUMA_601)  # what the model sees
    assert np.ptp(luma) < 2.0
    for (_, a), (_, b) in combinations(bins.items(), 2):
        ia, ib = divmod(a, AB_BINS_PER_AXIS), divmod(b, AB_BINS_PER_AXIS)
        assert max(abs(ia[0] - ib[0]), abs(ia[1] - ib[1])) >= 3  # clearly different ab bins


def test_layout_and_counts(generated):
    assert synthetic.split_sizes(60) == {"train2017": 48, "val2017": 12}
    for split, n in synthetic.split_sizes(60).items():
        doc = json.loads((generated / "annotations" / f"captions_{split}.json").read_text())
        assert len(doc["images"]) == n and len(doc["annotations"]) == 5 * n
        assert len(list((generated / split).glob("*.jpg"))) == n
        gt = synthetic.load_ground_truth(generated, split)
        assert [i["id"] for i in gt["images"]] == [i["id"] for i in doc["images"]]
        assert gt["L"] == synthetic.PALETTE_L
        assert gt["palette"] == {k: list(v) for k, v in synthetic.PALETTE.items()}
    assert synthetic.load_ground_truth(generated, "val")["images"][0]["id"] == 1_000_001


def test_variety(generated):
    images = synthetic.load_ground_truth(generated, "train")["images"]
    objects = [o for im in images for o in im["objects"]]
    assert len({o["shape"] for o in objects}) >= 5
    assert {o["size"] for o in objects} == set(synthetic.SIZES)
    assert any(len(im["objects"]) > 1 for im in images)
    assert len({(im["width"], im["height"]) for im in images}) > 10
    assert len({im["background"] for im in images}) >= 4
    for im in images:  # several objects never share a colour or a shape: captions bind them
        colours = [o["color"] for o in im["objects"]]
        assert len(set(colours)) == len(colours)
        shapes = [o["shape"] for o in im["objects"]]
        assert len(set(shapes)) == len(shapes)


def test_several_objects_stand_in_their_own_columns_left_to_right(generated):
    images = synthetic.load_ground_truth(generated, "train")["images"]
    counts = {n: sum(len(im["objects"]) == n for im in images) for n in (1, 2, 3)}
    assert min(counts.values()) > 0
    for im in images:
        n = len(im["objects"])
        assert [o["position"] for o in im["objects"]] == list(synthetic.POSITIONS[n])
        if n == 1:
            continue
        strip = im["width"] / n
        for i, o in enumerate(im["objects"]):
            xs = np.asarray(o["polygon"])[:, 0]
            assert i * strip <= xs.min() and xs.max() <= (i + 1) * strip  # no overlaps


def test_backgrounds_are_gray_and_their_lightness_varies(generated):
    images = synthetic.load_ground_truth(generated, "train")["images"]
    means = []
    for rec in images[:20]:
        rgb = np.asarray(Image.open(generated / "train2017" / rec["file_name"]))
        covered = np.zeros(rgb.shape[:2], bool)
        for _, m in synthetic.object_masks(rec, max(rgb.shape)):
            covered |= cv2.resize(m.astype(np.uint8), rgb.shape[1::-1]) > 0
        # JPEG ringing reaches up to one 8x8 block from an edge: leave a 7-pixel ring out.
        ring = cv2.dilate(covered.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
        bg = rgb_to_lab(rgb[~ring])  # (P, 3)
        assert np.percentile(np.abs(bg[:, 1:]), 99) < 3  # neutral, up to JPEG ringing
        assert np.abs(bg[:, 0] - synthetic.PALETTE_L).min() > 5  # shapes stay visible
        means.append(bg[:, 0].mean())
        assert bg[:, 0].std() > 0.5 or rec["background"] == "plain"
    assert np.ptp(means) > 30


def test_captions_name_the_colours(generated):
    lexicon = load_lexicon(PRIORS_DIR / "color_words.txt")
    doc = json.loads((generated / "annotations" / "captions_train2017.json").read_text())
    truth = {im["id"]: im for im in synthetic.load_ground_truth(generated, "train")["images"]}
    by_image: dict[int, list[str]] = {}
    for a in doc["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a["caption"])
    templates = set()
    plain = 0
    for image_id, caps in by_image.items():
        colours = {o["color"] for o in truth[image_id]["objects"]}
        assert len(caps) == 5
        assert set(colour_words(caps[0], lexicon)) == colours  # one names every object's colour
        for c in caps:
            assert set(colour_words(c, lexicon)) <= colours  # none names a wrong colour
            plain += not colour_words(c, lexicon)
            templates.add(" ".join(w for w in c.lower().split() if w not in colours)[:12])
    assert plain > 0 and len(templates) >= 8


def test_captions_of_several_objects_name_them_left_to_right_with_their_places(generated):
    lexicon = load_lexicon(PRIORS_DIR / "color_words.txt")
    doc = json.loads((generated / "annotations" / "captions_train2017.json").read_text())
    truth = {im["id"]: im for im in synthetic.load_ground_truth(generated, "train")["images"]}
    checked = 0
    for a in doc["annotations"]:
        objects = truth[a["image_id"]]["objects"]
        named = colour_words(a["caption"], lexicon)
        if len(objects) == 1 or not named:
            continue
        assert named == [o["color"] for o in objects]  # in reading order
        words = a["caption"].lower().replace(".", "").replace(",", "").split()
        for o in objects:  # "... red circle on the left", "the circle on the left is red", ...
            assert o["position"] in words and o["shape"] in words
        checked += 1
    assert checked > 10


def test_object_masks_cover_the_palette_colour(generated):
    palette_bins = {
        k: int(quantize_ab(rgb_to_lab(np.array(v, np.uint8))[1:]))
        for k, v in synthetic.PALETTE.items()
    }
    size = 96
    hits = total = 0
    for rec in synthetic.load_ground_truth(generated, "train")["images"]:
        rgb = np.asarray(Image.open(generated / "train2017" / rec["file_name"]).convert("RGB"))
        small = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
        targets = ab_targets(small)  # (24, 24)
        masks = synthetic.object_masks(rec, size)
        assert len(masks) == len(rec["objects"])
        for colour, mask in masks:
            assert mask.shape == (size, size) and mask.dtype == bool and mask.any()
            inner = mask.reshape(size // 4, 4, size // 4, 4).all(axis=(1, 3))
            inner = cv2.erode(inner.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
            hits += int((targets[inner] == palette_bins[colour]).sum())
            total += int(inner.sum())
    assert total > 100 and hits == total


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_deterministic_by_seed_and_stable_under_limit(tmp_path):
    synthetic.generate(tmp_path / "a", limit=10, seed=1)
    synthetic.generate(tmp_path / "b", limit=10, seed=1)
    synthetic.generate(tmp_path / "c", limit=10, seed=2)
    synthetic.generate(tmp_path / "d", limit=20, seed=1)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    first = (tmp_path / "a" / "train2017" / "000000000001.jpg").read_bytes()
    assert (tmp_path / "d" / "train2017" / "000000000001.jpg").read_bytes() == first
