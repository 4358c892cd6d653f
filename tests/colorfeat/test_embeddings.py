"""Embeddings: word2vec reproducible across processes; word2vec-format files, text and binary."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from colorfeat.errors import UserError
from colorfeat.stages.embeddings import embedding_matrix, embeddings_stage, load_word_vectors

CAPTIONS = [
    "a red bus parked by a white house",
    "a blue car on a gray street",
    "a small red bird on a green branch",
    "two white plates on a brown table",
    "a yellow taxi next to a red bus",
]


@pytest.fixture
def stage_inputs(tmp_path):
    doc = {"splits": {"train": [{"image_id": 1, "file": "x", "captions": CAPTIONS}]}}
    (tmp_path / "captions.json").write_text(json.dumps(doc))
    tokens = ["<pad>", "<unk>", "a", "red", "bus", "white", "zzz-not-in-captions"]
    (tmp_path / "vocab.json").write_text(json.dumps(tokens))
    return {"path": str(tmp_path / "captions.json")}, {"path": str(tmp_path / "vocab.json")}


_CHILD = """
import json, sys
from pathlib import Path
from colorfeat.stages.embeddings import embeddings_stage
caps, voc, out = sys.argv[1:4]
print(embeddings_stage({"path": caps}, {"path": voc}, Path(out), dim=32, seed=7)["path"])
"""


def test_word2vec_is_identical_across_processes(stage_inputs, tmp_path):
    caps, voc = stage_inputs
    digests = []
    for i, hashseed in enumerate(["1", "2"]):
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, caps["path"], voc["path"], str(tmp_path / f"e{i}")],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        digest = hashlib.sha256(Path(out.stdout.strip()).read_bytes()).hexdigest()
        digests.append(digest)
    assert digests[0] == digests[1]
    m = np.load(tmp_path / "e0" / "embeddings.npy")
    assert m.shape == (7, 32) and m.dtype == np.float32
    assert not m[0].any() and np.abs(m[1:]).sum(axis=1).min() > 0
    other = embeddings_stage(caps, voc, tmp_path / "seed8", dim=32, seed=8)
    assert not np.array_equal(np.load(other["path"]), m)


def _write_vectors(path, words, vectors, binary):
    from gensim.models import KeyedVectors

    kv = KeyedVectors(vector_size=vectors.shape[1])
    kv.add_vectors(words, vectors)
    kv.save_word2vec_format(str(path), binary=binary)


@pytest.mark.parametrize("binary", [False, True])
def test_vectors_from_a_file(stage_inputs, tmp_path, binary):
    caps, voc = stage_inputs
    vecs = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    path = tmp_path / ("vec.bin" if binary else "vec.txt")
    _write_vectors(path, ["red", "bus", "zebra"], vecs, binary)
    res = embeddings_stage(caps, voc, tmp_path / "e", spec=str(path), seed=1)
    m = np.load(res["path"])
    assert m.shape == (7, 4) and res["dim"] == 4
    np.testing.assert_array_equal(m[3], vecs[0])  # red
    np.testing.assert_array_equal(m[4], vecs[1])  # bus
    assert not m[0].any()
    assert res["missing"] == 4  # <unk>, a, white, zzz-not-in-captions
    again = embeddings_stage(caps, voc, tmp_path / "e2", spec=str(path), seed=1)
    np.testing.assert_array_equal(np.load(again["path"]), m)  # missing rows are seeded


def test_headerless_text_file(tmp_path):
    (tmp_path / "glove.txt").write_text("red 0.1 0.2 0.3\nbus 0.4 0.5 0.6\n")
    kv = load_word_vectors(tmp_path / "glove.txt")
    assert kv.vector_size == 3 and kv.key_to_index.keys() == {"red", "bus"}


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="neither 'word2vec' nor an existing file"):
        load_word_vectors(tmp_path / "nope.txt")
    (tmp_path / "junk.bin").write_bytes(b"2 3\n\xff\xfe\x00garbage")
    with pytest.raises(UserError, match="not a word2vec-format file"):
        load_word_vectors(tmp_path / "junk.bin")


def test_matrix_pad_row_is_zero_and_missing_rows_scaled():
    from gensim.models import KeyedVectors

    kv = KeyedVectors(vector_size=8)
    kv.add_vectors(["a"], np.full((1, 8), 3.0, dtype=np.float32))
    m = embedding_matrix(["<pad>", "<unk>", "a", "b"], kv, seed=0)
    assert not m[0].any() and (m[2] == 3).all() and m[3].std() > 0
