"""The layout of a store version (schema colorfeat/1), declared once: array names, their dtypes,
ranks and row axes, the root attributes, and the feature-array attributes.

Version-wide tables sit at fixed paths; per-split arrays sit under `<split>/` and are named
relative to it, so `split_path("train", RGB) == "train/rgb"`. `ARRAYS` holds the spec of each
fixed array; the stages that add them name these specs in their rows (colorfeat.stages), and
validation checks every spec of the parts a version holds. Readers go through
`colorfeat.store.StoreVersion`.
"""

from __future__ import annotations

from dataclasses import dataclass

from colorfeat.constants import TARGET_STRIDE

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

# The first axis of a per-split array counts images or captions; these arrays define the counts.
IMAGE_ROWS = "image"
CAPTION_ROWS = "caption"
ROW_ARRAYS = {IMAGE_ROWS: IMAGE_ID, CAPTION_ROWS: CAPTION_IMAGE_INDEX}

# Root attributes that say what a version holds.
ATTR_SPLITS = "splits"
ATTR_FEATURES = "features"
ATTR_PARTS = "parts"  # the names of the stages that added arrays to the version
ATTR_MANIFEST = "manifest"  # {"file", "sha256"}: the manifest's zarr.json and its SHA-256
# The chunk manifest: a group whose attrs list every file of the version, {"format", "files":
# {relative path: [size, crc32]}} (a zarr node, so that zarr lists nothing it cannot place).
MANIFEST_GROUP = "manifest"
MANIFEST_FILE = f"{MANIFEST_GROUP}/zarr.json"

# What every feature array's attrs say about how it was made.
FEATURE_ATTRS = (
    "backbone", "layer", "weights", "weights_hash", "input_size", "grayscale", "normalisation",
    "dtype", "code_version",
)  # fmt: skip


@dataclass(frozen=True)
class ArraySpec:
    """One array of the layout: its path (relative to `<split>/` when per split), dtype, rank and,
    for a per-split array, whether its rows are the split's images or its captions."""

    path: str
    dtype: str  # numpy name, or "str" for variable-length strings
    ndim: int
    rows: str | None = None  # IMAGE_ROWS or CAPTION_ROWS: a per-split array; None: a table
    attrs: tuple[str, ...] = ()  # attrs the array must carry
    # A path ending in "/*" stands for every array of that group (one per feature set).

    @property
    def per_split(self) -> bool:
        return self.rows is not None

    def where(self, split: str | None = None) -> str:
        """The array's path inside a version: a table's own, or `<split>/<path>`."""
        return split_path(split, self.path) if self.per_split and split else self.path

    def to_dict(self) -> dict:
        return {"path": self.path, "dtype": self.dtype, "ndim": self.ndim, "rows": self.rows,
                "attrs": list(self.attrs)}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> ArraySpec:
        return cls(d["path"], d["dtype"], int(d["ndim"]), d.get("rows"), tuple(d.get("attrs", ())))


ARRAYS = {
    spec.path: spec
    for spec in (
        ArraySpec(VOCAB_TOKENS, "str", 1),
        ArraySpec(VOCAB_EMBEDDINGS, "float32", 2),
        ArraySpec(LAB_GRID, "float32", 2),
        ArraySpec(LAB_PRIOR, "float64", 1),
        ArraySpec(LAB_WEIGHTS, "float32", 1, attrs=("alpha", "gamma")),
        ArraySpec(IMAGE_ID, "int64", 1, IMAGE_ROWS),
        ArraySpec(RGB, "uint8", 4, IMAGE_ROWS),
        ArraySpec(AB_BINS, "uint16", 3, IMAGE_ROWS),
        ArraySpec(CAPTION_IMAGE_INDEX, "int32", 1, CAPTION_ROWS),
        ArraySpec(CAPTION_TEXT, "str", 1, CAPTION_ROWS),
        ArraySpec(CAPTION_TOKENS, "int32", 2, CAPTION_ROWS),
        ArraySpec(CAPTION_LENGTH, "int32", 1, CAPTION_ROWS),
        ArraySpec(f"{FEATURES}/*", "float16", 4, IMAGE_ROWS, FEATURE_ATTRS),
    )
}
FEATURE_SETS = ARRAYS[f"{FEATURES}/*"]
SPLIT_ARRAYS = {  # name -> (dtype, ndim)
    name: (spec.dtype, spec.ndim)
    for name, spec in ARRAYS.items()
    if spec.per_split and not name.endswith("/*")
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


def target_side(image_size: int) -> int:
    """The side of the ab targets of S x S pictures: S / TARGET_STRIDE."""
    return image_size // TARGET_STRIDE
