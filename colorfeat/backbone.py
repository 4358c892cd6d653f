"""Frozen trunks: any torchvision classification model cut at any node of its traced graph.

`create_trunk(config)` returns an eval-mode `Trunk`: the `torch.fx` graph module that
`torchvision.models.feature_extraction.create_feature_extractor` makes for the node, returning that
node's (B, C, H, W) tensor. Its state-dict keys are the full model's keys, so torchvision
checkpoints load as they are. It carries where its weights came from (`weights_source`, a dict;
`weights_id`, the same as one string) and a hash of the exact tensors in use (`weights_hash`).
`describe_trunk` turns that into the structured `trunk` attrs of a feature array and
`config_from_description` turns them back into the `BackboneConfig` that made it.

Weights:
- "imagenet": torchvision's `<Arch>_Weights.IMAGENET1K_V1`, the original ImageNet weights the paper
  used (V1, not the later V2 recipe); taken from the torch hub cache ($TORCH_HOME/hub/checkpoints)
  or downloaded once, and used only if its SHA-256 starts with the hash in its published name.
Every weights file is read with `torch.load(weights_only=True)`: no file runs code when loaded.
- "none": a seeded random initialisation (torchvision's init of the whole model under
  `torch.manual_seed(seed)`), identical in every process; it lets the whole pipeline run offline.
  The whole model is initialised, cut-away layers included: torchvision's init draws every layer's
  values from one generator in construction order, so skipping a layer would change the rest.
- a path to a state-dict file, of the full model or of the trunk only.
With a file (official or not) the model is built on the meta device and only the kept modules are
materialised, then filled from the file: no time is spent initialising what is overwritten.

Backbones are the models of torchvision's registry (`torchvision.models.list_models`): its own
classification models, and any model that code registers with it (detection, segmentation, video,
optical-flow and quantized models are not trunks). Feature shapes come from a trace on the meta
device: no weights, no compute.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from colorfeat.constants import IMAGENET_MEAN, IMAGENET_STD
from colorfeat.errors import UserError
from colorfeat.hashing import file_sha256
from colorfeat.lab import luma

if TYPE_CHECKING:  # imported where a trunk is built: a rebuild with nothing to do skips it
    import torchvision

    from colorfeat.config import BackboneConfig

# How long to wait for the weights server before saying "no network".
NETWORK_PROBE_TIMEOUT_S = 3.0
# Input side of the trace that finds a node's stride: a power of two above any trunk's stride.
STRIDE_TRACE_SIZE = 512
# torchvision.models subpackages whose models are not image classifiers.
_NOT_CLASSIFIERS = ("detection", "segmentation", "video", "optical_flow", "quantization")
# How deep the node names go in the list an unknown --layer is answered with.
_NODE_LIST_DEPTH = 2


class Trunk(torch.fx.GraphModule):
    """A classification model cut after one node, plus the provenance of its weights."""

    weights_source: dict[str, Any]
    weights_id: str = ""
    weights_hash: str = ""


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


def feature_shape(config: BackboneConfig) -> tuple[int, int, int]:
    """(C, H, W) of the trunk's output for the config's S x S input, from a meta-device trace."""
    return check_trunk(config.backbone, config.layer, config.image_size).chw


@functools.lru_cache(maxsize=16)
def _meta_trunk(builder: Callable, backbone: str, node: str) -> Trunk:
    """The trunk on the meta device (shapes only), or a UserError naming the model's nodes."""
    from torchvision.models.feature_extraction import get_graph_node_names

    model = _build(builder, meta=True)
    try:
        return _cut(model, node)
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


def _build(builder: Callable, *, meta: bool) -> nn.Module:
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


def _cut(model: nn.Module, node: str) -> Trunk:
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


def imagenet_weights(backbone: str) -> torchvision.models.WeightsEnum:
    """The paper's weights for `backbone`: torchvision's IMAGENET1K_V1 entry."""
    import torchvision

    enum = torchvision.models.get_model_weights(backbone)
    if "IMAGENET1K_V1" not in enum.__members__:
        raise UserError(f"torchvision has no IMAGENET1K_V1 weights for {backbone}: use --weights")
    return enum.IMAGENET1K_V1


