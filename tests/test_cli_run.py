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
# the extraction lasts long enough (1-2 s at ~90 images/s on two CPU cores) to be interrupted
# half-way.
BASE = ["--source", "synthetic", "--limit", "120", "--image-size", "224", "--weights", "none"]
FAST = [*BASE, "--backbone", "resnet18", "--device", "cpu"]
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


def interrupt_during_extraction(
    proc: subprocess.Popen, work: Path, store: Path, sig: int, expect: str
) -> str:
    """Send `sig` once a new feature chunk is written (LATEST must not move); the run's stderr."""
    before = chunk_markers(work)
    deadline = time.monotonic() + 240
    while chunk_markers(work) <= before:
        assert proc.poll() is None, proc.communicate()[1][-3000:]  # it ended before extracting
        assert latest(store) == expect
        assert time.monotonic() < deadline, "extraction never started"
        time.sleep(0.05)
    os.killpg(proc.pid, sig)  # a terminal's Ctrl-C reaches every process of the group
    sent = time.monotonic()
    _, stderr = proc.communicate(timeout=60)
    outcome = (proc.returncode, f"exited {time.monotonic() - sent:.1f} s after", stderr[-3000:])
    assert "Traceback" not in stderr, outcome
    assert latest(store) == expect and versions(store) == [expect], outcome
    return stderr


@pytest.mark.slow
def test_run_prints_the_version_last_reuses_it_and_resumes_after_sigint_and_sigkill(tmp_path):
    store, work = tmp_path / "store", tmp_path / "work"
    where = ["--store", str(store), "--work-dir", str(work)]

    start_s = time.perf_counter()
    first = colorfeat(tmp_path, "run", *FAST, *where)
    first_s = time.perf_counter() - start_s
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.splitlines() == [str(store / "versions" / latest(store))]
    assert "features: did its work" in first.stderr
    assert not (tmp_path / "home" / ".prefect").exists()
    assert (work / "prefect" / "prefect.db").is_file()
    version_a = latest(store)

    start_s = time.perf_counter()
    again = colorfeat(tmp_path, "run", *FAST, *where)
    again_s = time.perf_counter() - start_s
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.splitlines() == first.stdout.splitlines()
    assert "did its work" not in again.stderr and "colorfeat: nothing to do: " in again.stderr
    assert (work / "runs.jsonl").read_text().count("\n") == 2  # both runs recorded
    assert versions(store) == [version_a]
    print(f"first run {first_s:.1f} s, unchanged rerun {again_s:.1f} s")

    # A different trunk: only features and publish have work to do. Interrupt it twice.
    proc = start(tmp_path, "run", *SLOW, *where)
    stderr = interrupt_during_extraction(proc, work, store, signal.SIGINT, version_a)
    assert proc.returncode == 130
    assert stderr.strip().splitlines()[-1] == (
        "colorfeat: error: interrupted; run the same command again to resume"
    )
    proc = start(tmp_path, "run", *SLOW, *where)
    interrupt_during_extraction(proc, work, store, signal.SIGKILL, version_a)
    assert proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10  # the orphaned API process notices and exits
    while embedded_servers(work / "prefect") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert embedded_servers(work / "prefect") == []

    done_before = chunk_markers(work)
    resumed = colorfeat(tmp_path, "run", *SLOW, *where)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert done_before >= 2
    version_b = latest(store)
    assert version_b != version_a and sorted([version_a, version_b]) == versions(store)
    assert resumed.stdout.splitlines() == [str(store / "versions" / version_b)]
    assert "colorfeat: reusing 6 of 7 stages, " in resumed.stderr
    assert f"{done_before} of " in resumed.stderr.split("reusing 6 of 7 stages, ")[1].split("\n")[0]
    for stage in ("captions", "vocab", "embeddings", "images", "priors"):
        assert f"{stage}: reused its output" in resumed.stderr
    assert "features: did its work" in resumed.stderr


def test_a_failing_stage_is_one_line_and_a_nonzero_exit(tmp_path):
    coco = tmp_path / "coco"
    (coco / "annotations").mkdir(parents=True)
    (coco / "annotations" / "captions_val2014.json").write_text("{not json")
    out = colorfeat(tmp_path, "run", "--source", str(coco), "--store", str(tmp_path / "s"),
                    "--work-dir", str(tmp_path / "w"), "--device", "cpu")  # fmt: skip
    assert out.returncode == 1
    assert out.stdout == ""
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("colorfeat: error: the captions stage failed: "), out.stderr[-2000:]
    assert "Traceback" not in out.stderr
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
