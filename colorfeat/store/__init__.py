"""The versioned feature store: publish immutable versions, move LATEST, and read them back.

A store root (a local path or an fsspec URL such as s3://bucket/store) holds

    ROOT/versions/<id>/   one zarr v3 group per published version, never modified after publish
    ROOT/LATEST           the current version id (local: temp file + rename; fsspec: one PUT)

`publish` assembles a version from stage outputs by hardlinking (or copying) their chunk files, with
no re-encoding, under versions/.tmp-<id>-<pid>-<random>/version/, validates it, flushes it to
disk, renames it into place, validates what is now in place, then replaces LATEST. Object stores
have no rename: there the version is assembled and validated locally, uploaded with its root
zarr.json last (a prefix without a root zarr.json is not a version), validated again remotely, and
only then is LATEST written. `open_store` returns a `StoreVersion` for a root (following LATEST)
or for one version. Staging folders, their owners and store-root checks: colorfeat.store.staging.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path

import fsspec
import numpy as np
import zarr

from colorfeat.constants import NUM_AB_BINS, PAD_TOKEN, STORE_SCHEMA, UNK_TOKEN
from colorfeat.errors import UserError
from colorfeat.hashing import canonical_json, value_hash
from colorfeat.lab import ab_grid
from colorfeat.parallel import fsync_dir, fsync_tree, is_stray, write_atomic
from colorfeat.store import schema
from colorfeat.store.reader import (
    FEATURE_ATTRS,
    StoreVersion,
    _arrays,
    _chunk_regions,
    _dtype_name,
    _filesystem,
    _is_local,
    _join_url,
    _local_files,
    _open_version,
    describe_version,
    list_versions,
    open_store,
    render_info,
    render_versions,
)
from colorfeat.store.staging import (
    _VERSION_ID,
    LATEST,
    OWNER,
    STALE_AFTER_S,
    TMP_PREFIX,
    VERSIONS,
    _host_id,  # noqa: F401 (read here by callers of the former module)
    _process_start,  # noqa: F401
    check_store_root,
    clean_stale_staging,
    new_staging,
)

__all__ = [
    "LATEST",
    "OWNER",
    "STALE_AFTER_S",
    "STORE_SCHEMA",
    "TMP_PREFIX",
    "VERSIONS",
    "StoreVersion",
    "check_store_root",
    "check_version",
    "clean_stale_staging",
    "describe_version",
    "list_versions",
    "open_store",
    "point_latest",
    "publish",
    "render_info",
    "render_versions",
    "version_id",
]


# ----------------------------------------------------------------------------- publishing


def version_id(parts: dict) -> str:
    """The content-derived id: a hash of the parts' stage keys, feature names and the schema."""
    keys = parts.get("keys") or {k: v for k, v in parts.items() if k != "keys"}
    names = sorted(f.get("name", "") for f in parts.get("features") or [])
    return value_hash({"schema": STORE_SCHEMA, "keys": keys, "features": names}, 16)


def publish(root: str, parts: dict, *, attrs: dict, storage_options: dict | None = None) -> dict:
    """Publish the version made of `parts` under `root` (or reuse it) and point LATEST at it."""
    check_store_root(root)
    fs, base = _filesystem(root, storage_options)
    vid = version_id(parts)
    target = f"{base}/{VERSIONS}/{vid}"
    url = _join_url(root, f"{VERSIONS}/{vid}")
    local = _is_local(fs)
    # local roots: build beside the versions (rename is atomic there); remote roots: build next to
    # the stage outputs (hardlinks need the same file system), then upload
    staging_parent = Path(base, VERSIONS) if local else Path(parts["images"]["path"]).parent.parent
    staging_parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(staging_parent)
    published = False
    if not fs.exists(f"{target}/zarr.json"):
        staging = new_staging(staging_parent, vid)
        build = staging / "version"
        try:
            _assemble(build, parts, attrs, vid)
            if local:
                _share_unchanged(build, _latest_dir(base))
            check_version(zarr.open_group(str(build), mode="r"), _local_files(build))
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


def _validate_in_place(url: str, storage_options: dict | None, *, ours: Path | None) -> None:
    """Validate the version at `url` as readers will see it; if invalid, remove it when it is
    `ours` (the folder this publisher just renamed into place), then raise."""
    try:
        _open_version(url, storage_options).validate()
    except UserError:
        if ours is not None:  # e.g. emptied underneath while staged: take it back out
            aside = ours.with_name(f"{TMP_PREFIX}invalid-{secrets.token_hex(4)}")
            ours.rename(aside)
            shutil.rmtree(aside, ignore_errors=True)
        raise


