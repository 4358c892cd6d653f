"""What a rebuild costs after a small change, against the first build and a build from scratch.

On a COCO-like source (`benchmarks.cocolike`, generated once, not timed) of --pictures pictures
(80% train, 20% val), runs the stage table with the library's runner (`run_stages`: the stages
the Prefect flow wraps, without its start-up) in one work dir:

1. the first build;
2. four rebuilds, each after one change of --share of the pictures: new pictures added, pictures
   removed from the annotations, pictures edited (their files rewritten upside down), and
   captions changed (words added to them; no picture changes);

and after each change a build from scratch of the same source in a new work dir. Prints each
rebuild's time as a ratio of the first build's, what it decoded and extracted, the chunks it
linked and wrote, and whether every picture (rgb, ab_bins, features bitwise, captions, tokens)
equals the build from scratch. Writes OUT.json and OUT.png.

    python benchmarks/incremental.py --pictures 4000 [--share 0.01] [--image-size 224]
        [--backbone resnet101] [--layer layer2] [--workers 2] [--work /tmp/incremental]
        [--out docs/incremental]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sys
import time
from pathlib import Path

import cv2
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import cocolike  # noqa: E402
from colorfeat.config import BackboneConfig, PipelineConfig  # noqa: E402
from colorfeat.stages.runner import run_stages  # noqa: E402
from colorfeat.store import schema  # noqa: E402

TRAIN = "annotations/captions_train2014.json"


def configure(args, src: Path, work: Path) -> PipelineConfig:
    trunk = BackboneConfig(
        backbone=args.backbone, layer=args.layer, weights="none", image_size=args.image_size
    )
    return PipelineConfig(
        source=str(src), store=str(work / "store"), work_dir=str(work), device="cpu",
        backbone=trunk, precision="fp32", compile_trunk=args.compile, workers=args.workers,
    )  # fmt: skip


def timed_build(args, src: Path, work: Path) -> tuple[float, dict]:
    t0 = time.perf_counter()
    run = run_stages(configure(args, src, work))
    return time.perf_counter() - t0, run.results


# --------------------------------------------------------------------------- the changes
def add(src: Path, k: int, rng: random.Random, counts: dict) -> None:
    """k more pictures, in the same 80/20 proportion (the files already there keep their bytes)."""
    k_val = k // 5
    counts["train2014"] += k - k_val
    counts["val2014"] += k_val
    cocolike.generate(src, n_train=counts["train2014"], n_val=counts["val2014"], seed=0)


def remove(src: Path, k: int, rng: random.Random, counts: dict) -> None:
    doc = json.loads((src / TRAIN).read_text())
    gone = {i["id"] for i in rng.sample(doc["images"], k)}
    doc["images"] = [i for i in doc["images"] if i["id"] not in gone]
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] not in gone]
    (src / TRAIN).write_text(json.dumps(doc))


def edit(src: Path, k: int, rng: random.Random, counts: dict) -> None:
    doc = json.loads((src / TRAIN).read_text())
    for image in rng.sample(doc["images"], k):
        path = src / "train2014" / image["file_name"]
        cv2.imwrite(str(path), cv2.imread(str(path))[::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])


def recaption(src: Path, k: int, rng: random.Random, counts: dict) -> None:
    """k% of the captions get words added: the same pictures, other tokens."""
    doc = json.loads((src / TRAIN).read_text())
    for a in rng.sample(doc["annotations"], k * cocolike.CAPTIONS_PER_PICTURE):
        a["caption"] += " on a sunny afternoon"
    (src / TRAIN).write_text(json.dumps(doc))


CHANGES = {"add": add, "remove": remove, "edit": edit, "captions": recaption}


# --------------------------------------------------------------------------- the comparison
def pictures(results: dict) -> dict[tuple[str, int], str]:
    """A digest of every stored picture's rows and captions, by (split, image id)."""
    images = zarr.open_group(results["images"]["path"], mode="r")
    feats = zarr.open_group(results["features"]["path"], mode="r")
    name = results["features"]["name"]
    vocab = json.loads(Path(results["vocab"]["path"]).read_text())
    out = {}
    for split in results["images"]["splits"]:
        g = images[split]
        owner = g[schema.CAPTION_IMAGE_INDEX][:]
        texts, tokens = g[schema.CAPTION_TEXT][:], g[schema.CAPTION_TOKENS][:]
        ids = g[schema.IMAGE_ID][:]
        step = feats[split][name].chunks[0] * 16
        for lo in range(0, len(ids), step):
            rgb, ab = g[schema.RGB][lo : lo + step], g[schema.AB_BINS][lo : lo + step]
            f = feats[split][name][lo : lo + step]
            for j, image_id in enumerate(ids[lo : lo + step]):
                mine = owner == lo + j
                words = [[vocab[t] for t in row if t] for row in tokens[mine]]
                h = hashlib.sha256(rgb[j].tobytes() + ab[j].tobytes() + f[j].tobytes())
                h.update(json.dumps([list(map(str, texts[mine])), words]).encode())
                out[split, int(image_id)] = h.hexdigest()
    return out


