"""Where a local path or a URL becomes an fsspec file system: store roots and object-store shards.

The one place both open: a store root (`--store s3://bucket/store`) and a source's shards
(`--source 's3://bucket/cc/{00000..00009}.tar'`). No credentials are taken from the command
line: an object store's keys, region and endpoint come from the environment as its client reads
them (for S3: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_PROFILE`,
`AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`), and from fsspec's configuration (`FSSPEC_S3_*`
variables, `~/.config/fsspec`), so a store and a source on the same object store need them once.
A library caller may pass `storage_options` instead.
"""

from __future__ import annotations

import fsspec

from colorfeat.errors import UserError
from colorfeat.redact import redact_text


def filesystem(
    path: str, storage_options: dict | None = None, *, what: str = "store location"
) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec file system of a local path or URL, and the path on it."""
    try:
        fs, base = fsspec.core.url_to_fs(str(path), **(storage_options or {}))
    except (ImportError, ValueError) as exc:
        raise UserError(redact_text(f"cannot open {what} {path}: {exc}")) from exc
    return fs, base.rstrip("/") or "/"
