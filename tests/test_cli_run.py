"""`colorfeat run` and `colorfeat schedule` as a user runs them: streams, exit codes, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

COLORFEAT = str(Path(sys.executable).with_name("colorfeat"))
# 224 px and 120 pictures so that resnet101.layer2 features span many chunks (5 images each) and
# the extraction lasts long enough (several seconds on two CPU cores) to be interrupted half-way.
BASE = ["--source", "synthetic", "--limit", "120", "--image-size", "224", "--weights", "none"]
SLOW = [*BASE, "--backbone", "resnet101", "--batch-size", "6", "--device", "cpu"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["HOME"] = str(tmp_path / "home")  # proves nothing is written to the user's ~/.prefect
    (tmp_path / "home").mkdir(exist_ok=True)
    return env


def colorfeat(tmp_path: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [COLORFEAT, *args], env=_env(tmp_path), capture_output=True, text=True, timeout=timeout
    )


def _default_sigint() -> None:
    """In the child: SIGINT unblocked and at its default, whatever this process inherited."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(tmp_path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [COLORFEAT, *args],
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,  # the test sends SIGINT: it must arrive as a user's Ctrl-C
        start_new_session=True,  # its own process group, as a terminal gives a foreground job
    )


def latest(store: Path) -> str:
    return (store / "LATEST").read_text().strip()


def versions(store: Path) -> list[str]:
    return sorted(p.name for p in (store / "versions").iterdir() if not p.name.startswith("."))


def chunk_markers(work: Path) -> int:
    return sum(1 for _ in work.glob("stages/features-*.partial/_chunks_done/*/*"))


