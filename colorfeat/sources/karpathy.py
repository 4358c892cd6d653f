"""The `karpathy` source kind: `--source DIR/dataset_flickr30k.json` (or DIR), Karpathy's splits.

A Karpathy split file (`dataset_coco.json`, `dataset_flickr8k.json`, `dataset_flickr30k.json`)
holds `images[]`, each with `filename`, an optional `filepath`, `split` (`train`, `val`, `test`,
`restval`), `sentences[].raw` and an id (`cocoid`, `imgid`). Its pictures lie beside it: at
DIR/<filepath>/<filename>, DIR/<filename>, or DIR/<folder>/<filename> for a folder of DIR
(`Flickr8k_Dataset/`, `flickr30k-images/`). The file's splits become the store's: `restval`
goes to train and `test` is a third store split.

It is written once into WORK/sources/karpathy-<identity> in the COCO layout
(`colorfeat.sources.layout`: pictures hard-linked, not copied, where the file system allows). The
identity hashes the file and the listing of DIR (`colorfeat.sources.directory.IDENTITY_RULE`), so
an edited caption or picture gives a new one. Ids are the file's `cocoid` where every entry has a
distinct valid one, else its `imgid` likewise, else the entries' order. An entry without a
picture inside DIR, without a caption or with an unknown split is skipped and counted.
"""

from __future__ import annotations

from pathlib import Path

from colorfeat.errors import UserError
from colorfeat.hashing import value_hash
from colorfeat.parallel import commit, completed, partial_dir
from colorfeat.redact import redact_text
from colorfeat.sources.coco import parse_json, valid_id
from colorfeat.sources.directory import IDENTITY_RULE
from colorfeat.sources.files import open_bounded, read_bounded, sha256_bounded
from colorfeat.sources.kind import Request, SourceEstimate, SourceKind, capped
from colorfeat.sources.layout import LayoutWriter, fresh_dir, regular_picture, store_split

WHAT = "Karpathy split file"
PREFIX = "dataset_"


def split_file(source: str) -> Path | None:
    """The split file `source` names (the file, or the one dataset_*.json of a directory)."""
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "annotations").is_dir():
            return None  # a COCO-layout directory
        found = sorted(path.glob(f"{PREFIX}*.json"))
        return found[0] if len(found) == 1 else None
    return path if path.name.startswith(PREFIX) and path.suffix == ".json" else None


def _file(source: str) -> Path:
    path = split_file(source)
    if path is None:
        raise UserError(f"--source {redact_text(source)}: no single {PREFIX}*.json found")
    return path


def check(source: str) -> None:
    """The split file exists and is a regular file inside its folder under the size limit."""
    path = _file(source)
    with open_bounded(path.parent, path, what=WHAT):
        pass


def identity(path: Path) -> str:
    """karpathy-<hash of the file, and of each picture it finds: path, size, mtime_ns>."""
    pictures = []
    for _, _, picture, _ in _read(path)[0]:
        if isinstance(picture, Path):
            info = picture.stat()
            pictures.append((str(picture.relative_to(path.parent.resolve())), info.st_size,
                             info.st_mtime_ns))  # fmt: skip
    ident = {
        "rule": IDENTITY_RULE,
        "file": sha256_bounded(path.parent, path, what=WHAT),
        "pictures": value_hash(pictures),
    }
    return "karpathy-" + value_hash(ident, 16)


def _cache_name(source: str, request: Request) -> str | None:
    path = split_file(source)
    return identity(path) if path is not None and path.is_file() else None


def _ids(entries: list[dict]) -> list[int]:
    """The `cocoid`s, or else the `imgid`s, where every entry has a distinct valid one."""
    for key in ("cocoid", "imgid"):
        ids = [valid_id(e.get(key)) for e in entries]
        if None not in ids and len(set(ids)) == len(ids):
            return ids  # type: ignore[return-value]
    return list(range(1, len(entries) + 1))


def _picture(folder: Path, entry: dict, folders: list[str]) -> Path | str:
    """Where an entry's picture is (see the module doc), or why it was not found."""
    name = entry["filename"]
    where = [f"{entry['filepath']}/{name}"] if isinstance(entry.get("filepath"), str) else []
    why = "missing picture"
    for rel in [*where, name, *(f"{sub}/{name}" for sub in folders)]:
        found = regular_picture(folder, rel)
        if isinstance(found, Path):
            return found
        why = found if found != "missing picture" else why
    return why


def _captions(entry: dict) -> list[str]:
    sentences = entry.get("sentences")
    if not isinstance(sentences, list):
        return []
    return [s["raw"] for s in sentences if isinstance(s, dict) and isinstance(s.get("raw"), str)]


def _entries(path: Path) -> list[dict]:
    doc = parse_json(read_bounded(path.parent, path, what=WHAT), path, WHAT)
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise UserError(f"not a Karpathy split file (no 'images' list): {path}")
    return doc["images"]


def _read(path: Path) -> tuple[list[tuple[str | None, int, Path | str, list[str]]], int]:
    """([(store split, id, picture or why not, captions)] for each entry, bad entries)."""
    folder = path.parent
    folders = sorted(p.name for p in folder.iterdir() if p.is_dir())
    entries = _entries(path)
    good = [e for e in entries if isinstance(e, dict) and isinstance(e.get("filename"), str)]
    read = []
    for entry, image_id in zip(good, _ids(good), strict=True):
        split = store_split(entry["split"]) if isinstance(entry.get("split"), str) else None
        read.append((split, image_id, _picture(folder, entry, folders), _captions(entry)))
    return read, len(entries) - len(good)


def convert(path: Path, out: Path) -> dict:
    """Write the split file's pictures and captions in the COCO layout under `out`."""
    writer = LayoutWriter(out)
    read, bad = _read(path)
    writer.skip("bad entry", bad)
    for split, image_id, picture, captions in read:
        if split is None:
            writer.skip("unknown split")
        elif isinstance(picture, str):
            writer.skip(picture)
        elif not captions:
            writer.skip("no caption")
        else:
            writer.add(split, picture.name, picture, captions, image_id)
    return writer.finish()


def _acquire(source: str, request: Request) -> dict:
    check(source)
    path = _file(source)
    out = request.sources_dir / identity(path)
    if done := completed(out):
        return done
    partial = fresh_dir(partial_dir(out))
    made = convert(path, partial)
    if not made["splits"]:
        raise UserError(f"{path} gave no picture with a caption ({made['counts']['skipped']})")
    return commit(partial, out, {"root": str(out), "identity": out.name, **made})


def _estimate(source: str, acquired: dict | None, request: Request) -> SourceEstimate:
    if acquired is not None:
        return SourceEstimate(capped(sum(acquired["counts"]["pictures"].values()), request.limit))
    return SourceEstimate(request.limit)


KIND = SourceKind(
    name="karpathy",
    label="a Karpathy split file",
    help=f"FILE: a Karpathy split file ({PREFIX}*.json) beside its pictures",
    recognises=lambda source: "://" not in source and split_file(source) is not None,
    cache_name=_cache_name,
    acquire=_acquire,
    check=check,
    estimate=_estimate,
)
