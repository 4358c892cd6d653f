"""Free disk space: how much there is under a path, and a check before a large write.

`COLORFEAT_FREE_BYTES`, when set, replaces what the file system reports (read only by
`free_bytes`): it lets an operator or a test see what a run does on a fuller disk.

Compressed feature maps are counted with `feature_bytes_needed`, by both the features stage and
`colorfeat run --dry-run`, so that the dry run and the run agree.
"""

from __future__ import annotations

import math
import os
import shutil
import zipfile
from pathlib import Path

from colorfeat.errors import UserError

FREE_BYTES_ENV = "COLORFEAT_FREE_BYTES"
# Stored bytes per float16 feature value after zstd level 1, the larger of two measurements on
# natural photographs with random weights and fp32 compute: resnet18.layer2 at 64 px 1.288,
# resnet101.layer2 at 224 px 1.234 (= 495 KB a picture, docs/feature-store.md); bf16 compute
# stores about 1.0. The margin covers features that compress worse (other weights or pictures);
# with it a value counts 1.61 bytes against 2 uncompressed.
FEATURE_BYTES_PER_VALUE = 1.29
FEATURE_SPACE_MARGIN = 1.25


def free_bytes(path: str | Path) -> int:
    """Bytes free to this user on the file system that holds `path` (or would hold it)."""
    override = os.environ.get(FREE_BYTES_ENV)
    if override:
        try:
            return int(override)
        except ValueError:
            raise UserError(
                f"{FREE_BYTES_ENV} must be a number of bytes, got {override!r}"
            ) from None
    probe = Path(path).resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def require_free(path: str | Path, needed: int, what: str) -> None:
    """Raise UserError naming both numbers unless `needed` bytes fit under `path`."""
    free = free_bytes(path)
    if needed > free:
        raise UserError(
            f"not enough disk space for {what}: it needs {human_bytes(needed)}, "
            f"{path} has {human_bytes(free)} free"
        )


def feature_bytes_needed(values: int) -> int:
    """Disk space to ask for before storing `values` float16 feature values, compressed."""
    return math.ceil(values * FEATURE_BYTES_PER_VALUE * FEATURE_SPACE_MARGIN)


def unpacked_bytes(archive: str | Path) -> int:
    """The total uncompressed size of a zip archive's members, read from its directory."""
    with zipfile.ZipFile(archive) as z:
        return sum(info.file_size for info in z.infolist())


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
