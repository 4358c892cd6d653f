"""Frozen, self-validating configuration objects for the pipeline and the backbone."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_type_hints

from colorfeat.constants import DEFAULT_IMAGE_SIZE, EMBEDDING_DIM, PRIORS_DIR, TARGET_STRIDE
from colorfeat.errors import UserError
from colorfeat.sources import SourceOptions, source_help
from colorfeat.sources.kind import VAL_FRACTION

# Compute precision of the trunk. "auto" is bf16 on CUDA and fp32 on CPU, whatever the CPU: the
# features (and so the version id) must not change with the machine's bf16 support.
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
NAMED_WEIGHTS = ("imagenet", "none")
NAMED_EMBEDDINGS = ("word2vec",)


def option(default: Any = None, help: str = "", **cli: Any) -> Any:  # noqa: A002 (Typer's name)
    """A config field that is also a `colorfeat run` option: its help, and CLI hints.

    `cli` may say `required=True` (no default on the command line), `min=1`, `choices=(...)`,
    `path=True` (shown as PATH, made absolute by `PipelineConfig.resolved`), `multiple=True`
    (repeatable: the command passes a list).
    """
    meta = {"help": help, **cli}
    if callable(default):
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


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


# The help of the trunk options says what `BackboneConfig.check` (colorfeat.trunk.backbone.
# check_trunk) and `PipelineConfig` accept; every example in it is checked by the tests.
TRUNK_EXAMPLES = {"resnet101": "layer2", "resnet18": "layer3", "convnext_tiny": "features.3"}
IMAGE_SIZE_EXAMPLES = (64, 72, 224)  # each a multiple of the default trunk's stride, 8
BACKBONE_HELP = (
    "Frozen trunk: any torchvision classification model, e.g. " + ", ".join(TRUNK_EXAMPLES) + "."
)
LAYER_HELP = (
    "Node of the trunk whose output is stored: any node of its traced graph; a module name "
    "stands for the last node inside it, e.g. "
    + ", ".join(f"{layer} of {backbone}" for backbone, layer in TRUNK_EXAMPLES.items())
    + ". Repeat it for several feature sets of the trunk, each its own stage and array; the "
    "first is the store's default."
)
IMAGE_SIZE_HELP = (
    f"Square image size S: a multiple of {TARGET_STRIDE} (the ab targets are S/{TARGET_STRIDE} "
    "a side) and of the stride of each --layer node (8 for layer2 of a ResNet), e.g. "
    + ", ".join(map(str, IMAGE_SIZE_EXAMPLES))
    + "."
)


@dataclass(frozen=True)
class BackboneConfig:
    """Which frozen trunk produces a feature set, and how it is fed.

    `backbone` is any torchvision classification model, `layer` any node of its traced graph (a
    module name such as `layer2` or `features.3` stands for the last node inside it). `check()`
    validates both, and the image size (a multiple of the node's stride), by a trace on the meta
    device (no weights, no compute); it imports PyTorch, so a rebuild that finds everything
    already built (and so already checked) does not call it.
    """

    backbone: str = option("resnet101", BACKBONE_HELP)
    layer: str = option("layer2", LAYER_HELP, multiple=True)
    # "imagenet" (torchvision V1), "none" (seeded random) or a file
    weights: str = option("imagenet", "imagenet, none (seeded random) or a state-dict FILE.")
    image_size: int = option(DEFAULT_IMAGE_SIZE, IMAGE_SIZE_HELP)
    seed: int = 0  # the pipeline's seed (PipelineConfig.seed)

    def __post_init__(self) -> None:
        if self.image_size < 1:
            raise UserError(f"--image-size must be positive, got {self.image_size}")

    def check(self) -> BackboneConfig:
        """This config, once its backbone, node and image size are known to fit; else UserError."""
        from colorfeat.trunk.shapes import check_trunk  # imports nothing from this module

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
    """Everything a rebuild needs: the one declaration of the `colorfeat run` options.

    Fields made with `option()` are the command's options (BackboneConfig's are flattened into
    them); the others are library settings. What determines content is each stage's slice of it
    (`colorfeat.stages`).
    """

    source: str = option("synthetic", source_help(), required=True)
    store: str = option(
        "store", "Store root: a directory or an fsspec URL (s3://...).", required=True
    )
    work_dir: str = option(
        "work", "Local work dir: downloads, stage outputs, Prefect state.", path=True
    )
    image_column: str | None = option(
        None, "Caption table: the column naming the picture (default: found by its usual names)."
    )
    caption_column: str | None = option(
        None, "Caption table: the column holding the caption (default: found by its usual names)."
    )
    split_column: str | None = option(
        None, "Caption table: the column naming the split (default: 'split' if present)."
    )
    image_root: str | None = option(
        None, "Caption table: the folder its picture paths start from (default: the table's)."
    )
    val_fraction: float = option(
        VAL_FRACTION,
        "Share of the pictures held out for val, chosen by a hash of their name, where the source "
        "names no split (WebDataset shards, a caption table without a split column).",
    )
    limit: int | None = option(None, "Use at most N images (synthetic: generate N).", min=1)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    device: str = option("auto", "Where to run the trunk.", choices=DEVICES)
    precision: str = option(
        "auto",
        "Trunk compute precision; auto: bf16 on cuda, fp32 on any CPU. Part of the version id.",
        choices=PRECISIONS,
    )
    batch_size: int = option(64, "Images per forward pass.", min=1)
    embeddings: str = option("word2vec", "word2vec (fit on train captions) or a vectors FILE.")
    embedding_dim: int = EMBEDDING_DIM
    workers: int = option(1, "Local Dask worker processes for the CPU stages.", min=1)
    dask_address: str | None = option(None, "Run the CPU stages on this Dask scheduler instead.")
    seed: int = option(0, "Seed of the synthetic source, word2vec and random weights.")
    min_count: int = 1
    max_len: int = 20
    lexicon: str = field(default_factory=_lexicon_default)
    # further feature sets of the same trunk (the second `--layer` on), in the order given
    more_layers: tuple[str, ...] = ()
    devices: tuple[str, ...] | None = None  # feature extraction over several devices (flow only)
    compile_trunk: bool | None = None  # None: extract.features_stage decides

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit must be at least 1, got {self.limit}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.workers < 1:
            raise UserError(f"--workers must be at least 1, got {self.workers}")
        if self.workers > 1 and self.dask_address:
            raise UserError("give --workers or --dask-address, not both")
        if self.device not in DEVICES:
            raise UserError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if self.precision not in PRECISIONS:
            choices = ", ".join(PRECISIONS)
            raise UserError(f"--precision must be one of {choices}, got {self.precision!r}")
        if self.min_count < 1 or self.max_len < 1:
            raise UserError("--min-count and --max-len must be at least 1")
        if self.backbone.image_size % TARGET_STRIDE:
            raise UserError(f"--image-size must be divisible by {TARGET_STRIDE}")
        _ = self.source_options  # built here so that a bad value is one line before a run
        if self.devices is not None:
            object.__setattr__(self, "devices", tuple(self.devices))
        object.__setattr__(self, "more_layers", tuple(self.more_layers))
        layers = [self.backbone.layer, *self.more_layers]
        if len(set(layers)) != len(layers):
            raise UserError(f"--layer names each feature set once, got {', '.join(layers)}")

    @property
    def trunks(self) -> tuple[BackboneConfig, ...]:
        """Every feature set's trunk, in the order given: the first is `backbone`."""
        more = (replace(self.backbone, layer=layer) for layer in self.more_layers)
        return (self.backbone, *more)

    @property
    def source_options(self) -> SourceOptions:
        """How the source is read besides its `--source` value (`colorfeat.sources`)."""
        return SourceOptions(**{f.name: getattr(self, f.name) for f in fields(SourceOptions)})

    @property
    def image_size(self) -> int:
        return self.backbone.image_size

    def check_files(self) -> None:
        """Raise UserError unless `--weights` and `--embeddings` are named choices or files."""
        weights, vectors = self.backbone.weights, self.embeddings
        if weights not in NAMED_WEIGHTS and not Path(weights).is_file():
            raise UserError(f"--weights must be imagenet, none or a file; no file {weights!r}")
        if vectors not in NAMED_EMBEDDINGS and not Path(vectors).is_file():
            raise UserError(f"--embeddings must be word2vec or a file; no file {vectors!r}")

    def resolved(self) -> PipelineConfig:
        """The same config with every local path absolute (the one place paths are resolved)."""

        def absolute(path: str) -> str:
            return path if "://" in path else str(Path(path).expanduser().resolve())

        weights = self.backbone.weights
        source, root = self.source, self.image_root
        return replace(
            self,
            source=absolute(source) if Path(source).expanduser().is_dir() else source,
            image_root=absolute(root) if root is not None else None,
            store=absolute(self.store),
            work_dir=absolute(self.work_dir),
            backbone=replace(
                self.backbone,
                weights=weights if weights in NAMED_WEIGHTS else absolute(weights),
            ),
            embeddings=(
                self.embeddings
                if self.embeddings in NAMED_EMBEDDINGS
                else absolute(self.embeddings)
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["devices"] = list(self.devices) if self.devices is not None else None
        d["more_layers"] = list(self.more_layers)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PipelineConfig:
        d = dict(d)
        d["backbone"] = BackboneConfig(**d.get("backbone", {}))
        return cls(**d)

    def to_options(self) -> dict[str, Any]:
        """The flat `colorfeat run` option values of this config, by option name.

        `layer` is one name for one feature set (as it always was), a list for several.
        """
        values = {**asdict(self), **asdict(self.backbone)}
        if self.more_layers:
            values["layer"] = [self.backbone.layer, *self.more_layers]
        return {opt.name: values[opt.name] for opt in rebuild_options()}

    @classmethod
    def from_options(cls, **values: Any) -> PipelineConfig:
        """The config of flat option values (as `colorfeat run` takes them); validated."""
        trunk_names = {f.name for f in fields(BackboneConfig) if f.metadata}
        trunk = {k: values.pop(k) for k in list(values) if k in trunk_names}
        layers = trunk.get("layer")
        if isinstance(layers, (list, tuple)):  # `--layer` given several times
            if not layers:
                raise UserError("--layer needs at least one trunk stage")
            trunk["layer"], values["more_layers"] = layers[0], tuple(layers[1:])
        seed = values.get("seed", 0)
        return cls(backbone=BackboneConfig(**trunk, seed=seed), **values)


@dataclass(frozen=True)
class Option:
    """One `colorfeat run` option, as declared by a config field."""

    name: str
    type: Any
    default: Any
    help: str
    required: bool = False
    min: int | None = None
    choices: tuple[str, ...] | None = None
    path: bool = False
    multiple: bool = False  # may be given several times: a list of values


def rebuild_options() -> list[Option]:
    """The rebuild's options in command-line order: PipelineConfig's, the trunk's in its place."""
    out: list[Option] = []
    for f in fields(PipelineConfig):
        if f.name == "backbone":
            out += _options_of(BackboneConfig)
        elif f.metadata:
            out += [o for o in _options_of(PipelineConfig) if o.name == f.name]
    return out


def _options_of(cls: type) -> list[Option]:
    hints = get_type_hints(cls)
    return [
        Option(f.name, hints[f.name], f.default, **f.metadata) for f in fields(cls) if f.metadata
    ]
