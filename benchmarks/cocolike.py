"""A generated data set shaped like MS COCO 2014 captions, at any size, for benchmarks.

`generate(root, n_train=N, n_val=M, seed=s)` writes the standard COCO layout

    root/annotations/captions_train2014.json, captions_val2014.json
    root/train2014/COCO_train2014_<id>.jpg, root/val2014/COCO_val2014_<id>.jpg

so that `colorfeat run --source root` reads it. What matches COCO, and where the figures come from:

- pictures: COCO's sizes (`PICTURE_SIZES`: 640 on the long side, mostly 4:3 and 3:2, landscape
  more often than portrait), JPEG quality 90 with the default 4:2:0 chroma, and photographic
  content: random crops of the colour photographs scikit-image ships, flipped, rescaled, hue
  rotated, re-saturated and with sensor-like noise, so that decoding, resizing and compression
  cost what they cost on photographs, not on flat shapes;
- five captions per picture whose token counts follow `CAPTION_LENGTHS` (measured with
  `colorfeat.stages.captions.tokenize` on 1,000 real val2014 captions, clipped to 8..20; mean 10.4);
- `COLOUR_SHARE` of the captions name a colour of the project's lexicon, with the colour words in
  `COLOUR_WORDS` proportions (both measured on the same 1,000 captions: 17.9%), independently per
  caption; every other word comes from a Zipf distribution (`ZIPF_EXPONENT`) over `VOCAB_SIZE`
  words that are not colour words: common COCO words by rank, then pronounceable made-up words.

Pictures and captions are drawn from their own seeded generators (seed, split, index), so files
are byte-identical for a seed, whatever the size or the number of worker processes, and the first
pictures of a split are the same whatever its size. `pictures=False` writes the annotations only
(the caption stages at full COCO size do not need the pictures).

    python -m benchmarks.cocolike ROOT --train 82783 --val 40504 [--seed 0] [--workers 8]
        [--format coco|webdataset|karpathy|table]

`--format` (`write_format`) also writes the same pictures and captions as another kind of source:
`webdataset`: ROOT/shards/00000.tar... as img2dataset writes them (<key>.jpg, <key>.txt holding
one caption, <key>.json; 00000_stats.json beside), `karpathy`: ROOT/dataset_cocolike.json,
`table`: ROOT/captions.csv (file_name, caption, split; one row per caption). A shard holds one
caption per picture (`shard_caption`: the first that names a colour, else the first), so the
captions stage keeps the same pictures from the shards as from the directory.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import multiprocessing
import tarfile
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

GENERATOR_VERSION = 1
SPLITS = ("train2014", "val2014")
COCO2014 = {"train2014": 82_783, "val2014": 40_504}  # pictures per split
CAPTIONS_PER_PICTURE = 5
JPEG_QUALITY = 90
# (width, height): relative frequency. The common COCO sizes; their shares are approximate.
PICTURE_SIZES = {
    (640, 480): 0.36,
    (640, 427): 0.20,
    (480, 640): 0.12,
    (427, 640): 0.07,
    (640, 426): 0.05,
    (640, 428): 0.04,
    (500, 375): 0.04,
    (640, 360): 0.04,
    (612, 612): 0.03,
    (375, 500): 0.03,
    (640, 640): 0.02,
}
# Colour photographs shipped inside scikit-image (no download).
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")
CROP_SHARE = (0.35, 1.0)  # side of a crop, as a share of the largest crop of that aspect
SATURATION = (0.6, 1.3)
GAIN = (0.8, 1.15)
NOISE_SIGMA = (1.0, 4.0)  # gray levels
# Token count: captions out of 1,000 real val2014 captions (lengths 7 and 21-22 clipped in).
CAPTION_LENGTHS = {
    8: 159, 9: 235, 10: 222, 11: 154, 12: 102, 13: 57, 14: 24,
    15: 13, 16: 15, 17: 8, 18: 3, 19: 3, 20: 5,
}  # fmt: skip
COLOUR_SHARE = 0.179
COLOUR_WORDS = {
    "white": 71, "black": 32, "red": 28, "blue": 27, "brown": 26, "green": 19, "yellow": 14,
    "orange": 13, "grey": 6, "gray": 5, "golden": 2, "pink": 2, "beige": 1, "silver": 1,
    "purple": 1, "cream": 1,
}  # fmt: skip
VOCAB_SIZE = 20_000
ZIPF_EXPONENT = 1.22  # 1,000 captions hold ~1,600 distinct words, as real ones do
START_WITH_ARTICLE = 0.7  # captions starting "A ..."
FULL_STOP = 0.5  # captions ending with "."
# The most frequent non-colour words of real COCO captions, most frequent first.
COMMON_WORDS = """
a on of the in with and is to man an sitting two are standing at people next woman field street
holding some person that large near cat grass girl table top group room front baseball up by
tennis it small plate sign while there dog down his other train bus water playing bathroom
pizza kitchen for young her player ball road riding food side boy court out from several men
sits parked under building looking standing three over city view beach sky background bench
bed wooden snow picture car clock giant traffic board child frisbee horse area stands has
giraffe elephant bear zebra sheep cow bird umbrella kite surfboard skateboard wave laptop
computer phone window door toilet sink couch chair desk book vase bowl cup cake sandwich
donut banana apple broccoli carrot hot motorcycle bicycle truck airplane boat light fire
stop parking meter flying eating walking looking holding wearing shirt hat jacket tie
""".split()
SYLLABLES = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"] + ["an", "er", "in", "on", "us"]


def picture_rng(seed: int, split: str, index: int, stream: int) -> np.random.Generator:
    """The generator of one picture's captions (stream 0) or pixels (stream 1)."""
    return np.random.default_rng([seed, SPLITS.index(split), index, stream, GENERATOR_VERSION])