def embedded_servers(home: Path) -> list[int]:
    """Pids of embedded Prefect API processes whose PREFECT_HOME is `home`."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc / "cmdline").read_bytes()
            env = (proc / "environ").read_bytes()
        except OSError:
            continue
        if b"flows.embedded" in cmd and f"PREFECT_HOME={home}\0".encode() in env:
            found.append(int(proc.name))
    return found


def interrupt_during_extraction(proc: subprocess.Popen, work: Path, store: Path, sig: int) -> str:
    """Send `sig` once a new feature chunk is written; the run's stderr. Nothing may have been
    published, before or after."""
    before = chunk_markers(work)
    deadline = time.monotonic() + 240
    while chunk_markers(work) <= before:
        assert proc.poll() is None, proc.communicate()[1][-3000:]  # it ended before extracting
        assert not (store / "LATEST").exists()
        assert time.monotonic() < deadline, "extraction never started"
        time.sleep(0.05)
    os.killpg(proc.pid, sig)  # a terminal's Ctrl-C reaches every process of the group
    sent = time.monotonic()
    _, stderr = proc.communicate(timeout=60)
    outcome = (proc.returncode, f"exited {time.monotonic() - sent:.1f} s after", stderr[-3000:])
    assert "Traceback" not in stderr, outcome
    assert not (store / "LATEST").exists(), outcome
    assert not (store / "versions").exists() or versions(store) == [], outcome
    return stderr


@pytest.mark.slow
def test_run_resumes_after_sigint_and_sigkill_prints_the_version_last_and_reuses_it(tmp_path):
    store, work = tmp_path / "store", tmp_path / "work"
    where = ["--store", str(store), "--work-dir", str(work)]

    # Interrupted twice while it extracts the features, the last of its stages but publish.
    proc = start(tmp_path, "run", *SLOW, *where)
    stderr = interrupt_during_extraction(proc, work, store, signal.SIGINT)
    assert proc.returncode == 130
    assert stderr.strip().splitlines()[-1] == (
        "colorfeat: error: interrupted; run the same command again to resume"
    )
    proc = start(tmp_path, "run", *SLOW, *where)
    interrupt_during_extraction(proc, work, store, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10  # the orphaned API process notices and exits
    while embedded_servers(work / "prefect") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert embedded_servers(work / "prefect") == []

    done_before = chunk_markers(work)
    start_s = time.perf_counter()
    resumed = colorfeat(tmp_path, "run", *SLOW, *where)
    resumed_s = time.perf_counter() - start_s
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert done_before >= 2
    version = latest(store)
    assert versions(store) == [version]
    assert resumed.stdout.splitlines() == [str(store / "versions" / version)]
    assert "colorfeat: reusing 6 of 7 stages, " in resumed.stderr
    assert f"{done_before} of " in resumed.stderr.split("reusing 6 of 7 stages, ")[1].split("\n")[0]
    for stage in ("captions", "vocab", "embeddings", "images", "priors"):
        assert f"{stage}: reused its output" in resumed.stderr
    assert "features: did its work" in resumed.stderr
    assert not (tmp_path / "home" / ".prefect").exists()
    assert (work / "prefect" / "prefect.db").is_file()

    recorded = (work / "runs.jsonl").read_text().count("\n")
    start_s = time.perf_counter()
    again = colorfeat(tmp_path, "run", *SLOW, *where)
    again_s = time.perf_counter() - start_s
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.splitlines() == resumed.stdout.splitlines()
    assert "did its work" not in again.stderr and "colorfeat: nothing to do: " in again.stderr
    assert (work / "runs.jsonl").read_text().count("\n") == recorded + 1  # recorded too
    assert versions(store) == [version]
    print(f"resumed run {resumed_s:.1f} s, unchanged rerun {again_s:.1f} s")


def test_a_failing_stage_is_one_line_and_a_nonzero_exit(tmp_path):
    coco = tmp_path / "coco"
    (coco / "annotations").mkdir(parents=True)
    (coco / "annotations" / "captions_val2014.json").write_text("{not json")
    out = colorfeat(tmp_path, "run", "--source", str(coco), "--store", str(tmp_path / "s"),
                    "--work-dir", str(tmp_path / "w"), "--device", "cpu",
                    "--weights", "none")  # fmt: skip
    assert out.returncode == 1
    assert out.stdout == ""
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("colorfeat: error: the captions stage failed: "), out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    reason = last.removeprefix("colorfeat: error: the captions stage failed: ")
    assert out.stderr.count(reason) == 1, out.stderr[-3000:]  # Prefect repeats none of it
    assert not (tmp_path / "s" / "LATEST").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layer", "layer9"], "--layer 'layer9' is not a node of resnet101: did you mean"),
        (
            ["--image-size", "100"],
            "--image-size 100 is not a multiple of the stride 8 of resnet101.layer2",
        ),
        (["--workers", "2", "--dask-address", "tcp://127.0.0.1:1"], "not both"),
        (["--weights", "missing.pt"], "--weights must be imagenet, none or a file"),
        (["--source", "synthetc"], "--source must be synthetic, coco2014, coco2017, a Karpathy"),
        (["--source", "/"], "is not in the COCO layout: no annotations/ directory"),
        (["--embeddings", "vectors.txt"], "--embeddings must be word2vec or a file"),
        (["--precision", "fp8"], "Invalid value for '--precision'"),
        (["--device", "gpu"], "Invalid value for '--device'"),
        (["--limit", "0"], "Invalid value for '--limit'"),
    ],
)
def test_bad_options_are_one_line_before_any_work(tmp_path, args, message):
    out = colorfeat(tmp_path, "run", "--source", "synthetic", "--store", str(tmp_path / "s"),
                    "--work-dir", str(tmp_path / "w"), *args)  # fmt: skip
    assert out.returncode in (1, 2), out.stderr  # 2: the command line did not parse
    assert out.stdout == ""
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert out.stderr.startswith("colorfeat: error: ") and message in out.stderr
    assert not (tmp_path / "w").exists()


def test_cuda_without_a_gpu_is_one_line(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    out = colorfeat(tmp_path, "run", "--source", "synthetic", "--store", str(tmp_path / "s"),
                    "--work-dir", str(tmp_path / "w"), "--device", "cuda")  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("colorfeat: error: --device cuda")
    assert "Traceback" not in out.stderr


def test_schedule_without_a_server_says_how_to_start_one(tmp_path):
    out = colorfeat(tmp_path, "schedule", "--cron", "0 3 * * 1", "--source", "synthetic",
                    "--store", str(tmp_path / "s"))  # fmt: skip
    assert out.returncode == 1
    assert (
        out.stderr.strip()
        .splitlines()[-1]
        .startswith("colorfeat: error: scheduling needs a Prefect server")
    )


def test_schedule_rejects_a_bad_cron(tmp_path):
    out = colorfeat(tmp_path, "schedule", "--cron", "every monday", "--source", "synthetic",
                    "--store", str(tmp_path / "s"))  # fmt: skip
    assert out.returncode == 1
    assert (
        out.stderr.strip()
        == "colorfeat: error: --cron 'every monday' is not a valid cron expression"
    )


# In a fresh interpreter: `colorfeat run` on a work dir another process holds, with the heavy
# packages blocked; it must say so before it imports any of them.
BUSY = """
import importlib.abc, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "prefect", "zarr", "cv2", "dask"):
            raise ModuleNotFoundError(f"{name} was imported before the lock")