def _assemble(staging: Path, parts: dict, attrs: dict, vid: str) -> None:
    """Build a complete version directory at `staging` from the stage outputs."""
    images = Path(parts["images"]["path"])
    if not (images / "zarr.json").exists():
        raise UserError(f"images stage output is not a zarr group: {images}")
    src = zarr.open_group(str(images), mode="r")
    splits = list(parts["images"].get("splits") or sorted(k for k, _ in src.groups()))
    staging.mkdir()
    out = zarr.open_group(str(staging), mode="w")
    _write_vocab(out, parts)
    _write_lab(out, parts)
    for split in splits:
        if split not in src:
            raise UserError(f"images stage output {images} has no split {split!r}")
        _link_tree(images / split, staging / split)
    features = parts.get("features") or []
    names = [f["name"] for f in features]
    if len(set(names)) != len(names):
        raise UserError(f"feature sets must have distinct names, got {names}")
    for feat in features:
        for split in splits:
            src_dir = Path(feat["path"]) / split / feat["name"]
            if not (src_dir / "zarr.json").exists():
                raise UserError(f"feature set {feat['name']} has no {split} array at {src_dir}")
            out.require_group(f"{split}/features")
            _link_tree(src_dir, staging / split / "features" / feat["name"])
    _fill_unwritten_chunks(zarr.open_group(str(staging), mode="r+"), _local_files(staging))
    meta = json.loads(canonical_json(attrs))  # JSON-able copy (Paths, tuples)
    meta.update(
        schema=STORE_SCHEMA,
        version=vid,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        config_hash=value_hash(meta.get("config"), 16),
        stages=parts.get("keys") or {},
        features=names,
        splits=splits,
    )
    out.attrs.update(meta)  # written last: the root zarr.json completes the version


def _write_vocab(out: zarr.Group, parts: dict) -> None:
    tokens = json.loads(Path(parts["vocab"]["path"]).read_text())
    emb = np.load(parts["embeddings"]["path"])
    if not tokens or tokens[:2] != [PAD_TOKEN, UNK_TOKEN]:
        raise UserError(f"vocab must start with {PAD_TOKEN}, {UNK_TOKEN}: {parts['vocab']['path']}")
    if emb.ndim != 2 or emb.shape[0] != len(tokens):
        raise UserError(
            f"embeddings {emb.shape} do not match the vocabulary of {len(tokens)} tokens"
        )
    g = out.require_group("vocab")
    g.create_array("tokens", shape=(len(tokens),), dtype=str, chunks=(len(tokens),))[:] = np.array(
        tokens, dtype=str
    )
    g.create_array("embeddings", data=emb.astype(np.float32), chunks=emb.shape)


def _write_lab(out: zarr.Group, parts: dict) -> None:
    pri = Path(parts["priors"]["path"])
    prior = np.load(pri / "prior.npy").astype(np.float64)
    weights = np.load(pri / "weights.npy").astype(np.float32)
    g = out.require_group("lab")
    g.create_array("grid", data=ab_grid().astype(np.float32))
    g.create_array("prior", data=prior)
    w = g.create_array("weights", data=weights)
    w.attrs.update(alpha=float(parts["priors"]["alpha"]), gamma=float(parts["priors"]["gamma"]))


def _link_tree(src: Path, dst: Path) -> None:
    """Hardlink every file under src into dst (copy across devices); skip stray files (killed
    writes' temps, NFS `.nfs*` files)."""
    for path in sorted(src.rglob("*")):
        if path.is_dir() or is_stray(path.name):
            continue
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)


def _fill_unwritten_chunks(group: zarr.Group, files: set[str]) -> None:
    """Store fill-value chunks that zarr skipped (all-fill data), so every chunk is present."""
    for path, arr in _arrays(group):
        for key, region in _chunk_regions(arr):
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
    return found if _VERSION_ID.fullmatch(vid) and (found / "zarr.json").is_file() else None


