"""Stores built from shards, a Karpathy file and a caption table of the same data hold the same."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr

from colorfeat.config import BackboneConfig, PipelineConfig
from colorfeat.errors import UserError
from colorfeat.stages.runner import run_stages
from tests.colorfeat.conftest import colour_picture, jpeg_bytes
from tests.colorfeat.test_source_karpathy import write_karpathy
from tests.colorfeat.test_source_webdataset import shard_bytes

SPLITS = ("train", "train", "train", "val", "test", "train")
ODD = {"image_column": "Picture", "caption_column": "Said", "split_column": "Part"}


def _sources(tmp_path: Path) -> list[str]:
    """The same six pictures and captions as shards, a Karpathy file, a table, and a Parquet
    table with odd column names whose paths start in the pictures' folder (ODD)."""
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
    odd = tmp_path / "odd.parquet"
    columns = [list(names), list(names.values()), list(SPLITS)]
    pq.write_table(pa.table(dict(zip(ODD.values(), columns, strict=True))), odd)
    return [str(tmp_path / "shards"), str(karpathy), str(table), str(odd)]


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
    kinds = ("webdataset", "karpathy", "table", "table")
    for i, (source, kind) in enumerate(zip(_sources(tmp_path), kinds, strict=True)):
        odd = {**ODD, "image_root": str(tmp_path / "pictures")} if i == 3 else {}
        config = PipelineConfig(
            source=source, store=str(tmp_path / f"store{i}"), work_dir=str(tmp_path / f"w{i}"),
            device="cpu", backbone=trunk, batch_size=8, **odd,
        )  # fmt: skip
        run = run_stages(config)
        version = Path(run.version["path"])
        held.append(_held(version))
        splits.append(sorted(zarr.open_group(str(version), mode="r").group_keys()))
        _shows_its_source(config, version, kind, run.results["acquire"]["identity"])
    assert held[0] == held[1] == held[2] == held[3] and len(held[0]) == len(SPLITS)
    assert "test" in splits[1] and "test" in splits[2] == splits[3]  # the files' own splits


def _shows_its_source(config: PipelineConfig, version: Path, kind: str, identity: str) -> None:
    """`store info` names the source's kind and identity, which the version id does not hash."""
    from colorfeat.stages.plan import preflight
    from colorfeat.store import describe_version, open_store, render_info

    info = describe_version(open_store(str(version)))
    given = config.source_options.given()
    source = {"spec": config.source, "kind": kind, "identity": identity}
    assert info["source"] == ({**source, "options": given} if given else source)
    line = f"source    {kind} {config.source} (identity {identity})"
    line += "".join(f", --{k.replace('_', '-')} {v}" for k, v in sorted(given.items()))
    assert line in render_info(info).splitlines()
    assert preflight(config).version == version.name  # planned from the stage keys alone


def test_shards_with_no_val_fraction_make_a_train_only_store_that_fit_trains_on(tmp_path):
    """--val-fraction 0: every picture in train; fit validates on train, evaluate says so."""
    from colortrain.config import TrainConfig
    from colortrain.evaluate import evaluate_checkpoint
    from colortrain.train import fit

    shards = _sources(tmp_path)[0]
    config = PipelineConfig(
        source=shards, store=str(tmp_path / "store"), work_dir=str(tmp_path / "w"), device="cpu",
        backbone=BackboneConfig(backbone="resnet18", weights="none", image_size=32),
        batch_size=8, val_fraction=0,
    )  # fmt: skip
    version = zarr.open_group(run_stages(config).version["path"], mode="r")
    assert version.attrs["splits"] == ["train"] and "val" not in version
    assert version["train/rgb"].shape[0] == len(SPLITS)
    trained = fit(TrainConfig(
        store=str(tmp_path / "store"), out=str(tmp_path / "run"), preset="small", batch_size=2,
        max_steps=2, device="cpu", sample_images=0, tensorboard=False, progress=False,
    ))  # fmt: skip
    assert Path(trained["checkpoint"]).is_file() and trained["metrics"]
    with pytest.raises(UserError, match="has no split 'val'; it has train"):
        evaluate_checkpoint(Path(trained["checkpoint"]), str(tmp_path / "store"), split="val")
