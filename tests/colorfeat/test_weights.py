"""Whether a trunk's weights can be had, asked before any work: cache, loopback network, files."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from colorfeat.config import BackboneConfig
from colorfeat.errors import UserError
from colorfeat.trunk import weights
from colorfeat.trunk.weights import describe_weights, require_weights

FILE = "/models/resnet18-0123abcd.pth"


class _Entry:
    """A stand-in for a torchvision weights entry, served from `url`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.meta = {"_file_size": 44.7}

    def __str__(self) -> str:
        return "ResNet18_Weights.IMAGENET1K_V1"


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def _served_from(monkeypatch, url: str) -> None:
    monkeypatch.setattr(weights, "imagenet_weights", lambda arch: _Entry(url))


def _closed_port() -> tuple[socket.socket, int]:
    """A socket bound but not listening: connections to its port are refused at once."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


IMAGENET = BackboneConfig(backbone="resnet18", layer="layer1", weights="imagenet")


def test_the_module_and_its_file_checks_import_no_pytorch(tmp_path) -> None:
    (tmp_path / "w.pt").write_bytes(b"w")
    script = (
        "import sys\n"
        "from colorfeat.config import BackboneConfig\n"
        "from colorfeat.trunk.weights import describe_weights, require_weights\n"
        f"cfg = BackboneConfig(weights={str(tmp_path / 'w.pt')!r})\n"
        "require_weights(cfg); require_weights(BackboneConfig(weights='none'))\n"
        "print(describe_weights(cfg))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.splitlines()[-1] == "[]"


def test_none_and_files_are_checked_for_existence_only(tmp_path) -> None:
    seeded = BackboneConfig(weights="none", seed=4)
    require_weights(seeded)
    assert (
        describe_weights(seeded) == "none: seeded random initialisation (seed 4), nothing to load"
    )
    junk = tmp_path / "w.pt"
    junk.write_bytes(b"x" * 2_500_000)  # not a state dict: the run reads it, not this check
    require_weights(BackboneConfig(weights=str(junk)))
    assert describe_weights(BackboneConfig(weights=str(junk))) == f"file {junk} (2.5 MB)"
    missing = BackboneConfig(weights=str(tmp_path / "missing.pt"))
    with pytest.raises(UserError) as err:
        require_weights(missing)
    assert "\n" not in str(err.value) and "no such file" in str(err.value)
    assert describe_weights(missing) == str(err.value)


def test_cached_weights_need_no_network(torch_home, monkeypatch) -> None:
    _served_from(monkeypatch, f"https://download.pytorch.org{FILE}")
    monkeypatch.setattr(weights, "probe_url", lambda url: pytest.fail("probed network"))
    cached = torch_home / "hub" / "checkpoints" / Path(FILE).name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    require_weights(IMAGENET)
    assert describe_weights(IMAGENET) == (
        f"ImageNet ResNet18_Weights.IMAGENET1K_V1: cached at {cached}"
    )


def test_reachable_weights_are_probed_not_downloaded(torch_home, monkeypatch, file_server):
    file_server.files[FILE] = b"w" * 3_000_000
    _served_from(monkeypatch, file_server.url + FILE)
    require_weights(IMAGENET)
    line = describe_weights(IMAGENET)
    assert line == (
        f"ImageNet ResNet18_Weights.IMAGENET1K_V1: will download from {file_server.url}{FILE} "
        "(3 MB)"
    )
    assert {method for method, _, _ in file_server.requests} == {"HEAD"}
    assert not (torch_home / "hub").exists()


def test_unreachable_weights_are_one_line_that_says_what_to_do(torch_home, monkeypatch) -> None:
    sock, port = _closed_port()
    with sock:
        _served_from(monkeypatch, f"http://127.0.0.1:{port}{FILE}")
        start = time.monotonic()
        with pytest.raises(UserError) as err:
            require_weights(IMAGENET)
        assert time.monotonic() - start < 2.0  # refused: no waiting for the timeout
        line = describe_weights(IMAGENET)
    msg = str(err.value)
    assert "\n" not in msg and msg == line
    assert f"not cached at {torch_home / 'hub' / 'checkpoints' / Path(FILE).name}" in msg
    assert f"TORCH_HOME now {torch_home}" in msg
    assert "--weights FILE" in msg and "--weights none" in msg


def test_a_server_that_never_answers_costs_only_the_probe_timeout() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)  # connections queue in the backlog, nobody ever answers
        start = time.monotonic()
        probe = weights.probe_url(f"http://127.0.0.1:{s.getsockname()[1]}/x", timeout=0.5)
        elapsed = time.monotonic() - start
    assert not probe.reached and elapsed < 2.0


def test_a_missing_file_on_the_server_is_not_reachable_weights(
    torch_home, monkeypatch, file_server
):
    _served_from(monkeypatch, file_server.url + FILE)  # the server has no such file: 404
    with pytest.raises(UserError, match=r"cannot be reached \(HTTP 404\)"):
        require_weights(IMAGENET)


def test_real_torchvision_entries_name_their_cache_file(torch_home) -> None:
    official = weights.imagenet_file("resnet18")
    assert official.cached == torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert official.hash_prefix == "f37072fd" and official.megabytes
    with pytest.raises(UserError, match="no IMAGENET1K_V1"):
        require_weights(BackboneConfig(backbone="vit_h_14", weights="imagenet"))
