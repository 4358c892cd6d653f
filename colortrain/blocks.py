"""The building blocks of the colorizer: the caption encoder and the residual block.

A model kind (colortrain.kinds) chooses its blocks from these, or brings its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from colorfeat.constants import PAD_ID


class CaptionEncoder(nn.Module):
    """Word embeddings, dropout, a one-layer bi-LSTM; final hidden states of both directions."""

    def __init__(self, vocab_size: int, embedding_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embedding_dim, padding_idx=PAD_ID)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(embedding_dim, hidden, batch_first=True, bidirectional=True)
        self.out_dim = 2 * hidden
        # Forget-gate bias 1 (Jozefowicz et al. 2015): the final states must remember a colour
        # word several words back; with PyTorch's default the memory halves every step at first.
        with torch.no_grad():
            for name, bias in self.lstm.named_parameters():
                if name.startswith("bias_ih"):
                    bias[hidden : 2 * hidden] = 1.0  # gate order: input, forget, cell, output
                elif name.startswith("bias_hh"):
                    bias[hidden : 2 * hidden] = 0.0

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) int64, lengths (B,) -> (B, 2 * hidden)."""
        x = self.dropout(self.embed(tokens))  # (B, T, D)
        # enforce_sorted=False sorts the batch by length and permutes the lengths with it, and
        # hands the final states back in the caller's order (the defect of earlier code).
        packed = pack_padded_sequence(
            x, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False
        )
        _, (h, _) = self.lstm(packed)  # h: (2, B, hidden), forward then backward
        return torch.cat([h[0], h[1]], dim=1)  # (B, 2 * hidden)


class ResBlock(nn.Module):
    """1x1 conv, ReLU, 3x3 conv, ReLU, BatchNorm, [FiLM], ReLU, residual add.

    As in FiLM's residual block, the residual is the output of the first 1x1 conv + ReLU.
    With `cond_dim` and `mode="film"`, one linear layer maps the caption vector to (gamma, beta);
    with `mode="concat"`, the caption vector is tiled and concatenated to the block's input.
    """

    def __init__(self, width: int, mode: str, cond_dim: int = 0) -> None:
        super().__init__()
        self.mode = mode
        extra = cond_dim if mode == "concat" else 0
        self.conv1 = nn.Conv2d(width + extra, width, kernel_size=1)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, padding=1)
        # FiLM supplies the affine transform, so the normalisation has none of its own.
        self.bn = nn.BatchNorm2d(width, affine=(mode != "film"))
        self.film = nn.Linear(cond_dim, 2 * width) if mode == "film" else None
        if self.film is not None:
            # Start as the identity modulation (gamma = 1, beta = 0) so early training is stable.
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        if self.mode == "concat":
            assert cond is not None
            tiled = cond[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])  # (B, E, H, W)
            x = torch.cat([x, tiled], dim=1)  # (B, C + E, H, W)
        residual = F.relu(self.conv1(x))  # (B, C, H, W)
        out = self.bn(F.relu(self.conv2(residual)))
        if self.film is not None:
            assert cond is not None
            gamma, beta = self.film(cond).chunk(2, dim=1)  # (B, C) each
            out = (1.0 + gamma[:, :, None, None]) * out + beta[:, :, None, None]
        return F.relu(out) + residual


def whiten(x: torch.Tensor, sample: torch.Tensor, rel_tol: float = 1e-6) -> torch.Tensor:
    """ZCA-whiten rows of x (N, D) by the statistics of `sample` (n, D): centred, and unit
    variance along every principal direction of the sample whose variance is above rel_tol times
    the largest; the other directions are dropped."""
    mean = sample.mean(dim=0)
    _, sv, vt = torch.linalg.svd(sample - mean, full_matrices=False)  # sv (k,), vt (k, D)
    var = sv**2 / max(1, sample.shape[0] - 1)  # (k,) variance along each direction
    keep = var > var[0] * rel_tol
    basis = vt[keep]  # (k', D)
    coords = (x - mean) @ basis.T / var[keep].sqrt()  # (N, k') unit variance per direction
    return coords @ basis  # (N, D)
