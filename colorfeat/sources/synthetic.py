"""A generated COCO-layout data set with a known answer: isoluminant shapes on grayscale textures.

`generate(root, limit=N, seed=s)` writes

    root/annotations/captions_train2017.json, captions_val2017.json   COCO caption files
    root/annotations/synthetic_train2017.json, synthetic_val2017.json ground truth (below)
    root/train2017/*.jpg, root/val2017/*.jpg                          the pictures

Every shape takes its colour from `PALETTE`, whose colours all share one CIELAB lightness `L` and,
within 2 gray levels, one BT.601 luma: the grayscale picture shows where the shapes are but not
which colour they have, so only a model that reads the caption can colour them right.
Backgrounds are neutral gray (a = b = 0) textures whose lightness varies but stays away from the
palette's, so the shapes stay visible in grayscale.

The ground truth file is {"palette": {name: [r, g, b]}, "L": float, "version": int, "images":
[{"id", "file_name", "width", "height", "background", "objects": [{"shape", "color", "size",
"position", "center", "radius", "rotation", "polygon"}]}]}; polygons are in the picture's pixel
coordinates. `object_masks` renders them at the store's squash-resized size.

A picture holds one, two or three objects of distinct colours and shapes. Several objects stand
in their own columns, left to right ("left", "middle", "right"), and a caption that names their
colours names each with its shape and place, in that order: "a red circle on the left and a blue
star on the right". Which colour goes where is in the words, never in the gray picture.

Each picture is drawn from its own seeded generator (seed, split, index), so the first pictures of
a split are the same whatever the limit. Pictures are JPEG at quality 95 with 4:4:4 chroma
(no subsampling). Measured on 400 generated pictures squash-resized to 224: the share of S/4
target cells inside an object that land on the object's palette bin is 99.85% for PNG, 99.83%
for this JPEG and 97.9% for JPEG with the default 4:2:0 subsampling, which smears colour across
edges; cells one cell away from an edge are 100% right in every case. So: JPEG, the format
real COCO uses, at 4:4:4.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from colorfeat.lab import lab_to_rgb, rgb_to_lab
from colorfeat.sources.coco import split_limits
from colorfeat.sources.synthetic_captions import make_captions

GENERATOR_VERSION = 4
DEFAULT_LIMIT = 1000
PALETTE_L = 54.0
# ab of each colour: on bin centres, >= 36 apart, inside the sRGB gamut at L = 54, and with
# BT.601 luma (the grayscale the backbone sees) within 1.8 gray levels of each other. Found by a
# search over the ab grid: equal L* alone is not enough, since at equal L* the luma of greens
# and purples differs by ~25 levels, a hint a no-language model would use.
PALETTE_AB: dict[str, tuple[float, float]] = {
    "red": (60.0, 30.0),
    "orange": (40.0, 60.0),
    "yellow": (0.0, 60.0),
    "green": (-30.0, 30.0),
    "teal": (-20.0, -10.0),
    "blue": (0.0, -40.0),
    "purple": (80.0, -60.0),
    "pink": (70.0, -10.0),
}
GAMUT_TOLERANCE = 1.0  # max LAB -> RGB -> LAB error (any channel) of an in-gamut colour
SHAPES = ("circle", "square", "triangle", "rectangle", "ellipse", "diamond", "star", "hexagon")
SIZES = {"small": (0.10, 0.15), "medium": (0.16, 0.22), "large": (0.23, 0.30)}
BACKGROUNDS = ("plain", "striped", "checkered", "speckled", "cloudy", "dotted")
# Background gray levels, dark or light, at least 30 levels from the palette's luma (~120).
DARK_GRAY = (20, 90)
LIGHT_GRAY = (160, 245)
TEXTURE_AMPLITUDE = 22
IMAGE_SIDE = (112, 200)
JPEG_QUALITY = 95
SPLITS = ("train2017", "val2017")
_SUBPIXEL = 4  # cv2 fixed-point bits for polygon vertices
# Share of pictures with 1, 2 and 3 objects.
OBJECT_COUNT_P = (0.4, 0.4, 0.2)
# Where each of n objects lies, left to right, as captions say it.
POSITIONS = {1: ("",), 2: ("left", "right"), 3: ("left", "middle", "right")}
# Clearance from a shape's centre to its strip's or picture's edge, in radii: polygon vertices
# reach 1.3 radii (a square's corners).
_MARGIN = 1.35


def _palette() -> dict[str, tuple[int, int, int]]:
    out = {}
    for name, (a, b) in PALETTE_AB.items():
        rgb = lab_to_rgb(np.array([PALETTE_L, a, b], dtype=np.float32))
        out[name] = tuple(int(v) for v in rgb)
    return out


PALETTE: dict[str, tuple[int, int, int]] = _palette()


def gamut_errors() -> dict[str, float]:
    """Max LAB -> sRGB -> LAB round-trip error of each palette colour (small means in gamut)."""
    out = {}
    for name, (a, b) in PALETTE_AB.items():
        lab = np.array([PALETTE_L, a, b], dtype=np.float32)
        out[name] = float(np.abs(rgb_to_lab(lab_to_rgb(lab)) - lab).max())
    return out


# --------------------------------------------------------------------------- geometry


def _polygon(shape: str, cx: float, cy: float, r: float, rot: float, aspect: float) -> np.ndarray:
    """(K, 2) float vertices of a shape of radius r centred at (cx, cy), rotated by rot degrees."""
    if shape in ("circle", "ellipse"):
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t) * (aspect if shape == "ellipse" else 1.0)], 1)
    elif shape in ("square", "rectangle"):
        h = aspect if shape == "rectangle" else 1.0
        pts = np.array([[-1, -h], [1, -h], [1, h], [-1, h]], dtype=np.float64) / math.sqrt(2) * 1.3
    elif shape == "triangle":
        t = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        pts = np.stack([np.cos(t), -np.sin(t)], 1) * 1.15
    elif shape == "diamond":
        pts = np.array([[0, -1.15], [0.75, 0], [0, 1.15], [-0.75, 0]], dtype=np.float64)
    elif shape == "hexagon":
        t = np.arange(6) * np.pi / 3
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif shape == "star":
        t = -np.pi / 2 + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, 1.15, 0.5)
        pts = np.stack([np.cos(t) * rad, np.sin(t) * rad], 1)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    c, s = math.cos(math.radians(rot)), math.sin(math.radians(rot))
    rotm = np.array([[c, -s], [s, c]])
    return pts @ rotm.T * r + np.array([cx, cy])  # (K, 2)


def _fill(canvas: np.ndarray, polygon: np.ndarray, value: Any, antialias: bool) -> None:
    pts = np.rint(np.asarray(polygon, dtype=np.float64) * (1 << _SUBPIXEL)).astype(np.int32)
    line = cv2.LINE_AA if antialias else cv2.LINE_8
    cv2.fillPoly(canvas, [pts.reshape(-1, 1, 2)], value, lineType=line, shift=_SUBPIXEL)


def object_masks(image_record: dict, size: int) -> list[tuple[str, np.ndarray]]:
    """(colour, bool (size, size) mask) of each object's visible pixels after a squash-resize."""
    sx, sy = size / image_record["width"], size / image_record["height"]
    masks = []
    for obj in image_record["objects"]:
        m = np.zeros((size, size), dtype=np.uint8)
        poly = np.asarray(obj["polygon"], dtype=np.float64) * np.array([sx, sy])  # (K, 2)
        _fill(m, poly, 1, antialias=False)
        masks.append([obj["color"], m.astype(bool)])
    for i in range(len(masks)):  # later objects are drawn on top of earlier ones
        for later in masks[i + 1 :]:
            masks[i][1] &= ~later[1]
    return [(c, m) for c, m in masks]


