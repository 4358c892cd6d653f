"""Reading a published feature store: open a root (following LATEST) or a version, describe it,
list a root's versions. Publishing and validation: colorfeat.store, which re-exports these."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import zarr

from colorfeat.constants import STORE_SCHEMA
from colorfeat.errors import UserError
from colorfeat.store import schema
from colorfeat.store.staging import LATEST, TMP_PREFIX, VERSIONS

FEATURE_ATTRS = (
    "backbone", "layer", "weights", "weights_hash", "input_size", "grayscale", "normalisation",
    "dtype", "code_version",
)  # fmt: skip


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

    Array names come from colorfeat.store.schema: tables such as schema.LAB_WEIGHTS, and per-split
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
    def lexicon(self) -> list[str]:
        """The colour words the version was built with (a kept caption names one of them)."""
        return list((self.attrs.get("lexicon") or {}).get("words") or [])

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
        from colorfeat.store import check_version  # it imports this module

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
