"""The checkpoint: one file that is enough to colorize offline, and to resume training.

Only tensors and primitive containers go in, so it loads with `torch.load(weights_only=True)`:

    format        "colortrain/1"
    model         {"config": ModelConfig dict, "state": state dict}
    vocab         list of tokens (index = id)
    features      {"name": "resnet101.layer2", "attrs": the feature set's store attrs}
    trunk         {"config": BackboneConfig dict, "state": trunk state dict, "hash": sha256}
    lab           {"grid": (625, 2) float32, "weights": (625,) float32}
    store         {"path": version path, "version": id}
    train         {"config": TrainConfig dict, "epoch", "batch_in_epoch", "step", "metrics",
                   "optimizer", "scheduler", "rng": {"torch", "cuda"}}

A checkpoint is not trusted: `load_model` validates the model config against MODEL_SCHEMA (types
and bounds) and compares every state-dict shape with the shapes that config implies (computed on
PyTorch's meta device, so nothing is allocated) before the model is built.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from colorfeat.config import BackboneConfig
from colorfeat.errors import UserError, first_line
from colorfeat.hashing import file_sha256
from colorfeat.store import StoreVersion
from colorfeat.trunk.backbone import (
    config_from_description,
    create_trunk,
    imagenet_weights,
    state_dict_hash,
    trunk_from_state,
)
from colortrain.config import ModelConfig
from colortrain.data import store_shapes
from colortrain.model import Colorizer, create_model
from colortrain.text import shorten

FORMAT = "colortrain/1"
CHECKPOINT_NAME = "checkpoint.pt"  # what `fit` writes in its run directory
WEIGHTS_ENV = "COLORTRAIN_WEIGHTS"  # where a `--weights FILE` trunk's file is found again
_REQUIRED = ("format", "model", "vocab", "features", "trunk", "lab")
# The model config's fields: type and inclusive bounds. The bounds hold the paper's model many
# times over; past them a config describes a model no store of this project can feed.
MODEL_SCHEMA: dict[str, tuple[type, Any, Any]] = {
    "kind": (str, None, None),
    "preset": (str, None, None),
    "feature_channels": (int, 1, 8192),
    "feature_size": (int, 1, 1024),
    "target_size": (int, 1, 4096),
    "vocab_size": (int, 2, 2_000_000),
    "embedding_dim": (int, 1, 4096),
    "num_bins": (int, 2, 4096),
    "width": (int, 1, 8192),
    "lstm_hidden": (int, 1, 8192),
    "num_blocks": (int, 1, 64),
    "dropout": (float, 0.0, 1.0),
    "embedding_init": (str, None, None),
}
_OPTIONAL_FIELDS = ("num_blocks", "dropout", "embedding_init")  # ModelConfig has defaults
MAX_PARAMETERS = 2**28  # 268 M, about 1 GiB in float32; the paper's model has about 15 M


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> Path:
    """Write atomically: a temporary file in the same directory, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a checkpoint is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a checkpoint (weights_only); a run directory means its checkpoint.pt."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise UserError(f"no such checkpoint: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip, pickle and unpickler-policy errors all mean "not ours"
        first = first_line(exc, 160)
        raise UserError(f"{path} is not a readable colortrain checkpoint ({first})") from exc
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in _REQUIRED):
        raise UserError(f"{path} is not a colortrain checkpoint (missing keys)")
    if ckpt["format"] != FORMAT:
        found = shorten(repr(ckpt["format"]), 40)
        raise UserError(f"{path} has checkpoint format {found}, expected {FORMAT!r}")
    return ckpt


def model_config(ckpt: dict[str, Any]) -> ModelConfig:
    """The checkpoint's ModelConfig, checked against MODEL_SCHEMA; UserError naming the field."""
    entry = ckpt.get("model")
    raw = entry.get("config") if isinstance(entry, dict) else None
    if not isinstance(raw, dict):
        raise UserError("the checkpoint's model config is missing or not a mapping")
    unknown = sorted(str(k)[:40] for k in raw if k not in MODEL_SCHEMA)
    if unknown:
        names = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise UserError(f"the checkpoint's model config has unknown fields: {names}")
    for key, spec in MODEL_SCHEMA.items():
        if key in raw:
            _check_field(key, raw[key], *spec)
        elif key not in _OPTIONAL_FIELDS:
            raise UserError(f"the checkpoint's model config lacks {key}")
    config = ModelConfig.from_dict(raw)
    vocab = ckpt.get("vocab")
    if not isinstance(vocab, list) or len(vocab) != config.vocab_size:
        raise UserError(
            f"the checkpoint's vocabulary does not have the {config.vocab_size} words its model "
            "config says"
        )
    return config


