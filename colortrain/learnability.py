"""Does a checkpoint colour what the caption says? Measured on the synthetic source.

The synthetic palette is isoluminant, so a grayscale picture carries no hint of its shapes'
colours. For each held-out picture of the store we colorize the store's image from one of its
captions (through the checkpoint alone: trunk, colorizer, vocabulary), average the predicted ab
over each object's pixels, and call the nearest palette colour (in ab) the object's predicted
colour.

- caption-colour accuracy: predicted colour == the colour the caption names for that object;
- swap test: the first object's colour word is replaced by a palette colour absent from the
  picture; the object must come out in the new colour.

Chance is 1 / len(PALETTE). Results are given for all objects, for single-object pictures and
for the objects of pictures with several (where the caption must bind each colour to its object).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from colorfeat.config import BackboneConfig, PipelineConfig
from colorfeat.lab import rgb_to_lab
from colorfeat.sources.synthetic import PALETTE, load_ground_truth, object_masks
from colorfeat.stages.captions import tokenize
from colorfeat.store import open_store, schema
from colortrain.colorize import Colorist
from colortrain.config import EMBEDDING_INITS
from colortrain.data import CaptionIndex

PALETTE_NAMES = list(PALETTE)
VAL_BATCHES = 4  # per-epoch validation batches during training; the probe covers the whole split
# FiLM's budget on 800 training pictures at S = 64, and the no-language baseline's, which has no
# way to tell colours apart whatever its budget (README "Does it learn?": figures over seeds).
EPOCHS, BASELINE_EPOCHS = 14, 3
LIMIT, IMAGE_SIZE, LR = 1000, 64, 6e-3  # pictures (train + val), picture side, Adam's peak rate


def build_synthetic_store(
    work_dir: str | Path,
    *,
    limit: int = 1000,
    image_size: int = 64,
    seed: int = 0,
    embedding_dim: int = 300,
) -> tuple[str, str]:
    """Run the stage table on the synthetic source -> (store version path, source root).

    The plain local runner (colorfeat.stages.runner) with ResNet-101 layer2, seeded random
    weights, the store at work_dir/store. Stages are idempotent: a second call reuses everything.
    """
    from colorfeat.stages.runner import run_stages

    work = Path(work_dir)
    # fp32, not "auto": the probe's trunk runs in fp32. Eager, not compiled: inductor's generated
    # kernels differ by CPU, and at these sizes compiling costs more than it saves.
    pipeline = PipelineConfig(
        source="synthetic", store=str(work / "store"), work_dir=str(work), limit=limit,
        backbone=BackboneConfig(weights="none", image_size=image_size, seed=seed), device="cpu",
        precision="fp32", compile_trunk=False, embedding_dim=embedding_dim, seed=seed,
    )  # fmt: skip
    run = run_stages(pipeline)
    return run.version["path"], run.results["acquire"]["root"]


def palette_ab() -> np.ndarray:
    """(P, 2) ab of the palette colours, in PALETTE order."""
    rgb = np.array([PALETTE[n] for n in PALETTE_NAMES], dtype=np.uint8)
    return rgb_to_lab(rgb)[:, 1:]


def nearest_colour(ab: np.ndarray, table: np.ndarray) -> str:
    """The palette colour nearest to one ab point."""
    return PALETTE_NAMES[int(np.argmin(((table - ab) ** 2).sum(axis=1)))]


def _swap_colour(present: set[str], row: int) -> str:
    """A palette colour not in the picture, chosen by the row so every colour is used."""
    absent = [c for c in PALETTE_NAMES if c not in present]
    return absent[row % len(absent)]


@dataclass(frozen=True)
class _Probe:
    """One held-out picture of the probe: what its caption names, and its swapped caption."""

    row: int
    single: bool  # one shape in the picture
    named: list[tuple[str, np.ndarray]]  # (colour, mask) of each shape the caption names
    words: list[str]
    swap_mask: np.ndarray  # the shape whose colour word is swapped
    new: str  # the colour it is swapped to
    swapped: list[str]


def caption_colour_accuracy(
    checkpoint: str | Path,
    store: str,
    source_root: str | Path,
    *,
    split: str = "val",
    limit: int | None = None,
    device: str = "cpu",
    batch_size: int = 64,
) -> dict[str, Any]:
    """Caption-colour and swap-test accuracies of a checkpoint on a synthetic store split."""
    colorist = Colorist.from_checkpoint(checkpoint, device)
    version = open_store(store)
    ids = version.array(split, schema.IMAGE_ID)[:]
    n = len(ids) if limit is None else min(limit, len(ids))
    rgb_all = version.array(split, schema.RGB)[:n]  # (n, S, S, 3)
    probes = _probes(version, split, source_root, ids, n, int(rgb_all.shape[1]))
    hits = _score(colorist, probes, rgb_all, batch_size)
    return {
        "caption_accuracy": _mean(hits["all"]),
        "caption_accuracy_single": _mean(hits["single"]),
        "swap_accuracy": _mean(hits["swap_all"]),
        "swap_accuracy_single": _mean(hits["swap_single"]),
        "caption_accuracy_multi": _mean(hits["multi"]),
        "swap_accuracy_multi": _mean(hits["swap_multi"]),
        "objects": len(hits["all"]),
        "pictures": len(probes),
        "single_object_pictures": len(hits["single"]),
        "chance": 1.0 / len(PALETTE_NAMES),
    }


def _probes(version, split: str, source_root, ids: np.ndarray, n: int, size: int) -> list[_Probe]:
    """One probe per picture whose first caption names a colour of one of its shapes."""
    truth = {r["id"]: r for r in load_ground_truth(source_root, split)["images"]}
    texts = version.array(split, schema.CAPTION_TEXT)[:]
    index = CaptionIndex.build(version.array(split, schema.CAPTION_IMAGE_INDEX)[:], len(ids))
    probes = []
    for row in range(n):
        record = truth[int(ids[row])]
        masks = [(c, m) for c, m in object_masks(record, size) if m.any()]
        words = tokenize(str(texts[index.rows[index.offsets[row]]]))
        named = [(c, m) for c, m in masks if c in words]
        if not named:  # a caption that does not name the colours tests nothing
            continue
        old, swap_mask = named[0]
        new = _swap_colour({c for c, _ in masks}, row)
        swapped = [new if w == old else w for w in words]
        single = len(record["objects"]) == 1
        probes.append(_Probe(row, single, named, words, swap_mask, new, swapped))
    return probes


def _score(colorist: Colorist, probes: list[_Probe], rgb_all: np.ndarray, batch_size: int):
    """Per shape, whether its mean predicted ab is nearest the caption's colour (and swapped)."""
    table = palette_ab()
    size = int(rgb_all.shape[1])
    hits: dict[str, list[bool]] = {
        k: [] for k in ("all", "single", "multi", "swap_all", "swap_single", "swap_multi")
    }
    for lo in range(0, len(probes), batch_size):
        chunk = probes[lo : lo + batch_size]
        gray = np.stack([colorist.gray(rgb_all[p.row]) for p in chunk])  # (B, S, S)
        normal = _predict(colorist, gray, [p.words for p in chunk], size)
        swapped = _predict(colorist, gray, [p.swapped for p in chunk], size)
        for p, ab, ab_swap in zip(chunk, normal, swapped, strict=True):
            for colour, mask in p.named:
                ok = nearest_colour(ab[mask].mean(axis=0), table) == colour
                hits["all"].append(ok)
                hits["single" if p.single else "multi"].append(ok)
            ok = nearest_colour(ab_swap[p.swap_mask].mean(axis=0), table) == p.new
            hits["swap_all"].append(ok)
            hits["swap_single" if p.single else "swap_multi"].append(ok)
    return hits


