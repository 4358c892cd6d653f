"""Free disk space: how much there is under a path, and a check before a large write.

`COLORFEAT_FREE_BYTES`, when set, replaces what the file system reports (read only by
`free_bytes`): it lets an operator or a test see what a run does on a fuller disk.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

from colorfeat.errors import UserError

FREE_BYTES_ENV = "COLORFEAT_FREE_BYTES"


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
