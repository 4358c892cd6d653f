"""Where stage work runs (inline or on Dask) and the stage directory protocol.

Stage protocol: a stage builds into `<out_dir>.partial` (resuming from it if it exists), flushes
it to disk, writes the result JSON to `_SUCCESS` inside it, then renames it to `out_dir`; a stage
whose `out_dir/_SUCCESS` exists returns that result without work.

Small state files that a resume reads (`_SUCCESS`, per-block status, chunk markers) are written
with `write_atomic`: a reader finds the whole file or none. Readers of a folder skip `is_stray`
names, which other writers leave behind (a killed write's `x.tmp`, an NFS `.nfs1234`).
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SUCCESS = "_SUCCESS"
# temp files of unfinished writes (ours, zarr's): never data
STRAY_SUFFIXES = (".tmp", ".partial")


# --------------------------------------------------------------------------- durable files


def is_stray(name: str) -> bool:
    """Whether a file name is no data of ours: a hidden file (`.nfs1234`) or a write's temp."""
    return name.startswith(".") or name.endswith(STRAY_SUFFIXES)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Replace `path` by `data` at once: a temp file in the same folder, fsynced, renamed.

    The temp file has a random name and is created exclusively (`O_EXCL`, never through a
    link): a name planted in a shared folder is never written through, only skipped.
    """
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = exclusive_temp(path)
    try:
        with open(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def exclusive_temp(path: Path, tries: int = 16) -> tuple[int, Path]:
    """(open descriptor, name) of a new temp file beside `path`, created with O_EXCL under a
    random name; a name already taken (by anything, a link included) is never opened."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(tries):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            return os.open(tmp, flags, 0o644), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path} after {tries} tries")


def fsync_dir(path: Path) -> None:
    """Make the entries of a folder (created, renamed, removed files) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems cannot sync a folder; nothing more to do there
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush every file and folder under `root` to disk, folders after their contents.

    A file with other hard links is a finished stage output's or a published version's, which
    were flushed when they were made: only the folder entry naming it here needs flushing."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            if os.lstat(os.path.join(folder, name)).st_nlink > 1:
                continue
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(folder))


# --------------------------------------------------------------------------- stage directories


def completed(out_dir: Path) -> dict | None:
    """The result of a finished stage in out_dir, or None."""
    marker = Path(out_dir) / SUCCESS
    if marker.is_file():
        return json.loads(marker.read_text())
    return None


def partial_dir(out_dir: Path) -> Path:
    """The directory a stage builds into; created (with parents) if missing."""
    out_dir = Path(out_dir)
    partial = out_dir.with_name(out_dir.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    return partial


def commit(partial: Path, out_dir: Path, result: dict) -> dict:
    """Flush `partial`, write the marker into it, rename it to `out_dir`, return the result."""
    out_dir = Path(out_dir)
    fsync_tree(Path(partial))  # the marker must never outlive the data it vouches for
    write_atomic(Path(partial) / SUCCESS, json.dumps(result, indent=1, sort_keys=True))
    if out_dir.exists():  # an unfinished leftover without a marker
        shutil.rmtree(out_dir)
    Path(partial).rename(out_dir)
    fsync_dir(out_dir.parent)
    return result


# --------------------------------------------------------------------------- executors


class Executor:
    """Runs `fn(item)` for each item, in order: inline, or as tasks on a Dask client."""

    def __init__(self, client: Any | None = None) -> None:
        self.client = client

    @property
    def workers(self) -> int:
        if self.client is None:
            return 1
        info = self.client.scheduler_info().get("workers", {})
        return max(1, sum(w.get("nthreads", 1) for w in info.values()))

    def map(
        self, fn: Callable[[Any], Any], items: Sequence[Any], desc: str | None = None
    ) -> list[Any]:
        """[fn(item) for item in items]; with `desc`, a progress bar on stderr."""
        with _progress(desc, len(items)) as advance:
            if self.client is None:
                out = []
                for item in items:
                    out.append(fn(item))
                    advance()
                return out
            from distributed import as_completed

            futures = self.client.map(fn, list(items), pure=False)
            for _ in as_completed(futures):
                advance()
            return self.client.gather(futures)


@contextmanager
def _progress(desc: str | None, total: int) -> Iterator[Callable[[], None]]:
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    if desc is None or total == 0 or not console.is_terminal:  # no bars in logs
        yield lambda: None
        return
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(desc, total=total)
        yield lambda: bar.advance(task)


@contextmanager
def executor(
    workers: int = 1, dask_address: str | None = None, *, processes: bool = False
) -> Iterator[Executor]:
    """An Executor: inline for one local worker, a local Dask cluster of `workers` threads (or
    processes), or the Dask scheduler at `dask_address` (whose workers must see the same file
    system).

    Threads are the local default: the stages' work (JPEG decoding, OpenCV, numpy reductions,
    compression) runs outside the GIL, and a process cluster costs seconds to start plus each
    worker's import of the pipeline (torch included), which dominates data sets of a few thousand
    pictures (benchmarks/images.py).
    """
    if dask_address:
        from distributed import Client

        from colorfeat.errors import UserError

        try:
            client = Client(dask_address, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise UserError(f"cannot reach the Dask scheduler at {dask_address}: {exc}") from None
        try:
            yield Executor(client)
        finally:
            client.close()
        return
    if workers <= 1:
        yield Executor(None)
        return
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=workers if processes else 1,
            threads_per_worker=1 if processes else workers,
            processes=processes,
            dashboard_address=None,
            silence_logs=40,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield Executor(client)
