"""Which backbones and nodes make a trunk, and the shape of its features, without weights.

Backbones are the models of torchvision's registry (`torchvision.models.list_models`): its own
classification models, and any model that code registers with it (detection, segmentation, video,
optical-flow and quantized models are not trunks). A node is any node of the model's traced graph.
`check_trunk` validates a backbone, node and input size and `feature_shape` gives the (C, H, W)
of the features, both from a trace on the meta device: no weights, no compute.

This module needs nothing from `colorfeat.config` (a config is anything with `backbone`,
`layer` and `image_size`), so that the config can ask it to check itself.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from colorfeat.errors import UserError
from colorfeat.trunk.graph import Trunk, build_model, cut

# Input side of the trace that finds a node's stride: a power of two above any trunk's stride.
STRIDE_TRACE_SIZE = 512
# How deep the node names go in the list an unknown --layer is answered with.
_NODE_LIST_DEPTH = 2


class TrunkSpec(Protocol):
    """What names a trunk and its input (`colorfeat.config.BackboneConfig` is one)."""

    backbone: str
    layer: str
    image_size: int


@dataclass(frozen=True)
class TraceShape:
    """What a meta-device trace says about a node: its output (C, H, W) and its stride."""

    channels: int
    height: int
    width: int
    stride: int

    @property
    def chw(self) -> tuple[int, int, int]:
        return self.channels, self.height, self.width


def backbone_names() -> list[str]:
    """Every model `--backbone` accepts: torchvision's classifiers and models registered by code."""
    import torchvision

    def classifier(name: str) -> bool:
        module = torchvision.models.get_model_builder(name).__module__
        if not module.startswith("torchvision."):
            return True  # registered by code outside torchvision
        return module.rsplit(".", 1)[0] == "torchvision.models"

    return sorted(n for n in torchvision.models.list_models() if classifier(n))


def check_trunk(backbone: str, node: str, image_size: int) -> TraceShape:
    """Validate a backbone, node and input size without weights or compute; one-line UserErrors."""
    names = backbone_names()
    if backbone not in names:
        close = difflib.get_close_matches(backbone, names, n=5, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else f"choose from {', '.join(names)}"
        raise UserError(
            f"--backbone {backbone!r} is not a torchvision classification model: {hint}"
        )
    import torchvision

    return _check_node(torchvision.models.get_model_builder(backbone), backbone, node, image_size)


def feature_shape(config: TrunkSpec) -> tuple[int, int, int]:
    """(C, H, W) of the trunk's output for the config's S x S input, from a meta-device trace."""
    return check_trunk(config.backbone, config.layer, config.image_size).chw


@functools.lru_cache(maxsize=64)
def _check_node(builder: Callable, backbone: str, node: str, image_size: int) -> TraceShape:
    _meta_trunk(builder, backbone, node)  # an unknown node fails here
    stride = _stride(builder, backbone, node)
    if image_size < stride or image_size % stride:
        raise UserError(
            f"--image-size {image_size} is not a multiple of the stride {stride} of "
            f"{backbone}.{node}"
        )
    c, h, w = _trace(builder, backbone, node, image_size)
    if (h, w) != (image_size // stride, image_size // stride):
        raise UserError(
            f"{backbone}.{node} gives a {h}x{w} map for --image-size {image_size}, "
            f"not the {image_size // stride}x{image_size // stride} its stride {stride} implies"
        )
    return TraceShape(c, h, w, stride)


@functools.lru_cache(maxsize=16)
def _meta_trunk(builder: Callable, backbone: str, node: str) -> Trunk:
    """The trunk on the meta device (shapes only), or a UserError naming the model's nodes."""
    from torchvision.models.feature_extraction import get_graph_node_names

    model = build_model(builder, meta=True)
    try:
        return cut(model, node)
    except ValueError:  # create_feature_extractor: "node: '...' is not present in model"
        train, evaluation = get_graph_node_names(model, suppress_diff_warning=True)
    nodes = [n for n in evaluation if n in set(train) and n != "x"]
    parts = [n.split(".") for n in nodes]
    short = list(
        dict.fromkeys(".".join(p[:d]) for p in parts for d in range(1, _NODE_LIST_DEPTH + 1))
    )
    close = difflib.get_close_matches(node, short + nodes, n=3, cutoff=0.6)
    near = f"did you mean {', '.join(close)}? " if close else ""
    raise UserError(
        f"--layer {node!r} is not a node of {backbone}: {near}its nodes are "
        f"{', '.join(short)} (and the nodes inside them, see "
        "torchvision.models.feature_extraction.get_graph_node_names)"
    )


def _stride(builder: Callable, backbone: str, node: str) -> int:
    """The node's downsampling factor, from a trace at STRIDE_TRACE_SIZE (else at 224)."""
    for size in (STRIDE_TRACE_SIZE, 224):
        try:
            _, h, w = _trace(builder, backbone, node, size)
        except UserError:
            raise
        except Exception:  # noqa: BLE001 - a model with a fixed input size: try the next size
            continue
        if h and h == w and size % h == 0:
            return size // h
    raise UserError(f"{backbone}.{node} has no fixed stride: it cannot be a feature-map trunk")


@functools.lru_cache(maxsize=64)
def _trace(builder: Callable, backbone: str, node: str, size: int) -> tuple[int, int, int]:
    """(C, H, W) of the node for a (1, 3, size, size) input, run on the meta device."""
    trunk = _meta_trunk(builder, backbone, node)
    with torch.no_grad():
        out = trunk(torch.empty(1, 3, size, size, device="meta"))
    if not isinstance(out, torch.Tensor) or out.ndim != 4:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(
            f"{backbone}.{node} gives {shape}, not a (N, C, H, W) feature map: "
            "choose another --layer"
        )
    return int(out.shape[1]), int(out.shape[2]), int(out.shape[3])
