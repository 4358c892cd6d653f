"""Trunk speed: the generic traced trunk against the former hand-written ResNet path.

Both compute resnet101.layer2 (seeded random weights) on the same (B, 3, S, S) channels_last
input under inference_mode, fp32 and bf16 autocast:
- `resnet`: the children of torchvision's ResNet up to layer2 in an `nn.Sequential`, each
  conv's BatchNorm folded by hand (the path colorfeat used before any torchvision trunk);
- `generic`: `colorfeat.trunk.backbone.create_trunk` (torchvision's
  `create_feature_extractor` graph) with `fuse_batchnorm` (BatchNorm folding on the traced
  graph), as the features stage runs it.
Prints pictures/s of each (best of the rounds, interleaved in alternating order) and
generic / resnet.

    .venv/bin/python benchmarks/backbone.py [--size 224] [--batch-size 16] [--rounds 3]
        [--device auto]
"""

from __future__ import annotations

import argparse
import copy
import time
from collections import OrderedDict

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from colorfeat.config import BackboneConfig
from colorfeat.device import resolve_device
from colorfeat.trunk.backbone import create_trunk
from colorfeat.trunk.fuse import fuse_batchnorm

RESNET_STEM = ("conv1", "bn1", "relu", "maxpool")


def resnet_path(cfg: BackboneConfig) -> nn.Module:
    """The hand-written path: ResNet children up to the layer, BatchNorm folded per block."""
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = torchvision.models.get_model(cfg.backbone, weights=None)
    layers = ("layer1", "layer2", "layer3", "layer4")
    names = RESNET_STEM + layers[: layers.index(cfg.layer) + 1]
    trunk = copy.deepcopy(nn.Sequential(OrderedDict((n, getattr(model, n)) for n in names))).eval()
    pairs = [(trunk, "conv1", "bn1")]
    for name in names[len(RESNET_STEM) :]:
        for block in getattr(trunk, name):
            convs = [n for n in ("conv1", "conv2", "conv3") if hasattr(block, n)]
            pairs += [(block, c, c.replace("conv", "bn")) for c in convs]
            if block.downsample is not None:
                pairs.append((block.downsample, "0", "1"))
    for parent, conv, bn in pairs:
        setattr(parent, conv, fuse_conv_bn_eval(getattr(parent, conv), getattr(parent, bn)))
        setattr(parent, bn, nn.Identity())
    return trunk.eval().requires_grad_(False)


def pictures_per_s(model: nn.Module, x: torch.Tensor, amp: torch.dtype | None, reps: int) -> float:
    dev = x.device
    with (
        torch.inference_mode(),
        torch.autocast(dev.type, dtype=amp or torch.float32, enabled=bool(amp)),
    ):
        model(x)  # warm-up: kernel selection, allocator
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(reps):
            y = model(x)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        y.sum().item()
    return reps * x.shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=3, help="batches per timed round")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    torch.manual_seed(0)
    dev = resolve_device(args.device)
    cfg = BackboneConfig("resnet101", "layer2", "none", args.size)
    models = {
        "resnet": resnet_path(cfg),
        "generic": fuse_batchnorm(create_trunk(cfg)),
    }
    models = {k: m.to(dev, memory_format=torch.channels_last) for k, m in models.items()}
    x = torch.randn(args.batch_size, 3, args.size, args.size, device=dev)
    x = x.to(memory_format=torch.channels_last)  # (B, 3, S, S)
    with torch.inference_mode():
        ref, out = models["resnet"](x), models["generic"](x)
    rel = float(torch.linalg.norm(out - ref) / torch.linalg.norm(ref))
    print(
        f"{cfg.name} at {args.size} px on {dev}, batch {args.batch_size}; fp32 rel. diff {rel:.1e}"
    )
    for precision, amp in (("fp32", None), ("bf16", torch.bfloat16)):
        best = {k: 0.0 for k in models}
        for r in range(args.rounds):
            order = list(models) if r % 2 == 0 else list(models)[::-1]  # no first-mover bias
            for name in order:
                model = models[name]
                best[name] = max(best[name], pictures_per_s(model, x, amp, args.reps))
        print(
            f"{precision}: resnet {best['resnet']:.1f} pictures/s, generic {best['generic']:.1f} "
            f"pictures/s, generic/resnet {best['generic'] / best['resnet']:.3f}"
        )


if __name__ == "__main__":
    main()
