"""The model card: RUN_DIR/README.md, YAML front matter and a few plain paragraphs.

Written by `colortrain fit` when a run ends and refreshed by `colortrain evaluate` with the full
evaluation. It says what the model was trained on (store version, schema, source, counts), which
trunk made its features and where the weights came from, the training configuration, the
evaluation figures, and what the model cannot do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from colorfeat.errors import UserError
from colorfeat.store import open_store
from colortrain.checkpoint import load_checkpoint

CARD_NAME = "README.md"
_PRIVATE_TRAIN_KEYS = ("out", "progress", "tensorboard")


def _store_attrs(path: str) -> dict[str, Any]:
    """The store version's attrs, or {} when it is no longer reachable from here."""
    try:
        return dict(open_store(path).attrs)
    except (UserError, OSError):
        return {}


def card_metadata(
    ckpt: dict[str, Any], evaluation: dict[str, Any] | None, store_attrs: dict | None = None
) -> dict[str, Any]:
    """The front matter: everything a reader or a model index needs, as plain YAML types.

    `store_attrs` are the store version's attrs when the caller holds it open; else it is read.
    """
    store = ckpt.get("store", {})
    attrs = store_attrs
    if attrs is None:
        attrs = _store_attrs(store.get("path", "")) if store.get("path") else {}
    feats = ckpt["features"]
    fattrs = feats.get("attrs", {})
    train = ckpt.get("train", {})
    config = {k: v for k, v in train.get("config", {}).items() if k not in _PRIVATE_TRAIN_KEYS}
    model = ckpt["model"]["config"]
    history = [r for r in train.get("metrics", []) if "epoch" in r]
    meta: dict[str, Any] = {
        "library_name": "colortrain",
        "tags": ["colorization", "language-conditioned", "film"],
        "model": {"kind": model["kind"], "preset": model["preset"], "config": model},
        "store": {
            "version": store.get("version"),
            "path": store.get("path"),
            "schema": attrs.get("schema", "unknown (store not reachable)"),
            "source": attrs.get("source"),
            "counts": attrs.get("counts"),
        },
        "backbone": {
            "features": feats["name"],
            "backbone": fattrs.get("backbone"),
            "layer": fattrs.get("layer"),
            "weights": fattrs.get("weights"),
            "weights_hash": ckpt["trunk"].get("hash"),
            "image_size": ckpt["trunk"]["config"].get("image_size"),
        },
        "training": {
            "config": config,
            "epochs_done": train.get("epoch"),
            "steps": train.get("step"),
            "last_epoch": history[-1] if history else None,
        },
        "evaluation": evaluation,
    }
    return _plain(meta)


def _plain(value: Any) -> Any:
    """Numbers, strings, lists and dicts only (numpy scalars and tuples converted)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


def card_text(meta: dict[str, Any]) -> str:
    """The whole README.md: front matter, then the limits stated plainly."""
    m, s, b = meta["model"], meta["store"], meta["backbone"]
    source = (s.get("source") or {}).get("name", "an unknown source")
    weights = str(b.get("weights"))
    random_trunk = weights.startswith("none")
    ev = meta.get("evaluation")
    figures = (
        ", ".join(f"{k} {v:.4g}" for k, v in ev["metrics"].items())
        + f" ({ev['images']} pictures of split {ev['split']})"
        if ev
        else "none yet: run `colortrain evaluate --checkpoint ... --store ...`"
    )
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=100)
    return f"""---
{front}---

# {m["kind"]}/{m["preset"]} colorizer

Colours a grayscale picture from a sentence (Manjunatha et al., NAACL 2018): frozen
{b["features"]} features of the gray picture, a bi-LSTM caption encoder, FiLM-conditioned residual
blocks and a {m["config"]["num_bins"]}-way classifier over quantised CIELAB ab bins.

- **Trained on**: store version `{s.get("version")}` (schema {s.get("schema")}), built from
  {source}; its vocabulary holds {m["config"]["vocab_size"]} words.
- **Trunk**: {b["backbone"]} up to {b["layer"]}, weights `{weights}`, at
  {b["image_size"]} x {b["image_size"]} pixels.
- **Evaluation**: {figures}.

## Limits

- It knows only what its training captions taught it: a word outside its vocabulary is read as
  unknown, and colours or objects rare in {source} come out wrong or gray.
- It predicts colour only; the lightness is the input's own. The picture is squashed to
  {b["image_size"]} x {b["image_size"]} and colour is predicted at a quarter of that, then
  upsampled: fine detail takes the colour of its surroundings.
{
        "- Its trunk has random weights: it was built to check the pipeline offline, not to colour"
        " photographs."
        if random_trunk
        else "- Its trunk was trained on ImageNet photographs."
    }
- Not evaluated for fairness across skin tones or cultures; do not use it to restore
  documents where the true colours matter.
"""


def write_model_card(
    checkpoint: str | Path,
    evaluation: dict[str, Any] | None = None,
    *,
    store_attrs: dict[str, Any] | None = None,
) -> Path:
    """Write README.md beside a checkpoint; an evaluation of the same step is kept if none given."""
    checkpoint = Path(checkpoint)
    ckpt = load_checkpoint(checkpoint)
    path = checkpoint.parent / CARD_NAME
    step = ckpt.get("train", {}).get("step")
    if evaluation is None:  # keep an evaluation of this very checkpoint
        previous = read_card_metadata(path).get("evaluation")
        evaluation = previous if previous and previous.get("step") == step else None
    else:
        evaluation = {**evaluation, "step": step}
    path.write_text(card_text(card_metadata(ckpt, evaluation, store_attrs)), encoding="utf-8")
    return path


def read_card_metadata(path: str | Path) -> dict[str, Any]:
    """The front matter of a model card ({} when there is none)."""
    path = Path(path)
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        return {}
    front = text[4:].split("\n---\n", 1)[0]
    return yaml.safe_load(front) or {}
