"""What `colorfeat run` does around the flow: stdout kept for the result, one-line user errors."""

from __future__ import annotations

import logging
import subprocess
import sys

from colorfeat.errors import UserError
from flows.caching import StageFailed, work_dir_lock
from flows.local import _OneLineUserErrors, stdout_to_stderr


def test_everything_written_to_stdout_inside_goes_to_stderr_children_included(capfd):
    print("before")
    with stdout_to_stderr():
        print("from python")
        subprocess.run([sys.executable, "-c", "print('from a child')"], check=True)
    print("after")
    out, err = capfd.readouterr()
    assert out == "before\nafter\n"
    assert "from python\n" in err and "from a child\n" in err


def _formatted(exc: BaseException) -> str:
    try:
        raise exc
    except BaseException:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    return _OneLineUserErrors(logging.Formatter("%(message)s")).format(record)


def test_user_errors_are_logged_without_a_traceback_bugs_with_one():
    assert _formatted(UserError("no such file: x.json")) == "failed"
    assert _formatted(StageFailed("images", UserError("corrupt archive"))) == "failed"
    assert "Traceback" in _formatted(TypeError("unhashable"))
    bug = StageFailed("publish", TypeError("unhashable type: 'slice'"))
    assert str(bug) == "the publish stage failed: TypeError: unhashable type: 'slice'"
    assert "Traceback" in _formatted(bug)


def test_a_second_run_on_the_same_work_dir_is_refused_until_the_first_ends(tmp_path):
    other = (
        "import sys; from pathlib import Path; from flows.caching import work_dir_lock\n"
        "with work_dir_lock(Path(sys.argv[1])): print('locked')"
    )
    take = [sys.executable, "-c", other, str(tmp_path)]
    with work_dir_lock(tmp_path):
        with work_dir_lock(tmp_path):  # nests within this process (the command, then the flow)
            refused = subprocess.run(take, capture_output=True, text=True)
    assert refused.returncode == 1
    assert "another colorfeat run is using the work dir" in refused.stderr
    assert subprocess.run(take, capture_output=True, text=True).stdout == "locked\n"  # released
