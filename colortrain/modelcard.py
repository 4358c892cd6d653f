"""The model card: RUN_DIR/README.md, YAML front matter and a few plain paragraphs.

Written by `colortrain fit` when a run ends and refreshed by `colortrain evaluate` with the full
evaluation. It says what the model was trained on (store version, schema, source, counts), which
trunk made its features and where the weights came from, the training configuration, the
evaluation figures, and what the model cannot do.

A checkpoint is untrusted, and so is every text in it: values are capped (depth, items, length)
before they are rendered, and escaped for Markdown in the body. The card is written only into a
run directory: the folder of a resolved `checkpoint.pt` that holds the RUN_MARKER `fit` writes,
atomically (a new file renamed over the old), never through a link, and never over a README.md
whose SHA-256 the marker does not record (one fit or evaluate did not write).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from colorfeat.errors import UserError
from colorfeat.store import open_store
from colortrain.checkpoint import CHECKPOINT_NAME, load_checkpoint, model_config
from colortrain.text import markdown_text, shorten

CARD_NAME = "README.md"
RUN_MARKER = ".colortrain-run.json"  # written by `fit` into its RUN_DIR: {"card_sha256": [...]}
_MARKER_FORMAT = "colortrain-run/1"
_PRIVATE_TRAIN_KEYS = ("out", "progress", "tensorboard")
_MAX_DEPTH, _MAX_ITEMS, _MAX_NODES = 4, 50, 2000  # of a value rendered from a checkpoint


def _store_attrs(path: str) -> dict[str, Any]:
    """The store version's attrs, or {} when it is no longer reachable from here.

    Only a local path is opened: the path comes from the checkpoint, which must not make this
    process reach out to a URL of its choosing.
    """
    if "://" in path:
        return {}
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
    store = _mapping(ckpt.get("store"))
    attrs = store_attrs
    if attrs is None:
        attrs = _store_attrs(store["path"]) if isinstance(store.get("path"), str) else {}
    feats = _mapping(ckpt["features"])
    fattrs = _mapping(feats.get("attrs"))
    train = _mapping(ckpt.get("train"))
    config = {
        k: v for k, v in _mapping(train.get("config")).items() if k not in _PRIVATE_TRAIN_KEYS
    }
    model = model_config(ckpt).to_dict()
    records = train.get("metrics") if isinstance(train.get("metrics"), list) else []
    history = [r for r in records[-1:] if isinstance(r, dict) and "epoch" in r]
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
            "weights_hash": _mapping(ckpt["trunk"]).get("hash"),
            "image_size": _mapping(_mapping(ckpt["trunk"]).get("config")).get("image_size"),
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


def _mapping(value: Any) -> dict:
    """A checkpoint entry that should be a mapping, or {} when it is not."""
    return value if isinstance(value, dict) else {}


def _plain(value: Any, depth: int = 0, nodes: list[int] | None = None) -> Any:
    """Numbers, strings, lists and dicts only, capped: at most _MAX_DEPTH deep, _MAX_ITEMS per
    container, _MAX_NODES in all and MAX_TEXT_CHARS a string (a crafted value cannot grow)."""
    nodes = [0] if nodes is None else nodes
    nodes[0] += 1
    if nodes[0] > _MAX_NODES or depth > _MAX_DEPTH:
        return "..."
    if isinstance(value, dict):
        items = list(value.items())[:_MAX_ITEMS]
        return {shorten(str(k), 60): _plain(v, depth + 1, nodes) for k, v in items}
    if isinstance(value, list | tuple):
        return [_plain(v, depth + 1, nodes) for v in value[:_MAX_ITEMS]]
    if isinstance(value, str):
        return shorten(value)
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**63 else shorten(str(value), 40)
    try:  # numpy and torch scalars
        return _plain(value.item(), depth, nodes)
    except (AttributeError, TypeError, ValueError, RuntimeError):
        return type(value).__name__


def card_text(meta: dict[str, Any]) -> str:
    """The whole README.md: front matter, then the limits stated plainly (values escaped)."""
    m, s, b = meta["model"], meta["store"], meta["backbone"]
    source = _md(_mapping(s.get("source")).get("name", "an unknown source"))
    weights = str(b.get("weights"))
    random_trunk = weights.startswith("none")
    ev = meta.get("evaluation")
    figures = (
        ", ".join(f"{_md(k)} {_number(v)}" for k, v in _mapping(ev.get("metrics")).items())
        + f" ({_md(ev.get('images'))} pictures of split {_md(ev.get('split'))})"
        if isinstance(ev, dict)
        else "none yet: run `colortrain evaluate --checkpoint ... --store ...`"
    )
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=100)
    size = _md(b["image_size"])
    return f"""---
{front}---

