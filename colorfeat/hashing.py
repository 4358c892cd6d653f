"""Stable content hashes: of JSON-able values, of files, and of stage inputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

_READ_BLOCK = 1 << 20


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def value_hash(value: Any, length: int = 64) -> str:
    """Hex SHA-256 of a JSON-able value, truncated to `length` characters."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:length]


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_READ_BLOCK):
            h.update(block)
    return h.hexdigest()


def stage_key(stage: str, inputs: Any, config: Any, code_version: str) -> str:
    """The cache key of a stage: its name, its inputs' hashes, its config and its code version."""
    return f"{stage}-" + value_hash(
        {"stage": stage, "inputs": inputs, "config": config, "code": code_version}, 16
    )


def content_of(spec: str) -> str:
    """A named choice (`word2vec`, `imagenet`, `none`) as is; a file by its SHA-256."""
    path = Path(spec)
    return f"sha256:{file_sha256(path)}" if path.is_file() else spec