def _share_unchanged(build: Path, previous: Path | None) -> None:
    """Hardlink each file written afresh into `build` (vocab and LAB tables, filled chunks) to
    the byte-identical file at the same path in the `previous` version, so that versions share
    every unchanged array on disk; the version's own root zarr.json stays its own."""
    if previous is None:
        return
    for path in sorted(build.rglob("*")):
        rel = path.relative_to(build)
        old = previous / rel
        if rel == Path("zarr.json") or not path.is_file() or path.stat().st_nlink > 1:
            continue
        if old.is_file() and not old.is_symlink() and _same_bytes(path, old):
            spare = path.with_name(path.name + ".link")
            try:
                os.link(old, spare)
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
    files = sorted(_local_files(staging))
    rest = [f for f in files if f != "zarr.json"]
    fs.put([str(staging / f) for f in rest], [f"{target}/{f}" for f in rest])
    fs.invalidate_cache()
    listed = {p[len(target) + 1 :] for p in fs.find(target)}
    if missing := set(rest) - listed:
        raise RuntimeError(f"upload to {target} lost {len(missing)} files, e.g. {min(missing)}")
    fs.pipe_file(f"{target}/zarr.json", (staging / "zarr.json").read_bytes())


def point_latest(root: str, vid: str, storage_options: dict | None = None) -> None:
    """Replace ROOT/LATEST with `vid` atomically (a published version of that root)."""
    fs, base = _filesystem(root, storage_options)
    _write_latest(fs, base, vid)


def _write_latest(fs: fsspec.AbstractFileSystem, base: str, vid: str) -> None:
    data = (vid + "\n").encode()
    if _is_local(fs):
        write_atomic(Path(base, LATEST), data)
    else:
        fs.pipe_file(f"{base}/{LATEST}", data)  # one object, one PUT: atomic for readers


# ----------------------------------------------------------------------------- validation


def check_version(group: zarr.Group, files: set[str] | None = None) -> None:
    """Raise UserError unless `group` is a complete version: layout, dtypes, counts, every chunk."""
    attrs = dict(group.attrs)
    where = str(getattr(group.store, "root", group.store))

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise UserError(f"invalid store version {where}: {what}")

    need(attrs.get("schema") == STORE_SCHEMA, f"schema is {attrs.get('schema')!r}")
    tokens, emb = group["vocab/tokens"], group["vocab/embeddings"]
    need(tokens.ndim == 1 and emb.ndim == 2 and emb.shape[0] == tokens.shape[0], "vocab shapes")
    need(str(emb.dtype) == "float32", "vocab/embeddings dtype")
    need(group["lab/grid"].shape == (NUM_AB_BINS, 2), "lab/grid shape")
    need(group["lab/prior"].shape == (NUM_AB_BINS,), "lab/prior shape")
    need(str(group["lab/prior"].dtype) == "float64", "lab/prior dtype")
    need(str(group["lab/weights"].dtype) == "float32", "lab/weights dtype")
    need({"alpha", "gamma"} <= set(group["lab/weights"].attrs), "lab/weights attrs")
    for split in attrs.get("splits", []):
        n = group[f"{split}/image_id"].shape[0]
        m = group[f"{split}/captions/image_index"].shape[0]
        for name, (dtype, ndim) in schema.SPLIT_ARRAYS.items():
            arr = group[f"{split}/{name}"]
            kind_ok = _dtype_name(arr) == dtype
            need(kind_ok and arr.ndim == ndim, f"{split}/{name} is {arr.dtype} {arr.shape}")
            need(arr.shape[0] == (m if name.startswith("captions") else n), f"{split}/{name} rows")
        s = group[f"{split}/rgb"].shape[1]
        need(group[f"{split}/rgb"].shape[1:] == (s, s, 3), f"{split}/rgb shape")
        need(group[f"{split}/ab_bins"].shape[1:] == (s // 4, s // 4), f"{split}/ab_bins shape")
        for name in attrs.get("features", []):
            arr = group[f"{split}/features/{name}"]
            need(arr.ndim == 4 and arr.shape[0] == n, f"{split}/features/{name} shape {arr.shape}")
            need(str(arr.dtype) == "float16", f"{split}/features/{name} dtype {arr.dtype}")
            need(set(FEATURE_ATTRS) <= set(arr.attrs), f"{split}/features/{name} attrs")
    if files is None:
        return
    for path, arr in _arrays(group):
        missing = [k for k, _ in _chunk_regions(arr) if f"{path}/{k}" not in files]
        need(not missing, f"{path} lacks {len(missing)} chunks, e.g. {missing[:1]}")
