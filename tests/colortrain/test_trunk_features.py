"""A non-ResNet trunk end to end: the real features stage, then `fit`, colorize's trunk, attrs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from colorfeat.config import BackboneConfig
from colorfeat.errors import UserError
from colorfeat.trunk.backbone import create_trunk, prepare_input
from colorfeat.trunk.extract import features_stage
from colortrain.checkpoint import load_checkpoint, load_trunk, trunk_config, trunk_entry
from colortrain.config import TrainConfig
from colortrain.train import fit

# A stride-8 node of a non-ResNet network: the same (S/8) grid the colorizer expects.
MOBILE = BackboneConfig(
    backbone="mobilenet_v3_small", layer="features.3", weights="none", image_size=32, seed=4
)


@pytest.fixture(scope="module")
def mobile_store(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny store whose only feature set comes from the real features stage."""
    root = tmp_path_factory.mktemp("mobile") / "store"
    shutil.copytree(tiny_store, root)
    version = root / "versions" / "0123456789abcdef"
    images = {"path": str(version), "splits": ["train", "val"]}
    made = features_stage(images, MOBILE, version.parent / "f", device="cpu", precision="fp32")
    for split in ("train", "val"):
        shutil.rmtree(version / split / "features" / "resnet18.layer2")
        src = Path(made["path"]) / split / MOBILE.name
        shutil.copytree(src, version / split / "features" / MOBILE.name)
    zarr.open_group(version, mode="r+").attrs["features"] = [MOBILE.name]
    return root


def test_features_stage_stores_the_mobilenet_node_and_its_trunk_attrs(mobile_store) -> None:
    g = zarr.open_group(str(mobile_store / "versions" / "0123456789abcdef"), mode="r")
    arr = g[f"train/features/{MOBILE.name}"]
    assert arr.shape == (24, 24, 4, 4)  # mobilenet_v3_small.features.3: 24 channels, stride 8
    trunk = create_trunk(MOBILE)
    with torch.inference_mode():
        want = trunk(prepare_input(torch.from_numpy(g["train/rgb"][:]))).numpy()
    np.testing.assert_allclose(arr[:].astype(np.float32), want, rtol=2e-3, atol=2e-3)
    assert arr.attrs["trunk"] == {
        "backbone": "mobilenet_v3_small",
        "node": "features.3",
        "weights": {"source": "none", "seed": 4},
        "weights_hash": trunk.weights_hash,
        "input_size": 32,
        "grayscale": arr.attrs["grayscale"],
        "normalisation": arr.attrs["normalisation"],
        "precision": "fp32",
    }
    assert trunk_config(MOBILE.name, dict(arr.attrs)) == MOBILE


def test_fit_one_step_on_mobilenet_features_keeps_its_trunk(mobile_store, tmp_path) -> None:
    config = TrainConfig(
        store=str(mobile_store), out=str(tmp_path / "run"), preset="small", epochs=1,
        max_steps=1, batch_size=8, progress=False, tensorboard=False, sample_images=1,
    )  # fmt: skip
    ckpt = load_checkpoint(fit(config)["checkpoint"])
    assert ckpt["features"]["name"] == MOBILE.name
    assert ckpt["model"]["config"]["feature_channels"] == 24
    assert ckpt["trunk"]["config"] == MOBILE.to_dict()
    trunk = load_trunk(ckpt["trunk"])
    rgb = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    with torch.inference_mode():
        out = trunk(prepare_input(rgb))
        want = create_trunk(MOBILE)(prepare_input(rgb))
    assert out.shape == (2, 24, 4, 4)
    assert torch.equal(out, want)


def test_a_weights_file_is_found_again_by_path_then_checked_by_sha256(tmp_path, monkeypatch):
    import torchvision

    torch.manual_seed(2)
    weights = tmp_path / "mine.pt"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    cfg = BackboneConfig(backbone="resnet18", layer="layer1", weights=str(weights), image_size=32)
    trunk = create_trunk(cfg)
    attrs = {"weights_hash": trunk.weights_hash, "trunk": _trunk_attrs(trunk, cfg)}
    assert attrs["trunk"]["weights"]["path"] == str(weights)  # the path as given, not a name
    assert trunk_config(cfg.name, attrs) == cfg
    assert trunk_entry(cfg.name, attrs)["hash"] == trunk.weights_hash

    moved = tmp_path / "elsewhere"
    moved.mkdir()
    weights.rename(moved / "mine.pt")
    monkeypatch.setenv("COLORTRAIN_WEIGHTS", str(moved))
    assert trunk_config(cfg.name, attrs).weights == str(moved / "mine.pt")
    torch.save({"conv1.weight": torch.zeros(1)}, moved / "mine.pt")  # same name, other bytes
    with pytest.raises(UserError, match=r"is not the weights file .*\(SHA-256"):
        trunk_config(cfg.name, attrs)


def test_stores_with_only_the_flat_attrs_still_reload(tmp_path) -> None:
    cfg = BackboneConfig(backbone="resnet18", layer="layer2", weights="none", image_size=32, seed=9)
    flat = {"backbone": "resnet18", "layer": "layer2", "weights": "none:seed=9", "input_size": 32}
    assert trunk_config(cfg.name, flat) == cfg
    imagenet = {**flat, "weights": "imagenet:ResNet18_Weights.IMAGENET1K_V1"}
    assert trunk_config(cfg.name, imagenet).weights == "imagenet"


def _trunk_attrs(trunk, cfg: BackboneConfig) -> dict:
    from colorfeat.trunk.backbone import describe_trunk

    return describe_trunk(trunk, cfg, "fp32")
