"""Frozen trunks: `create_trunk(config)` builds the eval-mode `Trunk` a `BackboneConfig` names.

A trunk is any torchvision classification model cut at any node of its traced graph
(`colorfeat.trunk.graph`, checked by `colorfeat.trunk.shapes`), holding the weights `--weights`
names (`colorfeat.trunk.weights`), with where they came from (`weights_source`, `weights_id`) and a
hash of the exact tensors in use (`weights_hash`, `colorfeat.trunk.state`).

- "none": torchvision's init of the whole model under `torch.manual_seed(seed)`, identical in
  every process. The whole model is initialised, cut-away layers included: torchvision's init
  draws every layer's values from one generator in construction order, so skipping a layer
  would change the rest.
- "imagenet" or a file: the model is built on the meta device and only the kept modules are
  materialised, then filled from the file: no time is spent initialising what is overwritten.

The names other code has long imported from here (`feature_shape`, `prepare_input`, ...) are
importable from here still; their homes are the modules named above.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from colorfeat.config import BackboneConfig
from colorfeat.hashing import file_sha256
from colorfeat.trunk.fuse import fuse_batchnorm
from colorfeat.trunk.graph import Trunk, build_model, cut
from colorfeat.trunk.preprocess import INPUT_DESCRIPTION, prepare_input
from colorfeat.trunk.provenance import config_from_description, describe_trunk
from colorfeat.trunk.shapes import TraceShape, backbone_names, check_trunk, feature_shape
from colorfeat.trunk.state import has_unsaved_buffers, load_into, load_state_file, state_dict_hash
from colorfeat.trunk.weights import cache_advice, fetch_imagenet, imagenet_file, imagenet_weights


def create_trunk(config: BackboneConfig) -> Trunk:
    """Build the frozen, eval-mode trunk that `config` describes (on the CPU)."""
    import torchvision

    config.check()
    if config.weights == "none":
        builder = torchvision.models.get_model_builder(config.backbone)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = builder(weights=None)  # the whole model: values as torchvision draws them
        trunk = cut(model, config.layer)
        source: dict[str, Any] = {"source": "none", "seed": config.seed}
        weights_id = f"none:seed={config.seed}"
    else:
        state, source, weights_id = _weights_state(config)
        trunk = trunk_from_state(config, state, source=config.weights)
    trunk.weights_source = source
    trunk.weights_id = weights_id
    trunk.weights_hash = state_dict_hash(trunk.state_dict())
    return trunk


def _weights_state(config: BackboneConfig) -> tuple[dict[str, torch.Tensor], dict, str]:
    """The state dict `--weights` names (imagenet or a file), its source attrs and id."""
    if config.weights == "imagenet":
        path, sha = fetch_imagenet(config.backbone)
        official = imagenet_file(config.backbone)
        what = f"the cached ImageNet weights {path}"
        state = load_state_file(path, what=what, advice=cache_advice(official))
        source = {"source": "imagenet", "enum": official.name, "sha256": sha}
        return state, source, f"imagenet:{official.name}"
    path = Path(config.weights)
    state = load_state_file(path)
    source = {"source": "file", "path": config.weights, "sha256": file_sha256(path)}
    return state, source, f"file:{path.name}"


def trunk_from_state(
    config: BackboneConfig, state: dict[str, torch.Tensor], *, source: str = "the checkpoint"
) -> Trunk:
    """The trunk of `config` holding exactly `state` (full-model or trunk-only keys)."""
    import torchvision

    config.check()
    builder = torchvision.models.get_model_builder(config.backbone)
    trunk = cut(build_model(builder, meta=True), config.layer)
    if has_unsaved_buffers(trunk):  # values a state dict does not carry: real init needed
        trunk = cut(build_model(builder, meta=False), config.layer)
    else:
        trunk = trunk.to_empty(device="cpu")  # every tensor is then filled from `state`
    load_into(trunk, state, source=source)
    return trunk.eval().requires_grad_(False)


__all__ = [
    "INPUT_DESCRIPTION",
    "TraceShape",
    "Trunk",
    "backbone_names",
    "check_trunk",
    "config_from_description",
    "create_trunk",
    "describe_trunk",
    "feature_shape",
    "fuse_batchnorm",
    "imagenet_weights",
    "prepare_input",
    "state_dict_hash",
    "trunk_from_state",
]
