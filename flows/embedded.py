"""An embedded Prefect API for one command: a loopback server, SQLite under the work dir.

`colorfeat run` needs no Prefect server and must not touch the user's `~/.prefect`: it calls
`isolate(home)` before Prefect is first imported, then runs the flow inside `embedded_api(home)`.
The server process watches its parent and exits when the parent dies, so a killed run leaves no
server behind holding the database. Run as a module, this file is that server process.

A new database costs Prefect its whole chain of migrations (about 17 s of a 27 s start on two
CPU cores). The first one made on a machine is copied, once the server answers and before any
flow runs, to a template in the user's cache (`template_path`: one per Prefect version); a new
work dir starts from a copy of it (about 9 s).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from colorfeat.errors import UserError

_STARTUP_TIMEOUT_S = 90.0
DATABASE = "prefect.db"  # in the Prefect home
# Variables that would point Prefect at a server or profile other than the embedded one.
_FOREIGN = ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE", "PREFECT_PROFILES_PATH")


def prefect_env(home: Path) -> dict[str, str]:
    """The environment that keeps every file Prefect writes under `home`."""
    home = Path(home).resolve()
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / DATABASE}",
        "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_UI_URL": "",  # no UI here: no "View at" links
        "PREFECT_SERVER_EPHEMERAL_ENABLED": "false",
    }


def isolate(home: Path) -> None:
    """Point this process (and its children) at `home`; call before Prefect is first imported."""
    Path(home).mkdir(parents=True, exist_ok=True)
    for name in _FOREIGN:
        os.environ.pop(name, None)
    os.environ.update(prefect_env(home))


def wait_healthy(api_url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Block until `api_url/health` answers 200; fail early if `proc` exits."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise UserError(f"the Prefect API process exited with code {proc.returncode}")
            try:
                if client.get(f"{api_url}/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    raise UserError(f"the Prefect API at {api_url} did not become healthy in {timeout:.0f} s")


def template_path() -> Path:
    """Where a migrated, empty Prefect database of the installed Prefect version is kept:
    under $XDG_CACHE_HOME (default ~/.cache)/colorfeat."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    version = importlib.metadata.version("prefect")
    return cache / "colorfeat" / f"prefect-{version}" / DATABASE


def seed_database(db: Path) -> bool:
    """Start a new database at `db` as a copy of the template, when there is one; whether the
    server will have to create it (no database, no template)."""
    if db.exists():
        return False
    template = template_path()
    if not template.is_file():
        return True
    if not _migrated(template):  # damaged: made again by this run's server
        with contextlib.suppress(OSError):
            template.unlink()
        return True
    part = db.with_name(f".{db.name}.{os.getpid()}.part")
    try:
        shutil.copyfile(template, part)
        os.replace(part, db)
    except OSError:
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)
        return True
    return False


def _migrated(db: Path) -> bool:
    """Whether `db` is a sound SQLite database that Prefect's migrations have run on."""
    try:
        # immutable: nothing written beside it (a template is replaced whole, never changed)
        with contextlib.closing(sqlite3.connect(f"file:{db}?immutable=1", uri=True)) as conn:
            sound = conn.execute("PRAGMA quick_check").fetchone() == ("ok",)
            head = conn.execute("SELECT version_num FROM alembic_version").fetchall()
            return sound and bool(head)
    except sqlite3.Error:
        return False


def save_template(db: Path) -> None:
    """Keep a copy of the freshly migrated database `db` (its server running, no flow run yet)
    as the template; nothing when one is there, or when the cache cannot be written."""
    template = template_path()
    if template.exists():
        return
    part = template.with_name(f".{template.name}.{os.getpid()}.part")
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        with (
            contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as src,
            contextlib.closing(sqlite3.connect(part)) as dst,
        ):
            src.backup(dst)  # a consistent snapshot, while the server may be writing
        os.replace(part, template)  # atomic: a concurrent run's copy would be as good
    except (OSError, sqlite3.Error):
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)


class EmbeddedAPI:
    """A Prefect API process on a free loopback port, with its database under `home`."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home).resolve()
        self.home.mkdir(parents=True, exist_ok=True)
        self.db = self.home / DATABASE
        self.new_database = seed_database(self.db)
        env = {k: v for k, v in os.environ.items() if k not in _FOREIGN}
        env.update(prefect_env(self.home))
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}/api"
        cmd = [sys.executable, "-m", "flows.embedded", "--fd", str(listener.fileno())]
        cmd += ["--parent", str(os.getpid())]
        # The server's output goes to stderr: stdout belongs to the command's result. Its own
        # session keeps a terminal's Ctrl-C (SIGINT to the foreground process group) away from
        # it: the command is interrupted, then flushes its logs and stops the server in order.
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            pass_fds=[listener.fileno()],
            stdout=sys.stderr.fileno(),
            start_new_session=True,
        )
        listener.close()

    def wait(self, timeout: float = _STARTUP_TIMEOUT_S) -> None:
        """Block until the API answers (then keep its new database as the template)."""
        wait_healthy(self.url, timeout, self.proc)
        if self.new_database:
            save_template(self.db)
            self.new_database = False

    def close(self) -> None:
        """Flush what the client still buffers, then stop the server."""
        try:
            if self.proc.poll() is None:
                _drain()
        finally:
            _stop(self.proc)


@contextmanager
def embedded_api(home: Path, *, wait: bool = True) -> Iterator[EmbeddedAPI]:
    """Serve a Prefect API backed by `home/prefect.db` and point this process at it.

    With `wait=False` the caller may import heavy modules while the server starts, then call
    `api.wait()` before running a flow.
    """
    api = EmbeddedAPI(home)
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = api.url
    try:
        with ExitStack() as stack:
            if "prefect" in sys.modules:  # settings were read at import: update them too
                from prefect.settings import temporary_settings

                stack.enter_context(
                    temporary_settings(updates={"api.url": api.url, "home": str(api.home)})
                )
            if wait:
                api.wait()
            yield api
    finally:
        api.close()
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous


def _drain() -> None:
    """Send buffered logs and events before the API goes away."""
    if "prefect" not in sys.modules:
        return
    import inspect

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        for worker in (APILogWorker, EventsWorker):  # drain_all: never starts a new worker
            result = worker.drain_all()
            if inspect.isawaitable(result):
                await result

    run_coro_as_sync(drain())


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def _serve(fd: int, parent: int) -> None:
    import uvicorn
    from prefect.server.api.server import create_app

    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    app = create_app(ephemeral=True, final=True)
    config = uvicorn.Config(app, log_level="error", lifespan="on", access_log=False)
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Serve an embedded Prefect API on a socket.")
    parser.add_argument("--fd", type=int, required=True, help="listening socket to serve on")
    parser.add_argument("--parent", type=int, required=True, help="exit when this process dies")
    args = parser.parse_args()
    _serve(args.fd, args.parent)
