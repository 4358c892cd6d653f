"""The features stage's row parts: its function, config slice, what it adds to a version (every
`<split>/features/<name>`) and its cost for the dry run. The extraction itself is
`colorfeat.trunk.extract.features_stage`, imported (with PyTorch) only when features are built.

Cost: seconds measured once on the 2-core x86-64 VM without a GPU:
- FEATURES_GMAC_PER_CPU_S_COMPILED: `benchmarks/scale.py --sizes 4000,8000,16000 --workers 2
  --image-size 224 --weights none` on the quiet machine (docs/performance.md): resnet101.layer2
  over the 10,009 pictures kept (18,194 GMAC) in 143.4 s on 2 cores, fp32 under torch.compile
  (from COMPILE_MIN_IMAGES pictures on), the trunk's set-up included;
- FEATURES_GMAC_PER_CPU_S (eager, smaller runs): `features_stage` (fp32, batch 64) over 65
  natural 224 px pictures, resnet101.layer2: 117.9 GMAC in 3.9 s of CPU time. The same stage did
  resnet18.layer2 over 768 pictures of 64 px (62.2 GMAC) in 1.9 s of CPU time: the cost follows
  the trunk's multiply-adds (TRUNK_MACS).
A run's features take GMAC / (rate x the CPU cores this process may use), counting every picture
as kept (an upper bound: on COCO about 63% keep a colour caption); a busy machine is slower; on a
GPU the features are not estimated (no GPU measurement yet).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from colorfeat.config import BackboneConfig, PipelineConfig, resolve_precision
from colorfeat.constants import COMPILE_MIN_IMAGES
from colorfeat.disk import feature_bytes_needed
from colorfeat.errors import UserError
from colorfeat.hashing import content_of
from colorfeat.stages.context import Context, Cost, Estimate
from colorfeat.store import schema
from colorfeat.store.codecs import images_per_chunk
from colorfeat.store.parts import Build, Check, Part

FEATURES_SETUP_S = 3.0  # building the trunk (docs/performance.md)
FEATURES_GMAC_PER_CPU_S = 117.9 / 3.9
FEATURES_GMAC_PER_CPU_S_COMPILED = 18_194 / (143.4 * 2)
# Multiply-adds per input pixel of each trunk up to the end of each layer (convolutions; the same
# for every S that is a multiple of 32), counted with forward hooks on torchvision's models at
# 224 px. A backbone missing here is costed as the largest trunk.
TRUNK_MACS = {
    "resnet18": {"layer1": 11_568, "layer2": 19_760, "layer3": 27_952, "layer4": 36_144},
    "resnet34": {"layer1": 16_176, "layer2": 33_584, "layer3": 60_208, "layer4": 73_008},
    "resnet50": {"layer1": 15_664, "layer2": 36_144, "layer3": 65_328, "layer4": 81_456},
    "resnet101": {"layer1": 15_664, "layer2": 36_144, "layer3": 139_312, "layer4": 155_440},
    "resnet152": {"layer1": 15_664, "layer2": 53_552, "layer3": 213_296, "layer4": 229_424},
}


# --------------------------------------------------------------------------- run and key
def run(ctx: Context, trunk: int = 0) -> dict:
    """Extract the `trunk`-th feature set of the run's pictures (colorfeat.trunk.extract)."""
    from colorfeat.trunk.extract import features_stage  # PyTorch: only when features are built

    cfg = ctx.config
    return features_stage(
        ctx.inputs["images"], cfg.trunks[trunk], ctx.out_dir, device=cfg.device,
        batch_size=cfg.batch_size, devices=cfg.devices, precision=features_precision(cfg),
        compile_trunk=cfg.compile_trunk, dask_address=cfg.dask_address,
    )  # fmt: skip


