"""The stages of a rebuild: the table (`colorfeat.stages.table`), one module per stage, the
plain runner, planning and the dry run. This module gathers the table's public names."""

from __future__ import annotations

from colorfeat.hashing import content_of
from colorfeat.stages.context import Context, Cost, Estimate
from colorfeat.stages.features import features_precision, planned_device
from colorfeat.stages.publish import source_attrs, version_attrs
from colorfeat.stages.table import (
    FEATURES,
    PUBLISH,
    STAGES,
    Stage,
    content_config,
    is_features,
    registered,
    stages_for,
    version_parts,
)
from colorfeat.trunk.version import FEATURES_VERSION

__all__ = [
    "FEATURES",
    "FEATURES_VERSION",
    "PUBLISH",
    "STAGES",
    "Context",
    "Cost",
    "Estimate",
    "Stage",
    "content_config",
    "content_of",
    "features_precision",
    "is_features",
    "planned_device",
    "registered",
    "source_attrs",
    "stages_for",
    "version_attrs",
    "version_parts",
]