@cache
def _lexicon() -> frozenset[str]:
    """The project's colour lexicon."""
    from colorfeat.config import PipelineConfig
    from colorfeat.stages.captions import load_lexicon

    return load_lexicon(PipelineConfig.__dataclass_fields__["lexicon"].default_factory())


@cache
def word_list() -> tuple[str, ...]:
    """VOCAB_SIZE distinct words by rank, none of them in the colour lexicon."""
    lexicon = _lexicon()
    words = list(dict.fromkeys(w for w in COMMON_WORDS if w not in lexicon))
    seen = set(words) | lexicon
    rng = np.random.default_rng(GENERATOR_VERSION)
    while len(words) < VOCAB_SIZE:
        n_syllables = 2 + int(rng.random() < 0.6)
        word = "".join(SYLLABLES[i] for i in rng.integers(len(SYLLABLES), size=n_syllables))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return tuple(words)


@cache
def _zipf_cdf() -> np.ndarray:
    p = 1.0 / np.arange(1, VOCAB_SIZE + 1) ** ZIPF_EXPONENT
    return np.cumsum(p / p.sum())


def _table(counts: dict) -> tuple[list, np.ndarray]:
    keys = list(counts)
    p = np.array([counts[k] for k in keys], dtype=np.float64)
    return keys, p / p.sum()


def make_captions(rng: np.random.Generator, n: int = CAPTIONS_PER_PICTURE) -> list[str]:
    """`n` captions with COCO's length distribution and share of colour captions."""
    words = word_list()
    lengths, p_len = _table(CAPTION_LENGTHS)
    colours, p_col = _table(COLOUR_WORDS)
    captions = []
    for _ in range(n):
        length = lengths[rng.choice(len(lengths), p=p_len)]
        ranks = np.searchsorted(_zipf_cdf(), rng.random(length), side="right")
        tokens = [words[min(r, VOCAB_SIZE - 1)] for r in ranks]
        if rng.random() < START_WITH_ARTICLE:
            tokens[0] = "a"
        if rng.random() < COLOUR_SHARE:
            tokens[rng.integers(1, length)] = colours[rng.choice(len(colours), p=p_col)]
        text = " ".join(tokens)
        captions.append(text[0].upper() + text[1:] + ("." if rng.random() < FULL_STOP else ""))
    return captions


@cache
def _photos() -> tuple[np.ndarray, ...]:
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    return tuple(np.asarray(Image.open(folder / name).convert("RGB")) for name in PHOTOS)


