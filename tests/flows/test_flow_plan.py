"""Stage keys: what each option invalidates, and what it must not."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from colorfeat import __version__, stages
from colorfeat.config import PipelineConfig
from colorfeat.stages.plan import plan_rebuild

DIR_STAGES = ("captions", "vocab", "embeddings", "images", "priors", "features")


def config(tmp_path: Path, **options) -> PipelineConfig:
    base = {"limit": 24, "image_size": 64, "backbone": "resnet18", "weights": "none"}
    base["device"] = "cpu"
    where = {"source": "synthetic", "store": str(tmp_path / "s"), "work_dir": str(tmp_path / "w")}
    return PipelineConfig.from_options(**where, **base | options).resolved()


def changed(a: PipelineConfig, b: PipelineConfig, identity_b: str = "src") -> set[str]:
    pa, pb = plan_rebuild(a, "src"), plan_rebuild(b, identity_b)
    return {stage for stage in DIR_STAGES if pa[stage].key != pb[stage].key}


def test_keys_are_deterministic_and_name_the_stage_directory(tmp_path):
    a, b = plan_rebuild(config(tmp_path), "src"), plan_rebuild(config(tmp_path), "src")
    assert a == b
    for stage in DIR_STAGES:
        assert a[stage].key.startswith(f"{stage}-")
        assert a[stage].out_dir == (tmp_path / "w" / "stages" / a[stage].key).resolve()
        assert not a[stage].complete


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"layer": "layer3"}, {"features"}),
        ({"backbone": "resnet34"}, {"features"}),
        ({"image_size": 96}, {"images", "priors", "features"}),
        ({"embeddings": "word2vec", "seed": 1}, {"embeddings", "features"}),
        ({"limit": 30}, set(DIR_STAGES)),
        # how fast, never what: no key changes
        ({"workers": 4}, set()),
        ({"dask_address": "tcp://10.0.0.5:8786"}, set()),
        ({"batch_size": 3}, set()),
    ],
)
def test_an_option_changes_exactly_the_stages_that_read_it(tmp_path, options, expected):
    assert changed(config(tmp_path), config(tmp_path, **options)) == expected


def test_store_and_work_dir_are_not_content(tmp_path):
    a = plan_rebuild(config(tmp_path), "src")
    other = replace(config(tmp_path), store="s3://bucket/x", work_dir=str(tmp_path / "elsewhere"))
    b = plan_rebuild(other, "src")
    assert {s: p.key for s, p in a.items()} == {s: p.key for s, p in b.items()}


def test_a_new_source_identity_changes_every_stage(tmp_path):
    assert changed(config(tmp_path), config(tmp_path), identity_b="src2") == set(DIR_STAGES)


def test_files_count_by_content_not_by_path(tmp_path):
    lexicon = Path(config(tmp_path).lexicon)
    same = tmp_path / "copy.txt"
    same.write_bytes(lexicon.read_bytes())
    edited = tmp_path / "edited.txt"
    edited.write_bytes(lexicon.read_bytes() + b"\nmauve\n")
    base = config(tmp_path)
    assert changed(base, replace(base, lexicon=str(same))) == set()
    assert changed(base, replace(base, lexicon=str(edited))) == set(DIR_STAGES)

    weights = tmp_path / "w1.pt"
    weights.write_bytes(b"weights one")
    copy = tmp_path / "w2.pt"
    copy.write_bytes(b"weights one")
    one, two = config(tmp_path, weights=str(weights)), config(tmp_path, weights=str(copy))
    assert changed(one, two) == set()


def test_a_stage_code_version_invalidates_it_and_what_follows(tmp_path, monkeypatch):
    before = config(tmp_path)
    keys = plan_rebuild(before, "src")
    bumped = replace(stages.STAGES["images"], version="changed")
    monkeypatch.setitem(stages.STAGES, "images", bumped)
    after = plan_rebuild(before, "src")
    moved = {s for s in DIR_STAGES if keys[s].key != after[s].key}
    assert moved == {"images", "priors", "features"}
    assert stages.STAGES["images"].code_version.endswith("+changed")


# Recorded before the stage table replaced the hand-wired planner, when the features stage was
# at extract-2: the same config and source identity must keep naming the same stage directories
# and store version. extract-3 (structured `trunk` attrs) is a documented bump of the features
# key alone; its ids are recorded too.
RECORDED_KEYS = {
    "captions": "captions-754210f894e9a451",
    "vocab": "vocab-d3150fe7506e58dc",
    "embeddings": "embeddings-45387bcb95ce8556",
    "images": "images-bc46f62786a18100",
    "priors": "priors-0a1a2507750cf453",
    "features": "features-aa0e65771c763a62",
}
RECORDED_VERSIONS = {"fp32": "602b76171f500f56", "bf16": "1165bc88e42d3691"}
EXTRACT_3 = {"features": "features-94bc3e8bc22e8402"}
EXTRACT_3_VERSIONS = {"fp32": "8214e88c33f81d21", "bf16": "acaea616db03c24a"}


def _recorded_plan(tmp_path) -> tuple[dict[str, str], dict[str, str]]:
    from colorfeat.config import BackboneConfig
    from colorfeat.store import version_id

    trunk = BackboneConfig(weights="none", image_size=64)
    base = PipelineConfig(
        source="synthetic", store=str(tmp_path / "s"), work_dir=str(tmp_path / "w"), limit=12,
        backbone=trunk, device="cpu",
    )  # fmt: skip
    other = replace(base, precision="bf16", embedding_dim=16, seed=3)
    found, fp32_keys = {}, {}
    for name, cfg in (("fp32", base), ("bf16", other)):
        keys = {s: p.key for s, p in plan_rebuild(cfg, "synthetic-src-identity").items()}
        found[name] = version_id({"keys": keys, "features": [{"name": cfg.backbone.name}]})
        fp32_keys = fp32_keys or keys
    return fp32_keys, found


def test_version_ids_of_unchanged_inputs_are_those_recorded_before(tmp_path, monkeypatch):
    keys, found = _recorded_plan(tmp_path)
    assert keys == {**RECORDED_KEYS, **EXTRACT_3}
    assert found == EXTRACT_3_VERSIONS
    extract_2 = replace(stages.STAGES["features"], version=f"colorfeat-{__version__}/extract-2")
    monkeypatch.setitem(stages.STAGES, "features", extract_2)
    keys, found = _recorded_plan(tmp_path)
    assert keys == RECORDED_KEYS
    assert found == RECORDED_VERSIONS
