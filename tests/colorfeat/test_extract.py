"""The features stage: values, attrs, chunks, idempotence, resume after SIGKILL, several devices."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from colorfeat.config import BackboneConfig
from colorfeat.errors import UserError
from colorfeat.store import FEATURE_ATTRS
from colorfeat.store.codecs import FEATURE_CODEC
from colorfeat.trunk import engine, extract
from colorfeat.trunk.backbone import create_trunk
from colorfeat.trunk.engine import BF16_TOLERANCE
from colorfeat.trunk.extract import features_stage
from colorfeat.trunk.pipeline import ChunkReader
from colorfeat.trunk.preprocess import prepare_input

sys.path.insert(0, str(Path(__file__).parent))
from conftest_store import write_images_zarr  # noqa: E402

R18 = BackboneConfig(backbone="resnet18", layer="layer2", weights="none", image_size=32)


@pytest.fixture(scope="module")
def store_images(tmp_path_factory) -> dict:
    return write_images_zarr(
        tmp_path_factory.mktemp("images") / "images.zarr", {"train": 13, "val": 4}, size=32
    )


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_features_match_the_trunk_and_carry_their_provenance(store_images, tmp_path) -> None:
    result = features_stage(
        store_images, R18, tmp_path / "f", device="cpu", batch_size=4, precision="fp32"
    )
    assert result["name"] == "resnet18.layer2"
    group = zarr.open_group(result["path"], mode="r")
    rgb = zarr.open_group(store_images["path"], mode="r")["train/rgb"][:]
    arr = group["train/resnet18.layer2"]
    assert arr.shape == (13, 128, 4, 4) and arr.dtype == np.float16
    assert arr.chunks[1:] == arr.shape[1:]  # chunked along N only
    trunk = create_trunk(R18)
    with torch.inference_mode():
        want = trunk(prepare_input(torch.from_numpy(rgb))).numpy()  # (13, 128, 4, 4) fp32
    np.testing.assert_allclose(arr[:].astype(np.float32), want, rtol=2e-3, atol=2e-3)
    attrs = dict(arr.attrs)
    assert set(FEATURE_ATTRS) <= set(attrs)
    assert attrs["weights"] == "none:seed=0" and attrs["weights_hash"] == trunk.weights_hash
    assert attrs["input_size"] == 32 and attrs["dtype"] == "float16"
    assert "BT.601" in attrs["grayscale"]
    assert attrs["codec"] == FEATURE_CODEC and attrs["compute"] == "float32"
    assert group["val/resnet18.layer2"].shape == (4, 128, 4, 4)
    assert result["weights_hash"] == trunk.weights_hash
    assert not (tmp_path / "f.partial").exists()
    assert not list((tmp_path / "f").rglob("*.partial"))


def test_feature_chunks_are_one_object_each_read_by_plain_zarr_and_dask(store_images, tmp_path):
    import dask.array as da

    result = features_stage(store_images, R18, tmp_path / "f", device="cpu", chunk_images=4)
    arr = zarr.open_group(result["path"], mode="r")["train/resnet18.layer2"]
    assert arr.chunks == (4, 128, 4, 4) and arr.shards is None  # no sharding codec
    meta = json.loads((Path(result["path"]) / "train/resnet18.layer2/zarr.json").read_text())
    assert [c["name"] for c in meta["codecs"]] == ["bytes", "zstd"]
    folder = Path(result["path"]) / "train/resnet18.layer2"
    objects = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert objects == [f"c/{i}/0/0/0" for i in range(4)] + ["zarr.json"]  # ceil(13 / 4) chunks
    np.testing.assert_array_equal(da.from_zarr(arr).compute(), arr[:])


def test_bf16_autocast_stays_within_the_stated_tolerance_of_fp32(store_images, tmp_path) -> None:
    runs = {
        p: features_stage(store_images, R18, tmp_path / p, device="cpu", precision=p)
        for p in ("fp32", "bf16")
    }
    x, y = (zarr.open_group(r["path"], mode="r")["train/resnet18.layer2"] for r in runs.values())
    ref, low = x[:].astype(np.float32), y[:].astype(np.float32)
    assert np.linalg.norm(low - ref) / np.linalg.norm(ref) < BF16_TOLERANCE
    assert y.attrs["compute"] == "bfloat16 autocast"
    with pytest.raises(UserError, match="precision must be"):
        features_stage(store_images, R18, tmp_path / "x", device="cpu", precision="fp8")


def test_compiled_trunk_matches_eager(store_images, tmp_path) -> None:
    cfg = BackboneConfig(backbone="resnet18", layer="layer1", weights="none", image_size=32)
    kwargs = {"device": "cpu", "precision": "fp32", "batch_size": 8}
    eager = features_stage(store_images, cfg, tmp_path / "eager", compile_trunk=False, **kwargs)
    comp = features_stage(store_images, cfg, tmp_path / "comp", compile_trunk=True, **kwargs)
    assert comp["compute"] == "float32, torch.compile (inductor, frozen)"
    a, b = (zarr.open_group(r["path"], mode="r")["train/resnet18.layer1"][:] for r in (eager, comp))
    np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), rtol=1e-2, atol=1e-2)


def test_finished_stage_returns_at_once(store_images, tmp_path, monkeypatch) -> None:
    first = features_stage(store_images, R18, tmp_path / "f", device="cpu")
    monkeypatch.setattr(extract, "create_trunk", lambda cfg: pytest.fail("recomputed"))
    assert features_stage(store_images, R18, tmp_path / "f", device="cpu") == first


class _CountingArray:
    """A Zarr array that records the rows of every read."""

    def __init__(self, arr: zarr.Array) -> None:
        self.arr, self.chunks, self.shape, self.reads = arr, arr.chunks, arr.shape, []

    def __getitem__(self, key: slice) -> np.ndarray:
        self.reads.append((key.start, key.stop))
        return self.arr[key]


@pytest.mark.parametrize("block", [1, 3, 5, 7, 16])
def test_images_are_read_block_by_block_decoding_each_chunk_once(tmp_path, block: int) -> None:
    rgb = np.random.default_rng(block).integers(0, 256, (23, 4, 4, 3), dtype=np.uint8)
    arr = zarr.create_array(str(tmp_path / "rgb.zarr"), data=rgb, chunks=(5, 4, 4, 3))
    counted = _CountingArray(arr)
    reader = ChunkReader(counted)
    got = [reader.read(i, min(i + block, 23)) for i in range(0, 23, block)]
    assert np.array_equal(np.concatenate(got), rgb)
    assert all(g.flags.c_contiguous for g in got)
    decoded = [c for start, stop in counted.reads for c in range(start // 5, -(-stop // 5))]
    assert sorted(decoded) == list(range(5))  # each of the 5 chunks once, none twice
    # a read behind the ones kept is still right (decoded again)
    assert np.array_equal(reader.read(0, 2), rgb[:2])


_KILLED_RUN = """
import json, sys, time
from pathlib import Path
from colorfeat.trunk import extract, markers
from colorfeat.config import BackboneConfig

