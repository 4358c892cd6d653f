"""The language-conditioned colorizer (Manjunatha et al. 2018) and its baselines.

Frozen ResNet features, projected to the model's width, go through residual blocks that the
model's kind (colortrain.kinds) makes: `film`, a bi-LSTM caption vector modulates each block with
FiLM (Perez et al. 2018); `concat`, the caption vector is tiled and concatenated to each block's
input instead; `nolang`, the same blocks without a caption. Every kind ends in a bilinear
upsampling and a 1x1 convolution to the ab bins.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from colorfeat.constants import PAD_ID
from colortrain.blocks import CaptionEncoder, ResBlock, whiten
from colortrain.config import ModelConfig
from colortrain.kinds import model_kind

__all__ = ["CaptionEncoder", "Colorizer", "ResBlock", "create_model", "whiten"]


class Colorizer(nn.Module):
    """Features (B, C, h, w) + caption -> ab-bin logits (B, bins, h * up, w * up)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        if c.width != c.feature_channels:
            self.project: nn.Module = nn.Sequential(
                nn.Conv2d(c.feature_channels, c.width, kernel_size=1),
                nn.BatchNorm2d(c.width),
                nn.ReLU(),
            )
        else:
            self.project = nn.Identity()
        kind = model_kind(c.kind)
        self.encoder: CaptionEncoder | None = None
        cond_dim = 0
        if kind.uses_caption:
            self.encoder = CaptionEncoder(c.vocab_size, c.embedding_dim, c.lstm_hidden, c.dropout)
            cond_dim = self.encoder.out_dim
        self.blocks = nn.ModuleList(kind.block(c.width, cond_dim) for _ in range(c.num_blocks))
        self.classifier = nn.Conv2d(c.width, c.num_bins, kernel_size=1)

    def load_embeddings(self, vectors: torch.Tensor) -> None:
        """Initialise the word embeddings from the store's (V, D) vectors.

        Word vectors trained on a small or repetitive corpus share one large common direction,
        and words used in the same contexts stay close: colour words are (on the synthetic source
        any two colours have cosine ~0.97 even after standardising), yet telling them apart is the
        whole task. `embedding_init` says how the vectors are rescaled first, over the
        vocabulary's words (specials excluded):

        - "whitened" (default): centred and rotated so that every principal direction of the
          words has unit variance (ZCA whitening; directions with no variance are dropped), so
          the directions that tell words apart start as large as the common one. On the synthetic
          source, FiLM coloured 96% of held-out shapes right against 88.6% with "standardized",
          same run otherwise (benchmarks/learnability.py --embedding-init).
        - "standardized": each dimension centred and scaled to unit variance.
        - "raw": the vectors as they are.
        """
        if self.encoder is None:
            return
        weight = self.encoder.embed.weight
        if tuple(vectors.shape) != tuple(weight.shape):
            raise ValueError(f"embeddings {tuple(vectors.shape)} != model {tuple(weight.shape)}")
        vectors = vectors.to(torch.float64).clone()
        words = vectors[2:] if vectors.shape[0] > 3 else vectors[1:]  # skip <pad>, <unk>
        if self.config.embedding_init == "standardized":
            vectors[1:] = (vectors[1:] - words.mean(dim=0)) / words.std(dim=0).clamp_min(1e-6)
        elif self.config.embedding_init == "whitened":
            vectors[1:] = whiten(vectors[1:], words)
        vectors[PAD_ID] = 0.0
        with torch.no_grad():
            weight.copy_(vectors.to(weight.dtype))

    def encode_caption(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor | None:
        return None if self.encoder is None else self.encoder(tokens, lengths)

    def forward(
        self,
        features: torch.Tensor,
        tokens: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
        return_activation: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, bins, H, W); with `return_activation`, also the last block's output."""
        cond = None
        if self.encoder is not None:
            if tokens is None or lengths is None:
                raise ValueError(f"the {self.config.kind} model needs a caption")
            # The caption encoder is tiny: run it in float32 even under autocast (cuDNN LSTMs and
            # reduced precision are a poor match).
            with torch.autocast(device_type=tokens.device.type, enabled=False):
                cond = self.encoder(tokens, lengths)  # (B, E)
        x = self.project(features)  # (B, width, h, w)
        for block in self.blocks:
            x = block(x, cond)
        last = x
        if self.config.upsample > 1:
            x = F.interpolate(
                x, scale_factor=self.config.upsample, mode="bilinear", align_corners=False
            )  # (B, width, H, W)
        logits = self.classifier(x)  # (B, bins, H, W)
        return (logits, last) if return_activation else logits


def create_model(config: ModelConfig) -> Colorizer:
    """Build the colorizer a ModelConfig describes."""
    return Colorizer(config)
