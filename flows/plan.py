"""The caching scheme of a rebuild: every stage's key and output directory, before anything runs.

A stage's key hashes its name, its inputs' keys, the part of the configuration it reads and its
code version (`colorfeat.hashing.stage_key`); its output goes to `WORK/stages/<key>`. Outputs are
deterministic functions of inputs, so the whole chain of keys follows from the pipeline config and
the source identity alone: an unchanged rebuild finds every stage complete, and a changed option
changes exactly the keys downstream of the stages that read it. Options that only change how fast
a stage runs (workers, Dask address, batch size) are not part of any key. No Prefect here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import colorfeat
from colorfeat.config import PipelineConfig
from colorfeat.constants import REBALANCE_ALPHA, REBALANCE_GAMMA, STORE_SCHEMA
from colorfeat.hashing import file_sha256, stage_key

# In the order the flow runs them; `acquire` and `publish` have no stage directory.
STAGES = (
    "acquire",
    "captions",
    "vocab",
    "embeddings",
    "images",
    "priors",
    "features",
    "publish",
)
# The module whose `CODE_VERSION` or `STAGE_VERSION` (if any) versions a stage's output.
_MODULES = {
    "captions": "colorfeat.captions",
    "vocab": "colorfeat.vocab",
    "embeddings": "colorfeat.embeddings",
    "images": "colorfeat.images",
    "priors": "colorfeat.priors_stage",
    "features": "colorfeat.extract",
}
SUCCESS = "_SUCCESS"


@dataclass(frozen=True)
class StagePlan:
    """One stage of one rebuild: its cache key and where its complete output lives."""

    name: str
    key: str
    out_dir: Path

    @property
    def complete(self) -> bool:
        return (self.out_dir / SUCCESS).exists()


def code_version(stage: str) -> str:
    """The package version, the store schema and the stage module's own version, if it has one."""
    module = importlib.import_module(_MODULES[stage])
    own = getattr(module, "CODE_VERSION", None) or getattr(module, "STAGE_VERSION", 0)
    return f"{colorfeat.__version__}+{STORE_SCHEMA}+{own}"


def content_of(spec: str) -> str:
    """A named choice (`word2vec`, `imagenet`, `none`) as is; a file by its SHA-256."""
    path = Path(spec)
    return f"sha256:{file_sha256(path)}" if path.is_file() else spec


def features_precision(device: str) -> str:
    """The compute precision extraction uses on `device` (it changes the stored values)."""
    from colorfeat.extract import autocast_dtype, resolve_device

    dtype = autocast_dtype(resolve_device(device))
    return "fp32" if dtype is None else str(dtype).removeprefix("torch.")


def stage_configs(config: PipelineConfig) -> dict[str, dict[str, Any]]:
    """The part of the pipeline config each stage reads (what goes into its key)."""
    backbone = config.backbone.to_dict()
    backbone["weights"] = content_of(backbone["weights"])
    return {
        "captions": {"lexicon": content_of(config.lexicon), "limit": config.limit},
        "vocab": {"min_count": config.min_count},
        "embeddings": {
            "spec": content_of(config.embeddings),
            "dim": config.embedding_dim,
            "seed": config.seed,
        },
        "images": {"image_size": config.image_size, "max_len": config.max_len},
        "priors": {"alpha": REBALANCE_ALPHA, "gamma": REBALANCE_GAMMA},
        "features": {**backbone, "precision": features_precision(config.device)},
    }


def plan_rebuild(config: PipelineConfig, source_identity: str) -> dict[str, StagePlan]:
    """Every directory stage's key and output directory, from the config and the source identity."""
    stages_dir = Path(config.work_dir).resolve() / "stages"
    configs = stage_configs(config)
    keys: dict[str, str] = {}

    def key(stage: str, *inputs: str) -> None:
        keys[stage] = stage_key(stage, list(inputs), configs[stage], code_version(stage))

    key("captions", source_identity)
    key("vocab", keys["captions"])
    key("embeddings", keys["captions"], keys["vocab"])
    key("images", source_identity, keys["captions"], keys["vocab"])
    key("priors", keys["images"])
    key("features", keys["images"])
    return {stage: StagePlan(stage, k, stages_dir / k) for stage, k in keys.items()}