mark = markers.mark_chunks
def slow_mark(arr, chunks, folder):
    mark(arr, chunks, folder)
    print("WROTE", folder.name, *chunks, flush=True)
    time.sleep(0.5)

markers.mark_chunks = slow_mark
cfg = BackboneConfig(backbone="resnet18", layer="layer2", weights="none", image_size=32)
extract.features_stage(json.loads(sys.argv[1]), cfg, Path(sys.argv[2]), device="cpu",
                       batch_size=2, chunk_images=2)
print("FINISHED", flush=True)
"""


def test_resume_after_sigkill_gives_identical_bytes(store_images, tmp_path, monkeypatch) -> None:
    out = tmp_path / "killed"
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, json.dumps(store_images), str(out)],
        stdout=subprocess.PIPE,
        text=True,
    )
    wrote = 0
    for line in child.stdout:
        wrote += line.startswith("WROTE")
        if wrote == 3:
            os.kill(child.pid, signal.SIGKILL)
            break
    child.wait(timeout=60)
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert not out.exists() and (tmp_path / "killed.partial").is_dir()

    blocks_run = []
    run_block = engine.run_block
    monkeypatch.setattr(engine, "run_block", lambda *a: blocks_run.append(1) or run_block(*a))
    kwargs = {"device": "cpu", "batch_size": 2, "chunk_images": 2}
    resumed = features_stage(store_images, R18, out, **kwargs)
    total_blocks = 7 + 2  # ceil(13 / 2) train chunks + ceil(4 / 2) val chunks, one per block
    assert 0 < len(blocks_run) <= total_blocks - 3

    fresh = features_stage(store_images, R18, tmp_path / "fresh", **kwargs)
    assert _files(Path(resumed["path"])) == _files(Path(fresh["path"]))
    assert resumed["weights_hash"] == fresh["weights_hash"]


def test_chunks_of_a_killed_run_without_marker_are_recomputed(store_images, tmp_path) -> None:
    kwargs = {"device": "cpu", "batch_size": 4, "chunk_images": 4}
    fresh = features_stage(store_images, R18, tmp_path / "fresh", **kwargs)
    partial = tmp_path / "torn.partial"
    (partial / "features.zarr").parent.mkdir(parents=True)
    # a chunk written with garbage but never marked, and a stray temp file of a killed write
    features_stage(store_images, R18, tmp_path / "torn", **kwargs)
    (tmp_path / "torn").rename(partial)
    (partial / "_SUCCESS").unlink()
    chunk = partial / "features.zarr" / "train" / "resnet18.layer2" / "c" / "1" / "0" / "0" / "0"
    chunk.write_bytes(b"garbage")
    (chunk.parent / "0.deadbeef.partial").write_bytes(b"half")
    marks = partial / "_chunks_done" / "train"
    marks.mkdir(parents=True)
    for c in (0, 2, 3):
        (marks / str(c)).touch()
    (partial / "_chunks_done" / "val").mkdir()
    (partial / "_chunks_done" / "val" / "0").touch()
    resumed = features_stage(store_images, R18, tmp_path / "torn", **kwargs)
    assert _files(Path(resumed["path"])) == _files(Path(fresh["path"]))


def test_several_devices_split_the_chunks_across_processes(store_images, tmp_path) -> None:
    kwargs = {"device": "cpu", "batch_size": 4, "chunk_images": 4}
    one = features_stage(store_images, R18, tmp_path / "one", **kwargs)
    two = features_stage(store_images, R18, tmp_path / "two", devices=["cpu", "cpu"], **kwargs)
    a, b = (zarr.open_group(r["path"], mode="r") for r in (one, two))
    for split in ("train", "val"):
        x, y = a[f"{split}/resnet18.layer2"][:], b[f"{split}/resnet18.layer2"][:]
        np.testing.assert_allclose(x.astype(np.float32), y.astype(np.float32), rtol=1e-2, atol=1e-2)
    assert not (tmp_path / "two" / "_chunks_done").exists()


def test_cuda_without_a_gpu_is_a_clear_error(store_images, tmp_path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(UserError, match="--device cuda .*no CUDA GPU"):
        features_stage(store_images, R18, tmp_path / "f", device="cuda")


def test_mismatched_image_size_is_a_clear_error(store_images, tmp_path) -> None:
    with pytest.raises(UserError, match="images are 32x32"):
        features_stage(store_images, BackboneConfig(backbone="resnet18", weights="none"), tmp_path)


def test_features_beyond_float16_range_are_refused() -> None:
    class Loud(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 1e5  # 2.6e5 > 65504: float16 makes it inf

    rgb = torch.full((2, 8, 8, 3), 255, dtype=torch.uint8)
    loud = engine.Engine(Loud(), None)
    out, finite = engine.run_block(loud, rgb, torch.device("cpu"), 2)
    assert finite is None  # on the CPU the writer checks the float16 bits
    with pytest.raises(UserError, match="overflow float16"):
        engine.require_finite(engine.all_finite(out.numpy()))  # in the writer, before storing
    quiet = engine.Engine(torch.nn.Identity(), None)
    out, _ = engine.run_block(quiet, rgb[:1], torch.device("cpu"), 2)  # padded, sliced
    engine.require_finite(engine.all_finite(out.numpy()))
    special = np.array([1.0, -65504.0, 0.0, -0.0, 6e-8], dtype=np.float16)
    assert engine.all_finite(special) and engine.all_finite(special[:0])
    for bad in (np.inf, -np.inf, np.nan):
        assert not engine.all_finite(np.append(special, np.float16(bad)))
    assert out.shape == (1, 3, 8, 8) and out.dtype == torch.float16 and out.is_contiguous()


def test_stray_files_among_chunks_and_markers_do_not_break_a_resume(store_images, tmp_path):
    kwargs = {"device": "cpu", "batch_size": 4, "chunk_images": 4}
    features_stage(store_images, R18, tmp_path / "run", **kwargs)
    fresh = tmp_path / "fresh"
    shutil.copytree(tmp_path / "run", fresh)
    partial = tmp_path / "run.partial"
    (tmp_path / "run").rename(partial)  # as a killed run leaves it: train chunk 3 unmarked
    (partial / "_SUCCESS").unlink()
    marks = partial / "_chunks_done"
    for split, n_chunks in (("train", 3), ("val", 1)):
        (marks / split).mkdir(parents=True)
        for c in range(n_chunks):
            (marks / split / str(c)).write_bytes(b"")
    chunk_dir = partial / "features.zarr" / "train" / "resnet18.layer2" / "c" / "0" / "0" / "0"
    for folder in (marks / "train", chunk_dir):  # an NFS silly-renamed file, a half-written temp
        (folder / ".nfs0000000000001234").write_bytes(b"open elsewhere")
        (folder / "x.tmp").write_bytes(b"half")
    resumed = features_stage(store_images, R18, tmp_path / "run", **kwargs)
    assert _files(Path(resumed["path"])) == _files(fresh / "features.zarr")
    assert not (tmp_path / "run" / "_chunks_done").exists()