# --------------------------------------------------------------------------- pictures


def _background(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, str]:
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    lo, hi = DARK_GRAY if rng.random() < 0.5 else LIGHT_GRAY
    amp = TEXTURE_AMPLITUDE
    base = rng.uniform(lo + amp / 2, hi - amp / 2)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)  # (h, w) each
    if kind == "plain":
        tex = np.zeros((h, w), np.float32) + rng.uniform(-1, 1) * (x / w - 0.5) * amp
    elif kind == "striped":
        ang, period = rng.uniform(0, np.pi), rng.uniform(6, 20)
        tex = np.sin((x * np.cos(ang) + y * np.sin(ang)) * 2 * np.pi / period) * amp / 2
    elif kind == "checkered":
        cell = int(rng.integers(8, 24))
        tex = (((x // cell) + (y // cell)) % 2 - 0.5) * amp
    elif kind == "dotted":
        cell = int(rng.integers(10, 20))
        d = (x % cell - cell / 2) ** 2 + (y % cell - cell / 2) ** 2
        tex = np.where(d < (cell / 4) ** 2, amp / 2, -amp / 2).astype(np.float32)
    else:  # speckled: fine noise; cloudy: smooth noise
        scale = 1 if kind == "speckled" else 12
        small = rng.standard_normal((h // scale + 2, w // scale + 2)).astype(np.float32)
        tex = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC) * amp / 3
    gray = np.clip(base + np.clip(tex, -amp / 2, amp / 2), 0, 255).astype(np.uint8)  # (h, w)
    return np.repeat(gray[:, :, None], 3, axis=2), kind  # (h, w, 3)


def _place(
    rng: np.random.Generator, w: int, h: int, n_obj: int, column: int
) -> tuple[str, float, float, float]:
    """Size class, centre and radius of one object; several objects each get one column.

    With several objects, object `column` lies wholly inside the column-th of n_obj equal
    vertical strips (left to right), so "on the left" / "in the middle" / "on the right" names
    it unambiguously and objects never overlap.
    """
    side = min(w, h)
    if n_obj == 1:
        size = list(SIZES)[rng.integers(len(SIZES))]
        r = rng.uniform(*SIZES[size]) * side
        lo_x, hi_x = r * _MARGIN, w - r * _MARGIN
    else:
        strip = w / n_obj
        r_max = strip / (2 * _MARGIN)
        fitting = [k for k, (lo, _) in SIZES.items() if lo * side <= r_max]
        size = fitting[rng.integers(len(fitting))]
        lo, hi = SIZES[size]
        r = rng.uniform(lo * side, min(hi * side, r_max))
        lo_x, hi_x = column * strip + r * _MARGIN, (column + 1) * strip - r * _MARGIN
    cx, cy = rng.uniform(lo_x, hi_x), rng.uniform(r * _MARGIN, h - r * _MARGIN)
    return size, cx, cy, r


def draw_image(rng: np.random.Generator, image_id: int, file_name: str) -> tuple[np.ndarray, dict]:
    """One picture (h, w, 3) uint8 and its ground-truth record."""
    w, h = (int(v) for v in rng.integers(IMAGE_SIDE[0], IMAGE_SIDE[1] + 1, size=2))
    rgb, bg = _background(rng, h, w)
    n_obj = int(rng.choice([1, 2, 3], p=OBJECT_COUNT_P))
    # Distinct colours and distinct shapes, each object in its own column: a caption binds its
    # colours to the objects by where they are ("a red circle on the left") and what they are.
    colours = rng.choice(list(PALETTE), size=n_obj, replace=False)
    shapes = rng.choice(SHAPES, size=n_obj, replace=False)
    objects: list[dict] = []
    for column, (colour, shape) in enumerate(zip(colours, shapes, strict=True)):
        size, cx, cy, r = _place(rng, w, h, n_obj, column)
        shape = str(shape)
        rot, aspect = float(rng.uniform(0, 360)), float(rng.uniform(0.45, 0.7))
        poly = _polygon(shape, cx, cy, r, rot, aspect)
        _fill(rgb, poly, PALETTE[str(colour)], antialias=True)
        objects.append(
            {
                "shape": shape,
                "color": str(colour),
                "size": size,
                "position": POSITIONS[n_obj][column],
                "center": [round(float(cx), 2), round(float(cy), 2)],
                "radius": round(float(r), 2),
                "rotation": round(rot, 2),
                "polygon": np.round(poly, 2).tolist(),
            }
        )
    record = {
        "id": image_id,
        "file_name": file_name,
        "width": w,
        "height": h,
        "background": bg,
        "objects": objects,
    }
    return rgb, record


# --------------------------------------------------------------------------- data set


def split_sizes(limit: int) -> dict[str, int]:
    """How many pictures each split gets; the same share a limit gives a COCO source."""
    shares = split_limits(limit, ["train", "val"])
    return {SPLITS[0]: shares["train"] or 0, SPLITS[1]: shares["val"] or 0}


def _write_split(root: Path, split: str, n: int, seed: int) -> None:
    (root / split).mkdir(parents=True, exist_ok=True)
    split_no = SPLITS.index(split)
    images, annotations, truth = [], [], []
    for i in range(n):
        image_id = split_no * 1_000_000 + i + 1
        rng = np.random.default_rng([seed, split_no, i])
        file_name = f"{image_id:012d}.jpg"
        rgb, record = draw_image(rng, image_id, file_name)
        Image.fromarray(rgb).save(
            root / split / file_name, quality=JPEG_QUALITY, subsampling=0, optimize=False
        )
        images.append(
            {"id": image_id, "file_name": file_name, "width": rgb.shape[1], "height": rgb.shape[0]}
        )
        for text in make_captions(rng, record):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "caption": text})
        truth.append(record)
    coco = {
        "info": {"description": f"colorfeat synthetic v{GENERATOR_VERSION}, seed {seed}"},
        "images": images,
        "annotations": annotations,
    }
    ann = root / "annotations"
    ann.mkdir(exist_ok=True)
    (ann / f"captions_{split}.json").write_text(json.dumps(coco))
    gt = {
        "version": GENERATOR_VERSION,
        "seed": seed,
        "palette": {k: list(v) for k, v in PALETTE.items()},
        "L": PALETTE_L,
        "images": truth,
    }
    (ann / f"synthetic_{split}.json").write_text(json.dumps(gt))


def generate(root: str | Path, *, limit: int | None = None, seed: int = 0) -> dict[str, int]:
    """Write `limit` pictures (default DEFAULT_LIMIT) in the COCO layout under root."""
    root = Path(root)
    sizes = split_sizes(DEFAULT_LIMIT if limit is None else limit)
    for split, n in sizes.items():
        _write_split(root, split, n, seed)
    return sizes


def load_ground_truth(root: str | Path, split: str) -> dict:
    """The ground truth of a generated split; `split` is `train`, `val` or e.g. `val2017`."""
    name = split if split in SPLITS else f"{split}2017"
    path = Path(root) / "annotations" / f"synthetic_{name}.json"
    return json.loads(path.read_text())
