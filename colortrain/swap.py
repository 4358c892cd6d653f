"""The swap test: a caption's colour word replaced by another colour, encoded for the model.

A model that reads its caption colours the picture the new way; one that ignores it does not.
"""

from __future__ import annotations

import re

import torch

from colorfeat.constants import UNK_ID
from colorfeat.stages.captions import tokenize
from colortrain.hues import HUE_NAMES


def swap_colours(vocab: dict[str, int], lexicon: list[str]) -> list[str]:
    """The colours a swap cycles through: the named hues the model knows (not gray), or else
    every colour word of the lexicon it knows."""
    colours = [w for w in HUE_NAMES[:-1] if w in vocab]
    return colours if len(colours) >= 2 else sorted(w for w in lexicon if w in vocab)


def swap_colour_word(caption: str, colours: list[str]) -> tuple[str, str] | None:
    """(the caption with its first colour word replaced by the next of `colours`, the new word).

    The caption keeps its own wording, case and punctuation around the replaced word.
    """
    words = tokenize(caption)
    for i, w in enumerate(words):
        if w in colours:
            new = colours[(colours.index(w) + 1) % len(colours)]
            lowered = caption.lower()
            match = re.search(rf"(?<![^\W_]){re.escape(w)}(?![^\W_])", lowered)
            if len(lowered) != len(caption) or match is None:  # case folding moved the letters
                return " ".join([*words[:i], new, *words[i + 1 :]]), new
            return caption[: match.start()] + new + caption[match.end() :], new
    return None


def swap_caption(caption: str, colours: list[str]) -> str | None:
    """The caption with its first colour word replaced by the next colour of `colours`."""
    swapped = swap_colour_word(caption, colours)
    return None if swapped is None else swapped[0]


def encode_captions(
    captions: list[str], vocab: dict[str, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (B, T) padded with 0 and lengths (B,); unknown words read as <unk>."""
    ids = [[vocab.get(w, UNK_ID) for w in tokenize(c)] or [UNK_ID] for c in captions]
    tokens = torch.zeros(len(ids), max(map(len, ids), default=1), dtype=torch.int64)  # (B, T)
    for i, seq in enumerate(ids):
        tokens[i, : len(seq)] = torch.tensor(seq)
    return tokens, torch.tensor([len(s) for s in ids])
