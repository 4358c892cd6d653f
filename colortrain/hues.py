"""Naming the dominant hue of a colorized picture, for the report's colour-word confusion matrix.

The hue names and their ab are the synthetic source's palette (eight basic colour terms spread
around the ab plane); a picture whose chromatic pixels are too few is called "gray".
"""

from __future__ import annotations

import numpy as np

from colorfeat.sources.synthetic import PALETTE_AB
from colorfeat.stages.captions import colour_words

HUE_NAMES: tuple[str, ...] = (*PALETTE_AB, "gray")
MIN_CHROMA = 12.0  # ab distance from gray under which a pixel counts as achromatic
MIN_CHROMATIC_FRACTION = 0.01  # fewer chromatic pixels than this: the picture is "gray"
_REFERENCE_AB = np.array(list(PALETTE_AB.values()), dtype=np.float32)  # (K, 2)


def dominant_hue(ab: np.ndarray) -> str:
    """The most frequent hue name among the chromatic pixels of ab (H, W, 2); "gray" if few."""
    flat = ab.reshape(-1, 2)  # (P, 2)
    chromatic = flat[np.hypot(flat[:, 0], flat[:, 1]) >= MIN_CHROMA]  # (Q, 2)
    if len(chromatic) < MIN_CHROMATIC_FRACTION * len(flat) or len(chromatic) == 0:
        return "gray"
    dist = ((chromatic[:, None, :] - _REFERENCE_AB[None]) ** 2).sum(-1)  # (Q, K)
    counts = np.bincount(dist.argmin(axis=1), minlength=len(_REFERENCE_AB))
    return HUE_NAMES[int(counts.argmax())]


def single_colour_word(caption: str, lexicon: frozenset[str]) -> str | None:
    """The caption's colour word when it names exactly one colour (repeats allowed), else None."""
    words = set(colour_words(caption, lexicon))
    return words.pop() if len(words) == 1 else None


def confusion(
    captions: list[str], hues: list[str], lexicon: frozenset[str]
) -> tuple[list[str], np.ndarray]:
    """(caption colour words, counts (W, len(HUE_NAMES))) over the single-colour captions."""
    pairs = [(single_colour_word(c, lexicon), h) for c, h in zip(captions, hues, strict=True)]
    pairs = [(w, h) for w, h in pairs if w is not None]
    words = sorted({w for w, _ in pairs})
    counts = np.zeros((len(words), len(HUE_NAMES)), dtype=np.int64)
    for w, h in pairs:
        counts[words.index(w), HUE_NAMES.index(h)] += 1
    return words, counts
