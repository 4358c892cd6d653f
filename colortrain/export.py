"""`colortrain export CKPT --onnx OUT.onnx`: the trunk and the colorizer as one ONNX graph.

Inputs:  image   (B, S, S, 3) RGB, uint8 or float32 in [0, 255] (see `--input-dtype`); a gray
                 picture is its one channel repeated three times
         tokens  (B, T) int64 caption token ids, padded with 0 (the vocabulary is exported with
                 the graph as metadata, `vocab`, one token a line)
         lengths (B,) int64 caption lengths
Outputs: ab      (B, S, S, 2) float32 annealed-mean ab (T = 0.38) at the picture size S; join it
                 with the picture's own L (resized to S) for colour at S
         ab_coarse (B, h, w, 2) the same at the model's own resolution (h = S/4), before any
                 upsampling: resize it to the full picture and join it with the picture's L for
                 colour at full resolution, as `colortrain colorize` does (docs/export.md)

The batch and the caption length are dynamic; S is fixed by the checkpoint. Packed sequences do
not export, so the bi-LSTM runs here over padded captions with the backward direction fed each
caption reversed within its own length: the same final states as the packed LSTM.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from colorfeat.constants import ANNEALED_T
from colorfeat.errors import UserError
from colorfeat.lab import luma
from colorfeat.trunk.backbone import prepare_input
from colortrain.colorize import Colorist
from colortrain.config import EXPORT_INPUT_DTYPES
from colortrain.model import CaptionEncoder
from colortrain.prepost import annealed_ab, upsample_ab

INPUT_DTYPES = EXPORT_INPUT_DTYPES
OPSET = 17
OUTPUTS = ["ab", "ab_coarse"]
TOLERANCE = 1e-3  # largest |ab| difference (ab units, range about +-110) ONNX vs PyTorch


class MaskedCaptionEncoder(nn.Module):
    """The CaptionEncoder's bi-LSTM without packing: same weights, same final states."""

    def __init__(self, encoder: CaptionEncoder) -> None:
        super().__init__()
        lstm = encoder.lstm
        self.embed = encoder.embed
        self.hidden = lstm.hidden_size
        self.forward_lstm = nn.LSTM(lstm.input_size, lstm.hidden_size, batch_first=True)
        self.backward_lstm = nn.LSTM(lstm.input_size, lstm.hidden_size, batch_first=True)
        state = lstm.state_dict()
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(self.forward_lstm, name).data.copy_(state[name])
            getattr(self.backward_lstm, name).data.copy_(state[f"{name}_reverse"])

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """tokens (B, T), lengths (B,) -> (B, 2 * hidden), as CaptionEncoder in eval mode."""
        x = self.embed(tokens)  # (B, T, D)
        steps = torch.arange(tokens.shape[1], device=tokens.device)[None]  # (1, T)
        lengths = torch.minimum(lengths.clamp_min(1), torch.full_like(lengths, tokens.shape[1]))
        last = (lengths - 1)[:, None, None].expand(-1, 1, self.hidden)  # (B, 1, H)
        out_f, _ = self.forward_lstm(x)  # (B, T, H)
        # Reverse each caption within its length; padding stays after it and is never read.
        rev = torch.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)  # (B, T)
        x_rev = x.gather(1, rev[..., None].expand(-1, -1, x.shape[2]))  # (B, T, D)
        out_b, _ = self.backward_lstm(x_rev)  # (B, T, H)
        h = torch.cat([out_f.gather(1, last), out_b.gather(1, last)], dim=2)  # (B, 1, 2H)
        return h[:, 0]  # (B, 2H)


