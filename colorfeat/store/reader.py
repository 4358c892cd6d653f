"""Reading a published feature store: open a root (following LATEST) or a version, through a
store that raises on a missing or damaged chunk (colorfeat.store.manifest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.storage import FsspecStore, LocalStore

from colorfeat.constants import STORE_SCHEMA
from colorfeat.errors import UserError
from colorfeat.filesystems import filesystem
from colorfeat.store import schema
from colorfeat.store.layout import (
    LATEST,
    VERSIONS,
    is_local,
    is_store_root,
    join_url,
    read_latest,
    remote_files,
    require_local_dir,
)
from colorfeat.store.manifest import GuardedStore, load_manifest
from colorfeat.store.validate import check_manifest, check_version


class StoreVersion:
    """One published version: attrs, splits, arrays (zarr or lazy dask), vocab and LAB tables.

    Array names come from colorfeat.store.schema: tables such as schema.LAB_WEIGHTS, and per-split
    arrays such as schema.RGB or schema.CAPTION_TOKENS, read with `array(split, name)`. Every
    array reads through the version's manifest: a missing or damaged chunk raises ChunkError.
    """

    def __init__(
        self,
        path: str,
        group: zarr.Group,
        storage_options: dict | None = None,
        manifest: dict | None = None,
    ) -> None:
        self.path = path
        self.group = group
        self.storage_options = storage_options
        self.manifest = manifest
        self.attrs: dict[str, Any] = dict(group.attrs)
        self.version: str = self.attrs.get("version") or path.rstrip("/").rsplit("/", 1)[-1]
        self.splits: list[str] = list(self.attrs.get(schema.ATTR_SPLITS) or [])

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
        if path not in schema.TABLES and path not in self.group:
            raise ValueError(f"{path!r} is not a store table; tables are {schema.TABLES}")
        return self.group[path]

    def dask(self, split: str, name: str):
        """The same array as a lazy dask array, chunked like the store."""
        import dask.array as da

        return da.from_zarr(self.array(split, name))

    def feature_names(self) -> list[str]:
        return list(self.attrs.get(schema.ATTR_FEATURES) or [])

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

    def files(self) -> dict[str, int]:
        """Every file of this version with its size, relative to the version."""
        fs, base = filesystem(self.path, self.storage_options)
        return remote_files(fs, base)

    def validate(self) -> None:
        """Raise UserError unless this version is complete (layout, dtypes, counts, chunks, and
        every file of its manifest present with its size)."""
        files = self.files()
        check_version(self.group, files)
        if self.manifest is not None:
            check_manifest(self.path, self.manifest, files)


def open_store(path_or_root: str | Path, *, storage_options: dict | None = None) -> StoreVersion:
    """Open a store version, or the LATEST version of a store root."""
    path = str(path_or_root).rstrip("/") or "/"
    fs, base = filesystem(path, storage_options)
    fs.invalidate_cache()
    require_local_dir(fs, base, path)
    try:
        vid = read_latest(fs, base, path)
        if vid is not None:
            if not fs.isfile(f"{base}/{VERSIONS}/{vid}/zarr.json"):
                raise UserError(
                    f"{path}: LATEST names version {vid!r}, which is not in {VERSIONS}/"
                )
            return open_version(join_url(path, f"{VERSIONS}/{vid}"), storage_options)
        if fs.isfile(f"{base}/zarr.json"):
            return open_version(path, storage_options)
    except (OSError, ValueError) as exc:  # unreachable remote, permission, bad URL
        raise UserError(f"cannot read store {path}: {exc}") from exc
    if fs.isdir(f"{base}/{VERSIONS}"):
        raise UserError(f"{path}: a store root with no LATEST: nothing has been published yet")
    raise not_a_root(path)


def not_a_root(path: str) -> UserError:
    """The error for a path that is no store root, naming the root when it is inside one."""
    here = Path(path.removeprefix("file://"))
    if "://" not in path or path.startswith("file://"):
        root = here.parent if is_store_root(here.parent) and here.name == VERSIONS else None
        if root is not None:
            return UserError(f"not a feature store root: {path} holds its versions; use {root}")
    return UserError(
        f"not a feature store root: {path} is neither a store root (no {LATEST}) "
        "nor a store version (no zarr.json)"
    )


def open_version(path: str, storage_options: dict | None) -> StoreVersion:
    """One version at `path`, read through its manifest (see colorfeat.store.manifest)."""
    fs, base = filesystem(path, storage_options)
    if is_local(fs):
        inner = LocalStore(base, read_only=True)
    else:
        inner = FsspecStore.from_url(path, storage_options=storage_options, read_only=True)
    store = GuardedStore(inner, path)  # opened once; its manifest comes from its own attrs
    group = zarr.open_group(store=store, mode="r", zarr_format=3)
    found = group.attrs.get("schema")
    if found != STORE_SCHEMA:
        raise UserError(f"{path} has store schema {found!r}; this code reads {STORE_SCHEMA!r}")
    manifest = load_manifest(fs, base, group.attrs.get(schema.ATTR_MANIFEST))
    store.use_manifest(manifest)
    return StoreVersion(path, group, storage_options, manifest)
