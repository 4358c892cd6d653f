"""Publishing: assemble a version from what each stage adds (its `Part`), validate it, record its
chunk manifest, move it into place, then replace LATEST.

A store root (a local path or an fsspec URL such as s3://bucket/store) holds

    ROOT/versions/<id>/   one zarr v3 group per published version, never modified after publish
    ROOT/LATEST           the current version id (local: temp file + rename; fsspec: one PUT)

`publish` builds the version under versions/.tmp-<id>-<pid>-<random>/version/ by hardlinking (or
copying) the stage outputs' chunk files, with no re-encoding, writes the manifest group (every
file, its size and CRC-32) and the root zarr.json last, validates it, flushes it to disk, renames it
into place, validates what is now in place, then replaces LATEST. Object stores have no rename:
there the version is assembled and validated locally, uploaded with its root zarr.json last (a
prefix without a root zarr.json is not a version), validated again remotely, and only then is
LATEST written.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import fsspec
import numpy as np
import zarr

from colorfeat.constants import STORE_SCHEMA
from colorfeat.errors import UserError
from colorfeat.filesystems import filesystem
from colorfeat.hashing import canonical_json, value_hash
from colorfeat.parallel import fsync_dir, fsync_tree, write_atomic
from colorfeat.store import schema
from colorfeat.store.layout import (
    LATEST,
    RETIRED,
    TMP_PREFIX,
    VERSION_ID,
    VERSIONS,
    arrays,
    chunk_regions,
    is_local,
    join_url,
    local_files,
    walk_files,
)
from colorfeat.store.manifest import write_manifest
from colorfeat.store.parts import Build, Part, grouped
from colorfeat.store.reader import open_version
from colorfeat.store.staging import check_store_root, clean_stale_staging, new_staging
from colorfeat.store.validate import check_version

Parts = Sequence[tuple[Part, Mapping]]


def version_id(parts: dict) -> str:
    """The content-derived id: a hash of the stage keys, the feature-set names and the schema.

    `parts` = {"keys": {stage: key}, "features": [{"name": ...}, ...]}.
    """
    keys = parts.get("keys") or {}
    names = sorted(f.get("name", "") for f in parts.get("features") or [])
    return value_hash({"schema": STORE_SCHEMA, "keys": keys, "features": names}, 16)


def publish(
    root: str,
    parts: Parts,
    *,
    keys: Mapping[str, str],
    attrs: dict,
    storage_options: dict | None = None,
    scratch: Path | None = None,
) -> dict:
    """Publish the version made of `parts` ((part, stage result) pairs) under `root`, or reuse
    the identical one, and point LATEST at it -> {"version", "path", "published"}.

    `keys` are the stage keys the version derives from; `scratch` is where a version for a remote
    root is assembled before its upload (beside the stage outputs, so that it hardlinks them).
    """
    check_store_root(root)
    fs, base = filesystem(root, storage_options)
    merged = grouped(parts)
    listed = _listed(merged)
    names = [{"name": n} for n in listed.get(schema.ATTR_FEATURES, [])]
    vid = version_id({"keys": dict(keys), "features": names})
    target = f"{base}/{VERSIONS}/{vid}"
    url = join_url(root, f"{VERSIONS}/{vid}")
    local = is_local(fs)
    where = Path(base, VERSIONS) if local else Path(scratch or tempfile.gettempdir()) / "publish"
    where.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(where)
    published = False
    if not fs.exists(f"{target}/zarr.json"):
        staging = new_staging(where, vid)
        build = staging / "version"
        try:
            meta = _assemble(build, merged, {**attrs, **listed, "stages": dict(keys)}, vid)
            previous = _latest_dir(base) if local else None
            if previous is not None:
                _share_unchanged(build, previous)
            _seal(build, meta, previous)
            check_version(zarr.open_group(str(build), mode="r"), local_files(build), _of(merged))
            if local:
                fsync_tree(build)
                published = _rename_into_place(build, Path(target))
                fsync_dir(Path(target).parent)
            else:
                _upload(fs, build, target)
                published = True
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    _validate_in_place(url, storage_options, ours=Path(target) if published and local else None)
    _write_latest(fs, base, vid)
    return {"version": vid, "path": url, "published": published}


def _of(merged: list[tuple[Part, list[dict]]]) -> list[Part]:
    return [part for part, _ in merged]


def _listed(merged: list[tuple[Part, list[dict]]]) -> dict:
    """The root attrs the parts know before anything is written (splits, feature-set names)."""
    out: dict = {}
    for part, results in merged:
        if part.listed is not None:
            out.update(part.listed(results))
    feature_names = out.get(schema.ATTR_FEATURES, [])
    if len(set(feature_names)) != len(feature_names):
        raise UserError(f"feature sets must have distinct names, got {feature_names}")
    return out


def _validate_in_place(url: str, storage_options: dict | None, *, ours: Path | None) -> None:
    """Validate the version at `url` as readers will see it; if invalid, remove it when it is
    `ours` (the folder this publisher just renamed into place), then raise."""
    try:
        open_version(url, storage_options).validate()
    except UserError:
        if ours is not None:  # e.g. emptied underneath while staged: take it back out
            aside = ours.with_name(f"{TMP_PREFIX}invalid-{secrets.token_hex(8)}")
            ours.rename(aside)
            shutil.rmtree(aside, ignore_errors=True)
        raise


def _assemble(build: Path, merged: list[tuple[Part, list[dict]]], attrs: dict, vid: str) -> dict:
    """Build a version at `build` from every part's results -> its root attrs (written last)."""
    build.mkdir()
    into = Build(build, zarr.open_group(str(build), mode="w"), dict(attrs))
    for part, results in merged:
        part.write(into, results)
    _fill_unwritten_chunks(zarr.open_group(str(build), mode="r+"), local_files(build))
    meta = json.loads(canonical_json(into.attrs))  # JSON-able copy (Paths, tuples)
    meta.update(
        schema=STORE_SCHEMA,
        version=vid,
        created=datetime.now(UTC).isoformat(timespec="microseconds"),
        config_hash=value_hash(meta.get("config"), 16),
        parts={part.name: [s.to_dict() for s in part.arrays] for part, _ in merged if part.arrays},
    )
    meta.setdefault(schema.ATTR_FEATURES, [])
    return meta


