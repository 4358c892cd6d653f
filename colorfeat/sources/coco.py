"""Reading a data set in the COCO layout: which splits it has, and each split's captions.

Layout: ROOT/annotations/captions_<split>.json and pictures under ROOT/<split>/<file_name>. A split
whose name starts with `train` becomes store split `train`, one starting with `val` becomes `val`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import reprlib
from pathlib import Path

from colorfeat.errors import UserError
from colorfeat.sources.files import open_bounded, read_bounded

STORE_SPLITS = ("train", "val")
VAL_SHARE = 5  # with a limit, val gets one image in five
MAX_ID = 2**63 - 1  # image ids are stored as int64


def store_split(coco_split: str) -> str | None:
    """`train2014` -> `train`, `val2017` -> `val`, anything else (test2015, ...) -> None."""
    for name in STORE_SPLITS:
        if coco_split.startswith(name):
            return name
    return None


def find_splits(root: str | Path) -> dict[str, str]:
    """{coco split: store split} of the caption files under ROOT/annotations, each checked to be
    a regular file inside ROOT under the size limit (`colorfeat.sources.files`)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"source directory not found: {root}")
    ann = root / "annotations"
    if not ann.is_dir():
        raise UserError(f"{root} is not in the COCO layout: no annotations/ directory")
    splits: dict[str, str] = {}
    for path in sorted(ann.glob("captions_*.json")):
        name = path.stem.removeprefix("captions_")
        target = store_split(name)
        if target is None:
            continue
        with open_bounded(root, path, what="annotations file"):
            pass  # a FIFO, a link out of the root or a huge file is refused before any work
        if target in splits.values():
            other = next(k for k, v in splits.items() if v == target)
            raise UserError(f"{ann}: both {other} and {name} would become store split {target}")
        splits[name] = target
    if not splits:
        raise UserError(f"{ann}: no captions_train*.json or captions_val*.json")
    return splits


def split_limits(limit: int | None, store_splits: list[str]) -> dict[str, int | None]:
    """Share a total image limit among store splits: val (and test, where a source has one)
    one in VAL_SHARE each, train the rest."""
    if limit is None:
        return dict.fromkeys(store_splits)
    if len(store_splits) == 1 or limit < 2:
        return {s: (limit if i == 0 else 0) for i, s in enumerate(sorted(store_splits))}
    held = [s for s in store_splits if s != "train"]
    n_held = max(1, limit // VAL_SHARE)
    return {s: (n_held if s in held else max(0, limit - n_held * len(held))) for s in store_splits}


def annotations_path(root: str | Path, coco_split: str) -> Path:
    """Where a split's captions file lies in the COCO layout."""
    return Path(root) / "annotations" / f"captions_{coco_split}.json"


def load_coco(path: str | Path, root: str | Path | None = None):
    """A pycocotools COCO index of a captions file; malformed input is one UserError naming it.

    The file is read under the source's file rules (`colorfeat.sources.files`): a regular file
    inside `root` (default: the folder above `annotations/`), under a size limit. Its ids are
    checked before anything is paired (`_validate`).
    """
    from pycocotools.coco import COCO

    path = Path(path)
    raw = read_bounded(root or path.parent.parent, path, what="annotations file")
    data = parse_json(raw, path)
    _validate(data, path)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # stdout is reserved for the published path
        coco.createIndex()
    return coco


def parse_json(raw: bytes, path: Path, what: str = "annotations file") -> object:
    """The JSON document of a source's file; anything else is one UserError naming it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"cannot read {what} {path}: {exc}") from None
    if not text.strip():
        raise UserError(f"{what} is empty: {path}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{what} is not valid JSON: {path} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except ValueError as exc:  # an integer of more digits than Python converts (4300)
        raise UserError(f"{what} holds an unreadable number: {path} ({exc})") from None
    except RecursionError:
        raise UserError(f"{what} is nested too deeply to read: {path}") from None


def valid_id(value: object) -> int | None:
    """`value` if it is an id the store can hold (an int64 from 0 on, not a boolean), else None."""
    return value if type(value) is int and 0 <= value <= MAX_ID else None


def _bad_id(path: Path, entry: str, key: str, value: object) -> UserError:
    return UserError(
        f"{entry} has {key} {reprlib.repr(value)}, not an integer from 0 to 2**63 - 1: {path}"
    )


def _validate(data: object, path: Path) -> None:
    """Check every id before pycocotools pairs captions with pictures by them.

    Image ids must be unique: two pictures under one id would take each other's captions.
    Caption ids only order an image's captions; a missing one is its place in the file.
    """
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise UserError(f"not a COCO captions file (no 'images' list): {path}")
    if not isinstance(data.get("annotations"), list):
        raise UserError(f"not a COCO captions file (no 'annotations' list): {path}")
    first: dict[int, int] = {}
    for i, img in enumerate(data["images"]):
        if not (isinstance(img, dict) and "id" in img and isinstance(img.get("file_name"), str)):
            raise UserError(f"image entry {i} lacks an integer 'id' or a 'file_name': {path}")
        if valid_id(img["id"]) is None:
            raise _bad_id(path, f"image entry {i}", "id", img["id"])
        if (seen := first.setdefault(img["id"], i)) != i:
            raise UserError(
                f"image entries {seen} and {i} share the id {img['id']}, so their captions "
                f"cannot be told apart: {path}"
            )
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise UserError(f"caption entry {i} lacks an integer 'image_id': {path}")
        if valid_id(ann["image_id"]) is None:
            raise _bad_id(path, f"caption entry {i}", "image_id", ann["image_id"])
        if valid_id(ann.setdefault("id", i + 1)) is None:
            raise _bad_id(path, f"caption entry {i}", "id", ann["id"])


def picture_path(root: str | Path, file: str) -> Path | None:
    """Where the picture `file` (relative to a source root) really is; None if outside the root.

    A name that is absolute or holds a `..` component is outside whatever it points at; any other
    name is followed through its symlinks and must end up under the root's own real path.
    """
    parts = file.split("/")
    if file.startswith("/") or "" in parts[1:-1] or ".." in parts or "\x00" in file:
        return None
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, file))
    if os.path.commonpath([real_root, real]) != real_root:
        return None
    return Path(real)


def read_split(root: str | Path, coco_split: str, limit: int | None = None) -> dict:
    """Images of a split in id order with their captions (annotation id order), and counts.

    -> {"images": [{"image_id", "file", "captions": [str]}], "orphan_captions": int} where `file`
    is relative to root. Only the first `limit` images (by id) are read.
    """
    coco = load_coco(annotations_path(root, coco_split), root)
    ids = sorted(coco.imgs)
    if limit is not None:
        ids = ids[:limit]
    images = []
    for image_id in ids:
        anns = sorted(coco.imgToAnns.get(image_id, []), key=lambda a: a["id"])
        captions = [a["caption"] if isinstance(a.get("caption"), str) else "" for a in anns]
        file = f"{coco_split}/{coco.imgs[image_id]['file_name']}"
        images.append({"image_id": image_id, "file": file, "captions": captions})
    known = set(coco.imgs)
    orphans = sum(1 for a in coco.dataset["annotations"] if a["image_id"] not in known)
    return {"images": images, "orphan_captions": orphans}
