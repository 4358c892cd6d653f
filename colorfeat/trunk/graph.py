"""A classification model cut after one node of its traced graph: the `Trunk` type.

`cut(model, node)` returns the eval-mode `torch.fx` graph module that
`torchvision.models.feature_extraction.create_feature_extractor` makes for the node, returning that
node's (B, C, H, W) tensor. Its state-dict keys are the full model's keys, so torchvision
checkpoints load as they are. `build_model` makes the uncut model without weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class Trunk(torch.fx.GraphModule):
    """A classification model cut after one node, plus the provenance of its weights.

    `weights_source` says where the weights came from (a dict), `weights_id` the same as one
    string, `weights_hash` is a hash of the exact tensors in use.
    """

    weights_source: dict[str, Any]
    weights_id: str = ""
    weights_hash: str = ""


def build_model(builder: Callable, *, meta: bool) -> nn.Module:
    """The model without weights, on the meta device (nothing allocated) where its builder allows,
    else on the CPU; the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        if meta:
            try:
                with torch.device("meta"):
                    return builder(weights=None).eval()
            except (NotImplementedError, RuntimeError):  # a builder that reads tensor values
                return builder(weights=None).eval().to("meta")
        return builder(weights=None).eval()


def cut(model: nn.Module, node: str) -> Trunk:
    """The eval-mode graph of `model` up to `node`, returning that node's tensor."""
    from torchvision.models.feature_extraction import create_feature_extractor

    extractor = create_feature_extractor(
        model, return_nodes={node: "features"}, suppress_diff_warning=True
    )
    graph = extractor.eval_graph
    output = next(n for n in graph.nodes if n.op == "output")
    output.args = (output.args[0]["features"],)  # a tensor instead of a one-entry dict
    trunk = Trunk(extractor, graph, class_name=type(model).__name__)
    return trunk.eval().requires_grad_(False)