def _seal(build: Path, meta: dict, previous: Path | None = None) -> None:
    """Write the manifest of every file, then the root attrs naming it: the version is complete."""
    attr = write_manifest(build, previous)
    zarr.open_group(str(build), mode="r+").attrs.update({**meta, schema.ATTR_MANIFEST: attr})


def _fill_unwritten_chunks(group: zarr.Group, files: set[str]) -> None:
    """Store fill-value chunks that zarr skipped (all-fill data), so every chunk is present."""
    for path, arr in arrays(group):
        for key, region in chunk_regions(arr):
            if f"{path}/{key}" not in files:
                filled = arr.with_config({"write_empty_chunks": True})
                shape = tuple(s.stop - s.start for s in region)
                fill = "" if arr.dtype.kind in "OTU" else arr.fill_value
                filled[region] = np.full(shape, fill, dtype=str if fill == "" else arr.dtype)


def _latest_dir(base: str) -> Path | None:
    """The local version LATEST names under `base`, if there is one."""
    try:
        vid = Path(base, LATEST).read_text().strip()
    except OSError:
        return None
    found = Path(base, VERSIONS, vid)
    return found if VERSION_ID.fullmatch(vid) and (found / "zarr.json").is_file() else None


def _share_unchanged(build: Path, previous: Path | None) -> None:
    """Hardlink each file written afresh into `build` (vocab and LAB tables, filled chunks) to
    the byte-identical file at the same path in the `previous` version, so that versions share
    every unchanged array on disk; the version's own root zarr.json stays its own."""
    if previous is None:
        return
    for name in walk_files(build):
        path, rel = build / name, Path(name)
        old = previous / rel
        if rel.parts[0] in ("zarr.json", schema.MANIFEST_GROUP):
            continue
        if path.stat().st_nlink > 1:
            continue
        if old.is_file() and not old.is_symlink() and _same_bytes(path, old):
            spare = path.with_name(f".{path.name}.{secrets.token_hex(8)}.link")
            try:
                os.link(old, spare)  # a new name: fails rather than follow anything there
            except OSError:
                continue  # another file system: keep the copy
            os.replace(spare, path)


def _same_bytes(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()


def _rename_into_place(staging: Path, target: Path) -> bool:
    try:
        staging.rename(target)
        return True
    except OSError:
        if (target / "zarr.json").exists():  # an identical version was published meanwhile
            return False
        raise


def _upload(fs: fsspec.AbstractFileSystem, staging: Path, target: str) -> None:
    files = sorted(local_files(staging))
    rest = [f for f in files if f != "zarr.json"]
    fs.put([str(staging / f) for f in rest], [f"{target}/{f}" for f in rest])
    fs.invalidate_cache()
    listed = {p[len(target) + 1 :] for p in fs.find(target)}
    if missing := set(rest) - listed:
        raise RuntimeError(f"upload to {target} lost {len(missing)} files, e.g. {min(missing)}")
    fs.pipe_file(f"{target}/zarr.json", (staging / "zarr.json").read_bytes())


def point_latest(root: str, vid: str, storage_options: dict | None = None) -> None:
    """Replace ROOT/LATEST with `vid` atomically (a published version of that root)."""
    if not VERSION_ID.fullmatch(vid):
        raise UserError(f"{vid!r} is not a version id (16 hex digits)")
    fs, base = filesystem(root, storage_options)
    _write_latest(fs, base, vid)


def _write_latest(fs: fsspec.AbstractFileSystem, base: str, vid: str) -> None:
    data = (vid + "\n").encode()
    if is_local(fs):
        _retire(Path(base), vid)
        write_atomic(Path(base, LATEST), data)
    else:
        fs.pipe_file(f"{base}/{LATEST}", data)  # one object, one PUT: atomic for readers


def _retire(base: Path, vid: str) -> None:
    """Record that the version LATEST names stops being LATEST now, unless it is `vid`: the
    readers' grace period of retention (colorfeat.store.retention) starts here."""
    try:
        old = (base / LATEST).read_text().strip()
    except OSError:
        return
    if old != vid and VERSION_ID.fullmatch(old):
        (base / RETIRED).mkdir(exist_ok=True)
        write_atomic(
            base / RETIRED / old, datetime.now(UTC).isoformat(timespec="microseconds") + "\n"
        )
