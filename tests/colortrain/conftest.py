"""A tiny feature store written directly with zarr in the published layout (DESIGN.md).

Images are gray textured squares with one coloured disc; captions name the disc's colour. Features
come from a seeded random ResNet-18 trunk on the grayscale image, exactly as the extractor
preprocesses it, so colorize can be checked against the store.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from colorfeat.config import BackboneConfig, PipelineConfig
from colorfeat.constants import PAD_TOKEN, UNK_TOKEN
from colorfeat.lab import ab_grid, ab_targets
from colorfeat.priors import bin_counts, prior_from_counts, rebalance_weights
from colorfeat.stages.captions import load_lexicon
from colorfeat.trunk.backbone import create_trunk, describe_trunk, prepare_input
from colorfeat.trunk.provenance import weights_attrs

COLOURS = {"red": (200, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 200)}
TEMPLATES = ("a {c} disc", "the {c} ball on a gray floor", "a small {c} circle")
IMAGE_SIZE = 32
BACKBONE = BackboneConfig(backbone="resnet18", layer="layer2", weights="none", image_size=32)


def _images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    s = IMAGE_SIZE
    yy, xx = np.mgrid[0:s, 0:s]
    rgb = np.empty((n, s, s, 3), np.uint8)
    names = []
    for i in range(n):
        base = rng.integers(60, 190)
        img = np.clip(base + rng.normal(0, 12, (s, s)), 0, 255)[..., None].repeat(3, 2)
        cy, cx, r = rng.integers(10, 22), rng.integers(10, 22), rng.integers(5, 9)
        name = list(COLOURS)[rng.integers(len(COLOURS))]
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = COLOURS[name]
        rgb[i] = img.astype(np.uint8)
        names.append(name)
    return rgb, names


def _strings(group: zarr.Group, name: str, values: list[str]) -> None:
    """A variable-length UTF-8 string array, as the store writes them."""
    arr = group.create_array(name, shape=(len(values),), dtype=str)
    arr[:] = np.array(values, dtype=object)


def grayscale_batch(rgb: np.ndarray) -> torch.Tensor:
    """The extractor's input: BT.601 luma, replicated to 3 channels, ImageNet-normalised."""
    return prepare_input(torch.from_numpy(rgb))


def write_store(root: Path, n_train: int = 24, n_val: int = 8, chunk: int = 8) -> Path:
    """Write ROOT/versions/0123456789abcdef and ROOT/LATEST; return the root."""
    rng = np.random.default_rng(0)
    vocab = [PAD_TOKEN, UNK_TOKEN, "a", "the", "disc", "ball", "on", "gray", "floor", "small"]
    vocab += ["circle", *COLOURS]
    index = {w: i for i, w in enumerate(vocab)}
    trunk = create_trunk(BACKBONE)
    version = root / "versions" / "0123456789abcdef"
    g = zarr.open_group(str(version), mode="w")
    g.attrs.update(
        {
            "schema": "colorfeat/1",
            "source": {"name": "tiny"},
            "counts": {},
            "splits": ["train", "val"],
            "features": [BACKBONE.name],
            "lexicon": {"words": sorted(load_lexicon(PipelineConfig().lexicon))},
        }
    )
    _strings(g, "vocab/tokens", vocab)
    emb = rng.normal(0, 0.3, (len(vocab), 16)).astype(np.float32)
    emb[0] = 0
    g.create_array("vocab/embeddings", data=emb)
    g.create_array("lab/grid", data=ab_grid())
    all_bins = {}
    for split, n in (("train", n_train), ("val", n_val)):
        rgb, names = _images(n, rng)
        bins = np.stack([ab_targets(im) for im in rgb])  # (N, S/4, S/4)
        all_bins[split] = bins
        with torch.inference_mode():
            feats = trunk(grayscale_batch(rgb)).numpy().astype(np.float16)  # (N, 128, S/8, S/8)
        g.create_array(f"{split}/image_id", data=np.arange(n, dtype=np.int64) + 1000)
        g.create_array(f"{split}/rgb", data=rgb, chunks=(chunk, IMAGE_SIZE, IMAGE_SIZE, 3))
        g.create_array(f"{split}/ab_bins", data=bins, chunks=(chunk, *bins.shape[1:]))
        fa = g.create_array(
            f"{split}/features/{BACKBONE.name}", data=feats, chunks=(chunk, *feats.shape[1:])
        )
        fa.attrs.update(
            {
                "backbone": BACKBONE.backbone,
                "layer": BACKBONE.layer,
                "input_size": IMAGE_SIZE,
                **weights_attrs(trunk),
                "trunk": describe_trunk(trunk, BACKBONE, "fp32"),
                "grayscale": "BT.601 luma replicated to 3 channels",
                "normalization": "imagenet",
                "dtype": "float16",
            }
        )
        texts, image_index = [], []
        for i, name in enumerate(names):
            for t in rng.choice(len(TEMPLATES), size=2, replace=False):
                texts.append(TEMPLATES[t].format(c=name))
                image_index.append(i)
        tokens = np.zeros((len(texts), 8), np.int32)
        lengths = np.zeros(len(texts), np.int32)
        for k, text in enumerate(texts):
            ids = [index.get(w, 1) for w in text.split()]
            tokens[k, : len(ids)] = ids
            lengths[k] = len(ids)
        g.create_array(f"{split}/captions/image_index", data=np.array(image_index, np.int32))
        _strings(g, f"{split}/captions/text", texts)
        g.create_array(f"{split}/captions/tokens", data=tokens)
        g.create_array(f"{split}/captions/length", data=lengths)
    prior = prior_from_counts(bin_counts(all_bins["train"]))
    g.create_array("lab/prior", data=prior)
    w = g.create_array("lab/weights", data=rebalance_weights(prior).astype(np.float32))
    w.attrs.update({"alpha": 1.0, "gamma": 0.5})
    (root / "LATEST").write_text("0123456789abcdef\n")
    return root


@pytest.fixture(scope="session", autouse=True)
def one_cpu_thread():
    """These models are tiny: one intra-op thread is as fast, and immune to a busy machine."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store root with one version: 24 train and 8 val images, chunks of 8 rows."""
    return write_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="session")
def tiny_version(tiny_store: Path) -> Path:
    return tiny_store / "versions" / "0123456789abcdef"


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small FiLM model trained for two epochs on the tiny store."""
    from colortrain.config import TrainConfig
    from colortrain.train import fit

    out = tmp_path_factory.mktemp("tiny-run")
    config = TrainConfig(
        store=str(tiny_store), out=str(out), preset="small", epochs=2, batch_size=8,
        progress=False, tensorboard=False, sample_images=2,
    )  # fmt: skip
    return Path(fit(config)["checkpoint"])


@pytest.fixture()
def run_copy(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    """A copy of the tiny run directory: what evaluate writes into it stays in one test."""
    run = tmp_path / "run"
    shutil.copytree(tiny_checkpoint.parent, run)
    return run / tiny_checkpoint.name


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def picture(h: int = 50, w: int = 70, seed: int = 0) -> np.ndarray:
    """A noisy (h, w, 3) uint8 picture with a red rectangle in its upper left quarter."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(40, 200, (h, w, 3)).astype(np.uint8)
    rgb[h // 4 : h // 2, w // 4 : w // 2] = (200, 40, 40)
    return rgb


def error_line(result) -> str:
    """The one `colortrain: error:` line a failed command printed on stderr."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("colortrain: error: ")
    return lines[0]
