"""The work-dir lock: one rebuild at a time per work dir (`WORK/.lock`).

Light on purpose (no Prefect, PyTorch or Zarr): `colorfeat run` takes it before it imports
anything heavy, so a second run on a busy work dir is told so at once.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from colorfeat.errors import UserError

LOCK_FILE = ".lock"
_HELD: set[Path] = set()  # work dirs this process has locked


@contextmanager
def work_dir_lock(work_dir: Path | str, *, create: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on the work dir: two runs must not build the same stages at once.

    Yields whether the lock is held. With `create=False` a work dir that does not exist yet is
    left alone (nothing is created, nothing is locked: no run can be using it). The kernel drops
    the lock when the process dies, however it dies, so a killed run never blocks the next one.
    Within one process the lock nests (the command takes it before the flow).
    """
    path = Path(work_dir).resolve() / LOCK_FILE
    if path in _HELD:
        yield True
        return
    if not create and not path.parent.is_dir():
        yield False
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another colorfeat run is using the work dir {work_dir}") from None
        _HELD.add(path)
        try:
            yield True
        finally:
            _HELD.discard(path)


@contextmanager
def work_dir_free(work_dir: Path | str) -> Iterator[bool]:
    """Hold the work dir's lock for the block if no run holds it: whether it was free (an
    absent work dir is not free: there is nothing to clean)."""
    with ExitStack() as stack:
        try:
            held = stack.enter_context(work_dir_lock(work_dir, create=False))
        except UserError:
            held = False
        yield held
