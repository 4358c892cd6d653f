"""Any torchvision trunk: option-time validation, meta-device shape traces, registered models."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import zarr
from torch import nn

from colorfeat.config import BackboneConfig
from colorfeat.errors import UserError
from colorfeat.trunk.backbone import create_trunk, trunk_from_state
from colorfeat.trunk.extract import features_stage
from colorfeat.trunk.fuse import fuse_batchnorm
from colorfeat.trunk.preprocess import prepare_input
from colorfeat.trunk.shapes import backbone_names, feature_shape
from colorfeat.trunk.state import state_dict_hash

sys.path.insert(0, str(Path(__file__).parent))
from conftest_store import write_images_zarr  # noqa: E402

TINY = "tinynet_for_tests"


class TinyNet(nn.Module):
    """A two-stage conv net (stride 4 after `stage2`) with a classifier head."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU()
        )
        self.stage2 = nn.Sequential(
            nn.Conv2d(8, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        )
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.stage1(x))  # (B, 16, S/4, S/4)
        return self.head(x.mean(dim=(2, 3)))  # (B, num_classes)


def tiny_net(*, weights: None = None, **kwargs) -> TinyNet:
    return TinyNet(**kwargs)


@pytest.fixture()
def registered(monkeypatch) -> str:
    """TinyNet in torchvision's model registry for this test only."""
    from torchvision.models import _api

    monkeypatch.setitem(_api.BUILTIN_MODELS, TINY, tiny_net)
    return TINY


@pytest.mark.parametrize(
    ("arch", "node", "chw"),
    [
        ("mobilenet_v3_small", "features.3", (24, 8, 8)),
        ("regnet_x_400mf", "trunk_output.block2", (64, 8, 8)),
        ("resnet18", "layer3.0.relu_1", (256, 4, 4)),
    ],
)
def test_the_meta_trace_shape_is_the_real_forward_shape(arch, node, chw) -> None:
    cfg = BackboneConfig(backbone=arch, layer=node, weights="none", image_size=64)
    assert feature_shape(cfg) == chw
    trunk = create_trunk(cfg)
    with torch.inference_mode():
        out = trunk(torch.randn(2, 3, 64, 64))  # (2, C, H, W)
    assert tuple(out.shape) == (2, *chw)
    assert not trunk.training and not any(p.requires_grad for p in trunk.parameters())


def test_bad_backbone_and_node_are_one_line_with_the_choices() -> None:
    with pytest.raises(UserError) as err:
        BackboneConfig(backbone="convnext_tiyn").check()
    assert "\n" not in str(err.value) and "did you mean convnext_tiny" in str(err.value)
    with pytest.raises(UserError, match="not a torchvision classification model"):
        BackboneConfig(backbone="fasterrcnn_resnet50_fpn").check()  # a detector is no trunk
    with pytest.raises(UserError) as err:
        BackboneConfig(backbone="resnet18", layer="layr3").check()
    msg = str(err.value)
    assert "\n" not in msg and "did you mean layer3" in msg
    assert "its nodes are conv1, bn1, relu, maxpool, layer1," in msg and "layer4.1" in msg
    with pytest.raises(UserError, match=r"--image-size 72 is not a multiple of the stride 16"):
        BackboneConfig(backbone="resnet18", layer="layer3", image_size=72).check()
    with pytest.raises(UserError, match=r"gives \(1, 50, 768\), not a \(N, C, H, W\) feature map"):
        BackboneConfig(backbone="vit_b_32", layer="encoder", image_size=224).check()


def test_generic_batchnorm_folding_on_a_non_resnet_graph() -> None:
    cfg = BackboneConfig(backbone="mobilenet_v3_small", layer="features.3", weights="none")
    trunk = create_trunk(cfg)
    gen = torch.Generator().manual_seed(0)
    for m in trunk.modules():  # non-trivial statistics, so that folding matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2, generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
    fused = fuse_batchnorm(trunk)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in trunk.modules())  # a copy
    x = torch.randn(2, 3, 64, 64, generator=gen)
    with torch.inference_mode():
        ref, out = trunk(x), fused(x)
    assert torch.linalg.norm(out - ref) / torch.linalg.norm(ref) < 1e-5


def test_a_trunk_from_a_state_dict_skips_init_and_holds_exactly_the_state(monkeypatch) -> None:
    cfg = BackboneConfig(backbone="resnet18", layer="layer2", weights="none", seed=1)
    made = create_trunk(cfg)

    def no_real_init(tensor, *args, **kwargs):
        assert tensor.is_meta, "a real tensor was initialised only to be overwritten"
        return tensor

    monkeypatch.setattr(nn.init, "kaiming_normal_", no_real_init)
    again = trunk_from_state(cfg, made.state_dict())
    assert state_dict_hash(again.state_dict()) == made.weights_hash


def test_a_registered_model_runs_through_the_real_extraction(registered, tmp_path) -> None:
    assert registered in backbone_names()
    images = write_images_zarr(tmp_path / "images.zarr", {"train": 5}, size=16)
    cfg = BackboneConfig(backbone=registered, layer="stage2", weights="none", image_size=16)
    result = features_stage(images, cfg, tmp_path / "f", device="cpu", precision="fp32")
    arr = zarr.open_group(result["path"], mode="r")[f"train/{registered}.stage2"]
    assert arr.shape == (5, 16, 4, 4)
    rgb = zarr.open_group(images["path"], mode="r")["train/rgb"][:]
    with torch.inference_mode():
        want = create_trunk(cfg)(prepare_input(torch.from_numpy(rgb))).numpy()  # (5, 16, 4, 4)
    np.testing.assert_allclose(arr[:].astype(np.float32), want, rtol=2e-3, atol=2e-3)
    assert arr.attrs["trunk"]["backbone"] == registered and arr.attrs["trunk"]["node"] == "stage2"
    assert arr.attrs["trunk"]["weights"] == {"source": "none", "seed": 0}


def test_torchvision_classifiers_are_backbones_and_their_nodes_are_layers() -> None:
    names = backbone_names()
    assert {"resnet101", "convnext_tiny", "mobilenet_v3_small", "vit_b_16"} <= set(names)
    assert not set(torchvision.models.list_models(module=torchvision.models.detection)) & set(names)
    cfg = BackboneConfig(backbone="convnext_tiny", layer="features.3", weights="none")
    assert cfg.name == "convnext_tiny.features.3"
    assert feature_shape(cfg) == (192, 28, 28)  # traced on the meta device: no weights built


def test_a_bad_layer_fails_colorfeat_run_in_one_line_before_anything_runs(tmp_path) -> None:
    from typer.testing import CliRunner

    from flows.cli.colorfeat import app

    where = ["--store", str(tmp_path / "s"), "--work-dir", str(tmp_path / "w")]
    args = ["run", "--source", "synthetic", *where, "--layer", "layr3", "--dry-run"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code != 0
    assert "did you mean layer3" in out.stderr and "Traceback" not in out.output
    assert not (tmp_path / "w").exists() and not (tmp_path / "s").exists()


def test_residual_sums_reuse_the_conv_output_and_change_nothing() -> None:
    trunk = create_trunk(BackboneConfig("resnet18", "layer2", "none", 64, seed=2))
    fused = fuse_batchnorm(trunk)
    in_place = [n for n in fused.graph.nodes if n.op == "call_method" and n.target == "add_"]
    assert len(in_place) == 4  # one per basic block of layer1 and layer2
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want, got = trunk(x), fused(x)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)
