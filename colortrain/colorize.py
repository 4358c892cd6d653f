"""Colorize pictures from a caption with a checkpoint alone (no store, no network).

Any size and format is accepted. The picture is turned into grayscale first (so its colours cannot
leak into the result), squash-resized to the store's image size and fed through the checkpoint's
trunk with the extractor's exact preprocessing; the predicted ab (annealed mean) is upsampled to the
picture's full resolution and joined with the picture's own L channel.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from colorfeat.backbone import prepare_input
from colorfeat.captions import tokenize
from colorfeat.constants import ANNEALED_T, LUMA_601, UNK_ID
from colorfeat.errors import UserError
from colorfeat.lab import rgb_to_lab
from colortrain.checkpoint import load_checkpoint, load_trunk
from colortrain.config import ModelConfig
from colortrain.metrics import predicted_ab, reconstruct_rgb
from colortrain.model import Colorizer, create_model
from colortrain.runtime import resolve_device
from colortrain.sheets import attention_map


def backbone_input(rgb: torch.Tensor) -> torch.Tensor:
    """RGB (B, S, S, 3), uint8 or float -> the trunk's input (B, 3, S, S), as the extractor does."""
    return prepare_input(rgb)


def read_image(path: str | Path) -> np.ndarray:
    """Any image file -> uint8 RGB (H, W, 3), EXIF orientation applied; UserError if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such image: {path}")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                white = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(white, im)
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise UserError(f"cannot read image {path}: {exc}") from exc
    if rgb.ndim != 3 or min(rgb.shape[:2]) < 1:
        raise UserError(f"cannot read image {path}: empty picture")
    return rgb


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
    def predict_ab_batch(
        self,
        gray: np.ndarray,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        size: tuple[int, int],
        temperature: float = ANNEALED_T,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Luma (B, S, S) + captions (B, T) -> ab (B, H, W, 2) at `size` and attention (B, h, w)."""
        x = torch.from_numpy(np.repeat(gray[..., None], 3, axis=3)).to(self.device)  # (B, S, S, 3)
        feats = self.trunk(backbone_input(x))  # (B, C, S/8, S/8)
        logits, last = self.model(
            feats.float(), tokens.to(self.device), lengths, return_activation=True
        )
        ab = predicted_ab(logits, size=size, temperature=temperature)  # (B, 2, H, W)
        heat = last.float().mean(dim=1).cpu().numpy()  # (B, h, w)
        return ab.permute(0, 2, 3, 1).cpu().numpy(), heat  # (B, H, W, 2), (B, h, w)

    def predict_ab(
        self, rgb: np.ndarray, tokens: torch.Tensor, temperature: float = ANNEALED_T
    ) -> tuple[np.ndarray, np.ndarray]:
        """uint8 RGB (H, W, 3) + caption (1, T) -> ab (H, W, 2) and the attention map (h, w)."""
        lengths = torch.tensor([tokens.shape[1]])
        ab, heat = self.predict_ab_batch(
            self.gray(rgb)[None], tokens, lengths, rgb.shape[:2], temperature
        )
        return ab[0], heat[0]

    def colorize(
        self, rgb: np.ndarray, tokens: torch.Tensor, temperature: float = ANNEALED_T
    ) -> tuple[np.ndarray, np.ndarray]:
        """uint8 RGB (H, W, 3) -> colorized uint8 RGB (H, W, 3) and the attention map (h, w)."""
        ab, heat = self.predict_ab(rgb, tokens, temperature)
        l_channel = rgb_to_lab(rgb)[..., 0]  # (H, W): the input's own lightness
        return reconstruct_rgb(l_channel, ab), heat


def output_paths(
    images: list[Path], out: Path | None, out_dir: Path | None
) -> list[tuple[Path, Path]]:
    """(colorized, attention) output paths for each input."""
    if (out is None) == (out_dir is None):
        raise UserError("give exactly one of --out FILE or --out-dir DIR")
    if out is not None:
        if len(images) != 1:
            raise UserError(f"--out takes one image, got {len(images)}; use --out-dir")
        return [(out, out.with_name(f"{out.stem}.attention.png"))]
    assert out_dir is not None
    stems = [p.stem for p in images]
    if len(set(stems)) != len(stems):
        raise UserError("two input images share a file name; colorize them into separate dirs")
    return [(out_dir / f"{s}.png", out_dir / f"{s}.attention.png") for s in stems]


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
) -> list[Path]:
    """Colorize every image with the caption; returns the written paths."""
    if temperature <= 0:
        raise UserError(f"--temperature must be positive, got {temperature}")
    targets = output_paths(images, out, out_dir)
    colorist = Colorist.from_checkpoint(checkpoint, str(resolve_device(device)))
    tokens, oov = colorist.encode(caption)
    if oov:
        words = ", ".join(sorted(set(oov)))
        message = f"colortrain: warning: not in the vocabulary, read as <unk>: {words}"
        print(message, file=sys.stderr)
    pictures = [read_image(p) for p in images]  # fail before writing anything
    written = []
    for rgb, (dst, heat_dst) in zip(pictures, targets, strict=True):
        result, heat = colorist.colorize(rgb, tokens, temperature)
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            Image.fromarray(result).save(dst)
        except (ValueError, KeyError) as exc:  # unknown extension
            raise UserError(f"cannot write {dst}: {exc}") from exc
        written.append(dst)
        if attention:
            up = F.interpolate(
                torch.from_numpy(heat)[None, None], size=rgb.shape[:2], mode="bilinear"
            )[0, 0].numpy()  # (H, W)
            written.append(attention_map(up, result, heat_dst, caption))
    return written
