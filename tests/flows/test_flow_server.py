"""Scheduled rebuilds against a real Prefect server on loopback, started by the test."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.settings import temporary_settings
from prefect.utilities.asyncutils import run_coro_as_sync

from colorfeat.store import open_store
from flows.embedded import DATABASE, prefect_env, seed_database, wait_healthy

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home: Path, api_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(prefect_env(home), PREFECT_API_URL=api_url, **extra)
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> str:
    """`prefect server start` on 127.0.0.1 with its own home and database; its API URL."""
    home = tmp_path_factory.mktemp("server-home")
    url = f"http://127.0.0.1:{_free_port()}/api"
    port = url.rsplit(":", 1)[1].split("/")[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(prefect_env(home))
    seed_database(home / DATABASE)  # migrated once per session (flows.embedded)
    log = open(home / "server.log", "w")
    proc = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", port],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_healthy(url, 180, proc)
        with temporary_settings(updates={"api.url": url}):
            yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _deployment(name: str):
    async def read():
        async with get_client() as client:
            return await client.read_deployment_by_name(name)

    return run_coro_as_sync(read())


def test_prefect_yaml_registers_the_weekly_rebuild_on_a_process_pool(server, tmp_path):
    env = _env(tmp_path / "cli-home", server)
    pool = [str(BIN / "prefect"), "work-pool", "create", "colorfeat", "--type", "process"]
    subprocess.run(pool, env=env, check=True, capture_output=True, timeout=120)
    deploy = [str(BIN / "prefect"), "deploy", "--all", "--prefect-file", "flows/prefect.yaml"]
    out = subprocess.run(
        [*deploy, "--no-prompt"], env=env, cwd=REPO, capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    weekly = _deployment("rebuild/weekly-rebuild")
    assert weekly.work_pool_name == "colorfeat"
    [schedule] = weekly.schedules
    assert schedule.schedule.cron == "0 3 * * 1" and schedule.active
    assert weekly.parameters["config"]["source"] == "coco2014"
    assert _deployment("train/train-small").parameters["preset"] == "small"


def test_served_schedule_runs_a_triggered_rebuild_to_a_readable_version(server, tiny, tmp_path):
    store = Path(tiny["store"])
    args = [f"--{k.replace('_', '-')}={v}" for k, v in tiny.items()]
    cmd = [str(BIN / "colorfeat"), "schedule", "--cron", "*/30 * * * *", "--name", "tiny", *args]
    env = _env(tmp_path / "serve-home", server, PREFECT_RUNNER_POLL_FREQUENCY="1")
    log = open(tmp_path / "serve.log", "w")
    serving = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert serving.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                deployment = _deployment("rebuild/tiny")
                break
            except Exception:  # not registered yet
                assert time.monotonic() < deadline, "the deployment was never registered"
                time.sleep(0.5)
        [schedule] = deployment.schedules
        assert schedule.schedule.cron == "*/30 * * * *"
        assert deployment.parameters["config"]["store"] == str(store)

        run = run_deployment("rebuild/tiny", timeout=300, poll_interval=1)
        assert run.state.is_completed(), (tmp_path / "serve.log").read_text()[-3000:]
    finally:
        serving.send_signal(signal.SIGINT)
        try:
            serving.wait(timeout=30)
        except subprocess.TimeoutExpired:
            serving.kill()
            serving.wait()
        log.close()

    version = open_store(store)
    assert version.features("train").shape[1:] == (128, 8, 8)
    assert version.n_images("train") + version.n_images("val") > 0
