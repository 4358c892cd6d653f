"""Before a rebuild starts: the dry run, the nothing-to-do path, the precision rule, disk, help."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from colorfeat.cli import Device, Precision, _rebuild_parameters
from colorfeat.cli import app as colorfeat_app
from colorfeat.disk import FREE_BYTES_ENV, require_free
from colorfeat.errors import UserError
from colortrain.cli import app as colortrain_app
from flows.local import pipeline_config
from flows.plan import SUCCESS, plan_rebuild, preflight

COLORFEAT = str(Path(sys.executable).with_name("colorfeat"))
OPTIONS = ["--limit", "24", "--image-size", "64", "--backbone", "resnet18", "--weights", "none"]
OPTIONS += ["--device", "cpu"]


def _args(tmp_path: Path) -> list[str]:
    where = ["--store", str(tmp_path / "store"), "--work-dir", str(tmp_path / "work")]
    return ["--source", "synthetic", *OPTIONS, *where]


def _built(tmp_path: Path, latest: str | None) -> str:
    """Mark every stage of the OPTIONS rebuild complete and its version published; its id."""
    parameters = _rebuild_parameters(
        "synthetic", str(tmp_path / "store"), tmp_path / "work", 24, 64, "resnet18", "layer2",
        "none", Device.cpu, 64, "word2vec", 1, None, 0, Precision.auto,
    )  # fmt: skip
    config = pipeline_config(parameters)
    from colorfeat.sources import _synthetic_dir

    source = _synthetic_dir(tmp_path / "work", 24, 0)
    source.mkdir(parents=True)
    result = {"root": str(source), "splits": {}, "identity": source.name}
    (source / SUCCESS).write_text(json.dumps(result))
    for stage in plan_rebuild(config, source.name).values():
        stage.out_dir.mkdir(parents=True)
        (stage.out_dir / SUCCESS).write_text("{}")
    version = preflight(config).version
    (tmp_path / "store" / "versions" / version).mkdir(parents=True)
    (tmp_path / "store" / "versions" / version / "zarr.json").write_text("{}")
    if latest:
        (tmp_path / "store" / "LATEST").write_text(latest + "\n")
    return version


def test_an_unchanged_rebuild_starts_neither_prefect_nor_torch_and_moves_latest_back(tmp_path):
    version = _built(tmp_path, latest="0123456789abcdef")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    cmd = [sys.executable, "-X", "importtime", COLORFEAT, "run", *_args(tmp_path)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines() == [str(tmp_path / "store" / "versions" / version)]
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert "prefect" not in imported and "torch" not in imported and "colorfeat.store" in imported
    assert (tmp_path / "store" / "LATEST").read_text().strip() == version
    assert f"colorfeat: LATEST moved back from 0123456789abcdef to {version}" in out.stderr
    assert not (tmp_path / "work" / "prefect").exists()
    runs = [
        json.loads(line) for line in (tmp_path / "work" / "runs.jsonl").read_text().splitlines()
    ]
    assert [(r["version"], r["executed"]) for r in runs] == [(version, [])]


def test_the_dry_run_says_what_would_run_and_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(FREE_BYTES_ENV, str(10**6))
    out = CliRunner().invoke(colorfeat_app, ["run", *_args(tmp_path), "--dry-run"])
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0] == "source synthetic: 24 pictures"
    assert [line.split()[1] for line in lines[1:8]] == ["runs"] * 7
    assert "publishes version (id known after acquire)" in lines[8]
    assert "download: 0 B" in lines
    assert any(line.startswith("disk work dir") and "NOT ENOUGH" in line for line in lines)
    assert lines[-1].startswith("estimated time: ")
    assert not (tmp_path / "work").exists() and not (tmp_path / "store").exists()

    version = _built(tmp_path, latest=None)
    again = CliRunner().invoke(colorfeat_app, ["run", *_args(tmp_path), "--dry-run"])
    assert [line.split()[1] for line in again.stdout.splitlines()[1:8]] == ["reused"] * 7
    assert f"reuses published version {version}" in again.stdout
    assert "estimated time: 0 s" in again.stdout
    assert not (tmp_path / "store" / "LATEST").exists()


def test_the_dry_run_of_official_coco_counts_the_official_archives(tmp_path, monkeypatch):
    monkeypatch.setenv(FREE_BYTES_ENV, str(10**15))
    where = ["--store", str(tmp_path / "s"), "--work-dir", str(tmp_path / "w")]
    out = CliRunner().invoke(colorfeat_app, ["run", "--source", "coco2014", *where, "--dry-run"])
    assert out.exit_code == 0, out.output
    assert "source coco2014: 123287 pictures" in out.stdout
    # train2014 + val2014 + annotations_trainval2014 of the shipped checksum table
    assert "download: 19.0 GiB" in out.stdout


def test_a_write_that_cannot_fit_is_refused_naming_both_numbers(tmp_path, monkeypatch):
    monkeypatch.setenv(FREE_BYTES_ENV, str(5 * 2**20))
    with pytest.raises(UserError) as exc:
        require_free(tmp_path, 6 * 2**30, "downloading train2014.zip")
    assert str(exc.value) == (
        f"not enough disk space for downloading train2014.zip: it needs 6.0 GiB, "
        f"{tmp_path} has 5.0 MiB free"
    )
    require_free(tmp_path, 5 * 2**20, "a write that just fits")


@pytest.mark.parametrize("native_bf16", [False, True])
def test_the_features_key_does_not_depend_on_the_cpus_bf16_support(
    tmp_path, monkeypatch, native_bf16
):
    torch = pytest.importorskip("torch")
    parameters = _rebuild_parameters(
        "synthetic", str(tmp_path / "s"), tmp_path / "w", 24, 64, "resnet18", "layer2", "none",
        Device.cpu, 64, "word2vec", 1, None, 0, Precision.auto,
    )  # fmt: skip
    fp32 = plan_rebuild(pipeline_config(parameters), "src")["features"].key
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native_bf16)
    assert plan_rebuild(pipeline_config(parameters), "src")["features"].key == fp32
    bf16 = plan_rebuild(pipeline_config({**parameters, "precision": "bf16"}), "src")
    assert bf16["features"].key != fp32


@pytest.mark.parametrize(
    ("app", "command"),
    [
        (colorfeat_app, ["run"]),
        (colorfeat_app, ["schedule"]),
        (colorfeat_app, ["store", "info"]),
        (colorfeat_app, ["store", "ls"]),
        (colorfeat_app, ["grid"]),
        (colortrain_app, ["fit"]),
    ],
)
def test_help_shows_defaults_and_plain_labels(app, command):
    out = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    for noise in ("<str>", "<bool>", "<int>", "<path>", "{"):
        assert noise not in out.stdout, noise
    assert "[default: " in out.stdout or command[0] == "store"
    if command == ["fit"]:
        assert "--loader-workers" in out.stdout and " --workers " not in out.stdout
        assert "--out  " in out.stdout and "RUN_DIR" in out.stdout.split("--out")[1].split("\n")[0]
    if command == ["store", "ls"]:
        assert "store ls [OPTIONS] ROOT" in out.stdout
