"""The feature arrays: `features.zarr/<split>/<name>` (N, C, H, W) float16, chunked along N only,
compressed (colorfeat.store.codecs), with attrs that say exactly how the features were made."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from colorfeat.config import BackboneConfig
from colorfeat.errors import UserError
from colorfeat.store import schema
from colorfeat.store.codecs import FEATURE_CODEC, feature_compressors
from colorfeat.trunk.engine import Compute
from colorfeat.trunk.markers import MARKERS
from colorfeat.trunk.preprocess import INPUT_DESCRIPTION
from colorfeat.trunk.shapes import feature_shape
from colorfeat.trunk.version import FEATURES_VERSION

FEATURES_GROUP = "features.zarr"  # in the stage's output directory


def feature_array(
    root: zarr.Group, split: str, rgb: zarr.Array, backbone: BackboneConfig, chunk_n: int,
    partial: Path, attrs: dict[str, Any],
) -> zarr.Array:  # fmt: skip
    """Open the split's feature array in the partial dir, or create it (again, if it differs).
    `attrs`: its attrs (`feature_attrs`, or a rebuild's from the previous output)."""
    _check_rgb(split, rgb, backbone)
    n, c, h, w = rgb.shape[0], *feature_shape(backbone)
    settings = array_settings((n, c, h, w), chunk_n)
    key = f"{split}/{backbone.name}"
    if key in root:
        arr = root[key]
        same_layout = (arr.shape, arr.chunks) == (settings["shape"], settings["chunks"])
        if same_layout and arr.shards is None and dict(arr.attrs) == attrs:
            return arr
        # made with other settings (chunking, weights, precision): start this split afresh
        shutil.rmtree(partial / FEATURES_GROUP / split / backbone.name, ignore_errors=True)
        shutil.rmtree(partial / MARKERS / split, ignore_errors=True)
        root = zarr.open_group(str(partial / FEATURES_GROUP), mode="a")
    group = root.require_group(split)
    return group.create_array(backbone.name, attributes=attrs, **settings)


def array_settings(shape: tuple[int, ...], chunk_n: int) -> dict[str, Any]:
    """How a (N, C, H, W) feature array is laid out and encoded (`create_array` keywords)."""
    n = shape[0]
    return {
        "shape": shape,
        "chunks": (max(1, min(chunk_n, n)), *shape[1:]),
        "dtype": "float16",
        "compressors": feature_compressors(),
        "fill_value": 0.0,
        "dimension_names": ("image", "channel", "y", "x"),
        "config": {"write_empty_chunks": True},
    }


def feature_attrs(made: dict[str, Any], backbone: BackboneConfig, run: Compute) -> dict[str, Any]:
    """What a feature array says about how it was made (`made`: of its trunk, as
    `colorfeat.trunk.provenance.made_by` says)."""
    return {
        "backbone": backbone.backbone,
        "layer": backbone.layer,
        "name": backbone.name,
        "weights": made["weights"],
        "weights_hash": made["weights_hash"],
        "input_size": backbone.image_size,
        **INPUT_DESCRIPTION,
        "dtype": "float16",
        "compute": run.describe(),
        "trunk": made["trunk"],
        "codec": FEATURE_CODEC,
        "code_version": FEATURES_VERSION,
    }


def _check_rgb(split: str, rgb: zarr.Array, backbone: BackboneConfig) -> None:
    """UserError unless `rgb` is (N, S, S, 3) uint8 at the trunk's image size."""
    s = rgb.shape[1] if rgb.ndim > 1 else None
    if rgb.ndim != 4 or rgb.shape[2] != s or rgb.shape[3] != 3 or rgb.dtype != np.uint8:
        where = schema.split_path(split, schema.RGB)
        raise UserError(f"{where} must be (N, S, S, 3) uint8, got {rgb.shape} {rgb.dtype}")
    if s != backbone.image_size:
        raise UserError(
            f"images are {s}x{s} but the backbone config says --image-size {backbone.image_size}"
        )
