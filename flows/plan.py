"""The caching scheme of a rebuild: every stage's key and output directory, before anything runs.

A stage's key hashes its name, its inputs' keys, the part of the configuration it reads and its
code version (`colorfeat.hashing.stage_key`); its output goes to `WORK/stages/<key>`. Outputs are
deterministic functions of inputs, so the whole chain of keys follows from the pipeline config and
the source identity alone: an unchanged rebuild finds every stage complete, and a changed option
changes exactly the keys downstream of the stages that read it. Options that only change how fast
a stage runs (workers, Dask address, batch size) are not part of any key. No Prefect here.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import colorfeat
from colorfeat.config import PipelineConfig, resolve_precision
from colorfeat.constants import REBALANCE_ALPHA, REBALANCE_GAMMA, STORE_SCHEMA
from colorfeat.errors import UserError
from colorfeat.hashing import file_sha256, stage_key
from colorfeat.parallel import SUCCESS

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
    own = _module_version(_MODULES[stage])
    return f"{colorfeat.__version__}+{STORE_SCHEMA}+{own}"


def _module_version(name: str) -> object:
    """`CODE_VERSION` or `STAGE_VERSION` of a module, read from its source unless it is imported.

    Reading the source keeps planning free of the stage modules' heavy imports (PyTorch); both
    constants are literals or f-strings of `__version__`.
    """
    if name in sys.modules:
        module = sys.modules[name]
        return getattr(module, "CODE_VERSION", None) or getattr(module, "STAGE_VERSION", 0)
    spec = importlib.util.find_spec(name)
    tree = ast.parse(Path(spec.origin).read_text())
    found: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and target.id in ("CODE_VERSION", "STAGE_VERSION"):
                    expr = ast.Expression(node.value)
                    code = compile(expr, spec.origin, "eval")
                    found[target.id] = eval(code, {"__version__": colorfeat.__version__})  # noqa: S307
    return found.get("CODE_VERSION") or found.get("STAGE_VERSION", 0)


def content_of(spec: str) -> str:
    """A named choice (`word2vec`, `imagenet`, `none`) as is; a file by its SHA-256."""
    path = Path(spec)
    return f"sha256:{file_sha256(path)}" if path.is_file() else spec


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
        "features": {**backbone, "precision": features_precision(config)},
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
        return self.published and len(self.reused) == len(STAGES) - 1


def preflight(config: PipelineConfig) -> Preflight:
    """Read what is done: the source, each stage's _SUCCESS, the version and LATEST (no writes)."""
    from colorfeat.sources import acquired
    from colorfeat.store import version_id

    work_dir = Path(config.work_dir)
    source = acquired(config.source, work_dir, limit=config.limit, seed=config.seed)
    latest = read_latest(config.store)
    if source is None:
        return Preflight(None, {}, None, False, latest)
    stages = plan_rebuild(config, source["identity"])
    keys = {name: stage.key for name, stage in stages.items()}
    vid = version_id({"keys": keys, "features": [{"name": config.backbone.name}]})
    return Preflight(
        source, stages, vid, _exists(config.store, f"versions/{vid}/zarr.json"), latest
    )


def read_latest(root: str) -> str | None:
    """The version id LATEST names under a store root, or None when there is none yet."""
    import fsspec

    fs, base = fsspec.core.url_to_fs(root)
    try:
        return fs.cat_file(f"{base}/LATEST").decode().strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None


def _exists(root: str, rel: str) -> bool:
    import fsspec

    fs, base = fsspec.core.url_to_fs(root)
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


def check_source(source: str) -> None:
    """Raise UserError unless `source` names a known source, a URL or a COCO-layout directory."""
    from colorfeat.coco import find_splits
    from colorfeat.sources import OFFICIAL

    if source == "synthetic" or source in OFFICIAL or source.startswith(("http://", "https://")):
        return
    if not Path(source).expanduser().is_dir():
        named = difflib.get_close_matches(source, ["synthetic", *OFFICIAL], n=1)
        hint = f"; did you mean {named[0]}?" if named else ""
        raise UserError(
            f"--source must be synthetic, coco2014, coco2017, an http(s) URL or a COCO-layout "
            f"directory; {source!r} is none of these{hint}"
        )
    find_splits(Path(source).expanduser())


def require_device(device: str) -> None:
    """Raise UserError for `--device cuda` where no GPU is present (PyTorch only if one may be)."""
    if device.startswith("cuda") and planned_device("auto") != "cuda":
        raise UserError(f"--device {device} was asked for, but there is no CUDA GPU here")
