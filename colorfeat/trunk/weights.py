"""Where a trunk's weights come from, and whether they can be had before any work starts.

`--weights` is one of:
- "imagenet": torchvision's `<Arch>_Weights.IMAGENET1K_V1`, the original ImageNet weights the paper
  used (V1, not the later V2 recipe); taken from the torch hub cache ($TORCH_HOME/hub/checkpoints)
  or downloaded once, and used only if its SHA-256 starts with the hash in its published name.
- "none": a seeded random initialisation; nothing to load, so everything runs offline.
- a path to a state-dict file (read later, by `colorfeat.trunk.state`, without unpickling code).

`require_weights` (the option check) and `describe_weights` (the dry run) answer cheaply: a file
is checked for existence only, the cache by one stat (no hashing), and the network only when the
file is not cached, by one HEAD request bounded by NETWORK_PROBE_TIMEOUT_S (name lookup included).
Importing this module imports no PyTorch; asking about "imagenet" imports torchvision, which
knows each backbone's file name and URL. `fetch_imagenet` downloads and checks the file.
"""

from __future__ import annotations

import os
import re
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlparse

from colorfeat.errors import UserError, first_line
from colorfeat.hashing import file_sha256

if TYPE_CHECKING:  # torchvision is imported only when ImageNet weights are asked about
    import torchvision

# How long to wait for the weights server before saying "no network".
NETWORK_PROBE_TIMEOUT_S = 3.0
_MB = 1e6


class WeightsSpec(Protocol):
    """What names a trunk's weights (`colorfeat.config.BackboneConfig` is one)."""

    backbone: str
    weights: str
    seed: int


@dataclass(frozen=True)
class ImagenetFile:
    """The official ImageNet weights file of one backbone, and where the hub cache keeps it."""

    name: str  # the torchvision enum entry, e.g. ResNet101_Weights.IMAGENET1K_V1
    url: str
    cached: Path
    hash_prefix: str  # the start of its SHA-256, from its published file name
    megabytes: float | None  # as torchvision's metadata gives it


@dataclass(frozen=True)
class Probe:
    """What one HEAD request said: the size served, or why nothing was reached."""

    reached: bool
    size: int | None = None
    problem: str = ""


def imagenet_weights(backbone: str) -> torchvision.models.WeightsEnum:
    """The paper's weights for `backbone`: torchvision's IMAGENET1K_V1 entry."""
    import torchvision

    enum = torchvision.models.get_model_weights(backbone)
    if "IMAGENET1K_V1" not in enum.__members__:
        raise UserError(f"torchvision has no IMAGENET1K_V1 weights for {backbone}: use --weights")
    return enum.IMAGENET1K_V1


def imagenet_file(backbone: str) -> ImagenetFile:
    """Name, URL and cache path of `backbone`'s official ImageNet file (no I/O)."""
    import torch

    weights = imagenet_weights(backbone)
    file_name = os.path.basename(urlparse(weights.url).path)
    size = weights.meta.get("_file_size")
    return ImagenetFile(
        name=str(weights),
        url=weights.url,
        cached=Path(torch.hub.get_dir()) / "checkpoints" / file_name,
        hash_prefix=published_hash_prefix(file_name),
        megabytes=float(size) if isinstance(size, (int, float)) else None,
    )


def published_hash_prefix(file_name: str) -> str:
    """The SHA-256 prefix in a published file name `<name>-<8+ hex digits>.<ext>`."""
    match = re.search(r"-([0-9a-f]{8,})\.[a-z]+$", file_name)
    if match is None:  # every torchvision IMAGENET1K_V1 URL has one; refuse rather than trust
        raise UserError(f"the weights file name {file_name} carries no hash to check it by")
    return match.group(1)


def require_weights(trunk: WeightsSpec) -> None:
    """Raise a one-line UserError saying what to do unless the trunk's weights can be had."""
    if trunk.weights == "none":
        return
    if trunk.weights != "imagenet":
        if not Path(trunk.weights).expanduser().is_file():
            raise UserError(_no_file(trunk.weights))
        return
    official = imagenet_file(trunk.backbone)
    if official.cached.is_file():
        return
    probe = probe_url(official.url)
    if not probe.reached:
        raise UserError(_unreachable(official, probe))