def _predict(colorist: Colorist, gray: np.ndarray, captions: list[list[str]], size: int):
    """Predicted ab (B, S, S, 2) for luma (B, S, S) and tokenized captions."""
    encoded = [colorist.encode(" ".join(words))[0][0] for words in captions]
    lengths = torch.tensor([len(t) for t in encoded])
    tokens = torch.nn.utils.rnn.pad_sequence(encoded, batch_first=True)  # (B, T), 0 = <pad>
    return colorist.predict_ab_batch(gray, tokens, lengths, (size, size))[0]


def _mean(values: list[bool]) -> float:
    return float(np.mean(values)) if values else float("nan")


@contextmanager
def deterministic_cpu(threads: int | None = 1) -> Iterator[None]:
    """Fixed intra-op threads and deterministic kernels for a block; both restored after.

    One thread fixes the order of every reduction, so a run repeats exactly on one machine. The
    `small` model is too small to gain from several threads, and on a busy 2-core machine
    OpenMP's spinning threads made training 5x slower (46 vs 245 samples/s measured).
    """
    saved_threads = torch.get_num_threads()
    saved_mode = torch.are_deterministic_algorithms_enabled()
    if threads is not None:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved_mode)
        torch.set_num_threads(saved_threads)


def run(
    work_dir: str | Path,
    *,
    models: tuple[str, ...] = ("film", "nolang"),
    limit: int = LIMIT,
    image_size: int = IMAGE_SIZE,
    epochs: int = EPOCHS,
    baseline_epochs: int = BASELINE_EPOCHS,
    batch_size: int = 16,
    lr: float = LR,
    schedule: str = "cosine",
    embedding_init: str = EMBEDDING_INITS[0],
    seed: int = 0,
    progress: bool = False,
    threads: int | None = 1,
) -> dict[str, Any]:
    """Build the synthetic store, train each `small` model on it, and probe each checkpoint.

    `nolang` trains for `baseline_epochs`, the other models for `epochs`. Everything runs in
    fp32 under `deterministic_cpu(threads)` (None: PyTorch's default thread count). Per epoch,
    validation covers VAL_BATCHES batches and no sample sheets or TensorBoard logs are written:
    only the probe's figures are reported.
    """
    from colortrain.config import TrainConfig
    from colortrain.train import fit

    work = Path(work_dir)
    results: dict[str, Any] = {"models": {}, "chance": 1.0 / len(PALETTE_NAMES)}
    with deterministic_cpu(threads):
        store, source_root = build_synthetic_store(
            work, limit=limit, image_size=image_size, seed=seed
        )
        results["store"] = store
        for kind in models:
            out = work / "runs" / kind
            budget = baseline_epochs if kind == "nolang" else epochs
            config = TrainConfig(
                store=store, out=str(out), model=kind, preset="small", epochs=budget,
                batch_size=batch_size, lr=lr, schedule=schedule, seed=seed, in_memory=True,
                resume=True, progress=progress, embedding_init=embedding_init, device="cpu",
                val_batches=VAL_BATCHES, sample_images=0, tensorboard=False,
            )  # fmt: skip
            trained = fit(config)
            probe = caption_colour_accuracy(trained["checkpoint"], store, source_root)
            results["models"][kind] = {
                **probe, "run": str(out), "epochs": budget, "val": trained["metrics"]
            }  # fmt: skip
    return results
