"""The publish stage: what every row added, handed to `colorfeat.store.publish` with the
version's provenance (source, content config, lexicon, counts).

Writes `ROOT/versions/<id>` and `ROOT/LATEST` (see colorfeat.store.publishing); returns
{"version", "path", "published"}.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from colorfeat.config import PipelineConfig
from colorfeat.hashing import file_sha256
from colorfeat.redact import redact_url
from colorfeat.sources import kind_of
from colorfeat.stages.captions import load_lexicon
from colorfeat.stages.context import Context
from colorfeat.store.parts import Part


def publish_version(ctx: Context, parts: list[tuple[Part, dict]], content: dict) -> dict:
    """Publish the version made of `parts` under `ctx.config.store`; `content` = the config slice
    of every directory stage."""
    from colorfeat.store.publishing import publish

    cfg = ctx.config
    attrs = version_attrs(cfg, ctx.inputs, content)
    scratch = Path(cfg.work_dir).resolve() / "stages"
    return publish(cfg.store, parts, keys=dict(ctx.keys or {}), attrs=attrs, scratch=scratch)


def version_attrs(config: PipelineConfig, results: Mapping[str, dict], content: dict) -> dict:
    """The provenance a version's zarr.json carries: source, content config, lexicon, counts."""
    return {
        "source": source_attrs(config, results["acquire"]),
        "config": content,
        "lexicon": {
            "file": Path(config.lexicon).name,
            "sha256": file_sha256(config.lexicon),
            "words": sorted(load_lexicon(config.lexicon)),
        },
        "counts": {name: r["counts"] for name, r in results.items() if "counts" in r},
    }


def source_attrs(config: PipelineConfig, acquired: dict) -> dict[str, Any]:
    """The source as a version records it: its spec (credentials redacted), its kind, its
    content identity and the source options given (none: no "options")."""
    attrs = {
        "spec": redact_url(config.source),
        "kind": kind_of(config.source).name,
        "identity": acquired["identity"],
    }
    if given := config.source_options.given():
        attrs["options"] = given
    return attrs