def describe_weights(trunk: WeightsSpec) -> str:
    """One line for the dry run: where the weights are, what will be downloaded, or the problem."""
    if trunk.weights == "none":
        return f"none: seeded random initialisation (seed {trunk.seed}), nothing to load"
    if trunk.weights != "imagenet":
        path = Path(trunk.weights).expanduser()
        if not path.is_file():
            return _no_file(trunk.weights)
        return f"file {path} ({path.stat().st_size / _MB:.1f} MB)"
    try:
        official = imagenet_file(trunk.backbone)
    except UserError as exc:
        return str(exc)
    if official.cached.is_file():
        return f"ImageNet {official.name}: cached at {official.cached}"
    probe = probe_url(official.url)
    if not probe.reached:
        return _unreachable(official, probe)
    size = probe.size / _MB if probe.size else official.megabytes
    amount = f" ({size:.0f} MB)" if size else ""
    return f"ImageNet {official.name}: will download from {official.url}{amount}"


def probe_url(url: str, timeout: float = NETWORK_PROBE_TIMEOUT_S) -> Probe:
    """One HEAD request, given up after `timeout` seconds in all (name lookup included)."""
    answer: list[Probe] = []

    def ask() -> None:
        request = urllib.request.Request(url, method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                length = response.headers.get("Content-Length")
                answer.append(Probe(True, int(length) if length and length.isdigit() else None))
        except urllib.error.HTTPError as exc:
            answer.append(Probe(False, problem=f"HTTP {exc.code}"))
        except (OSError, ValueError) as exc:  # URLError, refused, timed out, a bad URL
            reason = str(getattr(exc, "reason", exc)).strip().splitlines()
            answer.append(Probe(False, problem=reason[0][:160] if reason else type(exc).__name__))

    # a thread, because urlopen's timeout does not cover the name lookup
    asker = threading.Thread(target=ask, name="weights-probe", daemon=True)
    asker.start()
    asker.join(timeout)
    return answer[0] if answer else Probe(False, problem=f"no answer within {timeout:g} s")


def fetch_imagenet(backbone: str) -> tuple[Path, str]:
    """The official file in the hub cache (downloaded once) and its SHA-256, checked against the
    hash in its published name; UserError when it cannot be had or is not the published file.

    torchvision checks that hash only while downloading; a file already in the cache (anyone may
    have put it there) is checked here before it is read.
    """
    official = imagenet_file(backbone)
    if not official.cached.exists():
        _download(official)
    sha = file_sha256(official.cached)
    if not sha.startswith(official.hash_prefix):
        raise UserError(
            f"the cached ImageNet weights {official.cached} are not the published file "
            f"(SHA-256 does not start with {official.hash_prefix}): {cache_advice(official)}"
        )
    return official.cached, sha


def cache_advice(official: ImagenetFile) -> str:
    """What to do about a bad file in the hub cache."""
    return f"delete {official.cached} so that it is downloaded again, or pass --weights FILE"


def _download(official: ImagenetFile) -> None:
    """Download the official file into the hub cache, checked against its published hash."""
    import torch

    probe = probe_url(official.url)
    if not probe.reached:
        raise UserError(_unreachable(official, probe))
    official.cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(
            official.url, str(official.cached), hash_prefix=official.hash_prefix, progress=False
        )
    except Exception as exc:  # URLError, a bad download hash (RuntimeError), a full disk
        first = first_line(exc, 160)
        raise UserError(
            f"could not download ImageNet weights ({official.name}): {first}; "
            "set TORCH_HOME to a directory holding them or pass --weights FILE"
        ) from exc


def _unreachable(official: ImagenetFile, probe: Probe) -> str:
    host = urlparse(official.url).hostname
    torch_home = official.cached.parent.parent.parent
    return (
        f"ImageNet weights ({official.name}) are not cached at {official.cached} and {host} "
        f"cannot be reached ({probe.problem}): copy {official.cached.name} into "
        f"$TORCH_HOME/hub/checkpoints/ (TORCH_HOME now {torch_home}), "
        "or pass --weights FILE (a state-dict file), or --weights none"
    )


def _no_file(weights: str) -> str:
    return f"--weights {weights}: no such file (use imagenet, none or a state-dict FILE)"