def planned_device(device: str) -> str:
    """ "cpu" or "cuda" for `--device`, importing PyTorch only where a GPU may be present."""
    if device != "auto":
        return "cuda" if device.startswith("cuda") else device
    if not any(Path("/dev").glob("nvidia[0-9]*")) and not Path("/dev/kfd").exists():
        return "cpu"  # no NVIDIA or ROCm device node: PyTorch could not see a GPU either
    from colorfeat.device import resolve_device

    return resolve_device("auto").type


def features_precision(config: PipelineConfig) -> str:
    """The compute precision extraction uses: it changes the stored values, so it is in the key."""
    return resolve_precision(config.precision, planned_device(config.device))


def config_slice(config: PipelineConfig, trunk: int = 0) -> dict[str, Any]:
    """What determines the `trunk`-th feature set: the trunk (weights by content), the precision."""
    backbone = config.trunks[trunk].to_dict()
    backbone["weights"] = content_of(backbone["weights"])
    return {**backbone, "precision": features_precision(config)}


# --------------------------------------------------------------------------- into a version
def _listed(results: Sequence[dict]) -> dict:
    return {schema.ATTR_FEATURES: [r["name"] for r in results]}


def _write(build: Build, results: Sequence[dict]) -> None:
    for result in results:
        for split in build.splits:
            src = Path(result["path"]) / schema.split_path(split, result["name"])
            if not (src / "zarr.json").is_file():
                raise _missing(result["name"], split, src)
            build.link(src, schema.features_path(split, result["name"]))


def _missing(name: str, split: str, src: Path) -> Exception:
    return UserError(f"feature set {name} has no {split} array at {src}")


def _check(check: Check) -> None:
    for split in check.splits:
        for name in check.attrs.get(schema.ATTR_FEATURES, []):
            path = schema.features_path(split, name)
            check.need(path in check.group, f"{path} is missing")


PART = Part("features", _write, arrays=(schema.FEATURE_SETS,), check=_check, listed=_listed)


# --------------------------------------------------------------------------- cost
def feature_shape(trunk: BackboneConfig) -> tuple[int, int, int]:
    """(C, H, W) of one picture's feature map, from a meta-device trace (no weights, no compute)."""
    from colorfeat.trunk.backbone import feature_shape as traced

    return traced(trunk)


def trunk_gmac(config: PipelineConfig, trunk: BackboneConfig, n: int) -> float:
    """Billions of multiply-adds one trunk spends on n pictures at the run's image size.

    The trunk runs in whole batches of whole chunks, zero-padded: n is rounded up to them.
    """
    c, h, w = feature_shape(trunk)
    chunk = images_per_chunk(c * h * w * 2)  # as colorfeat.trunk.extract chunks float16 maps
    batch = chunk * math.ceil(config.batch_size / chunk)
    # Measured for torchvision's ResNets; another trunk is costed as the deepest ResNet's.
    macs = TRUNK_MACS.get(trunk.backbone, TRUNK_MACS["resnet152"])
    per_pixel = macs.get(trunk.layer, max(macs.values()))
    return math.ceil(n / batch) * batch * config.image_size**2 * per_pixel / 1e9


def features_gmac(config: PipelineConfig, n: int) -> float:
    """Billions of multiply-adds every trunk of the run spends on n pictures."""
    return sum(trunk_gmac(config, trunk, n) for trunk in config.trunks)


def cost(est: Estimate, trunk: int = 0) -> Cost:
    """The `trunk`-th feature set: compute on the CPU cores, compressed bytes as the stage asks."""
    config, n = est.config, est.pictures
    backbone = config.trunks[trunk]
    compiled = n >= COMPILE_MIN_IMAGES  # as colorfeat.trunk.extract decides on a CPU
    rate = FEATURES_GMAC_PER_CPU_S_COMPILED if compiled else FEATURES_GMAC_PER_CPU_S
    seconds = FEATURES_SETUP_S + trunk_gmac(config, backbone, n) / (rate * est.cores)
    stored = feature_bytes_needed(n * math.prod(feature_shape(backbone)))
    return Cost(seconds, stored, stored, on_device=True)