def summary(results: dict) -> dict:
    counts = results["images"]["counts"]
    feats = results["features"]
    return {
        "decoded": sum(c.get("decoded", c["candidates"]) for c in counts.values()),
        "extracted": feats.get("extracted"),
        "linked": sum(c.get("chunks_linked", 0) for c in counts.values())
        + feats.get("chunks_linked", 0),
        "written": sum(c.get("chunks_written", 0) for c in counts.values())
        + feats.get("chunks_written", 0),
        "stored": sum(c["images"] for c in counts.values()),
    }


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    names = [r["change"] for r in rows]
    ax.bar(names, [100 * r["ratio"] for r in rows], color="#4c72b0", label="rebuild")
    ax.bar(names, [100 * r["scratch_ratio"] for r in rows], color="none", edgecolor="#999999",
           label="build from scratch")  # fmt: skip
    ax.axhline(5, color="#c44e52", linestyle="--", label="goal: 5%")
    ax.set_ylabel("% of the first build's time")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pictures", type=int, default=4000)
    p.add_argument("--share", type=float, default=0.01, help="of the pictures each change touches")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--backbone", default="resnet101")
    p.add_argument("--layer", default="layer2")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="torch.compile the trunk (the same in every build)")  # fmt: skip
    p.add_argument("--work", type=Path, default=Path("/tmp/colorfeat-incremental"))
    p.add_argument("--out", type=Path, default=None, help="OUT.json and OUT.png")
    args = p.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    src = args.work / "src"
    n_val = args.pictures // 5
    counts = {"train2014": args.pictures - n_val, "val2014": n_val}
    cocolike.generate(src, n_train=counts["train2014"], n_val=n_val, seed=0, workers=args.workers)
    first_s, first = timed_build(args, src, args.work / "work")
    print(f"first build: {first_s:.1f} s, {summary(first)}", flush=True)
    rng = random.Random(0)
    k = max(1, round(args.share * args.pictures))
    rows = []
    for i, (change, apply) in enumerate(CHANGES.items()):
        apply(src, k, rng, counts)
        seconds, results = timed_build(args, src, args.work / "work")
        scratch_s, scratch = timed_build(args, src, args.work / f"scratch-{i}")
        same = pictures(results) == pictures(scratch)
        row = {"change": change, "pictures": k, "seconds": seconds, "ratio": seconds / first_s,
               "scratch_seconds": scratch_s, "scratch_ratio": scratch_s / first_s,
               "same_as_scratch": same, **summary(results)}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
        shutil.rmtree(args.work / f"scratch-{i}")
    print(f"\n{args.pictures} pictures, {args.backbone}.{args.layer} at {args.image_size} px, "
          f"first build {first_s:.1f} s ({summary(first)['stored']} stored)")  # fmt: skip
    print("| change | pictures changed | rebuild | of the first build | decoded | extracted | "
          "chunks linked / written | from scratch | same pictures as from scratch |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        same = "yes" if r["same_as_scratch"] else "NO"
        print(f"| {r['change']} | {r['pictures']} | {r['seconds']:.1f} s | {100 * r['ratio']:.1f}% "
              f"| {r['decoded']} | {r['extracted']} | {r['linked']} / {r['written']} "
              f"| {r['scratch_seconds']:.1f} s | {same} |")  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        doc = {"args": {k: str(v) for k, v in vars(args).items()}, "first_seconds": first_s,
               "first": summary(first), "rebuilds": rows}  # fmt: skip
        args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
        plot(rows, args.out)
    if not all(r["same_as_scratch"] for r in rows):
        raise SystemExit("a rebuild differs from the build from scratch")


if __name__ == "__main__":
    main()
