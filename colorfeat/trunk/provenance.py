"""What a feature array says about the trunk that made it, and the config it says back.

`describe_trunk` gives the structured `trunk` attrs of a feature array (plain JSON values);
`weights_attrs` the flat `weights`/`weights_hash` attrs `store info` shows; `made_by` all three,
what a features stage records of its trunk (made where the trunk is: a Dask worker's is sent back);
`config_from_description` turns `trunk` attrs back into the `BackboneConfig` that made them.
"""

from __future__ import annotations

from typing import Any

from colorfeat.config import BackboneConfig
from colorfeat.errors import UserError
from colorfeat.trunk.graph import Trunk
from colorfeat.trunk.preprocess import INPUT_DESCRIPTION

WEIGHT_SOURCES = ("none", "imagenet", "file")


def weights_attrs(trunk: Trunk) -> dict[str, str]:
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


def made_by(trunk: Trunk, config: BackboneConfig, precision: str) -> dict[str, Any]:
    """What a feature array and its stage result say of the trunk that made them: `weights`,
    `weights_hash` and `trunk` (plain JSON values)."""
    return {**weights_attrs(trunk), "trunk": describe_trunk(trunk, config, precision)}


def config_from_description(
    trunk: dict[str, Any], weights_file: str | None = None
) -> BackboneConfig:
    """The BackboneConfig that `describe_trunk` described (`weights_file`: where a "file" source's
    file is now, when not at its recorded path)."""
    source = trunk["weights"]
    kind = source["source"]
    if kind not in WEIGHT_SOURCES:
        raise UserError(f"unknown trunk weights source {kind!r} in the store's feature attrs")
    weights = weights_file or source["path"] if kind == "file" else kind
    return BackboneConfig(
        backbone=trunk["backbone"],
        layer=trunk["node"],
        weights=weights,
        image_size=int(trunk["input_size"]),
        seed=int(source.get("seed", 0)),
    )
