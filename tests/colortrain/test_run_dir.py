"""Where `fit` and `evaluate` may write: the model card only in a run directory `fit` marked,
never through a link or over someone else's file; nothing inside a feature store."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from colorfeat.errors import UserError
from colortrain.checkpoint import load_checkpoint, save_checkpoint
from colortrain.config import TrainConfig
from colortrain.modelcard import RUN_MARKER, read_card_metadata, refresh_model_card
from colortrain.train import fit
from flows.cli.colortrain import app
from tests.colortrain.conftest import error_line


def _evaluate(checkpoint: Path, store: Path, *extra: str):
    args = ["evaluate", "--checkpoint", str(checkpoint), "--store", str(store), "--device", "cpu",
            "--json", *extra]  # fmt: skip
    return CliRunner().invoke(app, args)


def test_fit_marks_its_run_directory(tiny_checkpoint: Path) -> None:
    marker = tiny_checkpoint.parent / RUN_MARKER
    assert marker.is_file() and not marker.is_symlink()
    assert read_card_metadata(tiny_checkpoint.parent / "README.md")["library_name"] == "colortrain"


def test_a_run_directory_given_refreshes_its_own_card_not_the_parents(
    run_copy: Path, tiny_store: Path
) -> None:
    parent_card = run_copy.parent.parent / "README.md"
    parent_card.write_text("the parent's own README\n")
    result = _evaluate(run_copy.parent, tiny_store)
    assert result.exit_code == 0, result.output
    assert parent_card.read_text() == "the parent's own README\n"
    assert read_card_metadata(run_copy.parent / "README.md")["evaluation"]["images"] == 8


def test_a_checkpoint_outside_a_run_directory_writes_no_card(
    tiny_checkpoint: Path, tiny_store: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "README.md").write_text("# my project\n")
    (repo / "metrics.json").write_text("[]\n")
    shutil.copy(tiny_checkpoint, repo / "model.pt")
    shutil.copy(tiny_checkpoint, repo / "checkpoint.pt")  # named as fit names it, yet no marker
    for name in ("model.pt", "checkpoint.pt"):
        assert _evaluate(repo / name, tiny_store).exit_code == 0
    assert (repo / "README.md").read_text() == "# my project\n"
    assert sorted(p.name for p in repo.iterdir()) == [
        "README.md", "checkpoint.pt", "metrics.json", "model.pt"
    ]  # fmt: skip


def test_the_card_is_never_written_through_a_link(
    run_copy: Path, tiny_store: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "profile"
    victim.write_text("export PATH=/usr/bin\n")
    card = run_copy.parent / "README.md"
    card.unlink()
    card.symlink_to(victim)
    result = _evaluate(run_copy, tiny_store)
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "export PATH=/usr/bin\n"
    assert card.is_symlink() and "not refreshed" in result.stderr


def test_the_card_is_not_written_over_a_file_fit_did_not_write(
    run_copy: Path, tiny_store: Path
) -> None:
    card = run_copy.parent / "README.md"
    card.write_text("# notes the user wrote\n")
    assert _evaluate(run_copy, tiny_store).exit_code == 0
    assert card.read_text() == "# notes the user wrote\n"
    # A marker that is a link does not make a run directory.
    marker = run_copy.parent / RUN_MARKER
    target = run_copy.parent.parent / "elsewhere.json"
    marker.rename(target)
    marker.symlink_to(target)
    card.unlink()
    assert refresh_model_card(run_copy) is None and not card.exists()


def test_a_card_from_a_crafted_checkpoint_is_capped_and_escaped(run_copy: Path) -> None:
    ckpt = load_checkpoint(run_copy)
    nested: list = ["x"]
    for _ in range(16):  # about 1 KB pickled, 2**16 leaves when expanded
        nested = [nested, nested]
    ckpt["train"]["config"]["note"] = nested
    ckpt["store"]["version"] = "v1`\n\n<script>alert(1)</script> [x](http://e) ![i](http://e/i)"
    ckpt["features"]["attrs"]["weights"] = "none\n# heading\n$(rm -rf ~)" + "w" * 100_000
    save_checkpoint(run_copy, ckpt)
    (run_copy.parent / "README.md").unlink()
    t0 = time.perf_counter()
    card = refresh_model_card(run_copy)
    assert card is not None and time.perf_counter() - t0 < 5
    text = card.read_text()
    assert len(text) < 64_000
    body = text.split("\n---\n", 1)[1]
    for raw in ("<script>", "](", "![", "\n# heading", "$(rm"):
        assert raw not in body, raw
    assert read_card_metadata(card)["store"]["version"].startswith("v1`")


@pytest.mark.parametrize("where", ["root", "version", "inside"])
def test_fit_and_evaluate_refuse_outputs_inside_a_store(
    where: str, tiny_store: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    before = sorted(p.relative_to(tiny_store) for p in tiny_store.rglob("*"))
    version = tiny_store / "versions" / "0123456789abcdef"
    out = {"root": tiny_store, "version": version, "inside": version / "val" / "run"}[where]
    config = TrainConfig(store=str(tiny_store), out=str(out), preset="small", epochs=1,
                         progress=False)  # fmt: skip
    with pytest.raises(UserError, match="inside the feature store"):
        fit(config)
    link = tmp_path / "link"
    link.symlink_to(out.parent if where == "inside" else out)
    report = link / "run" if where == "inside" else link
    result = _evaluate(tiny_checkpoint, tiny_store, "--report", str(report))
    assert result.exit_code == 1
    assert "--report" in error_line(result) and "inside the feature store" in result.stderr
    assert sorted(p.relative_to(tiny_store) for p in tiny_store.rglob("*")) == before


def test_epoch_lines_do_not_wrap_without_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    from colortrain.validation import log, summary_line

    record = {"epoch": 12, "step": 123456, "train_loss": 6.123456, "val_loss": 6.234567,
              "val_acc1": 0.123456, "val_acc5": 0.580912, "val_psnr": 23.456789,
              "samples_per_s": 1234.5678}  # fmt: skip
    line = summary_line(record)
    assert len(line) > 80
    log(line)
    assert capsys.readouterr().err == line + "\n"


def test_resume_refuses_weights_that_do_not_fit_in_one_line(
    run_copy: Path, tiny_store: Path
) -> None:
    ckpt = load_checkpoint(run_copy)
    state = ckpt["model"]["state"]
    key = next(k for k in state if k.endswith("conv2.weight"))
    state[key] = state[key][:, :1]
    save_checkpoint(run_copy, ckpt)
    config = TrainConfig(
        store=str(tiny_store), out=str(run_copy.parent), preset="small", epochs=3, batch_size=8,
        resume=True, progress=False, tensorboard=False,
    )  # fmt: skip
    with pytest.raises(UserError, match=rf"{key} is \[64, 1, 3, 3\], the config implies"):
        fit(config)
