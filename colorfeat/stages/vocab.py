"""The vocabulary stage: word ids from the train captions.

Writes `vocab.json`, the JSON list of tokens: index 0 is `<pad>`, 1 is `<unk>`, then every train
word seen at least `min_count` times, most frequent first, ties broken alphabetically; and
`counts.json` = {"counts": {word: n}, "min_count": int}. Adds `vocab/tokens` to a version.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from colorfeat.constants import PAD_ID, PAD_TOKEN, UNK_ID, UNK_TOKEN
from colorfeat.parallel import commit, completed, partial_dir
from colorfeat.stages.captions import load_captions, tokenize
from colorfeat.stages.context import Context
from colorfeat.store import schema
from colorfeat.store.parts import Build, Check, Part


def build_vocab(sentences: Iterable[list[str]], min_count: int = 1) -> tuple[list[str], Counter]:
    """(tokens with the specials first, word counts) of tokenized sentences."""
    counts: Counter[str] = Counter()
    for tokens in sentences:
        counts.update(tokens)
    words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    specials = [PAD_TOKEN, UNK_TOKEN]
    assert specials.index(PAD_TOKEN) == PAD_ID and specials.index(UNK_TOKEN) == UNK_ID
    return specials + words, counts


def encode(tokens: list[str], index: dict[str, int], max_len: int) -> np.ndarray:
    """int32 (max_len,) ids of tokens, unknown words as <unk>, cut at max_len, padded with 0."""
    ids = np.full(max_len, PAD_ID, dtype=np.int32)
    cut = [index.get(t, UNK_ID) for t in tokens[:max_len]]
    ids[: len(cut)] = cut
    return ids


def train_sentences(captions: dict) -> list[list[str]]:
    """Tokenized train captions of a captions stage result, in stored order."""
    doc = load_captions(captions)
    return [tokenize(c) for img in doc["splits"].get("train", []) for c in img["captions"]]


def vocab_stage(captions: dict, out_dir: Path, *, min_count: int = 1) -> dict:
    """Vocabulary of the train captions -> {"path": vocab.json, "size": V}."""
    if done := completed(out_dir):
        return done
    tokens, counts = build_vocab(train_sentences(captions), min_count)
    partial = partial_dir(out_dir)
    (partial / "vocab.json").write_text(json.dumps(tokens))
    doc = {"counts": dict(sorted(counts.items())), "min_count": min_count}
    (partial / "counts.json").write_text(json.dumps(doc))
    result = {"path": str(Path(out_dir) / "vocab.json"), "size": len(tokens)}
    return commit(partial, out_dir, result)


def load_vocab(vocab: dict) -> list[str]:
    """The token list a vocab stage wrote."""
    return json.loads(Path(vocab["path"]).read_text())


def run(ctx: Context) -> dict:
    """The stage function of the table: `vocab_stage` on the captions."""
    return vocab_stage(ctx.inputs["captions"], ctx.out_dir, min_count=ctx.config.min_count)


def _write(build: Build, results: list[dict]) -> None:
    for result in results:
        build.table(schema.ARRAYS[schema.VOCAB_TOKENS], np.asarray(load_vocab(result), dtype=str))


def _check(check: Check) -> None:
    head = [str(t) for t in check.group[schema.VOCAB_TOKENS][:2]]
    check.need(head == [PAD_TOKEN, UNK_TOKEN], f"vocab must start with {PAD_TOKEN}, {UNK_TOKEN}")


PART = Part("vocab", _write, arrays=(schema.ARRAYS[schema.VOCAB_TOKENS],), check=_check)
