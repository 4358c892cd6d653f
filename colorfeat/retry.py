"""When a failed task is worth retrying: network or storage trouble, never a problem the user
must fix."""

from __future__ import annotations

import errno
from typing import Any

from colorfeat.errors import UserError
from colorfeat.sources.download import is_transient as is_network_failure

# Network errnos: an interrupted or refused connection may work on a later try.
_TRANSIENT_ERRNOS = {
    errno.ECONNRESET,
    errno.ECONNREFUSED,
    errno.ECONNABORTED,
    errno.ETIMEDOUT,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ENETDOWN,
    errno.EPIPE,
}
# Storage errnos of a brief fault (a network file system, a busy device): reading again may work.
# A permission or a full disk needs someone to act, so those fail at once, with nothing recorded.
_STORAGE_ERRNOS = {errno.EIO, errno.ESTALE, errno.EAGAIN, errno.EBUSY}


def is_transient(exc: BaseException | None) -> bool:
    """True when `exc` or an exception it was raised from is a network or brief storage fault.

    `NetworkError` (download and probe failures that may pass) is transient; any other
    `UserError` raised without a cause is a problem the user must fix.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if is_network_failure(exc) or isinstance(exc, TimeoutError | ConnectionError):
            return True
        if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS | _STORAGE_ERRNOS:
            return True
        if isinstance(exc, MemoryError):  # memory may be free again on the next try
            return True
        if isinstance(exc, UserError) and exc.__cause__ is None:
            return False
        exc = exc.__cause__ or exc.__context__
    return False


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry a failed run only for transient faults."""
    data = getattr(state, "data", None)
    if isinstance(data, BaseException):
        return is_transient(data)
    try:
        state.result()
    except Exception as exc:  # the task's own exception, re-raised from the stored result
        return is_transient(exc)
    return False