def _check_field(key: str, value: Any, kind: type, low: Any, high: Any) -> None:
    """One model config value: of its type (a bool is no number) and within its bounds."""
    if kind is str:
        ok = isinstance(value, str) and len(value) <= 64
    else:
        numbers = int | float if kind is float else int
        ok = isinstance(value, numbers) and not isinstance(value, bool)
    if not ok:
        what = {int: "an integer", float: "a number", str: "a short string"}[kind]
        raise UserError(
            f"the checkpoint's model config {key} is not {what}: {shorten(repr(value), 40)}"
        )
    if low is not None and not low <= value <= high:
        raise UserError(f"the checkpoint's model config {key}={value} is outside [{low}, {high}]")


def load_model(
    checkpoint: dict[str, Any] | str | Path, device: str | torch.device = "cpu"
) -> Colorizer:
    """The colorizer of a checkpoint (a loaded dict, a file or a run directory), in eval mode.

    The config is validated and the state dict's names and shapes are compared with those the
    config implies before any weight is allocated: a lying config is refused, never built.
    """
    ckpt = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    config = model_config(ckpt)
    state = ckpt["model"].get("state")
    with torch.device("meta"):
        skeleton = create_model(config)
    if sum(p.numel() for p in skeleton.state_dict().values()) > MAX_PARAMETERS:
        raise UserError(f"the checkpoint's model config describes over {MAX_PARAMETERS:,} weights")
    check_state_shapes(skeleton, state)
    model = create_model(config)
    model.load_state_dict(state)
    return model.to(device).eval()


