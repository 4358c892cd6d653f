"""Colorize pictures from a caption with a checkpoint alone (no store, no network).

Any size and format is accepted up to MAX_PIXELS (checked from the header before decoding). The
picture is turned into grayscale first (so its colours cannot leak into the result), squash-resized
to the store's image size and fed through the checkpoint's trunk with the extractor's exact
preprocessing, in batches; the predicted ab (annealed mean) is upsampled to each picture's own full
resolution and joined with that picture's own L channel. Pictures are decoded one batch at a time,
so memory is bounded by one batch, and every output is written atomically.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from colorfeat.constants import ANNEALED_T, LUMA_601, UNK_ID
from colorfeat.device import resolve_device
from colorfeat.errors import UserError
from colorfeat.lab import rgb_to_lab
from colorfeat.stages.captions import tokenize
from colorfeat.trunk.backbone import prepare_input
from colortrain.attention import attention_figure
from colortrain.checkpoint import load_checkpoint, load_trunk
from colortrain.config import ModelConfig
from colortrain.metrics import predicted_ab, reconstruct_rgb
from colortrain.model import Colorizer, create_model
from colortrain.outputs import DEFAULT_BATCH_SIZE, MAX_PIXELS, output_format, output_paths

_SIXTEEN_BIT = 65535.0 / 255.0  # a 16-bit level per 8-bit level


def check_picture(path: str | Path) -> tuple[int, int]:
    """(height, width) from the file's header, without decoding; UserError if unreadable or huge."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such image: {path}")
    try:
        with warnings.catch_warnings():  # the size is checked below against our own limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
    except Image.DecompressionBombError:
        width, height = MAX_PIXELS + 1, 1
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise UserError(f"cannot read image {path}: {exc}") from exc
    if width * height > MAX_PIXELS:
        raise UserError(
            f"{path} is too large to colorize: over {MAX_PIXELS // 1_000_000} megapixels "
            "(shrink it first)"
        )
    return height, width


