"""`colorfeat store verify|pin|unpin|gc` on the command line, and retention after a scheduled
rebuild: the flow's parameters and the task that applies them."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from colorfeat.config import PipelineConfig
from colorfeat.store import list_versions
from flows import deploy
from flows.cli.colorfeat import app
from flows.pipeline import collect_garbage
from tests.colorfeat.conftest_store import make_stage_parts, publish_parts


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict:
    return make_stage_parts(tmp_path_factory.mktemp("work"))


def _publish(root: Path, parts: dict, tags: str) -> list[str]:
    """One version per tag, each LATEST in turn; their ids, oldest first."""
    keyed = ({**parts, "keys": {**parts["keys"], "tag": t}} for t in tags)
    return [publish_parts(root, p)["version"] for p in keyed]


def _left(root: Path) -> set[str]:
    return {v["version"] for v in list_versions(str(root))}


def _invoke(*args: str):
    return CliRunner().invoke(app, ["store", *args])


def test_verify_passes_a_whole_version_and_fails_a_damaged_one_naming_the_chunk(parts, tmp_path):
    root = tmp_path / "root"
    (vid,) = _publish(root, parts, "a")
    ok = _invoke("verify", str(root))
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.startswith(f"{vid}: ") and ok.stdout.rstrip().endswith(": ok")
    chunk = next((root / "versions" / vid / "train" / "rgb").glob("c/*/*/*/*"))
    damaged = tmp_path / "damaged"
    damaged.write_bytes(bytes([chunk.read_bytes()[0] ^ 0xFF]) + chunk.read_bytes()[1:])
    damaged.replace(chunk)  # a new file: the stage output it was linked to keeps its bytes
    bad = _invoke("verify", str(root), vid)
    assert bad.exit_code == 1
    assert "train/rgb" in bad.stderr and bad.stdout.rstrip().endswith("1 problems")


def test_pin_unpin_and_gc_keep_latest_pinned_and_the_newest(parts, tmp_path):
    root = tmp_path / "root"
    a, b, c, d = _publish(root, parts, "abcd")
    assert _invoke("pin", str(root), a).stdout == f"pinned {a}\n"
    refused = _invoke("gc", str(root))
    assert refused.exit_code == 1 and refused.stderr.count("\n") == 1
    assert "--keep-last" in refused.stderr and _left(root) == {a, b, c, d}
    dry = _invoke("gc", str(root), "--keep-last", "2", "--grace-hours", "0", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"would remove version {b}" in dry.stdout and _left(root) == {a, b, c, d}
    done = _invoke("gc", str(root), "--keep-last", "2", "--grace-hours", "0")
    assert done.exit_code == 0, done.output
    assert _left(root) == {a, c, d}  # a pinned, c and d the newest two (d LATEST)
    assert _invoke("unpin", str(root), a).stdout == f"unpinned {a}\n"
    assert _invoke("unpin", str(root), a).stdout == f"{a} was not pinned\n"
    within_grace = _invoke("gc", str(root), "--keep-last", "1")
    assert within_grace.exit_code == 0 and _left(root) == {a, c, d}  # retired less than 24 h ago
    assert _invoke("gc", str(root), "--keep-last", "1", "--grace-hours", "0").exit_code == 0
    assert _left(root) == {d}


def test_a_scheduled_deployment_carries_the_retention_and_the_flow_task_applies_it(
    parts, tmp_path, monkeypatch
):
    served = {}
    monkeypatch.setattr(deploy, "require_server", lambda: "http://127.0.0.1:1/api")
    from flows import pipeline

    monkeypatch.setattr(pipeline.rebuild, "serve", lambda **kw: served.update(kw))
    options = {"source": "synthetic", "store": str(tmp_path / "root"), "weights": "none"}
    options["work_dir"] = str(tmp_path / "work")
    deploy.schedule_command("0 3 * * 1", options, retention={"keep_last": 2, "keep_days": None})
    assert served["parameters"]["keep_last"] == 2 and "keep_days" not in served["parameters"]

    root = tmp_path / "root"
    versions = _publish(root, parts, "abc")
    config = PipelineConfig(store=str(root), work_dir=str(tmp_path / "work"))
    # retired just now: within the readers' grace period, so nothing goes yet
    assert collect_garbage.fn(config, 1, None)["removed"] == []
    assert _left(root) == set(versions)