class ExportModel(nn.Module):
    """Picture (B, S, S, 3) + caption -> annealed-mean ab (B, S, S, 2), for export only."""

    def __init__(self, colorist: Colorist, temperature: float = ANNEALED_T) -> None:
        super().__init__()
        self.trunk = colorist.trunk
        self.model = copy.deepcopy(colorist.model).eval()
        if self.model.encoder is not None:
            self.model.encoder = MaskedCaptionEncoder(colorist.model.encoder)
        self.size = colorist.image_size
        self.temperature = temperature

    def forward(
        self, image: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.trunk(prepare_input(image))  # (B, C, S/8, S/8)
        logits = self.model(feats.float(), tokens, lengths)  # (B, K, h, w)
        coarse = annealed_ab(logits, self.temperature)  # (B, 2, h, w)
        ab = upsample_ab(coarse, (self.size, self.size))  # (B, 2, S, S)
        return ab.permute(0, 2, 3, 1), coarse.permute(0, 2, 3, 1)  # (B, S, S, 2), (B, h, w, 2)


def example_inputs(
    size: int, vocab_size: int, batch: int = 2, length: int = 7, dtype: str = "uint8", seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded inputs of the graph's shapes, captions of different lengths."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (batch, size, size, 3)).astype(dtype)
    lengths = np.maximum(1, length - np.arange(batch) * 2).astype(np.int64)  # (B,)
    tokens = rng.integers(2, vocab_size, (batch, length)).astype(np.int64)  # (B, T)
    tokens[np.arange(length)[None] >= lengths[:, None]] = 0
    return image, tokens, lengths


def export_onnx(
    checkpoint: str | Path, out: str | Path, input_dtype: str = "uint8"
) -> dict[str, Any]:
    """Write the ONNX graph, check it with onnxruntime against PyTorch; returns the check."""
    if input_dtype not in INPUT_DTYPES:
        raise UserError(f"--input-dtype must be one of {', '.join(INPUT_DTYPES)}")
    out = Path(out)
    if out.suffix != ".onnx":
        raise UserError(f"--onnx must name a .onnx file, got {out}")
    colorist = Colorist.from_checkpoint(checkpoint, "cpu")
    wrapper = ExportModel(colorist).eval()
    vocab = sorted(colorist.vocab, key=colorist.vocab.__getitem__)
    inputs = example_inputs(colorist.image_size, len(vocab), dtype=input_dtype)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)  # a new file of a random name: nothing planted there is followed
    tmp = Path(name)
    try:
        _write_graph(wrapper, inputs, tmp)
        _add_metadata(tmp, vocab, colorist.image_size, input_dtype)
        check = compare(tmp, colorist, inputs)
        if not check["max_abs_ab_diff"] < TOLERANCE:
            raise UserError(
                f"the ONNX graph differs from PyTorch by {check['max_abs_ab_diff']:.2e} in ab "
                f"(tolerance {TOLERANCE})"
            )
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the graph is an ordinary file
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return {"onnx": str(out), "image_size": colorist.image_size, **check}


def _write_graph(wrapper: ExportModel, inputs: tuple[np.ndarray, ...], path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(
            wrapper, tuple(torch.from_numpy(a) for a in inputs), str(path), dynamo=False,
            input_names=["image", "tokens", "lengths"], output_names=OUTPUTS, opset_version=OPSET,
            dynamic_axes={"image": {0: "batch"}, "tokens": {0: "batch", 1: "length"},
                          "lengths": {0: "batch"}, "ab": {0: "batch"},
                          "ab_coarse": {0: "batch"}},
        )  # fmt: skip


def _add_metadata(path: Path, vocab: list[str], size: int, input_dtype: str) -> None:
    import onnx

    model = onnx.load(str(path))
    meta = {"vocab": "\n".join(vocab), "image_size": str(size), "input_dtype": input_dtype,
            "temperature": str(ANNEALED_T), "inputs": json.dumps(
                {"image": f"(B, {size}, {size}, 3) {input_dtype} RGB", "tokens": "(B, T) int64",
                 "lengths": "(B,) int64"})}  # fmt: skip
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def compare(
    path: str | Path, colorist: Colorist, inputs: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> dict[str, Any]:
    """Largest |ab| difference between onnxruntime and the PyTorch colorizer on `inputs`."""
    import onnxruntime as ort

    image, tokens, lengths = inputs
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(OUTPUTS, {"image": image, "tokens": tokens, "lengths": lengths})
    logits, _ = colorist.predict_logits(luma(image), torch.from_numpy(tokens),
                                        torch.from_numpy(lengths))  # fmt: skip
    coarse = annealed_ab(logits)  # (B, 2, h, w)
    size = (colorist.image_size, colorist.image_size)
    want = [upsample_ab(coarse, size), coarse]  # (B, 2, S, S), (B, 2, h, w)
    diff = max(
        float(np.abs(g - w.permute(0, 2, 3, 1).cpu().numpy()).max())
        for g, w in zip(got, want, strict=True)
    )
    return {"max_abs_ab_diff": diff, "tolerance": TOLERANCE, "batch": int(image.shape[0])}
