"""Two `colorfeat run` processes publishing into one store at the same time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from colorfeat.store import LATEST, TMP_PREFIX, open_store

TINY = [
    "--source", "synthetic", "--limit", "16", "--image-size", "32", "--weights", "none",
    "--backbone", "resnet18", "--layer", "layer1", "--device", "cpu",
]  # fmt: skip

# `colorfeat run`, except that publishing waits, with its version assembled in its staging folder,
# until the other run's version is assembled too: both staging folders exist at once, and each
# publisher's clean-up of staging folders runs while the other one's build is live.
_RUN_TOGETHER = """
import os, sys, time
from pathlib import Path
from colorfeat.store import publishing
from flows.cli.colorfeat import app

rendezvous = Path(sys.argv[1])
assemble = publishing._assemble

def assemble_then_wait(*args):
    meta = assemble(*args)
    (rendezvous / str(os.getpid())).touch()
    deadline = time.monotonic() + 180
    while len(list(rendezvous.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    return meta

publishing._assemble = assemble_then_wait
sys.argv = ["colorfeat", "run", *sys.argv[2:]]
app()
"""


def _start(tmp_path: Path, rendezvous: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["HOME"] = str(tmp_path / "home")
    return subprocess.Popen(
        [sys.executable, "-c", _RUN_TOGETHER, str(rendezvous), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_two_runs_publishing_into_one_store_at_once_both_succeed(tmp_path) -> None:
    store, rendezvous = tmp_path / "store", tmp_path / "rendezvous"
    rendezvous.mkdir()
    (tmp_path / "home").mkdir()
    runs = [
        _start(
            tmp_path,
            rendezvous,
            *TINY,
            "--seed",
            str(seed),
            "--store",
            str(store),
            "--work-dir",
            str(tmp_path / f"work{seed}"),
        )  # fmt: skip
        for seed in (1, 2)
    ]
    outcomes = [run.communicate(timeout=400) for run in runs]
    for run, (_, stderr) in zip(runs, outcomes, strict=True):
        assert run.returncode == 0, stderr[-3000:]
    assert len(list(rendezvous.iterdir())) == 2  # both publishers had their builds staged at once
    paths = [stdout.strip().splitlines()[-1] for stdout, _ in outcomes]
    assert paths[0] != paths[1]
    for path in paths:
        open_store(path).validate()
    latest = (store / LATEST).read_text().strip()
    assert latest in {Path(p).name for p in paths}
    open_store(store).validate()
    assert sorted(p.name for p in (store / "versions").iterdir()) == sorted(
        Path(p).name for p in paths
    )
    assert not list((store / "versions").glob(f"{TMP_PREFIX}*"))
