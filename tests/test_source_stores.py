"""Stores built from shards, a Karpathy file and a caption table of the same data hold the same."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import zarr

from colorfeat.config import BackboneConfig, PipelineConfig
from colorfeat.stages.runner import run_stages
from tests.colorfeat.conftest import colour_picture, jpeg_bytes
from tests.colorfeat.test_source_karpathy import write_karpathy
from tests.colorfeat.test_source_webdataset import shard_bytes

SPLITS = ("train", "train", "train", "val", "test", "train")


def _sources(tmp_path: Path) -> list[str]:
    """The same six pictures and captions as shards, a Karpathy file and a table."""
    folder = tmp_path / "pictures"
    folder.mkdir()
    names = {f"{i}.jpg": f"a red and blue thing number {i}" for i in range(len(SPLITS))}
    for i, name in enumerate(names):
        (folder / name).write_bytes(jpeg_bytes(colour_picture(i, 48, 48)))
    samples = {name[:-4]: ((folder / name).read_bytes(), text) for name, text in names.items()}
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "00000.tar").write_bytes(shard_bytes(samples))
    entries = [
        {"filename": n, "split": s, "sentences": [{"raw": t}], "imgid": i}
        for i, ((n, t), s) in enumerate(zip(names.items(), SPLITS, strict=True))
    ]
    karpathy = write_karpathy(folder, None, entries, [])
    table = folder / "captions.csv"
    rows = "".join(f"{n},{t},{s}\n" for (n, t), s in zip(names.items(), SPLITS, strict=True))
    table.write_text("file_name,caption,split\n" + rows)
    return [str(tmp_path / "shards"), str(karpathy), str(table)]


def _held(version: Path) -> set[tuple[str, tuple[str, ...]]]:
    """(hash of the stored picture, its captions) over every split of a published version."""
    group = zarr.open_group(str(version), mode="r")
    held = set()
    for split in ("train", "val", "test"):
        if split not in group:
            continue
        rgb = group[f"{split}/rgb"][:]  # (N, S, S, 3)
        index = group[f"{split}/captions/image_index"][:]
        text = group[f"{split}/captions/text"][:]
        for row in range(rgb.shape[0]):
            captions = tuple(str(t) for t in text[index == row])
            held.add((hashlib.sha256(np.ascontiguousarray(rgb[row])).hexdigest(), captions))
    return held


def test_the_three_kinds_of_one_data_set_publish_the_same_pictures_and_captions(tmp_path):
    trunk = BackboneConfig(backbone="resnet18", weights="none", image_size=32)
    held, splits = [], []
    for i, source in enumerate(_sources(tmp_path)):
        config = PipelineConfig(
            source=source, store=str(tmp_path / f"store{i}"), work_dir=str(tmp_path / f"w{i}"),
            device="cpu", backbone=trunk, batch_size=8,
        )  # fmt: skip
        version = Path(run_stages(config).version["path"])
        held.append(_held(version))
        splits.append(sorted(zarr.open_group(str(version), mode="r").group_keys()))
    assert held[0] == held[1] == held[2] and len(held[0]) == len(SPLITS)
    assert "test" in splits[1] and "test" in splits[2]  # the files' own splits