def create_trunk(config: BackboneConfig) -> Trunk:
    """Build the frozen, eval-mode trunk that `config` describes (on the CPU)."""
    import torchvision

    config.check()
    builder = torchvision.models.get_model_builder(config.backbone)
    if config.weights == "none":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = builder(weights=None)  # the whole model: values as torchvision draws them
        trunk = _cut(model, config.layer)
        source: dict[str, Any] = {"source": "none", "seed": config.seed}
        weights_id = f"none:seed={config.seed}"
    else:
        if config.weights == "imagenet":
            state, sha = _imagenet_state_dict(config.backbone)
            enum = str(imagenet_weights(config.backbone))
            source = {"source": "imagenet", "enum": enum, "sha256": sha}
            weights_id = f"imagenet:{enum}"
        else:
            path = Path(config.weights)
            state = _load_state_file(path)
            source = {"source": "file", "path": config.weights, "sha256": file_sha256(path)}
            weights_id = f"file:{path.name}"
        trunk = trunk_from_state(config, state, source=config.weights)
    trunk.weights_source = source
    trunk.weights_id = weights_id
    trunk.weights_hash = state_dict_hash(trunk.state_dict())
    return trunk


def trunk_from_state(
    config: BackboneConfig, state: dict[str, torch.Tensor], *, source: str = "the checkpoint"
) -> Trunk:
    """The trunk of `config` holding exactly `state` (full-model or trunk-only keys)."""
    import torchvision

    config.check()
    builder = torchvision.models.get_model_builder(config.backbone)
    trunk = _cut(_build(builder, meta=True), config.layer)
    if _has_unsaved_buffers(trunk):  # values a state dict does not carry: real init needed
        trunk = _cut(_build(builder, meta=False), config.layer)
    else:
        trunk = trunk.to_empty(device="cpu")  # every tensor is then filled from `state`
    _load_into(trunk, state, source=source)
    return trunk.eval().requires_grad_(False)


def _has_unsaved_buffers(module: nn.Module) -> bool:
    saved = set(module.state_dict())
    return any(name not in saved for name, _ in module.named_buffers())


