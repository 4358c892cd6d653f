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
or for one version.

Several publishers may share a root (one machine, or many over NFS or a shared volume). Each
staging folder holds an owner record (host and pid namespace, pid, process start time); a
publisher removes another's staging folder only when it is provably dead: owned in this pid
namespace by a process that is gone (or whose pid now belongs to another process), or, owned
elsewhere or unreadable, untouched for STALE_AFTER_S.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import psutil
import zarr

from colorfeat import schema
from colorfeat.constants import NUM_AB_BINS, PAD_TOKEN, STORE_SCHEMA, UNK_TOKEN
from colorfeat.errors import UserError
from colorfeat.hashing import canonical_json, value_hash
from colorfeat.lab import ab_grid
from colorfeat.parallel import fsync_dir, fsync_tree, is_stray, write_atomic

VERSIONS = "versions"
LATEST = "LATEST"
TMP_PREFIX = ".tmp-"
OWNER = "owner.json"  # in a staging folder, beside the version being built: who builds it
# A staging folder owned on another host (or pid namespace), or with no readable owner record, is
# removed only after this long untouched: its owner's liveness cannot be seen from here.
STALE_AFTER_S = 24 * 3600
_VERSION_ID = re.compile(r"[0-9a-f]{16}")
FEATURE_ATTRS = (
    "backbone", "layer", "weights", "weights_hash", "input_size", "grayscale", "normalisation",
    "dtype", "code_version",
)  # fmt: skip


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
        staging = _new_staging(staging_parent, vid)
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


def _new_staging(parent: Path, vid: str) -> Path:
    """A fresh staging folder for version `vid`: its owner record, and the version built in
    `version/` beside it (renamed from there into place)."""
    staging = parent / f"{TMP_PREFIX}{vid}-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    write_atomic(staging / OWNER, json.dumps(_owner_record()))
    return staging


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


def _write_latest(fs: fsspec.AbstractFileSystem, base: str, vid: str) -> None:
    data = (vid + "\n").encode()
    if _is_local(fs):
        write_atomic(Path(base, LATEST), data)
    else:
        fs.pipe_file(f"{base}/{LATEST}", data)  # one object, one PUT: atomic for readers


def clean_stale_staging(parent: Path, *, now: float | None = None) -> list[Path]:
    """Remove the staging folders under `parent` that no live publisher owns; the removed ones."""
    now = time.time() if now is None else now
    removed = []
    for tmp in parent.glob(f"{TMP_PREFIX}*"):
        if tmp.is_dir() and _is_stale(tmp, now):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def _is_stale(staging: Path, now: float) -> bool:
    try:
        record = staging / OWNER
        owner = json.loads(record.read_bytes())
        touched = record.stat().st_mtime
    except (OSError, ValueError):  # no record yet (being created) or unreadable: go by age
        owner = None
        try:
            touched = staging.stat().st_mtime
        except OSError:
            return False  # gone meanwhile
    if isinstance(owner, dict) and owner.get("host") == _host_id():
        try:
            started = _process_start(int(owner["pid"]))
            return started is None or abs(started - float(owner["started"])) > 1.0
        except psutil.Error:  # alive, but not ours to inspect
            return False
        except (KeyError, TypeError, ValueError):  # a malformed record: go by age
            pass
    return now - touched > STALE_AFTER_S


def _owner_record() -> dict:
    pid = os.getpid()
    return {"host": _host_id(), "pid": pid, "started": _process_start(pid)}


