"""What `colorfeat run` does around the flow: stdout kept for the result, each failure once."""

from __future__ import annotations

import logging
import subprocess
import sys

from colorfeat.errors import UserError
from colorfeat.worklock import work_dir_lock
from flows.caching import StageFailed
from flows.local import FailuresOnce, stdout_to_stderr


def test_everything_written_to_stdout_inside_goes_to_stderr_children_included(capfd):
    print("before")
    with stdout_to_stderr():
        print("from python")
        subprocess.run([sys.executable, "-c", "print('from a child')"], check=True)
    print("after")
    out, err = capfd.readouterr()
    assert out == "before\nafter\n"
    assert "from python\n" in err and "from a child\n" in err


def _record(message: str, exc: BaseException | None = None) -> logging.LogRecord:
    if exc is None:
        return logging.LogRecord("prefect", logging.INFO, __file__, 1, message, None, None)
    try:
        raise exc
    except BaseException:
        return logging.LogRecord(
            "prefect", logging.ERROR, __file__, 1, message, None, sys.exc_info()
        )


def _raised_from(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except BaseException as exc:
        return exc


def test_a_user_error_is_left_to_the_command_and_a_bug_shows_its_traceback_once():
    once = FailuresOnce()
    kept = lambda record: once.filter(record)  # noqa: E731
    # What Prefect logs when a stage fails on bad input: none of it reaches the console.
    user = UserError("no such file: x.json")
    assert not kept(_record("Task run failed with exception: UserError(...)", user))
    assert not kept(_record("Finished in state Failed('Task run encountered an exception')"))
    assert not kept(
        _record("Encountered exception", _raised_from(StageFailed("captions", user), user))
    )
    assert not kept(_record("Finished in state Failed('Flow run encountered an exception')"))
    # A bug: its traceback once, at the task; the flow's record of the same failure is dropped.
    bug = TypeError("unhashable type: 'slice'")
    assert kept(_record("Task run failed with exception: TypeError(...)", bug))
    stage = _raised_from(StageFailed("publish", bug), bug)
    assert str(stage) == "the publish stage failed: TypeError: unhashable type: 'slice'"
    assert not kept(_record("Encountered exception during execution", stage))
    # Everything else passes: progress, retries, a finished task.
    assert kept(_record("images: did its work in 0.7 s (images-7a35e2ab812c1d76)"))
    assert kept(_record("Task run failed with exception: OSError(...) - Retry 1/3 will start"))
    assert kept(_record("Finished in state Completed()"))


def test_a_second_run_on_the_same_work_dir_is_refused_until_the_first_ends(tmp_path):
    other = (
        "import sys; from pathlib import Path; from colorfeat.worklock import work_dir_lock\n"
        "with work_dir_lock(Path(sys.argv[1])): print('locked')"
    )
    take = [sys.executable, "-c", other, str(tmp_path)]
    with work_dir_lock(tmp_path):
        with work_dir_lock(tmp_path):  # nests within this process (the command, then the flow)
            refused = subprocess.run(take, capture_output=True, text=True)
    assert refused.returncode == 1
    assert "another colorfeat run is using the work dir" in refused.stderr
    assert subprocess.run(take, capture_output=True, text=True).stdout == "locked\n"  # released


def test_the_early_lock_creates_nothing_where_there_is_no_work_dir(tmp_path):
    with work_dir_lock(tmp_path / "new", create=False) as held:
        assert held is False
    assert not (tmp_path / "new").exists()
    with work_dir_lock(tmp_path, create=False) as held:
        assert held is True and (tmp_path / ".lock").is_file()
