"""Frozen, self-validating configuration objects for the pipeline and the backbone."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from colorfeat.constants import DEFAULT_IMAGE_SIZE, EMBEDDING_DIM, PRIORS_DIR, TARGET_STRIDE
from colorfeat.errors import UserError

# Compute precision of the trunk. "auto" is bf16 on CUDA and fp32 on CPU, whatever the CPU: the
# features (and so the version id) must not change with the machine's bf16 support.
PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(precision: str, device: str) -> str:
    """fp32 or bf16: what `precision` means on a resolved `device` (cpu, cuda, cuda:1)."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if device.startswith("cuda") else "fp32"
    return precision


def _lexicon_default() -> str:
    packaged = Path(__file__).resolve().parent / "priors" / "color_words.txt"
    return str(packaged if packaged.exists() else PRIORS_DIR / "color_words.txt")


@dataclass(frozen=True)
class BackboneConfig:
    """Which frozen trunk produces a feature set, and how it is fed.

    `backbone` is any torchvision classification model, `layer` any node of its traced graph (a
    module name such as `layer2` or `features.3` stands for the last node inside it). `check()`
    validates both, and the image size (a multiple of the node's stride), by a trace on the meta
    device (no weights, no compute); it imports PyTorch, so a rebuild that finds everything
    already built (and so already checked) does not call it.
    """

    backbone: str = "resnet101"
    layer: str = "layer2"
    weights: str = "imagenet"  # "imagenet" (torchvision V1), "none" (seeded random) or a file
    image_size: int = DEFAULT_IMAGE_SIZE
    seed: int = 0

    def __post_init__(self) -> None:
        if self.image_size < 1:
            raise UserError(f"--image-size must be positive, got {self.image_size}")

    def check(self) -> BackboneConfig:
        """This config, once its backbone, node and image size are known to fit; else UserError."""
        from colorfeat.backbone import check_trunk

        check_trunk(self.backbone, self.layer, self.image_size)
        return self

    @property
    def name(self) -> str:
        """The feature-set name in the store, e.g. `resnet101.layer2`."""
        return f"{self.backbone}.{self.layer}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PipelineConfig:
    """Everything `colorfeat run` needs; what determines content is `content_dict()`."""

    source: str = "synthetic"
    store: str = "store"
    work_dir: str = "work"
    limit: int | None = None
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 64
    embeddings: str = "word2vec"
    embedding_dim: int = EMBEDDING_DIM
    workers: int = 1
    dask_address: str | None = None
    seed: int = 0
    min_count: int = 1
    max_len: int = 20
    lexicon: str = field(default_factory=_lexicon_default)

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit must be at least 1, got {self.limit}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.workers < 1:
            raise UserError(f"--workers must be at least 1, got {self.workers}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise UserError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if self.precision not in PRECISIONS:
            choices = ", ".join(PRECISIONS)
            raise UserError(f"--precision must be one of {choices}, got {self.precision!r}")
        if self.min_count < 1 or self.max_len < 1:
            raise UserError("--min-count and --max-len must be at least 1")
        if self.backbone.image_size % TARGET_STRIDE:
            raise UserError(f"--image-size must be divisible by {TARGET_STRIDE}")

    @property
    def image_size(self) -> int:
        return self.backbone.image_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PipelineConfig:
        d = dict(d)
        d["backbone"] = BackboneConfig(**d.get("backbone", {}))
        return cls(**d)
