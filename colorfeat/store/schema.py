"""The names of the arrays inside a store version (schema colorfeat/1), declared once.

Version-wide tables sit at fixed paths; per-split arrays sit under `<split>/` and are named
relative to it, so `split_path("train", RGB) == "train/rgb"`. Readers go through
`colorfeat.store.StoreVersion`; the stages that write a version import these names.
"""

from __future__ import annotations

# Version-wide tables.
VOCAB_TOKENS = "vocab/tokens"  # (V,) str; 0 = <pad>, 1 = <unk>
VOCAB_EMBEDDINGS = "vocab/embeddings"  # (V, D) float32
LAB_GRID = "lab/grid"  # (625, 2) float32 ab bin centres
LAB_PRIOR = "lab/prior"  # (625,) float64
LAB_WEIGHTS = "lab/weights"  # (625,) float32; attrs alpha, gamma
TABLES = (VOCAB_TOKENS, VOCAB_EMBEDDINGS, LAB_GRID, LAB_PRIOR, LAB_WEIGHTS)

# Per-split arrays, relative to `<split>/`.
IMAGE_ID = "image_id"  # (N,) int64
RGB = "rgb"  # (N, S, S, 3) uint8
AB_BINS = "ab_bins"  # (N, S/4, S/4) uint16
CAPTIONS = "captions"
CAPTION_IMAGE_INDEX = f"{CAPTIONS}/image_index"  # (M,) int32
CAPTION_TEXT = f"{CAPTIONS}/text"  # (M,) str
CAPTION_TOKENS = f"{CAPTIONS}/tokens"  # (M, T) int32, padded with 0
CAPTION_LENGTH = f"{CAPTIONS}/length"  # (M,) int32
FEATURES = "features"  # group of (N, C, H, W) float16 arrays, one per feature set
SPLIT_ARRAYS = {  # name -> (dtype, ndim)
    IMAGE_ID: ("int64", 1),
    RGB: ("uint8", 4),
    AB_BINS: ("uint16", 3),
    CAPTION_IMAGE_INDEX: ("int32", 1),
    CAPTION_TEXT: ("str", 1),
    CAPTION_TOKENS: ("int32", 2),
    CAPTION_LENGTH: ("int32", 1),
}


def split_path(split: str, name: str) -> str:
    """The path of a per-split array: ("val", CAPTION_TEXT) -> "val/captions/text"."""
    return f"{split}/{name}"


def feature_name_path(name: str) -> str:
    """A feature set's path relative to its split: "features/<name>"."""
    return f"{FEATURES}/{name}"


def features_path(split: str, name: str) -> str:
    """The path of a feature set: ("train", "r18.layer2") -> "train/features/r18.layer2"."""
    return split_path(split, feature_name_path(name))
