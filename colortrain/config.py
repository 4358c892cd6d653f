"""Frozen, self-validating configs: the colorizer (ModelConfig) and a training run (TrainConfig)."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields, replace
from typing import Any, get_type_hints

from colorfeat.config import DEVICES, Option, option
from colorfeat.errors import UserError
from colortrain.kinds import DEFAULT_KIND, MODEL_KINDS, model_kind

PRESETS = ("paper", "small")
# Without --preset: the paper's widths where a GPU trains, the CPU-sized ones elsewhere (a paper
# step takes tens of seconds on a CPU).
PRESET_BY_DEVICE = {"cuda": "paper", "cpu": "small"}
EXPORT_INPUT_DTYPES = ("uint8", "float32")  # `colortrain export --input-dtype`, default first
EMBEDDING_INITS = ("whitened", "standardized", "raw")  # the first is the default


def parse_embedding_init(value: str) -> str:
    """`value` if it names a way to rescale the store's word vectors (see Colorizer), else error."""
    if value not in EMBEDDING_INITS:
        choices = ", ".join(EMBEDDING_INITS)
        raise UserError(f"embedding_init must be one of {choices}, not {value!r}")
    return value


# Widths per preset; every other shape comes from the store.
_PRESET_WIDTHS = {
    # The paper: blocks at the feature width (512 for layer2), 256 LSTM units per direction.
    "paper": {"width": None, "lstm_hidden": 256, "num_blocks": 4, "dropout": 0.2},
    # CPU-sized: a 1x1 projection down to 64 channels, a 64-unit LSTM.
    "small": {"width": 64, "lstm_hidden": 64, "num_blocks": 4, "dropout": 0.2},
}


@dataclass(frozen=True)
class ModelConfig:
    """Everything that determines the colorizer's architecture; shapes are read from the store."""

    kind: str
    preset: str
    feature_channels: int
    feature_size: int
    target_size: int
    vocab_size: int
    embedding_dim: int
    num_bins: int
    width: int
    lstm_hidden: int
    num_blocks: int = 4
    dropout: float = 0.2
    embedding_init: str = EMBEDDING_INITS[0]  # see Colorizer.load_embeddings

    def __post_init__(self) -> None:
        parse_embedding_init(self.embedding_init)
        model_kind(self.kind)
        if self.preset not in PRESETS:
            raise UserError(f"--preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        for name in ("feature_channels", "feature_size", "target_size", "vocab_size", "width"):
            if getattr(self, name) < 1:
                raise UserError(f"model {name} must be positive, got {getattr(self, name)}")
        if self.target_size % self.feature_size:
            raise UserError(
                f"target size {self.target_size} is not a multiple of the feature size "
                f"{self.feature_size}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def upsample(self) -> int:
        return self.target_size // self.feature_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def create_model_config(
    kind: str, preset: str, shapes: dict[str, int], embedding_init: str = EMBEDDING_INITS[0]
) -> ModelConfig:
    """A ModelConfig for `kind`/`preset` with the store's shapes (see data.store_shapes)."""
    if preset not in _PRESET_WIDTHS:
        raise UserError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    p = _PRESET_WIDTHS[preset]
    width = p["width"] or shapes["feature_channels"]
    return ModelConfig(
        kind=kind,
        preset=preset,
        width=width,
        lstm_hidden=p["lstm_hidden"],
        num_blocks=p["num_blocks"],
        dropout=p["dropout"],
        embedding_init=embedding_init,
        **shapes,
    )


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Fields made with `option()` are `colortrain fit`'s options (see
    `fit_options`); the others are library settings."""

    store: str = option(MISSING, "Store root (follows LATEST) or one version.", required=True)
    out: str = option(
        MISSING,
        "The run directory RUN_DIR: checkpoint, metrics, samples.",
        required=True,
        path=True,
        metavar="RUN_DIR",
    )
    # None: the store's only (or first) feature set
    features: str | None = option(None, "Feature set name; default: the store's first.")
    model: str = option(DEFAULT_KIND, "Colorizer or baseline.", choices=lambda: tuple(MODEL_KINDS))
    # None: chosen from the device (PRESET_BY_DEVICE) when the config is made
    preset: str | None = option(
        None,
        "paper: the paper's widths; small: CPU-sized.",
        choices=PRESETS,
        show_default="paper on cuda, small on cpu",
    )
    embedding_init: str = EMBEDDING_INITS[0]  # how store word vectors are rescaled; see ModelConfig
    epochs: int = option(10, "Epochs over the train split.", min=1)
    max_steps: int | None = option(None, "Stop after this many optimizer steps in all.", min=1)
    batch_size: int = option(24, "Images per step (per process under torchrun).", min=1)
    lr: float = option(1e-3, "Adam learning rate.")
    weight_decay: float = 0.0
    grad_clip: float = 5.0
    schedule: str = "constant"  # "constant" or "cosine"
    device: str = option("auto", "Where to train.", choices=DEVICES)
    seed: int = option(0, "Seed of initialisation, data order and caption choice.")
    resume: bool = option(False, "Continue from RUN_DIR/checkpoint.pt.")
    in_memory: bool = option(False, "Load the splits into RAM first (no workers).")
    workers: int = option(
        0, "DataLoader worker processes (spawned).", min=0, flag="--loader-workers",
        aliases=("--workers",),
    )  # fmt: skip
    checkpoint_every: int = 500  # steps; a checkpoint is also written after every epoch
    max_bad_steps: int = 5  # consecutive non-finite losses before giving up
    val_batches: int | None = None  # None: the whole val split
    sample_images: int = 6
    tensorboard: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        model_kind(self.model)
        if self.device not in DEVICES:
            choices = ", ".join(DEVICES)
            raise UserError(f"--device must be one of {choices}, got {self.device!r}")
        if self.preset is None:
            object.__setattr__(self, "preset", default_preset(self.device))
        if self.preset not in PRESETS:
            raise UserError(f"--preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        parse_embedding_init(self.embedding_init)
        if self.epochs < 1:
            raise UserError(f"--epochs must be at least 1, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise UserError(f"--max-steps must be at least 1, got {self.max_steps}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise UserError(f"--lr must be positive, got {self.lr}")
        if self.schedule not in ("constant", "cosine"):
            raise UserError(f"schedule must be constant or cosine, got {self.schedule!r}")
        if self.workers < 0 or self.checkpoint_every < 1 or self.max_bad_steps < 1:
            raise UserError("workers must be >= 0, checkpoint_every and max_bad_steps >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def replace(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)


def default_preset(device: str) -> str:
    """The preset a run on `device` gets without --preset (PRESET_BY_DEVICE)."""
    from colorfeat.device import resolve_device

    return PRESET_BY_DEVICE.get(resolve_device(device).type, "paper")


@dataclass(frozen=True)
class FitOption(Option):
    """One `colortrain fit` option, as declared by a TrainConfig field.

    `choices` may be a function giving them (a registry read when the command runs); `flag` is
    the option's name when it is not `--<field>`, `aliases` further (hidden) names, `metavar` and
    `show_default` what the help shows.
    """

    flag: str | None = None
    aliases: tuple[str, ...] = ()
    metavar: str | None = None
    show_default: str | bool = True

    def current_choices(self) -> tuple[str, ...] | None:
        return self.choices() if callable(self.choices) else self.choices


def fit_options() -> list[FitOption]:
    """`colortrain fit`'s options, in command-line order, from TrainConfig's fields."""
    hints = get_type_hints(TrainConfig)
    return [
        FitOption(f.name, hints[f.name], f.default, **f.metadata)
        for f in fields(TrainConfig)
        if f.metadata
    ]