def check_state_shapes(model: torch.nn.Module, state: Any) -> None:
    """A state dict holds exactly the model's tensors, of the same shapes; UserError if not."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError("the checkpoint's model state is not a mapping of tensors")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    _check_shapes(expected, {str(k): tuple(v.shape) for k, v in state.items()})


def _check_shapes(expected: dict[str, tuple], got: dict[str, tuple]) -> None:
    """The state dict holds exactly the tensors the config implies, of the same shapes."""
    missing = sorted(expected.keys() - got.keys())
    extra = sorted(got.keys() - expected.keys())
    wrong = [k for k in expected if k in got and expected[k] != got[k]]
    if not (missing or extra or wrong):
        return
    if wrong:
        k = wrong[0]
        detail = f"{k[:80]} is {list(got[k])}, the config implies {list(expected[k])}"
    else:
        detail = (
            f"missing {missing[:3]}" if missing else f"unexpected {[k[:80] for k in extra[:3]]}"
        )
    raise UserError(f"the checkpoint's weights do not fit its model config: {detail}")


def trunk_config(name: str, attrs: dict[str, Any]) -> BackboneConfig:
    """The BackboneConfig that made a feature set, from its store attrs.

    Stores from extract-3 on carry a structured `trunk` dict; older ones only flat attrs, where
    the weights are one string (`none:seed=N`, `imagenet:<enum>`, `file:<name>`).
    """
    trunk = attrs.get("trunk")
    if not isinstance(trunk, dict):
        return _flat_trunk_config(name, attrs)
    source = trunk["weights"]
    if source.get("source") == "imagenet" and source["enum"] != str(
        imagenet_weights(trunk["backbone"])
    ):
        raise UserError(
            f"the store's {name} features were made with {source['enum']}, which this torchvision "
            f"does not name IMAGENET1K_V1 ({imagenet_weights(trunk['backbone'])})"
        )
    if source.get("source") != "file":
        return config_from_description(trunk)
    path = Path(source["path"])
    if not (path.is_file() and file_sha256(path) == source["sha256"]):
        path = find_weights_file(source["path"], name)
        if file_sha256(path) != source["sha256"]:
            raise UserError(
                f"{path} is not the weights file the store's {name} features were made with "
                f"(SHA-256 {source['sha256'][:12]} expected)"
            )
    return config_from_description(trunk, weights_file=str(path))


def _flat_trunk_config(name: str, attrs: dict[str, Any]) -> BackboneConfig:
    """The BackboneConfig of a store written before the `trunk` attrs existed."""
    weights = str(attrs["weights"])
    seed = 0
    if weights.startswith("none"):
        match = re.fullmatch(r"none:seed=(\d+)", weights)
        if match is None:
            raise UserError(f"the store's {name} features have unreadable weights {weights!r}")
        weights, seed = "none", int(match.group(1))
    elif weights.startswith("imagenet"):
        weights = "imagenet"
    else:
        weights = str(find_weights_file(weights.removeprefix("file:"), name))
    return BackboneConfig(
        backbone=str(attrs["backbone"]),
        layer=str(attrs["layer"]),
        weights=weights,
        image_size=int(attrs["input_size"]),
        seed=seed,
    )


def find_weights_file(weights: str, name: str) -> Path:
    """The state-dict file a `--weights FILE` feature set was made with, found again.

    It is looked up at the path the store records, then in $COLORTRAIN_WEIGHTS (the file, or a
    directory holding it), then in the working directory, by name (its SHA-256 is checked by
    the caller, and the weights' hash after loading).
    """
    file_name = Path(weights).name
    candidates = [Path(weights)]
    if given := os.environ.get(WEIGHTS_ENV):
        candidates = [Path(given) / file_name if Path(given).is_dir() else Path(given)]
    candidates.append(Path.cwd() / file_name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise UserError(
        f"the store's {name} features were made with --weights {file_name}, which is needed to "
        f"rebuild their trunk and is not found: set {WEIGHTS_ENV}=/path/to/{file_name} "
        "(or a directory holding it)"
    )


def check_store_fit(ckpt: dict[str, Any], version: StoreVersion, split: str) -> None:
    """Refuse a store split whose features, vocabulary or shapes are not the checkpoint's."""
    name = ckpt["features"]["name"]
    version.require_split(split)
    stored_hash = version.features(split, name).attrs.get("weights_hash")
    if stored_hash and stored_hash != ckpt["trunk"]["hash"]:
        raise UserError(
            f"the store's {name} features were made by other weights than the checkpoint's trunk"
        )
    _check_same_vocab(version.vocab_tokens, list(ckpt["vocab"]))
    config = model_config(ckpt)
    shapes = store_shapes(version, name, split)
    wrong = {k: (v, getattr(config, k)) for k, v in shapes.items() if getattr(config, k) != v}
    if wrong:
        raise UserError(f"the store does not fit the checkpoint's model: {wrong}")


def _check_same_vocab(store: list[str], ours: list[str]) -> None:
    """Token ids mean the same words in the store and the checkpoint, or a UserError."""
    if store == ours:
        return
    pairs = zip(store, ours, strict=False)
    first = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(store), len(ours)))
    at = [repr(v[first]) if first < len(v) else "nothing" for v in (store, ours)]
    raise UserError(
        f"the store's vocabulary is not the checkpoint's ({len(store)} vs {len(ours)} words; "
        f"id {first} is {at[0]} in the store, {at[1]} in the checkpoint)"
    )


def trunk_entry(name: str, attrs: dict[str, Any]) -> dict[str, Any]:
    """Rebuild the trunk that made a feature set and check it against the store's hash."""
    config = trunk_config(name, attrs)
    trunk = create_trunk(config)
    expected = attrs.get("weights_hash")
    if expected and trunk.weights_hash != expected:
        raise UserError(
            f"the trunk rebuilt for {name} ({config.weights}) has weights hash "
            f"{trunk.weights_hash[:12]}, but the store's features were made with {expected[:12]}"
        )
    return {"config": config.to_dict(), "state": trunk.state_dict(), "hash": trunk.weights_hash}


def load_trunk(entry: dict[str, Any]) -> torch.nn.Module:
    """The frozen trunk saved in a checkpoint, checked against its hash (no weights file read)."""
    config = BackboneConfig(**{**entry["config"], "weights": "none"})
    trunk = trunk_from_state(config, entry["state"])
    if state_dict_hash(trunk.state_dict()) != entry["hash"]:
        raise UserError("the checkpoint's trunk weights do not match their recorded hash")
    return trunk
