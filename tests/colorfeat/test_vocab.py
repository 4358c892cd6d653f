"""Vocabulary: specials first, then by frequency with alphabetical ties, from train only."""

from __future__ import annotations

import json

import numpy as np

from colorfeat.constants import PAD_TOKEN, UNK_TOKEN
from colorfeat.stages.captions import tokenize
from colorfeat.stages.vocab import build_vocab, encode, load_vocab, vocab_stage


def test_order_specials_and_ties():
    sentences = [tokenize(s) for s in ["a red bus", "a blue bus", "a red car", "zebra"]]
    tokens, counts = build_vocab(sentences)
    assert tokens == [PAD_TOKEN, UNK_TOKEN, "a", "bus", "red", "blue", "car", "zebra"]
    assert counts["a"] == 3


def test_min_count():
    tokens, _ = build_vocab([["a", "b", "a", "c", "b", "a"]], min_count=2)
    assert tokens == [PAD_TOKEN, UNK_TOKEN, "a", "b"]


def test_encode_pads_cuts_and_maps_unknowns():
    index = {w: i for i, w in enumerate([PAD_TOKEN, UNK_TOKEN, "a", "red", "bus"])}
    ids = encode(["a", "red", "tram"], index, 5)
    assert ids.dtype == np.int32 and ids.tolist() == [2, 3, 1, 0, 0]
    assert encode(["a"] * 9, index, 4).tolist() == [2, 2, 2, 2]


def test_stage_uses_train_captions_only(tmp_path):
    doc = {
        "splits": {
            "train": [{"image_id": 1, "file": "t/1.jpg", "captions": ["A red bus.", "red car"]}],
            "val": [{"image_id": 2, "file": "v/2.jpg", "captions": ["a purple unicorn"]}],
        }
    }
    (tmp_path / "captions.json").write_text(json.dumps(doc))
    res = vocab_stage({"path": str(tmp_path / "captions.json")}, tmp_path / "v")
    assert load_vocab(res) == [PAD_TOKEN, UNK_TOKEN, "red", "a", "bus", "car"]
    assert res["size"] == 6
    assert vocab_stage({"path": "/nonexistent"}, tmp_path / "v") == res  # finished: no work
