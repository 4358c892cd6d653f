"""Store roots and staging folders: what may be a store root, and who owns a version being built.

Several publishers may share a root (one machine, or many over NFS or a shared volume). Each
staging folder holds an owner record (host and pid namespace, pid, process start time); a
publisher removes another's staging folder only when it is provably dead: owned in this pid
namespace by a process that is gone (or whose pid now belongs to another process), or, owned
elsewhere or unreadable, untouched for STALE_AFTER_S.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import time
from pathlib import Path

import psutil

from colorfeat.errors import UserError
from colorfeat.parallel import write_atomic
from colorfeat.store.layout import LATEST, TMP_PREFIX, VERSION_ID, VERSIONS, is_store_root

OWNER = "owner.json"  # in a staging folder, beside the version being built: who builds it
# A staging folder owned on another host (or pid namespace), or with no readable owner record, is
# removed only after this long untouched: its owner's liveness cannot be seen from here.
STALE_AFTER_S = 24 * 3600


def new_staging(parent: Path, vid: str) -> Path:
    """A fresh staging folder for version `vid`: its owner record, and the version built in
    `version/` beside it (renamed from there into place)."""
    staging = parent / f"{TMP_PREFIX}{vid}-{os.getpid()}-{secrets.token_hex(8)}"
    staging.mkdir()  # exclusive: fails rather than reuse anything already there
    write_atomic(staging / OWNER, json.dumps(_owner_record()))
    return staging


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
            if parts[i] == VERSIONS and VERSION_ID.fullmatch(parts[i + 1]):
                _refuse(text, "/".join(parts[:i]))
        if parts[-1] == LATEST:
            _refuse(text, "/".join(parts[:-1]))
        return
    here = Path(text.removeprefix("file://")).absolute()
    for above in here.parents:
        if is_store_root(above):
            _refuse(text, str(above))
    if here.is_file():
        raise UserError(f"--store {text} is a file, not a store root (a directory)")
    if (here / "zarr.json").is_file():
        if is_store_root(here.parent.parent) and here.parent.name == VERSIONS:
            _refuse(text, str(here.parent.parent))
        raise UserError(f"--store {text} is a zarr group, not a store root")


def check_outside_store(path: str | Path, option: str) -> None:
    """Raise UserError if an output path lies in a feature store: a store root, a published
    version or anything below either (links resolved), so nothing writes into a store."""
    here = Path(path).expanduser().resolve()
    for place in (here, *here.parents):
        is_version = place.parent.name == VERSIONS and (place / "zarr.json").is_file()
        if is_store_root(place) or is_version:
            raise UserError(
                f"{option} {path} is inside the feature store {place}; write it outside the store"
            )


def _refuse(path: str, root: str) -> None:
    raise UserError(f"--store {path} is inside the feature store {root}; use --store {root}")