def _hue_matrix(angle: float, saturation: float) -> np.ndarray:
    """RGB -> RGB (3, 3): rotate the chroma plane of YIQ by `angle`, scale it by `saturation`."""
    yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    c, s = np.cos(angle) * saturation, np.sin(angle) * saturation
    rotate = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    return np.linalg.inv(yiq) @ rotate @ yiq


def draw_picture(rng: np.random.Generator) -> np.ndarray:
    """An (H, W, 3) uint8 photograph-like picture at one of COCO's sizes."""
    sizes, p_size = _table(PICTURE_SIZES)
    width, height = sizes[rng.choice(len(sizes), p=p_size)]
    photo = _photos()[rng.integers(len(PHOTOS))]
    ph, pw = photo.shape[:2]
    scale = min(pw / width, ph / height) * rng.uniform(*CROP_SHARE)
    cw, ch = max(8, int(width * scale)), max(8, int(height * scale))
    x0, y0 = rng.integers(pw - cw + 1), rng.integers(ph - ch + 1)
    crop = photo[y0 : y0 + ch, x0 : x0 + cw]  # (ch, cw, 3)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    img = cv2.resize(np.ascontiguousarray(crop), (width, height), interpolation=cv2.INTER_LINEAR)
    m = _hue_matrix(rng.uniform(0, 2 * np.pi), rng.uniform(*SATURATION)) * rng.uniform(*GAIN)
    out = cv2.transform(img.astype(np.float32), m.astype(np.float32))  # (H, W, 3) float32
    noise = rng.standard_normal((height, width, 1), dtype=np.float32)  # luma noise, as sensors
    out += noise * np.float32(rng.uniform(*NOISE_SIGMA))
    return np.clip(out, 0, 255).astype(np.uint8)


def file_name(split: str, image_id: int) -> str:
    return f"COCO_{split}_{image_id:012d}.jpg"


def image_id(split: str, index: int) -> int:
    return SPLITS.index(split) * 1_000_000 + index + 1


def _write_pictures(task: tuple[Path, str, int, range]) -> list[tuple[int, int]]:
    """Write the pictures of one range of indices -> their (width, height)."""
    root, split, seed, indices = task
    sizes = []
    for i in indices:
        rgb = draw_picture(picture_rng(seed, split, i, 1))
        path = root / split / file_name(split, image_id(split, i))
        Image.fromarray(rgb).save(path, format="JPEG", quality=JPEG_QUALITY, optimize=False)
        sizes.append((rgb.shape[1], rgb.shape[0]))
    return sizes


def _picture_sizes(root: Path, split: str, n: int, seed: int, workers: int) -> list:
    """(width, height) of each of the split's n pictures, written (in parallel) when root is set."""
    block = 64
    tasks = [(root, split, seed, range(s, min(n, s + block))) for s in range(0, n, block)]
    if workers <= 1 or len(tasks) <= 1:
        return [wh for t in tasks for wh in _write_pictures(t)]
    ctx = multiprocessing.get_context("spawn")  # safe whatever the parent has imported
    with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=ctx) as ex:
        return [wh for sizes in ex.map(_write_pictures, tasks) for wh in sizes]


def write_split(root: Path, split: str, n: int, *, seed: int, pictures: bool, workers: int) -> None:
    """One split's captions file and (when `pictures`) its pictures."""
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    if pictures:
        sizes = _picture_sizes(root, split, n, seed, workers)
    else:  # the size each picture would have, from the same generator
        sizes = [_first_size(picture_rng(seed, split, i, 1)) for i in range(n)]
    images, annotations = [], []
    for i, (w, h) in enumerate(sizes):
        iid = image_id(split, i)
        images.append({"id": iid, "file_name": file_name(split, iid), "width": w, "height": h})
        for text in make_captions(picture_rng(seed, split, i, 0)):
            annotations.append({"id": len(annotations) + 1, "image_id": iid, "caption": text})
    doc = {
        "info": {"description": f"colorfeat cocolike v{GENERATOR_VERSION}, seed {seed}"},
        "images": images,
        "annotations": annotations,
    }
    (root / "annotations" / f"captions_{split}.json").write_text(json.dumps(doc))