def _host_id() -> str:
    """This machine and pid namespace: a pid means something only inside its namespace."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}/{namespace}"


def _process_start(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), or None if there is none."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None


# ----------------------------------------------------------------------------- store roots


def check_store_root(path: str | Path) -> None:
    """Raise UserError unless `path` may be a store root: not a file, a version, a zarr group or
    a place inside a store (the message names the root to use)."""
    text = str(path).rstrip("/") or "/"
    if "://" in text and not text.startswith("file://"):
        parts = text.split("/")
        for i in range(len(parts) - 1):
            if parts[i] == VERSIONS and _VERSION_ID.fullmatch(parts[i + 1]):
                _refuse(text, "/".join(parts[:i]))
        if parts[-1] == LATEST:
            _refuse(text, "/".join(parts[:-1]))
        return
    here = Path(text.removeprefix("file://")).absolute()
    for above in here.parents:
        if _is_store_root(above):
            _refuse(text, str(above))
    if here.is_file():
        raise UserError(f"--store {text} is a file, not a store root (a directory)")
    if (here / "zarr.json").is_file():
        if _is_store_root(here.parent.parent) and here.parent.name == VERSIONS:
            _refuse(text, str(here.parent.parent))
        raise UserError(f"--store {text} is a zarr group, not a store root")


def _is_store_root(path: Path) -> bool:
    versions = path / VERSIONS
    if not versions.is_dir():
        return False
    if (path / LATEST).is_file():
        return True
    return any((v / "zarr.json").is_file() for v in versions.iterdir())


def _refuse(path: str, root: str) -> None:
    raise UserError(f"--store {path} is inside the feature store {root}; use --store {root}")


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


def _arrays(group: zarr.Group, prefix: str = "") -> Iterator[tuple[str, zarr.Array]]:
    for name, arr in sorted(group.arrays()):
        yield prefix + name, arr
    for name, sub in sorted(group.groups()):
        yield from _arrays(sub, f"{prefix}{name}/")


def _chunk_regions(arr: zarr.Array) -> Iterator[tuple[str, tuple[slice, ...]]]:
    """(storage key, region) of every object the array's grid (shards or chunks) should hold."""
    size = arr.shards or arr.chunks
    grid = [math.ceil(s / c) for s, c in zip(arr.shape, size, strict=True)]
    for coords in itertools.product(*(range(g) for g in grid)):
        region = tuple(
            slice(i * c, min((i + 1) * c, s))
            for i, c, s in zip(coords, size, arr.shape, strict=True)
        )
        yield arr.metadata.encode_chunk_key(coords), region


def _dtype_name(arr: zarr.Array) -> str:
    return "str" if arr.dtype.kind in "OTU" else str(arr.dtype)


