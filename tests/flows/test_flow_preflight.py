"""Before a rebuild starts: the dry run, the nothing-to-do path, the precision rule, disk, help,
and the one-line errors of a mistyped source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from colorfeat.disk import FREE_BYTES_ENV, feature_bytes_needed, human_bytes, require_free
from colorfeat.errors import UserError
from colorfeat.stages import dryrun as preflight_module
from colorfeat.stages.dryrun import human_duration, stage_bytes
from colorfeat.stages.features import features_gmac
from colorfeat.stages.plan import SUCCESS, plan_rebuild, preflight
from flows.cli.colorfeat import app as colorfeat_app
from flows.cli.colortrain import app as colortrain_app
from flows.local import checked_config
from tests.colorfeat.conftest_store import write_images_zarr

COLORFEAT = str(Path(sys.executable).with_name("colorfeat"))
OPTIONS = ["--limit", "24", "--image-size", "64", "--backbone", "resnet18", "--weights", "none"]
OPTIONS += ["--device", "cpu"]


def _args(tmp_path: Path) -> list[str]:
    where = ["--store", str(tmp_path / "store"), "--work-dir", str(tmp_path / "work")]
    return ["--source", "synthetic", *OPTIONS, *where]


def tiny(store: Path, work: Path, *, limit: int, image_size: int = 64) -> dict:
    """The `colorfeat run` options of a small synthetic rebuild on the CPU."""
    return {
        "source": "synthetic", "store": str(store), "work_dir": str(work), "limit": limit,
        "image_size": image_size, "backbone": "resnet18", "weights": "none", "device": "cpu",
    }  # fmt: skip


def _built(tmp_path: Path, latest: str | None) -> str:
    """Mark every stage of the OPTIONS rebuild complete and its version published; its id."""
    config = checked_config(tiny(tmp_path / "store", tmp_path / "work", limit=24))
    from colorfeat.sources import Request, kind_of

    request = Request(tmp_path / "work", limit=24, seed=0)
    source = request.sources_dir / kind_of("synthetic").cache_name("synthetic", request)
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
    assert (
        "weights resnet18.layer2: none: seeded random initialisation (seed 0), nothing to load"
        in lines
    )
    assert any(line.startswith("disk work dir") and "NOT ENOUGH" in line for line in lines)
    assert lines[-1].startswith("estimated time: about ") and lines[-1].endswith(" and no GPU")
    assert not (tmp_path / "work").exists() and not (tmp_path / "store").exists()

    version = _built(tmp_path, latest=None)
    again = CliRunner().invoke(colorfeat_app, ["run", *_args(tmp_path), "--dry-run"])
    assert [line.split()[1] for line in again.stdout.splitlines()[1:8]] == ["reused"] * 7
    assert f"reuses published version {version}" in again.stdout
    assert "estimated time: 0 s (nothing to do)" in again.stdout
    assert "weights " not in again.stdout  # no trunk left to run
    assert not (tmp_path / "store" / "LATEST").exists()


def test_the_dry_run_of_official_coco_counts_the_official_archives(tmp_path, monkeypatch):
    monkeypatch.setenv(FREE_BYTES_ENV, str(10**15))
    monkeypatch.setattr(preflight_module, "cpu_cores", lambda: 2)
    monkeypatch.setattr(preflight_module, "planned_device", lambda device: "cpu")
    where = ["--store", str(tmp_path / "s"), "--work-dir", str(tmp_path / "w")]
    out = CliRunner().invoke(colorfeat_app, ["run", "--source", "coco2014", *where, "--dry-run"])
    assert out.exit_code == 0, out.output
    assert "source coco2014: 123287 pictures" in out.stdout
    # train2014 + val2014 + annotations_trainval2014 of the shipped checksum table
    assert "download: 19.0 GiB" in out.stdout
    # 123,287 pictures: resnet101.layer2 at 224 px is 223,600 GMAC, at 63.4 GMAC per CPU-second
    # (compiled) on 2 cores 29 min; the images stage 6 min 6 s; the download 6 min 48 s
    (estimate,) = [line for line in out.stdout.splitlines() if line.startswith("estimated time")]
    assert estimate == "estimated time: about 43 min with 2 CPU cores and no GPU"


def test_durations_read_in_human_units():
    assert [human_duration(s) for s in (42, 150, 900, 53_391, 7_200, 200_000)] == [
        "42 s", "2 min 30 s", "15 min", "14 h 50 min", "2 h", "2 d 8 h",
    ]  # fmt: skip


def test_the_features_time_follows_the_trunks_multiply_adds(tmp_path, monkeypatch):
    def gmac(backbone: str, layer: str, image_size: int, n: int) -> float:
        options = tiny(tmp_path / "s", tmp_path / "w", limit=n, image_size=image_size)
        options.update(backbone=backbone, layer=layer)
        return features_gmac(checked_config(options), n)

    n = 55_440  # whole batches of 84 (resnet18, 21 a chunk) and 66 (resnet101, 6 a chunk)
    r18 = gmac("resnet18", "layer2", 224, n)
    assert r18 == pytest.approx(n * 224**2 * 19_760 / 1e9)
    assert gmac("resnet101", "layer2", 224, n) / r18 == pytest.approx(36_144 / 19_760)
    ratio = gmac("resnet101", "layer3", 448, n) / r18  # batches of 66 (3 a chunk)
    assert ratio == pytest.approx(4 * 139_312 / 19_760)
    # zero-padded batches: 40 pictures of 64 px run as one batch of 64 (64 KB maps, 64 a chunk)
    assert gmac("resnet101", "layer2", 64, 40) == pytest.approx(64 * 64**2 * 36_144 / 1e9)

    monkeypatch.setenv(FREE_BYTES_ENV, str(10**15))
    monkeypatch.setattr(preflight_module, "planned_device", lambda device: "cuda")
    where = ["--store", str(tmp_path / "s"), "--work-dir", str(tmp_path / "w")]
    out = CliRunner().invoke(colorfeat_app, ["run", "--source", "coco2014", *where, "--dry-run"])
    assert out.stdout.splitlines()[-1] == (
        "estimated time: about 13 min, plus the features stage on the GPU (not estimated)"
    )


def test_a_write_that_cannot_fit_is_refused_naming_both_numbers(tmp_path, monkeypatch):
    monkeypatch.setenv(FREE_BYTES_ENV, str(5 * 2**20))
    with pytest.raises(UserError) as exc:
        require_free(tmp_path, 6 * 2**30, "downloading train2014.zip")
    assert str(exc.value) == (
        f"not enough disk space for downloading train2014.zip: it needs 6.0 GiB, "
        f"{tmp_path} has 5.0 MiB free"
    )
    require_free(tmp_path, 5 * 2**20, "a write that just fits")


def test_the_features_stage_refuses_what_cannot_fit_and_runs_what_does(tmp_path, monkeypatch):
    from colorfeat.config import BackboneConfig
    from colorfeat.trunk.extract import features_stage

    images = write_images_zarr(tmp_path / "images.zarr", {"train": 3, "val": 2}, size=32)
    trunk = BackboneConfig("resnet18", "layer2", "none", 32, 0)  # chunks of 8: small batches
    values = 5 * 128 * 4 * 4  # (N, C, S/8, S/8)
    needed = feature_bytes_needed(values)
    assert needed < values * 2  # compressed: less than float16 uncompressed
    config = checked_config(tiny(tmp_path / "s", tmp_path / "w", limit=5, image_size=32))
    config = replace(config, batch_size=8)
    assert stage_bytes(config, 5)["features"] == needed  # the dry run counts what the stage asks

    monkeypatch.setenv(FREE_BYTES_ENV, str(needed - 1))
    out = tmp_path / "features"
    with pytest.raises(UserError) as exc:
        features_stage(images, trunk, out, device="cpu", batch_size=8, chunk_images=8)
    partial = out.with_name("features.partial")
    assert str(exc.value) == (
        f"not enough disk space for the resnet18.layer2 features: it needs {human_bytes(needed)}, "
        f"{partial} has {human_bytes(needed - 1)} free"
    )
    assert not out.exists()
    chunks = [p for p in partial.rglob("*") if p.is_file() and "/c/" in p.as_posix()]
    assert chunks == [] and not list(partial.rglob("_SUCCESS"))

    monkeypatch.setenv(FREE_BYTES_ENV, str(needed))
    result = features_stage(images, trunk, out, device="cpu", batch_size=8, chunk_images=8)
    stored = [p for p in Path(result["path"]).rglob("*") if "/c/" in p.as_posix() and p.is_file()]
    assert 0 < sum(p.stat().st_size for p in stored) <= needed


def test_a_mistyped_source_is_one_line_naming_the_likely_one(tmp_path):
    where = ["--store", str(tmp_path / "s"), "--work-dir", str(tmp_path / "w")]
    for typed, meant in (("synthetc", "synthetic"), ("coco2018", "coco2017")):
        out = CliRunner().invoke(colorfeat_app, ["run", "--source", typed, *where])
        assert out.exit_code == 1
        assert out.stderr.splitlines() == [
            f"colorfeat: error: --source must be synthetic, coco2014, coco2017, a Karpathy split "
            f"file, a caption table, WebDataset shards, an http(s) URL or a COCO-layout "
            f"directory; {typed!r} is none of these; did you mean {meant}?"
        ]
    out = CliRunner().invoke(colorfeat_app, ["run", "--source", "./elsewhere", *where])
    assert "did you mean" not in out.stderr and out.exit_code == 1
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("native_bf16", [False, True])
def test_the_features_key_does_not_depend_on_the_cpus_bf16_support(
    tmp_path, monkeypatch, native_bf16
):
    torch = pytest.importorskip("torch")
    options = tiny(tmp_path / "s", tmp_path / "w", limit=24)
    fp32 = plan_rebuild(checked_config(options), "src")["features"].key
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native_bf16)
    assert plan_rebuild(checked_config(options), "src")["features"].key == fp32
    bf16 = plan_rebuild(checked_config({**options, "precision": "bf16"}), "src")
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
        (colortrain_app, ["colorize"]),
        (colortrain_app, ["evaluate"]),
        (colortrain_app, ["app"]),
        (colortrain_app, ["export"]),
    ],
)
def test_help_shows_defaults_and_plain_labels(app, command):
    out = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    for noise in ("<str>", "<bool>", "<int>", "<path>", "<list", "{"):
        assert noise not in out.stdout, noise
    assert "[default: " in out.stdout or command[0] == "store"
    if command == ["fit"]:
        assert "--loader-workers" in out.stdout and " --workers " not in out.stdout
        assert "--out  " in out.stdout and "RUN_DIR" in out.stdout.split("--out")[1].split("\n")[0]
    if command == ["store", "ls"]:
        assert "store ls [OPTIONS] ROOT" in out.stdout
    if command == ["colorize"]:
        assert "colorize [OPTIONS] IMAGE..." in out.stdout


@pytest.mark.parametrize("command", ["run", "schedule"])
def test_help_paragraphs_flow_across_the_docstrings_line_breaks(command):
    import typer.main

    original = typer.main.get_command(colorfeat_app).commands[command].callback.__doc__
    out = CliRunner().invoke(colorfeat_app, [command, "--help"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    shown = " ".join(" ".join(line.strip(" │").split()) for line in out.stdout.splitlines())
    broken = [line.split()[-1:] + after.split()[:1] for line, after in _breaks(original)]
    assert broken, original
    for words in broken:  # the two words around each docstring line break, on one help line
        assert any(" ".join(words) in line for line in out.stdout.splitlines()), words
    assert "when every stage is" in shown or command != "run"


def test_help_of_both_commands_keeps_paragraphs_and_list_items():
    import typer.main

    from flows.cli.colorfeat import ReflowGroup, reflow

    assert reflow("One.\n\n    Two\n    lines.\n    - a\n    - b") == "One.\n\nTwo lines.\n- a\n- b"
    for app in (colorfeat_app, colortrain_app):
        assert isinstance(typer.main.get_command(app), ReflowGroup)


def _breaks(doc: str) -> list[tuple[str, str]]:
    """(line, next line) at each single line break inside a docstring paragraph."""
    lines = [line.strip() for line in doc.splitlines()]
    return [(a, b) for a, b in zip(lines, lines[1:], strict=False) if a and b]


def _dry_run(tmp_path: Path, source: str, *more: str) -> list[str]:
    where = ["--store", str(tmp_path / "store"), "--work-dir", str(tmp_path / "work")]
    out = CliRunner().invoke(colorfeat_app, ["run", "--source", source, *where, *more, "--dry-run"])
    assert out.exit_code == 0, out.output
    return out.stdout.splitlines()


def test_the_dry_run_of_shards_and_of_a_table_read_through_its_options(tmp_path):
    from types import SimpleNamespace

    from tests.colorfeat.conftest import colour_picture, jpeg_bytes
    from tests.colorfeat.test_source_webdataset import write_shards

    kit = SimpleNamespace(jpeg_bytes=jpeg_bytes, colour_picture=colour_picture)
    write_shards(tmp_path / "shards", kit)
    lines = _dry_run(tmp_path, str(tmp_path / "shards"), "--val-fraction", "0.5")
    assert lines[0] == f"source {tmp_path / 'shards'}: 6 pictures"  # from the _stats.json files
    assert lines[1].split()[:2] == ["acquire", "runs"] and "download: 0 B" in lines

    (tmp_path / "pictures").mkdir()
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / "pictures" / name).write_bytes(kit.jpeg_bytes(kit.colour_picture(1)))
    table = tmp_path / "captions.csv"
    table.write_text("Pic,Words\na.jpg,a red thing\nb.jpg,a blue thing\nb.jpg,a blue one\n")
    options = ["--image-column", "Pic", "--caption-column", "Words"]
    lines = _dry_run(tmp_path, str(table), *options, "--image-root", str(tmp_path / "pictures"))
    assert lines[0] == f"source {table}: 2 pictures"
    assert not (tmp_path / "work").exists() and not (tmp_path / "store").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--val-fraction", "1.5"], "--val-fraction must be at least 0 and below 1, got 1.5"),
        (["--image-column", "pic"], "--image-column does not apply to synthetic"),
        (["--source", "TABLE", "--caption-column", "words"], "no column 'words'"),
    ],
)
def test_bad_source_options_are_one_line_and_a_failed_exit(tmp_path, args, message):
    table = tmp_path / "captions.csv"
    table.write_text("file_name,caption\na.jpg,a red thing\n")
    args = [str(table) if a == "TABLE" else a for a in args]
    source = [] if "--source" in args else ["--source", "synthetic"]
    where = ["--store", str(tmp_path / "store"), "--work-dir", str(tmp_path / "work")]
    out = CliRunner().invoke(colorfeat_app, ["run", *source, *args, *where, "--dry-run"])
    assert out.exit_code != 0 and message in out.output
    assert len(out.output.strip().splitlines()) == 1 and "Traceback" not in out.output


def test_what_generating_a_source_takes_comes_from_its_kind(tmp_path, monkeypatch):
    from colorfeat.sources import SourceEstimate, SourceKind, registered

    monkeypatch.setenv(FREE_BYTES_ENV, str(10**15))
    slow = SourceKind(
        name="slow", label="slow", help="slow: a slow thing", names=("slow",),
        acquire=lambda source, request: {},
        estimate=lambda source, got, request: SourceEstimate(24, 0, 36_000.0, 3 << 40),
    )  # fmt: skip
    with registered(slow):
        lines = _dry_run(tmp_path, "slow", *OPTIONS)
    assert lines[-1].startswith("estimated time: about 10 h")
    (work,) = [line for line in lines if line.startswith("disk work dir")]
    assert "needs 3.0 TiB" in work
