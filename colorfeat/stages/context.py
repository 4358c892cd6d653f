"""What a stage function and a stage's cost get: `Context` (run) and `Estimate` (dry run), and
what a cost is (`Cost`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from colorfeat.config import PipelineConfig


@dataclass(frozen=True)
class Context:
    """What a stage function gets: the config, its inputs' results by stage name, where to write."""

    config: PipelineConfig
    inputs: Mapping[str, dict]
    out_dir: Path | None = None
    keys: Mapping[str, str] | None = None  # the directory stages' keys so far (publish)


@dataclass(frozen=True)
class Estimate:
    """What a stage's cost is computed from before anything runs (`colorfeat run --dry-run`)."""

    config: PipelineConfig
    pictures: int  # pictures the run reads (an upper bound: every one counted as kept)
    download_bytes: int
    cores: int  # CPU cores this process may use
    device: str  # "cpu" or "cuda": where the run would compute
    generate_s: float = 0.0  # a generated source: the time and disk it still needs
    generate_bytes: int = 0


@dataclass(frozen=True)
class Cost:
    """What a stage costs: seconds, bytes in the work dir, bytes it adds to a version.

    `linked`: the version hardlinks the stage's output (no store bytes on the work dir's local
    file system). `on_device`: the stage runs on the GPU when there is one, where it is not
    estimated.
    """

    seconds: float = 0.0
    work_bytes: int = 0
    store_bytes: int = 0
    linked: bool = True
    on_device: bool = False
