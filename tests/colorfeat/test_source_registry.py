"""The source registry: which kind takes a `--source` value, its checks, estimates and help."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from colorfeat import sources
from colorfeat.config import PipelineConfig
from colorfeat.errors import UserError
from colorfeat.sources import (
    KINDS,
    SourceEstimate,
    SourceKind,
    SourceOptions,
    acquire,
    acquired,
    check,
    estimate,
    kind_of,
    registered,
    source_help,
)
from colorfeat.sources.download import official_checksums

LABELS = (
    "synthetic, coco2014, coco2017, a Karpathy split file, a caption table, WebDataset shards, "
    "an http(s) URL or a COCO-layout directory"
)


def test_each_value_goes_to_its_kind(tmp_path):
    taken = {
        "synthetic": "synthetic",
        "coco2014": "official",
        "coco2017": "official",
        "https://user:pw@mirror.example/coco": "mirror",
        "http://mirror.example/coco/": "mirror",
        str(tmp_path): "directory",
        "./relative/dir": "directory",
        "~/coco": "directory",
    }
    for value, name in taken.items():
        assert kind_of(value).name == name, value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("synthetc", f"--source must be {LABELS}; 'synthetc' is none of these; did you mean "),
        ("coco2018", "is none of these; did you mean coco2017?"),
        ("elsewhere", "'elsewhere' is none of these (no such directory)"),
        ("s3://bucket/coco", "'s3://bucket/coco' is none of these"),
        ("ftp://u:secret@h/x", "'ftp://***@h/x' is none of these"),
    ],
)
def test_a_value_no_kind_takes_is_one_line_listing_the_kinds(value, message):
    with pytest.raises(UserError) as err:
        check(value)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert "secret" not in str(err.value)


def test_a_missing_directory_says_so(tmp_path):
    missing = str(tmp_path / "missing")
    with pytest.raises(UserError, match=f"^--source {re.escape(missing)}: no such directory$"):
        check(missing)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="file is not a directory"):
        check(str(tmp_path / "file"))
    with pytest.raises(UserError, match="no annotations/ directory"):
        check(str(tmp_path))


def test_the_source_option_help_is_generated_from_the_registry():
    field = next(f for f in dataclasses.fields(PipelineConfig) if f.name == "source")
    assert field.metadata["help"] == source_help()
    for kind in KINDS:
        assert kind.help in source_help()


def test_a_source_option_its_kind_does_not_read_is_one_line(tmp_path, kit):
    root = tmp_path / "coco"
    kit.write_coco(root, "train2014", {"a.jpg": kit.jpeg_bytes(kit.colour_picture(0))}, {})
    for source, options, message in (
        ("synthetic", SourceOptions(image_column="pic"),
         "--image-column does not apply to synthetic (--source synthetic)"),
        (str(root), SourceOptions(val_fraction=0.5, image_root=str(tmp_path)),
         "--image-root, --val-fraction do not apply to a COCO-layout directory "
         f"(--source {root})"),
        ("https://u:secret@mirror.example/coco", SourceOptions(split_column="s"),
         "--split-column does not apply to an http(s) URL (--source https://***@mirror.example/coco)"),
    ):  # fmt: skip
        with pytest.raises(UserError) as err:
            check(source, options)
        assert str(err.value) == message
    check("synthetic", SourceOptions(val_fraction=0.2))  # the default, given: nothing to refuse
    taking = {kind.name: set(kind.options) for kind in KINDS if kind.options}
    fields = {f.name for f in dataclasses.fields(SourceOptions)}
    assert taking == {"table": fields, "webdataset": {"val_fraction"}}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"val_fraction": 1.0}, "--val-fraction must be at least 0 and below 1, got 1.0"),
        ({"val_fraction": -0.1}, "--val-fraction must be at least 0 and below 1, got -0.1"),
        ({"caption_column": ""}, "--caption-column must not be empty"),
        ({"val_fraction": "half"}, "--val-fraction must be a number, got 'half'"),
    ],
)
def test_bad_source_options_are_one_line(values, message):
    for build in (SourceOptions, PipelineConfig):
        with pytest.raises(UserError) as err:
            build(**values)
        assert str(err.value) == message
    assert PipelineConfig(val_fraction=0.1).source_options == SourceOptions(val_fraction=0.1)
    assert SourceOptions(val_fraction=0).given() == {"val_fraction": 0.0}  # 0 and 0.0: one source


def _kind(name: str = "test") -> SourceKind:
    return SourceKind(
        name=name,
        label=f"a {name} thing",
        help=f"{name}: a thing",
        names=(name,),
        acquire=lambda source, request: {"root": "/", "splits": {}, "identity": source},
        estimate=lambda source, got, request: SourceEstimate(request.limit, 7),
    )


def test_a_registered_kind_is_used_first_and_removed_after(tmp_path):
    kind = _kind("synthetic")  # takes the name from the built-in kind while registered
    with registered(kind):
        assert kind_of("synthetic") is kind and KINDS[0] is kind
        assert acquire("synthetic", tmp_path) == {
            "root": "/",
            "splits": {},
            "identity": "synthetic",
        }
        assert estimate("synthetic", None, limit=3) == SourceEstimate(3, 7)
        assert acquired("synthetic", tmp_path) is None  # no cache name, no `ready`
        assert "a synthetic thing" in str(pytest.raises(UserError, check, "http:x").value)
    assert kind_of("synthetic").name == "synthetic" and kind not in KINDS
    with pytest.raises(RuntimeError), registered(_kind()):
        raise RuntimeError
    assert [k.name for k in KINDS] == [
        "synthetic", "official", "karpathy", "table", "webdataset", "mirror", "directory",
    ]  # fmt: skip


def test_synthetic_estimate_and_readiness(tmp_path):
    before = estimate("synthetic", None, limit=12)
    assert before.pictures == 12 and before.download_bytes == 0
    assert before.generate_s > 0 and before.generate_bytes > 0
    assert acquired("synthetic", tmp_path, limit=12, seed=1) is None
    made = acquire("synthetic", tmp_path, limit=12, seed=1)
    assert acquired("synthetic", tmp_path, limit=12, seed=1) == made
    assert acquired("synthetic", tmp_path, limit=12, seed=2) is None
    after = estimate("synthetic", made, limit=12)
    assert after == SourceEstimate(12, 0, 0.0, 0)


def test_official_estimate_from_the_shipped_table(tmp_path):
    table = official_checksums()
    names = ("train2014.zip", "val2014.zip", "annotations_trainval2014.zip")
    before = estimate("coco2014", None)
    assert before.download_bytes == sum(table[n].size for n in names) > 13e9
    assert before.pictures == 82_783 + 40_504
    assert estimate("coco2014", None, limit=100).pictures == 100
    assert acquired("coco2014", tmp_path) is None


def test_a_mirror_is_not_asked_before_a_run(tmp_path):
    assert estimate("https://u:p@mirror.example/coco", None) == SourceEstimate(None, None)
    assert estimate("https://mirror.example/coco", None, limit=5).pictures == 5
    assert acquired("https://u:p@mirror.example/coco", tmp_path) is None


def test_a_directory_is_counted_where_it_is(tmp_path, kit):
    root = tmp_path / "coco"
    for split, n in (("train2014", 3), ("val2014", 2)):
        pictures = {f"{i}.jpg": kit.jpeg_bytes(kit.colour_picture(i)) for i in range(n)}
        kit.write_coco(root, split, pictures, {name: ["a red thing"] for name in pictures})
    ready = acquired(str(root), tmp_path / "work")
    assert ready == acquire(str(root), tmp_path / "work")
    assert not (tmp_path / "work").exists()  # read where it is
    assert estimate(str(root), ready) == SourceEstimate(5, 0)
    assert estimate(str(root), ready, limit=4).pictures == 4
    assert acquired(str(tmp_path / "missing"), tmp_path) is None


def test_the_package_is_the_registry_and_each_kind_its_own_module():
    package = Path(sources.__file__).parent
    for path in package.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path.name
    modules = [kind.acquire.__module__ for kind in KINDS]
    assert len(set(modules)) == len(KINDS)
    assert all(m.startswith("colorfeat.sources.") for m in modules)
