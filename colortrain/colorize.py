"""Colorize pictures from a caption with a checkpoint alone (no store, no network).

Pictures are read by colorfeat.pictures (its formats and limits, checked from the header before
decoding). A picture is turned into grayscale first (so its colours cannot leak into the result),
squash-resized to the store's image size and fed through the checkpoint's trunk with the
extractor's exact preprocessing, in batches; the predicted ab (annealed mean) is upsampled to each
picture's own full resolution and joined with that picture's own L channel, in bands of rows
(colortrain.prepost). Pictures are decoded one batch at a time and a batch is bounded by pixels,
so memory is bounded by one batch at a few bytes a pixel; every output is written atomically.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from colorfeat.constants import ANNEALED_T, UNK_ID
from colorfeat.device import resolve_device
from colorfeat.errors import UserError
from colorfeat.pictures import check_picture, load_picture
from colorfeat.stages.captions import tokenize
from colortrain.attention import attention_figure
from colortrain.checkpoint import load_checkpoint, load_model, load_trunk
from colortrain.model import Colorizer
from colortrain.outputs import DEFAULT_BATCH_SIZE, batches, output_format, output_paths
from colortrain.prepost import annealed_ab, gray_input, rejoin, trunk_input, upsample_ab

_UMASK = os.umask(0o022)
os.umask(_UMASK)


@dataclass
class Colorist:
    """A checkpoint made ready for inference: trunk, colorizer, vocabulary."""

    model: Colorizer
    trunk: torch.nn.Module
    vocab: dict[str, int]
    image_size: int
    device: torch.device

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> Colorist:
        ckpt = load_checkpoint(path)
        dev = torch.device(device)
        model = load_model(ckpt, dev)
        try:
            trunk = load_trunk(ckpt["trunk"])
        except (KeyError, RuntimeError, TypeError) as exc:
            raise UserError(f"{path} is not a usable colortrain checkpoint: {exc}") from exc
        vocab = {w: i for i, w in enumerate(ckpt["vocab"])}
        size = int(ckpt["trunk"]["config"]["image_size"])
        return cls(model, trunk.to(dev), vocab, size, dev)

    def encode(self, caption: str) -> tuple[torch.Tensor, list[str]]:
        """Token ids (1, T) of a caption and the words outside the vocabulary."""
        words = tokenize(caption)
        if not words:
            raise UserError("the caption is empty; describe the picture's colours in words")
        ids = [self.vocab.get(w, UNK_ID) for w in words]
        oov = [w for w in words if w not in self.vocab]
        return torch.tensor([ids], dtype=torch.int64), oov

    def gray(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 RGB (H, W, 3) -> luma (S, S) float32 at the store's size, not rounded."""
        return gray_input(rgb, self.image_size)

    @torch.no_grad()
    def predict_logits(
        self, gray: np.ndarray, tokens: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Luma (B, S, S) + captions -> logits (B, K, h, w) and attention (B, h, w).

        `tokens` is one caption (1, T) for every picture, or one per picture (B, T) padded with 0
        and then `lengths` (B,) gives each caption's length.
        """
        b = gray.shape[0]
        feats = self.trunk(trunk_input(gray, self.device))  # (B, C, S/8, S/8)
        ids = tokens.to(self.device).expand(b, -1)  # (B, T)
        if lengths is None:
            lengths = torch.full((b,), tokens.shape[1], dtype=torch.int64)
        logits, last = self.model(feats.float(), ids, lengths, return_activation=True)
        return logits, last.float().mean(dim=1).cpu().numpy()  # (B, K, h, w), (B, h, w)

    def predict_ab_batch(
        self,
        gray: np.ndarray,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        size: tuple[int, int],
        temperature: float = ANNEALED_T,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Luma (B, S, S) + captions (B, T) -> ab (B, H, W, 2) at `size` and attention (B, h, w)."""
        logits, heat = self.predict_logits(gray, tokens, lengths)
        ab = upsample_ab(annealed_ab(logits, temperature), size)  # (B, 2, H, W)
        return ab.permute(0, 2, 3, 1).cpu().numpy(), heat  # (B, H, W, 2), (B, h, w)

    def predict_small_ab(
        self, rgbs: list[np.ndarray], tokens: torch.Tensor, temperature: float = ANNEALED_T
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pictures of any sizes, one batch through trunk and model -> ab (B, 2, h, w) at the
        model's size and attention (B, h, w)."""
        gray = np.stack([self.gray(rgb) for rgb in rgbs])  # (B, S, S)
        logits, heat = self.predict_logits(gray, tokens)
        return annealed_ab(logits, temperature).cpu().numpy(), heat

    def colorize_batch(
        self, rgbs: list[np.ndarray], tokens: torch.Tensor, temperature: float = ANNEALED_T
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Each uint8 RGB (H, W, 3) -> colorized uint8 RGB (H, W, 3) and its attention (h, w).

        Each picture is dropped from `rgbs` (set to None) once its result is made, so that the
        caller writing a result holds no more than that result besides the batch's other inputs.
        """
        ab, heat = self.predict_small_ab(rgbs, tokens, temperature)
        for i in range(len(rgbs)):
            rgb, rgbs[i] = rgbs[i], None
            result = rejoin(rgb, ab[i])
            del rgb
            yield result, heat[i]

    def predict_ab(
        self, rgb: np.ndarray, tokens: torch.Tensor, temperature: float = ANNEALED_T
    ) -> tuple[np.ndarray, np.ndarray]:
        """uint8 RGB (H, W, 3) + caption (1, T) -> ab (H, W, 2) and the attention map (h, w)."""
        ab, heat = self.predict_small_ab([rgb], tokens, temperature)
        full = upsample_ab(torch.from_numpy(ab), rgb.shape[:2])  # (1, 2, H, W)
        return full[0].permute(1, 2, 0).numpy(), heat[0]

    def colorize(
        self, rgb: np.ndarray, tokens: torch.Tensor, temperature: float = ANNEALED_T
    ) -> tuple[np.ndarray, np.ndarray]:
        """uint8 RGB (H, W, 3) -> colorized uint8 RGB (H, W, 3) and the attention map (h, w)."""
        return next(self.colorize_batch([rgb], tokens, temperature))


def write_atomic(dst: Path, write: Callable[[Path], None]) -> Path:
    """Write through a new temporary file (random name, exclusive) in dst's directory, then
    rename; OS errors as UserError."""
    tmp: Path | None = None
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
        os.close(fd)
        tmp = Path(name)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a picture is an ordinary file
        os.replace(tmp, dst)
    except OSError as exc:  # disk full, read-only file system, permissions
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {dst}: {exc.strerror or exc}") from exc
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise
    return dst


def save_picture(rgb: np.ndarray, dst: Path) -> Path:
    """Write uint8 RGB (H, W, 3) in the format its extension names, atomically."""
    fmt = output_format(dst)
    return write_atomic(dst, lambda tmp: Image.fromarray(rgb).save(tmp, format=fmt))


def _progress(total: int) -> Progress:
    """A progress bar on stderr when it is a terminal (logs and pipes stay clean)."""
    console = Console(stderr=True)
    return Progress(
        TextColumn("colorize"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, disable=total < 2 or not console.is_terminal,
    )  # fmt: skip


def colorize_files(
    images: list[Path],
    caption: str,
    checkpoint: Path,
    *,
    out: Path | None = None,
    out_dir: Path | None = None,
    attention: bool = False,
    temperature: float = ANNEALED_T,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[Path]:
    """Colorize every image with the caption, one batch at a time; returns the written paths.

    A batch holds at most `batch_size` pictures and MAX_BATCH_PIXELS pixels (from the headers).
    """
    if temperature <= 0:
        raise UserError(f"--temperature must be positive, got {temperature}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    targets = output_paths(images, out, out_dir, attention)
    # Missing, unreadable and oversized pictures fail before the model runs.
    sizes = [check_picture(path) for path in images]
    colorist = Colorist.from_checkpoint(checkpoint, str(resolve_device(device)))
    tokens, oov = colorist.encode(caption)
    if oov:
        words = ", ".join(sorted(set(oov)))
        print(
            f"colortrain: warning: not in the vocabulary, read as <unk>: {words}", file=sys.stderr
        )
    written: list[Path] = []
    with _progress(len(images)) as bar:
        task = bar.add_task("colorize", total=len(images))
        for batch in batches(sizes, batch_size):
            rgbs = [load_picture(images[i]) for i in batch]
            results = colorist.colorize_batch(rgbs, tokens, temperature)
            for i, (result, heat) in zip(batch, results, strict=True):
                dst, heat_dst = targets[i]
                written.append(save_picture(result, dst))
                if attention:
                    draw = partial(attention_figure, heat, result, caption=caption)
                    written.append(write_atomic(heat_dst, draw))
                bar.advance(task)
    return written