def _first_size(rng: np.random.Generator) -> tuple[int, int]:
    sizes, p_size = _table(PICTURE_SIZES)
    return sizes[rng.choice(len(sizes), p=p_size)]


def generate(
    root: str | Path,
    *,
    n_train: int,
    n_val: int,
    seed: int = 0,
    pictures: bool = True,
    workers: int = 1,
) -> dict[str, int]:
    """Write n_train + n_val pictures with five captions each in the COCO 2014 layout under root."""
    root = Path(root)
    counts = {SPLITS[0]: n_train, SPLITS[1]: n_val}
    for split, n in counts.items():
        write_split(root, split, n, seed=seed, pictures=pictures, workers=workers)
    return counts


FORMATS = ("coco", "webdataset", "karpathy", "table")
SHARD_SIZE = 1000  # pictures per tar, as img2dataset's default 10,000 is for millions


def _read_layout(root: Path) -> list[tuple[str, dict, list[str]]]:
    """(split, image entry, captions) of every picture of a generated root."""
    out = []
    for split in SPLITS:
        doc = json.loads((root / "annotations" / f"captions_{split}.json").read_text())
        captions: dict[int, list[str]] = {}
        for ann in doc["annotations"]:
            captions.setdefault(ann["image_id"], []).append(ann["caption"])
        out += [(split, image, captions.get(image["id"], [])) for image in doc["images"]]
    return out


def shard_caption(captions: list[str]) -> str:
    """The one caption a shard holds: the first naming a colour (else the first), so that the
    same pictures keep a colour caption as in the COCO layout."""
    from colorfeat.stages.captions import colour_words

    return next((c for c in captions if colour_words(c, _lexicon())), captions[0])


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _write_shards(root: Path, pictures: list, shard_size: int) -> None:
    out = root / "shards"
    out.mkdir(exist_ok=True)
    for start in range(0, len(pictures), shard_size):
        name = f"{start // shard_size:05d}"
        block = pictures[start : start + shard_size]
        with tarfile.open(out / f"{name}.tar", "w") as tar:
            for split, image, captions in block:
                key = f"{image['id']:012d}"
                _add(tar, f"{key}.jpg", (root / split / image["file_name"]).read_bytes())
                caption = shard_caption(captions)
                _add(tar, f"{key}.txt", caption.encode())
                meta = {"key": key, "caption": caption, "width": image["width"]}
                _add(tar, f"{key}.json", json.dumps(meta).encode())
        (out / f"{name}_stats.json").write_text(json.dumps({"successes": len(block)}))


def write_format(root: str | Path, fmt: str, *, shard_size: int = SHARD_SIZE) -> Path:
    """The generated root's pictures and captions as `fmt` (see the module doc) -> the source."""
    root = Path(root)
    pictures = _read_layout(root)
    if fmt == "webdataset":
        _write_shards(root, pictures, shard_size)
        return root / "shards"
    if fmt == "karpathy":
        images = [
            {"filepath": split, "filename": image["file_name"], "split": split[:-4],
             "cocoid": image["id"], "sentences": [{"raw": t} for t in captions]}
            for split, image, captions in pictures
        ]  # fmt: skip
        (root / "dataset_cocolike.json").write_text(json.dumps({"images": images}))
        return root / "dataset_cocolike.json"
    if fmt == "table":
        with open(root / "captions.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file_name", "caption", "split"])
            for split, image, captions in pictures:
                writer.writerows([f"{split}/{image['file_name']}", t, split[:-4]] for t in captions)
        return root / "captions.csv"
    return root


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path)
    p.add_argument("--train", type=int, default=COCO2014["train2014"])
    p.add_argument("--val", type=int, default=COCO2014["val2014"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--no-pictures", action="store_true", help="annotations only")
    p.add_argument("--format", choices=FORMATS, default="coco", help="also write this kind")
    args = p.parse_args(argv)
    generate(
        args.root,
        n_train=args.train,
        n_val=args.val,
        seed=args.seed,
        pictures=not args.no_pictures,
        workers=args.workers,
    )
    if args.format != "coco":
        print(write_format(args.root, args.format))


if __name__ == "__main__":
    main()
