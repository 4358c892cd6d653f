"""Retention: pin and unpin versions, and `gc`, which removes the versions (and work-dir stage
outputs) that no rule keeps; with `dry_run`, only lists them with the bytes they would free.

A version is kept when it is LATEST, pinned (`ROOT/pins/<id>`), among the newest `keep_last`,
created within `keep_days`, or within the readers' grace period: `GRACE_S` since it stopped being
LATEST (publishing records when, in `ROOT/retired/<id>`; a version that never was LATEST counts
from its creation). A reader that opened a version through LATEST therefore has at least
`grace_s` to finish with it; a longer reader (a training run of days) pins its version.

A version is removed by renaming it to `versions/.tmp-gc-<id>-<random>` (readers and `store ls`
skip such names; a reader that opened it before keeps its open files) and then deleting that:
killed at any point, every remaining version is complete and validates, and the next `gc` (or the
stale-staging clean-up of a publish) removes what was left. Stage outputs under `WORK/stages/`
are removed when no kept version was assembled from them (root attr `stages`) and no build holds
the work dir (its lock, `WORK/.lock`, is taken for the duration).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from colorfeat.errors import UserError
from colorfeat.filesystems import filesystem
from colorfeat.parallel import write_atomic
from colorfeat.store.info import list_versions
from colorfeat.store.layout import (
    PINS,
    RETIRED,
    TMP_PREFIX,
    VERSION_ID,
    VERSIONS,
    read_latest,
)
from colorfeat.worklock import work_dir_free

GRACE_S = 24 * 3600
GC_PREFIX = f"{TMP_PREFIX}gc-"


@dataclass
class Collection:
    """What `gc` removed (or, in a dry run, would remove), with the reason each kept one stays."""

    removed: list[dict] = field(default_factory=list)  # {"version", "bytes"}
    kept: dict[str, str] = field(default_factory=dict)  # version -> why
    stage_outputs: list[dict] = field(default_factory=list)  # {"path", "bytes"}
    freed_bytes: int = 0
    dry_run: bool = False
    note: str = ""

    def lines(self) -> list[str]:
        """One line per version or stage output that goes, then the total."""
        verb = "would remove" if self.dry_run else "removed"
        out = [f"{verb} version {r['version']} ({r['bytes']} bytes)" for r in self.removed]
        out += [f"{verb} stage output {s['path']} ({s['bytes']} bytes)" for s in self.stage_outputs]
        out += [f"kept {vid}: {why}" for vid, why in sorted(self.kept.items())]
        out.append(f"{verb} {len(self.removed)} versions, freeing {self.freed_bytes} bytes")
        return out + ([self.note] if self.note else [])


def _local_root(root: str) -> Path:
    fs, base = filesystem(root, None)
    if "file" not in fs.protocol and "local" not in fs.protocol:
        raise UserError(f"retention works on local store roots; {root} is not one")
    path = Path(base)
    if not (path / VERSIONS).is_dir():
        raise UserError(f"not a feature store root: {root} (no {VERSIONS}/)")
    return path


def _version_dir(root: Path, vid: str) -> Path:
    if not VERSION_ID.fullmatch(vid) or not (root / VERSIONS / vid / "zarr.json").is_file():
        raise UserError(f"{root} has no published version {vid!r} (colorfeat store ls {root})")
    return root / VERSIONS / vid


def pin(root: str, vid: str) -> None:
    """Keep version `vid` whatever its age or rank, until it is unpinned."""
    path = _local_root(root)
    _version_dir(path, vid)
    (path / PINS).mkdir(exist_ok=True)
    write_atomic(path / PINS / vid, datetime.now(UTC).isoformat(timespec="seconds") + "\n")


def unpin(root: str, vid: str) -> bool:
    """Let `gc` consider version `vid` again; False if it was not pinned."""
    path = _local_root(root)
    if not VERSION_ID.fullmatch(vid):
        raise UserError(f"{vid!r} is not a version id (16 hex digits)")
    try:
        (path / PINS / vid).unlink()
    except FileNotFoundError:
        return False
    return True


def pinned(root: str) -> set[str]:
    """The version ids pinned under `root`."""
    pins = _local_root(root) / PINS
    names = (p.name for p in pins.iterdir()) if pins.is_dir() else ()
    return {n for n in names if VERSION_ID.fullmatch(n)}


def gc(
    root: str,
    *,
    keep_last: int | None = None,
    keep_days: float | None = None,
    work_dir: str | Path | None = None,
    dry_run: bool = False,
    grace_s: float = GRACE_S,
    now: datetime | None = None,
) -> Collection:
    """Remove the versions no rule keeps (and, with `work_dir`, the stage outputs no kept version
    needs); with `dry_run`, list them and the bytes they would free, removing nothing."""
    if keep_last is not None and keep_last < 0 or keep_days is not None and keep_days < 0:
        raise UserError("--keep-last and --keep-days must not be negative")
    path, now = _local_root(root), now or datetime.now(UTC)
    _remove_leftovers(path)
    found = Collection(dry_run=dry_run)
    versions = list_versions(str(path))  # oldest first
    fs, base = filesystem(str(path), None)
    found.kept = _reasons(path, versions, read_latest(fs, base, root), keep_last, keep_days,
                          grace_s, now)  # fmt: skip
    going = [v for v in versions if v["version"] not in found.kept]
    dirs = [path / VERSIONS / v["version"] for v in going]
    stage_dirs: list[Path] = []
    if work_dir is not None:
        with work_dir_free(work_dir) as free:
            if free:
                stage_dirs = _unneeded_stages(Path(work_dir), path, set(found.kept))
                found.freed_bytes = _freed_bytes(dirs + stage_dirs)
                if not dry_run:
                    _remove_all(path, dirs, stage_dirs)
            else:
                found.note = f"a build holds {work_dir}: its stage outputs are left"
    if work_dir is None or found.note:
        found.freed_bytes = _freed_bytes(dirs)
        if not dry_run:
            _remove_all(path, dirs, [])
    found.removed = [{"version": d.name, "bytes": _bytes(d)} for d in dirs]
    found.stage_outputs = [{"path": str(d), "bytes": _bytes(d)} for d in stage_dirs]
    return found


def _reasons(
    path: Path,
    versions: list[dict],
    latest: str | None,
    keep_last: int | None,
    keep_days: float | None,
    grace_s: float,
    now: datetime,
) -> dict[str, str]:
    """version -> why it is kept, for every version a rule keeps."""
    pins, kept = pinned(str(path)), {}
    newest = [v["version"] for v in versions][-keep_last:] if keep_last else []
    for v in versions:
        vid, created = v["version"], _time(v["created"])
        retired = _time(_read(path / RETIRED / vid)) or created
        age_days = (now - created).total_seconds() / 86400 if created else 0.0
        if vid == latest:
            kept[vid] = "LATEST"
        elif vid in pins:
            kept[vid] = "pinned"
        elif vid in newest:
            kept[vid] = f"among the newest {keep_last}"
        elif keep_days is not None and age_days < keep_days:
            kept[vid] = f"younger than {keep_days:g} days"
        elif retired is None or (now - retired).total_seconds() < grace_s:
            kept[vid] = f"within the readers' grace period ({grace_s / 3600:g} h)"
    return kept


def _time(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text.strip()) if text else None
    except ValueError:
        return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _unneeded_stages(work_dir: Path, root: Path, kept: set[str]) -> list[Path]:
    """Finished stage outputs under WORK/stages that no kept version was assembled from."""
    import json

    needed: set[str] = set()
    for vid in kept:
        meta = json.loads((root / VERSIONS / vid / "zarr.json").read_text())
        needed |= set((meta.get("attributes", {}).get("stages") or {}).values())
    stages = work_dir.resolve() / "stages"
    if not stages.is_dir():
        return []
    return sorted(
        d for d in stages.iterdir()
        if d.is_dir() and not d.is_symlink() and (d / "_SUCCESS").is_file() and d.name not in needed
    )  # fmt: skip


def _files(paths: list[Path]) -> Iterator[Path]:
    for top in paths:
        for folder, _, names in os.walk(top):
            for name in names:
                yield Path(folder, name)


def _freed_bytes(paths: list[Path]) -> int:
    """Bytes freed by removing `paths`: a file counts once, and only when every one of its hard
    links is among them."""
    seen: dict[tuple[int, int], list] = {}
    for file in _files(paths):
        st = file.lstat()
        entry = seen.setdefault((st.st_dev, st.st_ino), [0, st.st_nlink, st.st_size])
        entry[0] += 1
    return sum(size for count, links, size in seen.values() if count >= links)


def _bytes(path: Path) -> int:
    return sum(f.lstat().st_size for f in _files([path])) if path.exists() else 0


def _remove_all(root: Path, versions: list[Path], stage_dirs: list[Path]) -> None:
    """Rename each version out of the readers' sight, then delete it; then the stage outputs."""
    for version in versions:
        aside = version.with_name(f"{GC_PREFIX}{version.name}-{secrets.token_hex(8)}")
        version.rename(aside)
        shutil.rmtree(aside)
        (root / RETIRED / version.name).unlink(missing_ok=True)
    for stage in stage_dirs:
        aside = stage.with_name(f".gc-{stage.name}-{secrets.token_hex(8)}")
        stage.rename(aside)
        shutil.rmtree(aside)


def _remove_leftovers(root: Path) -> None:
    """What a killed gc left: versions already renamed aside."""
    for left in (root / VERSIONS).glob(f"{GC_PREFIX}*"):
        shutil.rmtree(left, ignore_errors=True)