def read_image(path: str | Path) -> np.ndarray:
    """Any image file -> uint8 RGB (H, W, 3), EXIF orientation applied; UserError if unreadable.

    16-bit pictures are scaled to 8 bits (not clipped); transparency is composed over white.
    """
    check_picture(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                rgb = _to_rgb(ImageOps.exif_transpose(im))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise UserError(f"cannot read image {path}: {exc}") from exc
    if rgb.ndim != 3 or min(rgb.shape[:2]) < 1:
        raise UserError(f"cannot read image {path}: empty picture")
    return rgb


def _to_rgb(im: Image.Image) -> np.ndarray:
    """A decoded picture of any mode -> uint8 RGB (H, W, 3)."""
    if im.mode == "I" or im.mode.startswith("I;16"):  # 16-bit gray (PNG, TIFF)
        levels = np.asarray(im).astype(np.float32) / _SIXTEEN_BIT  # (H, W)
        gray = np.clip(np.rint(levels), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)  # (H, W, 3)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


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
        try:
            config = ModelConfig.from_dict(ckpt["model"]["config"])
            model = create_model(config)
            model.load_state_dict(ckpt["model"]["state"])
            trunk = load_trunk(ckpt["trunk"])
        except (KeyError, RuntimeError, TypeError) as exc:
            raise UserError(f"{path} is not a usable colortrain checkpoint: {exc}") from exc
        vocab = {w: i for i, w in enumerate(ckpt["vocab"])}
        size = int(ckpt["trunk"]["config"]["image_size"])
        return cls(model.to(dev).eval(), trunk.to(dev), vocab, size, dev)

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
        h, w = rgb.shape[:2]
        s = self.image_size
        gray = rgb.astype(np.float32) @ np.asarray(LUMA_601, dtype=np.float32)  # (H, W)
        if (h, w) == (s, s):
            return gray
        # The images stage squash-resizes with INTER_AREA; luma is linear, so resizing the luma
        # equals (up to rounding) the luma of the resized picture the features were made from.
        return cv2.resize(gray, (s, s), interpolation=cv2.INTER_AREA)  # (S, S)

    @torch.no_grad()
    def predict_logits(
        self, gray: np.ndarray, tokens: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Luma (B, S, S) + captions -> logits (B, K, h, w) and attention (B, h, w).

        `tokens` is one caption (1, T) for every picture, or one per picture (B, T) padded with 0
        and then `lengths` (B,) gives each caption's length.
        """
        b = gray.shape[0]
        x = torch.from_numpy(np.repeat(gray[..., None], 3, axis=3)).to(self.device)  # (B, S, S, 3)
        feats = self.trunk(prepare_input(x))  # (B, C, S/8, S/8)
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
        ab = predicted_ab(logits, size=size, temperature=temperature)  # (B, 2, H, W)
        return ab.permute(0, 2, 3, 1).cpu().numpy(), heat  # (B, H, W, 2), (B, h, w)

    def predict_ab_pictures(
        self, rgbs: list[np.ndarray], tokens: torch.Tensor, temperature: float = ANNEALED_T
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Pictures of any sizes, one batch through trunk and model; then, one picture at a time,
        its ab (H, W, 2) at its own full resolution and its attention map (h, w)."""
        gray = np.stack([self.gray(rgb) for rgb in rgbs])  # (B, S, S)
        logits, heat = self.predict_logits(gray, tokens)
        for i, rgb in enumerate(rgbs):
            ab = predicted_ab(logits[i : i + 1], size=rgb.shape[:2], temperature=temperature)
            yield ab[0].permute(1, 2, 0).cpu().numpy(), heat[i]  # (H, W, 2), (h, w)

    def colorize_batch(
        self, rgbs: list[np.ndarray], tokens: torch.Tensor, temperature: float = ANNEALED_T
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Each uint8 RGB (H, W, 3) -> colorized uint8 RGB (H, W, 3) and its attention (h, w)."""
        for rgb, (ab, heat) in zip(
            rgbs, self.predict_ab_pictures(rgbs, tokens, temperature), strict=True
        ):
            l_channel = rgb_to_lab(rgb)[..., 0]  # (H, W): the input's own lightness
            yield reconstruct_rgb(l_channel, ab), heat

    def predict_ab(
        self, rgb: np.ndarray, tokens: torch.Tensor, temperature: float = ANNEALED_T
    ) -> tuple[np.ndarray, np.ndarray]:
        """uint8 RGB (H, W, 3) + caption (1, T) -> ab (H, W, 2) and the attention map (h, w)."""
        return next(self.predict_ab_pictures([rgb], tokens, temperature))

    def colorize(
        self, rgb: np.ndarray, tokens: torch.Tensor, temperature: float = ANNEALED_T
    ) -> tuple[np.ndarray, np.ndarray]:
        """uint8 RGB (H, W, 3) -> colorized uint8 RGB (H, W, 3) and the attention map (h, w)."""
        return next(self.colorize_batch([rgb], tokens, temperature))


def write_atomic(dst: Path, write: Callable[[Path], None]) -> Path:
    """Write through a temporary file in dst's directory, then rename; OS errors as UserError."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, dst)
    except OSError as exc:  # disk full, read-only file system, permissions
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {dst}: {exc.strerror or exc}") from exc
    except BaseException:
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
    """Colorize every image with the caption, one batch at a time; returns the written paths."""
    if temperature <= 0:
        raise UserError(f"--temperature must be positive, got {temperature}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    targets = output_paths(images, out, out_dir)
    for path in images:  # missing and oversized pictures fail before the model runs
        check_picture(path)
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
        for start in range(0, len(images), batch_size):
            batch = targets[start : start + batch_size]
            rgbs = [read_image(p) for p in images[start : start + batch_size]]
            results = colorist.colorize_batch(rgbs, tokens, temperature)
            for (dst, heat_dst), (result, heat) in zip(batch, results, strict=True):
                written.append(save_picture(result, dst))
                if attention:
                    draw = partial(attention_figure, heat, result, caption=caption)
                    written.append(write_atomic(heat_dst, draw))
                bar.advance(task)
    return written
