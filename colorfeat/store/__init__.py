"""The versioned feature store: publish immutable versions, move LATEST, read, verify them.

One idea a module: `schema` (the layout), `layout` (a root's names, LATEST as read back),
`parts` (what a stage adds to a version), `staging` (staging folders and store-root checks),
`manifest` (the chunk manifest and the store that reads against it), `validate`, `reader`
(`open_store`, `StoreVersion`), `info` (`store info`, `store ls`), `publishing`, `verification`,
`retention` (pin, unpin, gc); a root's file system comes from `colorfeat.filesystems`. This
module only gathers their public names.
"""

from __future__ import annotations

from colorfeat.constants import STORE_SCHEMA
from colorfeat.store.info import describe_version, list_versions, render_info, render_versions
from colorfeat.store.layout import LATEST, TMP_PREFIX, VERSIONS
from colorfeat.store.manifest import ChunkError
from colorfeat.store.parts import Part
from colorfeat.store.publishing import point_latest, publish, version_id
from colorfeat.store.reader import StoreVersion, open_store
from colorfeat.store.retention import GRACE_S, Collection, gc, pin, pinned, unpin
from colorfeat.store.schema import FEATURE_ATTRS
from colorfeat.store.staging import (
    OWNER,
    STALE_AFTER_S,
    check_store_root,
    clean_stale_staging,
)
from colorfeat.store.validate import check_version
from colorfeat.store.verification import Verified, verify

__all__ = [
    "FEATURE_ATTRS",
    "LATEST",
    "OWNER",
    "STALE_AFTER_S",
    "STORE_SCHEMA",
    "TMP_PREFIX",
    "VERSIONS",
    "GRACE_S",
    "ChunkError",
    "Collection",
    "Part",
    "StoreVersion",
    "Verified",
    "check_store_root",
    "check_version",
    "clean_stale_staging",
    "describe_version",
    "gc",
    "list_versions",
    "open_store",
    "pin",
    "pinned",
    "point_latest",
    "publish",
    "render_info",
    "render_versions",
    "unpin",
    "verify",
    "version_id",
]
