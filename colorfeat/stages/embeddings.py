"""The embeddings stage: one vector per vocabulary word, `embeddings.npy` float32 (V, D).

`spec="word2vec"` trains gensim Word2Vec on the train captions, reproducible bit for bit across
runs and processes: one worker thread, a fixed seed, and a hash function that does not depend on
PYTHONHASHSEED. Any other spec is a word2vec-format file (text or binary, header optional) loaded
with gensim; vocabulary words it lacks get vectors from a normal seeded by `seed`, scaled like the
file's vectors. Row 0 (`<pad>`) is zero. Adds `vocab/embeddings` to a version.

Cost: EMBEDDINGS_S, the wall time of the stage in `colorfeat run --source synthetic --limit 600
--image-size 64 --weights none --device cpu` (a shared machine, best of the runs).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from colorfeat.constants import EMBEDDING_DIM, PAD_ID
from colorfeat.errors import UserError
from colorfeat.parallel import commit, completed, partial_dir
from colorfeat.stages.context import Context, Cost, Estimate
from colorfeat.stages.vocab import load_vocab, train_sentences
from colorfeat.store import schema
from colorfeat.store.parts import Check, Part, table_from_npy

W2V_WINDOW = 5
W2V_EPOCHS = 5
EMBEDDINGS_S = 3.5


def stable_hash(text: str) -> int:
    """A hash of a string that is the same in every process (unlike the builtin `hash`)."""
    return zlib.crc32(text.encode("utf-8"))


def train_word2vec(sentences: list[list[str]], dim: int = EMBEDDING_DIM, seed: int = 0):
    """gensim KeyedVectors trained deterministically on tokenized sentences."""
    from gensim.models import Word2Vec

    model = Word2Vec(
        sentences=sentences,
        vector_size=dim,
        window=W2V_WINDOW,
        min_count=1,
        workers=1,
        seed=seed,
        hashfxn=stable_hash,
        epochs=W2V_EPOCHS,
    )
    return model.wv


def load_word_vectors(path: str | Path):
    """gensim KeyedVectors from a word2vec-format file: text or binary, with or without header."""
    from gensim.models import KeyedVectors

    path = Path(path)
    if not path.is_file():
        raise UserError(f"--embeddings is neither 'word2vec' nor an existing file: {path}")
    with open(path, "rb") as f:
        head = f.readline().split()
    bad = UserError(f"not a word2vec-format file (text or binary): {path}")
    if not (len(head) == 2 and all(t.isdigit() for t in head)):
        return _load_headerless(path, bad)
    for binary in (False, True):
        try:
            return KeyedVectors.load_word2vec_format(path, binary=binary)
        except (UnicodeDecodeError, ValueError, EOFError):
            continue
    raise bad


def _load_headerless(path: Path, bad: UserError):
    """Text vectors without the `<count> <dim>` line (the GloVe files)."""
    from gensim.models import KeyedVectors

    words, rows = [], []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                parts = line.rstrip().split(" ")
                if len(parts) > 1:
                    words.append(parts[0])
                    rows.append(np.asarray(parts[1:], dtype=np.float32))
    except (UnicodeDecodeError, ValueError):
        raise bad from None
    if not rows or len({len(r) for r in rows}) != 1:
        raise bad
    kv = KeyedVectors(vector_size=len(rows[0]))
    kv.add_vectors(words, np.stack(rows))  # (count, dim)
    return kv


def embedding_matrix(tokens: list[str], vectors, seed: int = 0) -> np.ndarray:
    """float32 (V, D): the vector of each token, seeded-normal rows for missing ones, <pad> zero."""
    dim = vectors.vector_size
    scale = float(np.asarray(vectors.vectors, dtype=np.float64).std()) or 1.0
    rng = np.random.default_rng(seed)
    out = np.zeros((len(tokens), dim), dtype=np.float32)
    for i, token in enumerate(tokens):
        if i == PAD_ID:
            continue
        if token in vectors.key_to_index:
            out[i] = vectors[token]
        else:
            out[i] = rng.normal(0.0, scale, size=dim)
    return out


def embeddings_stage(
    captions: dict,
    vocab: dict,
    out_dir: Path,
    *,
    spec: str = "word2vec",
    dim: int = EMBEDDING_DIM,
    seed: int = 0,
) -> dict:
    """Word vectors of the vocabulary -> {"path": embeddings.npy, "dim", "missing", "spec"}."""
    if done := completed(out_dir):
        return done
    tokens = load_vocab(vocab)
    if spec == "word2vec":
        vectors = train_word2vec(train_sentences(captions), dim, seed)
    else:
        vectors = load_word_vectors(spec)
    matrix = embedding_matrix(tokens, vectors, seed)
    missing = sum(1 for t in tokens[1:] if t not in vectors.key_to_index)
    partial = partial_dir(out_dir)
    np.save(partial / "embeddings.npy", matrix)
    result = {
        "path": str(Path(out_dir) / "embeddings.npy"),
        "dim": int(matrix.shape[1]),
        "missing": missing,
        "spec": spec if spec == "word2vec" else str(Path(spec).resolve()),
    }
    return commit(partial, out_dir, result)


def run(ctx: Context) -> dict:
    """The stage function of the table: `embeddings_stage` on the captions and vocabulary."""
    cfg, got = ctx.config, ctx.inputs
    return embeddings_stage(
        got["captions"], got["vocab"], ctx.out_dir, spec=cfg.embeddings, dim=cfg.embedding_dim,
        seed=cfg.seed,
    )  # fmt: skip


def _check(check: Check) -> None:
    emb, tokens = check.group[schema.VOCAB_EMBEDDINGS], check.group[schema.VOCAB_TOKENS]
    check.need(
        emb.shape[0] == tokens.shape[0],
        f"embeddings {emb.shape} do not match the vocabulary of {tokens.shape[0]} tokens",
    )


def cost(est: Estimate) -> Cost:
    """A few seconds, whatever the data set (word2vec on the train captions)."""
    return Cost(EMBEDDINGS_S)


PART = Part(
    "embeddings", table_from_npy(schema.ARRAYS[schema.VOCAB_EMBEDDINGS]),
    arrays=(schema.ARRAYS[schema.VOCAB_EMBEDDINGS],), check=_check,
)  # fmt: skip