def state_dict_hash(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over (key, dtype, shape, bytes) of every tensor, in key order."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _imagenet_state_dict(backbone: str) -> tuple[dict[str, torch.Tensor], str]:
    """The official weights from the hub cache (downloaded once), checked by hash, no pickle code;
    with the file's SHA-256.

    torchvision names its files `<name>-<first hex digits of their SHA-256>.pth` and checks that
    hash only while downloading; a file already in the cache is checked here before it is read,
    and every file is read with `weights_only=True`, so a planted pickle never runs.
    """
    weights = imagenet_weights(backbone)
    hub_dir = Path(torch.hub.get_dir()) / "checkpoints"
    cached = hub_dir / os.path.basename(urlparse(weights.url).path)
    prefix = _published_hash_prefix(cached.name)
    if not cached.exists():
        _download_official(weights, cached, prefix)
    advice = f"delete {cached} so that it is downloaded again, or pass --weights FILE"
    sha = file_sha256(cached)
    if not sha.startswith(prefix):
        raise UserError(
            f"the cached ImageNet weights {cached} are not the published file "
            f"(SHA-256 does not start with {prefix}): {advice}"
        )
    what = f"the cached ImageNet weights {cached}"
    return _load_state_file(cached, what=what, advice=advice), sha


def _published_hash_prefix(file_name: str) -> str:
    """The SHA-256 prefix in a published file name `<name>-<8+ hex digits>.<ext>`."""
    match = re.search(r"-([0-9a-f]{8,})\.[a-z]+$", file_name)
    if match is None:  # every torchvision IMAGENET1K_V1 URL has one; refuse rather than trust
        raise UserError(f"the weights file name {file_name} carries no hash to check it by")
    return match.group(1)


def _download_official(weights: torchvision.models.WeightsEnum, dst: Path, prefix: str) -> None:
    """Download the official file into the hub cache, checked against its published hash."""
    if not network_reachable(weights.url):
        raise UserError(
            f"ImageNet weights ({weights}) are not cached at {dst} and "
            f"{urlparse(weights.url).hostname} cannot be reached: copy {dst.name} into "
            f"$TORCH_HOME/hub/checkpoints/ (TORCH_HOME now {Path(torch.hub.get_dir()).parent}), "
            "or pass --weights FILE (a state-dict file), or --weights none"
        )
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(weights.url, str(dst), hash_prefix=prefix, progress=False)
    except Exception as exc:  # URLError, a bad download hash (RuntimeError), a full disk
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(
            f"could not download ImageNet weights ({weights}): {first}; "
            "set TORCH_HOME to a directory holding them or pass --weights FILE"
        ) from exc


def network_reachable(url: str, timeout: float = NETWORK_PROBE_TIMEOUT_S) -> bool:
    """True if a TCP connection to the URL's host opens within `timeout` seconds."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _load_state_file(
    path: Path, what: str = "", advice: str = "use 'imagenet' or 'none'"
) -> dict[str, torch.Tensor]:
    """A state dict of tensors from a file, read with `weights_only=True` (runs no pickle code)."""
    what = what or f"--weights {path}"
    if not path.is_file():
        raise UserError(f"{what}: no such file ({advice})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and format errors all mean "not a state dict"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(f"{what} is not a readable state-dict file ({first}): {advice}") from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{what} does not hold a state dict of tensors ({advice})")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_into(trunk: Trunk, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Load the trunk's keys from a full-model or trunk-only state dict; fail clearly otherwise."""
    wanted = trunk.state_dict()
    picked = {k: v for k, v in state.items() if k in wanted}  # others: cut-away layers, the head
    missing = sorted(set(wanted) - set(picked))
    bad_shape = sorted(k for k in picked if picked[k].shape != wanted[k].shape)
    if missing or bad_shape:
        detail = "; ".join(
            f"{what} {len(keys)} (e.g. {', '.join(keys[:3])})"
            for what, keys in (
                ("missing", missing),
                ("wrong shape", bad_shape),
            )
            if keys
        )
        raise UserError(f"--weights {source} does not fit this trunk: {detail}")
    trunk.load_state_dict(picked, strict=True)


def fuse_batchnorm(trunk: nn.Module) -> nn.Module:
    """An inference copy of a traced trunk with every eval-mode BatchNorm folded into its conv.

    Works on any graph: `torch.fx.experimental.optimization.fuse` folds a conv node whose only
    user is a BatchNorm node; inside modules the trace keeps whole (torchvision's
    `Conv2dNormActivation` is a leaf), a BatchNorm right after a conv in an `nn.Sequential` is
    folded. Same function up to float rounding, fewer passes over memory; the weights hash stays
    that of the unfused trunk, which is what the weights are.
    """
    from torch.fx.experimental.optimization import fuse

    fused = fuse(trunk, no_trace=isinstance(trunk, torch.fx.GraphModule))
    for seq in [m for m in fused.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for conv, bn in zip(names, names[1:], strict=False):
            a, b = seq._modules[conv], seq._modules[bn]
            if type(a) is nn.Conv2d and type(b) is nn.BatchNorm2d and b.track_running_stats:
                seq._modules[conv] = fuse_conv_bn_eval(a, b)
                seq._modules[bn] = nn.Identity()
    if isinstance(fused, torch.fx.GraphModule):
        _add_in_place(fused)
    return fused.eval().requires_grad_(False)


def _add_in_place(gm: torch.fx.GraphModule) -> None:
    """`conv(x) + y` -> `conv(x).add_(y)` where nothing else reads the conv's fresh output.

    A residual block's sum then reuses the conv's buffer instead of allocating one more map (as
    torchvision's own ResNet writes `out += identity`): about 9% of a ResNet trunk's time on a CPU.
    Only where a trace at a small input shows both operands with the sum's shape and dtype, so
    that no broadcast or type promotion is lost.
    """
    import operator

    from torch.fx.passes.shape_prop import ShapeProp

    try:
        ShapeProp(gm).propagate(torch.zeros(1, 3, 64, 64))
    except Exception:  # noqa: BLE001 - a trunk that cannot take 64 px keeps its plain adds
        return
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in (operator.add, torch.add):
            continue
        if (
            node.kwargs
            or len(node.args) != 2
            or not all(isinstance(a, torch.fx.Node) for a in node.args)
        ):
            continue
        meta = node.meta.get("tensor_meta")
        for first, other in (node.args, node.args[::-1]):
            fresh = first.op == "call_module" and isinstance(modules.get(first.target), nn.Conv2d)
            same = all(
                (a.meta.get("tensor_meta") is not None and meta is not None
                 and a.meta["tensor_meta"].shape == meta.shape
                 and a.meta["tensor_meta"].dtype == meta.dtype)
                for a in (first, other)
            )  # fmt: skip
            if fresh and same and len(first.users) == 1:
                with gm.graph.inserting_after(node):
                    inplace = gm.graph.call_method("add_", (first, other))
                node.replace_all_uses_with(inplace)
                gm.graph.erase_node(node)
                break
    gm.graph.lint()
    gm.recompile()


def prepare_input(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (B, S, S, 3) -> the trunk's float32 input (B, 3, S, S), channels_last.

    Grayscale is ITU-R BT.601 luma of the uint8 values / 255 (not rounded), replicated to three
    channels, then ImageNet-normalised per channel.
    """
    dev = rgb.device
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=dev)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=dev)
    gray = luma(rgb, 255.0)  # (B, S, S)
    x = (gray[..., None] - mean) / std  # (B, S, S, 3)
    return x.permute(0, 3, 1, 2)  # (B, 3, S, S), NHWC in memory = channels_last


INPUT_DESCRIPTION = {
    "grayscale": "ITU-R BT.601 luma Y = 0.299 R + 0.587 G + 0.114 B of the uint8 RGB image / 255 "
    "(float, not rounded), replicated to 3 channels",
    "normalisation": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
}


def describe_weights(trunk: Trunk) -> dict[str, str]:
    """The weights' provenance as flat store attrs (one string, shown by `store info`)."""
    return {"weights": trunk.weights_id, "weights_hash": trunk.weights_hash}


def describe_trunk(trunk: Trunk, config: BackboneConfig, precision: str) -> dict[str, Any]:
    """The `trunk` attrs of a feature array: everything that made it, as plain JSON values."""
    return {
        "backbone": config.backbone,
        "node": config.layer,
        "weights": dict(trunk.weights_source),
        "weights_hash": trunk.weights_hash,
        "input_size": config.image_size,
        **INPUT_DESCRIPTION,
        "precision": precision,
    }


def config_from_description(
    trunk: dict[str, Any], weights_file: str | None = None
) -> BackboneConfig:
    """The BackboneConfig that `describe_trunk` described (`weights_file`: where a "file" source's
    file is now, when not at its recorded path)."""
    from colorfeat.config import BackboneConfig

    source = trunk["weights"]
    kind = source["source"]
    if kind not in ("none", "imagenet", "file"):
        raise UserError(f"unknown trunk weights source {kind!r} in the store's feature attrs")
    weights = weights_file or source["path"] if kind == "file" else kind
    return BackboneConfig(
        backbone=trunk["backbone"],
        layer=trunk["node"],
        weights=weights,
        image_size=int(trunk["input_size"]),
        seed=int(source.get("seed", 0)),
    )


__all__ = [
    "TraceShape",
    "Trunk",
    "backbone_names",
    "check_trunk",
    "config_from_description",
    "create_trunk",
    "describe_trunk",
    "describe_weights",
    "feature_shape",
    "fuse_batchnorm",
    "imagenet_weights",
    "network_reachable",
    "prepare_input",
    "state_dict_hash",
    "trunk_from_state",
]
