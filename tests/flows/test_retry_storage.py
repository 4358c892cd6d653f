"""Which storage faults make a stage worth retrying, and which need someone to act first."""

from __future__ import annotations

import errno

from colorfeat.retry import is_transient
from flows.caching import StageFailed


def test_brief_storage_faults_are_transient():
    assert is_transient(OSError(errno.EIO, "Input/output error"))
    assert is_transient(OSError(errno.ESTALE, "Stale file handle"))
    assert is_transient(MemoryError())
    wrapped = StageFailed("images", OSError(errno.EIO, "Input/output error"))
    wrapped.__cause__ = OSError(errno.EIO, "Input/output error")
    assert is_transient(wrapped)
    assert str(wrapped) == "the images stage failed: OSError: [Errno 5] Input/output error"


def test_faults_someone_must_fix_are_not_transient():
    assert not is_transient(PermissionError(errno.EACCES, "Permission denied"))
    assert not is_transient(OSError(errno.ENOSPC, "No space left on device"))