# {_md(m["kind"])}/{_md(m["preset"])} colorizer

Colours a grayscale picture from a sentence (Manjunatha et al., NAACL 2018): frozen
{_md(b["features"])} features of the gray picture, a bi-LSTM caption encoder, FiLM-conditioned
residual blocks and a {m["config"]["num_bins"]}-way classifier over quantised CIELAB ab bins.

- **Trained on**: store version {_md(s.get("version"))} (schema {_md(s.get("schema"))}), built
  from {source}; its vocabulary holds {m["config"]["vocab_size"]} words.
- **Trunk**: {_md(b["backbone"])} up to {_md(b["layer"])}, weights {_md(weights)}, at
  {size} x {size} pixels.
- **Evaluation**: {figures}.

## Limits

- It knows only what its training captions taught it: a word outside its vocabulary is read as
  unknown, and colours or objects rare in {source} come out wrong or gray.
- It predicts colour only; the lightness is the input's own. The picture is squashed to
  {size} x {size} and colour is predicted at a quarter of that, then
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


def mark_run_dir(run_dir: str | Path) -> None:
    """Make RUN_DIR a run directory (`fit` calls it): the marker, kept as it is if present."""
    marker = Path(run_dir) / RUN_MARKER
    if not os.path.lexists(marker):
        _write_json(marker, {"format": _MARKER_FORMAT, "card_sha256": []})


def run_directory(checkpoint: str | Path) -> Path | None:
    """The run directory `fit` made that holds this checkpoint, or None: the folder of the
    resolved checkpoint.pt (a run directory given means its checkpoint.pt) with a marker that is
    a regular file, not a link."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    path = path.resolve()
    marker = path.parent / RUN_MARKER
    if path.name != CHECKPOINT_NAME or not path.is_file() or marker.is_symlink():
        return None
    return path.parent if marker.is_file() else None


def refresh_model_card(
    checkpoint: str | Path,
    evaluation: dict[str, Any] | None = None,
    *,
    store_attrs: dict[str, Any] | None = None,
) -> Path | None:
    """Write RUN_DIR/README.md for a run's checkpoint; an evaluation of the same step is kept if
    none is given. Returns None, with a warning when a card was due, where it may not write."""
    run_dir = run_directory(checkpoint)
    if run_dir is None:
        return None
    path, marker = run_dir / CARD_NAME, _read_marker(run_dir / RUN_MARKER)
    hashes = marker.get("card_sha256")
    known = [h for h in hashes if isinstance(h, str)] if isinstance(hashes, list) else []
    if os.path.lexists(path) and (path.is_symlink() or _sha256(path) not in known):
        print(f"colortrain: warning: {path} was not written by colortrain (or was edited since); "
              "the model card is not refreshed", file=sys.stderr)  # fmt: skip
        return None
    ckpt = load_checkpoint(run_dir / CHECKPOINT_NAME)
    step = _mapping(ckpt.get("train")).get("step")
    if evaluation is None:  # keep an evaluation of this very checkpoint
        previous = read_card_metadata(path).get("evaluation") if known else None
        evaluation = (
            previous if isinstance(previous, dict) and previous.get("step") == step else None
        )
    else:
        evaluation = {**evaluation, "step": step}
    data = card_text(card_metadata(ckpt, evaluation, store_attrs)).encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    # The marker knows the new card before it is in place, so a crash in between refuses nothing.
    _write_json(
        run_dir / RUN_MARKER, {"format": _MARKER_FORMAT, "card_sha256": [*known[-1:], digest]}
    )
    _write_new(path, data)
    _write_json(run_dir / RUN_MARKER, {"format": _MARKER_FORMAT, "card_sha256": [digest]})
    return path


def _read_marker(path: Path) -> dict[str, Any]:
    """The run marker's record ({} when unreadable or not ours)."""
    try:
        with open(path, "rb") as f:
            record = json.loads(f.read(1 << 16))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) and record.get("format") == _MARKER_FORMAT else {}


def _sha256(path: Path) -> str | None:
    """The SHA-256 of a regular file of at most 16 MiB (a card is a few KB), else None."""
    try:
        if not path.is_file() or path.stat().st_size > 1 << 24:
            return None
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _write_json(path: Path, record: dict[str, Any]) -> None:
    _write_new(path, (json.dumps(record) + "\n").encode("utf-8"))


def _write_new(path: Path, data: bytes) -> None:
    """Write `data` to a new file of a random name beside `path` (exclusive creation), then
    rename it over `path`: a link at `path` is replaced, never followed."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _md(value: Any) -> str:
    return markdown_text(value, 120)


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else _md(value)


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