def _local_files(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------- reading


class StoreVersion:
    """One published version: attrs, splits, arrays (zarr or lazy dask), vocab and LAB tables.

    Array names come from colorfeat.schema: tables such as schema.LAB_WEIGHTS, and per-split
    arrays such as schema.RGB or schema.CAPTION_TOKENS, read with `array(split, name)`.
    """

    def __init__(self, path: str, group: zarr.Group, storage_options: dict | None = None) -> None:
        self.path = path
        self.group = group
        self.storage_options = storage_options
        self.attrs: dict[str, Any] = dict(group.attrs)
        self.version: str = self.attrs.get("version") or path.rstrip("/").rsplit("/", 1)[-1]
        self.splits: list[str] = list(self.attrs.get("splits") or [])

    def __repr__(self) -> str:
        return f"StoreVersion({self.path!r}, splits={self.splits})"

    def require_split(self, split: str) -> None:
        """UserError unless this version holds `split`."""
        if split not in self.splits:
            have = ", ".join(self.splits) or "none"
            raise UserError(f"store version {self.version} has no split {split!r}; it has {have}")

    def array(self, split: str, name: str) -> zarr.Array:
        """The zarr array `<split>/<name>`, e.g. ("train", schema.RGB)."""
        self.require_split(split)
        key = schema.split_path(split, name)
        if key not in self.group:
            raise UserError(f"store version {self.version} has no array {key}")
        return self.group[key]

    def table(self, path: str) -> zarr.Array:
        """A version-wide table as a zarr array, e.g. schema.VOCAB_EMBEDDINGS (shape, attrs)."""
        if path not in schema.TABLES:
            raise ValueError(f"{path!r} is not a store table; tables are {schema.TABLES}")
        return self.group[path]

    def dask(self, split: str, name: str):
        """The same array as a lazy dask array, chunked like the store."""
        import dask.array as da

        return da.from_zarr(self.array(split, name))

    def feature_names(self) -> list[str]:
        return list(self.attrs.get("features") or [])

    def feature_set(self, name: str | None = None) -> str:
        """`name` if this version holds that feature set; with None, its first one."""
        names = self.feature_names()
        if not names:
            raise UserError(f"store version {self.version} holds no feature set")
        if name is not None and name not in names:
            raise UserError(f"no feature set {name!r} in {self.version}; have {', '.join(names)}")
        return name or names[0]

    def features(self, split: str, name: str | None = None) -> zarr.Array:
        """Feature set `name` (default: the first one) of a split, (N, C, H, W) float16."""
        return self.array(split, schema.feature_name_path(self.feature_set(name)))

    @property
    def vocab_tokens(self) -> list[str]:
        return [str(t) for t in self.table(schema.VOCAB_TOKENS)[:]]

    @property
    def embeddings(self) -> np.ndarray:
        return self.table(schema.VOCAB_EMBEDDINGS)[:]

    @property
    def lab_grid(self) -> np.ndarray:
        return self.table(schema.LAB_GRID)[:]

    @property
    def lab_prior(self) -> np.ndarray:
        return self.table(schema.LAB_PRIOR)[:]

    @property
    def lab_weights(self) -> np.ndarray:
        return self.table(schema.LAB_WEIGHTS)[:]

    @property
    def rebalance(self) -> dict[str, float]:
        """alpha and gamma of lab/weights."""
        return dict(self.table(schema.LAB_WEIGHTS).attrs)

    def n_images(self, split: str) -> int:
        return int(self.array(split, schema.IMAGE_ID).shape[0])

    def n_captions(self, split: str) -> int:
        return int(self.array(split, schema.CAPTION_IMAGE_INDEX).shape[0])

    def validate(self) -> None:
        """Raise UserError unless this version is complete (layout, dtypes, counts, chunks)."""
        fs, base = _filesystem(self.path, self.storage_options)
        fs.invalidate_cache()
        files = {p[len(base.rstrip("/")) + 1 :] for p in fs.find(base)}
        check_version(self.group, files)


def open_store(path_or_root: str | Path, *, storage_options: dict | None = None) -> StoreVersion:
    """Open a store version, or the LATEST version of a store root."""
    path = str(path_or_root).rstrip("/") or "/"
    fs, base = _filesystem(path, storage_options)
    fs.invalidate_cache()
    _require_local_dir(fs, base, path)
    try:
        if fs.isfile(f"{base}/{LATEST}"):
            vid = fs.cat_file(f"{base}/{LATEST}").decode().strip()
            vpath = _join_url(path, f"{VERSIONS}/{vid}")
            if not fs.isfile(f"{base}/{VERSIONS}/{vid}/zarr.json"):
                raise UserError(
                    f"{path}: LATEST names version {vid!r}, which is not in {VERSIONS}/"
                )
            return _open_version(vpath, storage_options)
        if fs.isfile(f"{base}/zarr.json"):
            return _open_version(path, storage_options)
    except (OSError, ValueError) as exc:  # unreachable remote, permission, bad URL
        raise UserError(f"cannot read store {path}: {exc}") from exc
    if fs.isdir(f"{base}/{VERSIONS}"):
        raise UserError(f"{path}: a store root with no LATEST: nothing has been published yet")
    raise UserError(
        f"not a feature store root: {path} is neither a store root (no {LATEST}) "
        "nor a store version (no zarr.json)"
    )


def _open_version(path: str, storage_options: dict | None) -> StoreVersion:
    options = _zarr_options(path, storage_options)
    group = zarr.open_group(path, mode="r", zarr_format=3, storage_options=options)
    schema = group.attrs.get("schema")
    if schema != STORE_SCHEMA:
        raise UserError(f"{path} has store schema {schema!r}; this code reads {STORE_SCHEMA!r}")
    return StoreVersion(path, group, storage_options)


# ----------------------------------------------------------------------------- describing


def describe_version(v: StoreVersion) -> dict:
    """A JSON-able description: attrs, splits with counts, and every array's shape/chunks/codecs."""
    arrays = {}
    for path, arr in _arrays(v.group):
        meta = arr.metadata.to_dict()
        arrays[path] = {
            "shape": list(arr.shape),
            "dtype": _dtype_name(arr),
            "chunks": list(arr.chunks),
            "codecs": [c.get("name") for c in meta.get("codecs", [])],
            "stored_bytes": int(arr.nbytes_stored()),
        }
    splits = {
        s: {
            "images": v.n_images(s),
            "captions": v.n_captions(s),
            "image_size": int(v.array(s, schema.RGB).shape[1]),
        }
        for s in v.splits
    }
    features = {
        name: {k: v.features(v.splits[0], name).attrs.get(k) for k in FEATURE_ATTRS}
        for name in v.feature_names()
        if v.splits
    }
    return {
        "path": v.path,
        "version": v.version,
        "schema": v.attrs.get("schema"),
        "created": v.attrs.get("created"),
        "vocab_size": int(v.table(schema.VOCAB_TOKENS).shape[0]),
        "embedding_dim": int(v.table(schema.VOCAB_EMBEDDINGS).shape[1]),
        "splits": splits,
        "features": features,
        "arrays": arrays,
        "stored_bytes": sum(a["stored_bytes"] for a in arrays.values()),
        "attrs": v.attrs,
    }


def render_info(info: dict) -> str:
    """A readable text report of `describe_version`'s dict."""
    lines = [
        f"version   {info['version']}  ({info['schema']}, created {info['created']})",
        f"path      {info['path']}",
        f"size      {_human(info['stored_bytes'])} stored",
        f"vocab     {info['vocab_size']} tokens, embeddings dim {info['embedding_dim']}",
    ]
    for split, c in info["splits"].items():
        lines.append(
            f"split     {split}: {c['images']} images ({c['image_size']} px), "
            f"{c['captions']} captions"
        )
    for name, f in info["features"].items():
        lines.append(f"features  {name}: weights {f['weights']} ({str(f['weights_hash'])[:12]})")
    lines.append("")
    width = max((len(p) for p in info["arrays"]), default=5)
    lines.append(
        f"{'array':<{width}}  {'shape':<22} {'dtype':<8} {'chunks':<22} {'stored':>9}  codecs"
    )
    for path, a in info["arrays"].items():
        shape, chunks = "x".join(map(str, a["shape"])), "x".join(map(str, a["chunks"]))
        lines.append(
            f"{path:<{width}}  {shape:<22} {a['dtype']:<8} {chunks:<22} "
            f"{_human(a['stored_bytes']):>9}  {'+'.join(a['codecs'])}"
        )
    return "\n".join(lines)


def list_versions(root: str, *, storage_options: dict | None = None) -> list[dict]:
    """Every published version of a root, oldest first: id, created, size, whether LATEST."""
    fs, base = _filesystem(root, storage_options)
    fs.invalidate_cache()
    _require_local_dir(fs, base, root)
    if not fs.isdir(f"{base}/{VERSIONS}"):
        raise UserError(f"{root} is not a feature store root (no {VERSIONS}/ directory)")
    latest = None
    if fs.isfile(f"{base}/{LATEST}"):
        latest = fs.cat_file(f"{base}/{LATEST}").decode().strip()
    out = []
    for entry in fs.ls(f"{base}/{VERSIONS}", detail=False):
        vid = entry.rstrip("/").rsplit("/", 1)[-1]
        if vid.startswith(TMP_PREFIX) or not fs.isfile(f"{base}/{VERSIONS}/{vid}/zarr.json"):
            continue
        meta = json.loads(fs.cat_file(f"{base}/{VERSIONS}/{vid}/zarr.json"))
        attrs = meta.get("attributes", {})
        out.append(
            {
                "version": vid,
                "latest": vid == latest,
                "created": attrs.get("created"),
                "bytes": int(fs.du(f"{base}/{VERSIONS}/{vid}")),
                "features": attrs.get("features", []),
                "path": _join_url(root, f"{VERSIONS}/{vid}"),
            }
        )
    return sorted(out, key=lambda d: (d["created"] or "", d["version"]))


def render_versions(versions: list[dict]) -> str:
    """A text table of `list_versions`."""
    if not versions:
        return "no published versions"
    lines = [f"  {'version':<18} {'created':<26} {'size':>9}  features"]
    for v in versions:
        mark = "*" if v["latest"] else " "
        lines.append(
            f"{mark} {v['version']:<18} {v['created'] or '?':<26} {_human(v['bytes']):>9}  "
            f"{', '.join(v['features'])}"
        )
    lines.append("* = LATEST")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- helpers


def _filesystem(path: str, storage_options: dict | None) -> tuple[fsspec.AbstractFileSystem, str]:
    try:
        fs, base = fsspec.core.url_to_fs(str(path), **(storage_options or {}))
    except (ImportError, ValueError) as exc:
        raise UserError(f"cannot open store location {path}: {exc}") from exc
    return fs, base.rstrip("/") or "/"


def _require_local_dir(fs: fsspec.AbstractFileSystem, base: str, shown: str) -> None:
    if _is_local(fs) and not Path(base).is_dir():
        what = "not a directory" if Path(base).exists() else "no such directory"
        raise UserError(f"{what}: {shown}")


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return "file" in fs.protocol or "local" in fs.protocol


def _zarr_options(path: str, storage_options: dict | None) -> dict | None:
    return storage_options if "://" in path and not path.startswith("file://") else None


def _join_url(root: str, rel: str) -> str:
    return f"{str(root).rstrip('/')}/{rel}"


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