sys.meta_path.insert(0, Blocked())
from flows.cli.colorfeat import app
app(["run", "--source", "synthetic", "--store", sys.argv[1], "--work-dir", sys.argv[2]])
"""


def test_a_busy_work_dir_is_said_before_anything_heavy_is_imported(tmp_path):
    import fcntl

    work = tmp_path / "work"
    work.mkdir()
    with open(work / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        out = subprocess.run(
            [sys.executable, "-c", BUSY, str(tmp_path / "s"), str(work)],
            env=_env(tmp_path), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr == f"colorfeat: error: another colorfeat run is using the work dir {work}\n"


def test_weights_that_cannot_be_had_stop_the_run_before_its_first_stage(tmp_path, monkeypatch):
    import importlib.machinery
    import types

    from typer.testing import CliRunner

    import colorfeat.trunk
    from colorfeat.errors import UserError
    from flows.cli.colorfeat import app

    asked = []

    def require_weights(trunk):
        asked.append(trunk.name)
        if trunk.weights == "imagenet":
            raise UserError(f"ImageNet weights for {trunk.backbone} are not cached: copy them")

    stand_in = types.ModuleType("colorfeat.trunk.weights")
    stand_in.__spec__ = importlib.machinery.ModuleSpec(stand_in.__name__, None)
    stand_in.require_weights = require_weights
    monkeypatch.setitem(sys.modules, stand_in.__name__, stand_in)
    monkeypatch.setattr(colorfeat.trunk, "weights", stand_in, raising=False)
    work = tmp_path / "work"
    args = ["run", "--source", "synthetic", "--store", str(tmp_path / "s"), "--work-dir", str(work)]
    args += ["--limit", "4", "--image-size", "32", "--backbone", "resnet18", "--device", "cpu"]
    out = CliRunner().invoke(app, [*args, "--layer", "layer1", "--layer", "layer2"])
    assert out.exit_code == 1, out.output
    assert out.stderr == (
        "colorfeat: error: ImageNet weights for resnet18 are not cached: copy them\n"
    )
    assert asked == ["resnet18.layer1"] and not work.exists()


@pytest.mark.slow
def test_each_skip_reason_is_counted_on_stderr_and_in_runs_jsonl(tmp_path):
    import json

    import numpy as np

    from tests.colorfeat.conftest import colour_picture, jpeg_bytes, write_coco

    gray = np.repeat(colour_picture(9)[..., :1], 3, axis=-1)
    for split, n in (("train2014", 3), ("val2014", 2)):
        pictures = {f"{i}.jpg": jpeg_bytes(colour_picture(i)) for i in range(n)}
        pictures["gray.jpg"] = jpeg_bytes(gray)
        write_coco(tmp_path / "coco", split, pictures, {p: ["a red bus"] for p in pictures})
    work = tmp_path / "w"
    args = ["run", "--source", str(tmp_path / "coco"), "--store", str(tmp_path / "s")]
    args += ["--work-dir", str(work), "--image-size", "32", "--backbone", "resnet18"]
    args += ["--weights", "none", "--device", "cpu"]
    line = "colorfeat: kept 5 of 7 pictures with a colour caption; skipped 2: grayscale 2\n"
    first = colorfeat(tmp_path, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    again = colorfeat(tmp_path, *args)  # nothing to do: the counts come from the version
    assert "colorfeat: nothing to do: " in again.stderr
    for out in (first, again):
        assert line in out.stderr, out.stderr[-3000:]
    runs = [json.loads(r) for r in (work / "runs.jsonl").read_text().splitlines()]
    assert [(r["kept"], r["skipped"]) for r in runs] == [(5, {"grayscale": 2})] * 2
