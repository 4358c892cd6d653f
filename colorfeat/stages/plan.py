"""The caching scheme of a rebuild: every stage's key and output directory, before anything runs.

The keys follow from the stage table (colorfeat.stages) through `colorfeat.stages.runner.plan_keys`:
outputs are deterministic functions of inputs, so the whole chain of keys follows from the
pipeline config and the source identity alone. An unchanged rebuild finds every stage complete,
and a changed option changes exactly the keys downstream of the stages that read it. No Prefect.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from colorfeat.config import PipelineConfig
from colorfeat.errors import UserError
from colorfeat.filesystems import filesystem
from colorfeat.parallel import SUCCESS
from colorfeat.stages import STAGES as TABLE
from colorfeat.stages import is_features, planned_device
from colorfeat.stages.runner import plan_keys, stages_dir
from colorfeat.store.layout import VERSIONS
from colorfeat.store.layout import read_latest as layout_latest

ZARR_JSON = "zarr.json"  # a version's root metadata: it is published when this is there

# In the order the flow runs them; `acquire` and `publish` have no stage directory.
STAGES = tuple(TABLE)


@dataclass(frozen=True)
class StagePlan:
    """One stage of one rebuild: its cache key and where its complete output lives."""

    name: str
    key: str
    out_dir: Path

    @property
    def complete(self) -> bool:
        return (self.out_dir / SUCCESS).exists()


def plan_rebuild(config: PipelineConfig, source_identity: str) -> dict[str, StagePlan]:
    """Every directory stage's key and output directory, from the config and the source identity."""
    where = stages_dir(config)
    keys = plan_keys(config, source_identity)
    return {stage: StagePlan(stage, key, where / key) for stage, key in keys.items()}


# --------------------------------------------------------------------------- before a run
@dataclass(frozen=True)
class Preflight:
    """What a rebuild would find, read from the work dir and the store before anything runs.

    `source` is the acquire result when the source is ready without work (generated, downloaded
    or a directory); only then are the stage keys, and so the version id, known.
    """

    source: dict | None
    stages: dict[str, StagePlan]
    version: str | None
    published: bool
    latest: str | None

    @property
    def reused(self) -> list[str]:
        """The stages whose output is already complete (acquire counts when the source is)."""
        ready = ["acquire"] if self.source is not None else []
        return ready + [name for name, stage in self.stages.items() if stage.complete]

    @property
    def nothing_to_do(self) -> bool:
        """Every stage complete and the version published: only LATEST may have to move."""
        return self.published and len(self.reused) == len(self.stages) + 1


def preflight(config: PipelineConfig) -> Preflight:
    """Read what is done: the source, each stage's _SUCCESS, the version and LATEST (no writes)."""
    from colorfeat.sources import acquired
    from colorfeat.store import version_id

    work_dir = Path(config.work_dir)
    source = acquired(
        config.source, work_dir, limit=config.limit, seed=config.seed,
        options=config.source_options,
    )  # fmt: skip
    latest = read_latest(config.store)
    if source is None:
        return Preflight(None, {}, None, False, latest)
    stages = plan_rebuild(config, source["identity"])
    keys = {name: stage.key for name, stage in stages.items()}
    vid = version_id({"keys": keys, "features": [{"name": t.name} for t in config.trunks]})
    published = _exists(config.store, f"{VERSIONS}/{vid}/{ZARR_JSON}")
    return Preflight(source, stages, vid, published, latest)


def read_latest(root: str) -> str | None:
    """The version id LATEST names under a store root, or None when there is none yet (a LATEST
    that holds anything but a version id is a one-line UserError)."""
    fs, base = filesystem(root, None)
    return layout_latest(fs, base, root)


def _exists(root: str, rel: str) -> bool:
    fs, base = filesystem(root, None)
    return fs.exists(f"{base}/{rel}")


def feature_chunks(stage: StagePlan) -> tuple[int, int]:
    """(done, total) feature chunks of an unfinished features stage; (0, 0) before it starts."""
    partial = stage.out_dir.with_name(stage.out_dir.name + ".partial")
    done = total = 0
    for meta in partial.glob("features.zarr/*/*/zarr.json"):
        array = json.loads(meta.read_text())
        n, chunk_n = array["shape"][0], array["chunk_grid"]["configuration"]["chunk_shape"][0]
        total += math.ceil(n / chunk_n)
        marks = partial / "_chunks_done" / meta.parent.parent.name
        done += sum(1 for _ in marks.iterdir()) if marks.is_dir() else 0
    return done, total


def pending_feature_chunks(check: Preflight) -> tuple[int, int]:
    """(done, total) chunks over the unfinished features stages of a rebuild."""
    counts = [
        feature_chunks(stage)
        for name, stage in check.stages.items()
        if is_features(name) and not stage.complete
    ]
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def check_source(config: PipelineConfig) -> None:
    """Raise UserError unless the source is a kind that can work and reads every source option
    given (`colorfeat.sources`)."""
    from colorfeat.sources import check

    check(config.source, config.source_options)


def require_device(device: str) -> None:
    """Raise UserError for `--device cuda` where no GPU is present (PyTorch only if one may be)."""
    if device.startswith("cuda") and planned_device("auto") != "cuda":
        raise UserError(f"--device {device} was asked for, but there is no CUDA GPU here")
