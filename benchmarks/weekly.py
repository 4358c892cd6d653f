"""A weekly rebuild schedule, simulated: disk use of the store and the work dir over the weeks.

Each week the COCO-like source (`benchmarks.cocolike`) changes a little: new pictures arrive,
some are removed from the annotations, some are edited (their files rewritten), some captions are
corrected. Then the same thing a scheduled run does: a rebuild (`run_stages`, the stages the flow
wraps) and retention (`colorfeat.store.retention.gc` with --keep-last, with the clock moved on a
week, so the readers' grace period of the week before has passed). After each week: the version,
what the rebuild decoded and extracted, the versions kept, and the bytes on disk of the store,
of the work dir and of both together (a file with several hard links counts once), with and
without retention.

    python benchmarks/weekly.py [--weeks 10] [--pictures 400] [--keep-last 2] [--image-size 64]
        [--work /tmp/weekly]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import cocolike  # noqa: E402
from colorfeat.config import BackboneConfig, PipelineConfig  # noqa: E402
from colorfeat.stages.runner import run_stages  # noqa: E402
from colorfeat.store.retention import gc  # noqa: E402

TRAIN = "annotations/captions_train2014.json"


def disk_bytes(*paths: Path) -> int:
    """Bytes of the files under `paths`, each file (inode) once however many links it has."""
    seen: dict[tuple[int, int], int] = {}
    for top in paths:
        for folder, _, names in os.walk(top):
            for name in names:
                st = os.lstat(os.path.join(folder, name))
                seen[st.st_dev, st.st_ino] = st.st_size
    return sum(seen.values())


def change_source(
    src: Path, week: int, share: float, counts: dict, gone: set, rng: random.Random
) -> int:
    """A week's changes: `share` of the pictures new, as many removed (for good: `gone`), edited
    and recaptioned -> how many pictures each change touched."""
    k = max(1, round(share * (sum(counts.values()) - len(gone))))
    counts["train2014"] += k
    cocolike.generate(src, n_train=counts["train2014"], n_val=counts["val2014"], seed=0)
    doc = json.loads((src / TRAIN).read_text())
    gone |= {i["id"] for i in rng.sample([i for i in doc["images"] if i["id"] not in gone], k)}
    doc["images"] = [i for i in doc["images"] if i["id"] not in gone]
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] not in gone]
    for image in rng.sample(doc["images"], k):
        path = src / "train2014" / image["file_name"]
        cv2.imwrite(str(path), cv2.imread(str(path))[::-1])
    for a in rng.sample(doc["annotations"], k):
        a["caption"] += f" in week {week}"
    (src / TRAIN).write_text(json.dumps(doc))
    return k


def simulate(
    work: Path, *, weeks: int = 10, pictures: int = 400, share: float = 0.01, keep_last: int = 2,
    image_size: int = 64, backbone: str = "resnet18",
) -> list[dict]:  # fmt: skip
    """Run `weeks` rebuilds with retention in `work` -> one record per week (week 0: the first)."""
    shutil.rmtree(work, ignore_errors=True)
    src = work / "src"
    counts = {"train2014": pictures - pictures // 5, "val2014": pictures // 5}
    cocolike.generate(src, n_train=counts["train2014"], n_val=counts["val2014"], seed=0)
    config = PipelineConfig(
        source=str(src), store=str(work / "store"), work_dir=str(work / "work"), device="cpu",
        backbone=BackboneConfig(backbone=backbone, weights="none", image_size=image_size),
        precision="fp32", compile_trunk=False,
    )  # fmt: skip
    rng, start, weekly, gone = random.Random(0), datetime.now(UTC), [], set()
    for week in range(weeks + 1):
        changed = change_source(src, week, share, counts, gone, rng) if week else 0
        run = run_stages(config)
        made = {"week": week, "version": run.version["version"], "changed": changed}
        made["decoded"] = sum(c["decoded"] for c in run.results["images"]["counts"].values())
        made["extracted"] = run.results["features"]["extracted"]
        made["unbounded_bytes"] = made_bytes(weekly, work)  # before retention
        found = gc(str(work / "store"), keep_last=keep_last, work_dir=work / "work",
                   now=start + timedelta(days=7 * week + 1))  # fmt: skip
        made["versions"] = len(found.kept)
        made["removed"] = len(found.removed) + len(found.stage_outputs)
        made["store_bytes"] = disk_bytes(work / "store")
        made["work_bytes"] = disk_bytes(work / "work")
        made["both_bytes"] = disk_bytes(work / "store", work / "work")
        weekly.append(made)
    return weekly


def made_bytes(weekly: list[dict], work: Path) -> int:
    """What store and work dir would hold without retention: last week's retained bytes plus
    what the latest rebuild added (every earlier week's additions are still there)."""
    now = disk_bytes(work / "store", work / "work")
    if not weekly:
        return now
    return weekly[-1]["unbounded_bytes"] + now - weekly[-1]["both_bytes"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weeks", type=int, default=10)
    p.add_argument("--pictures", type=int, default=400)
    p.add_argument("--share", type=float, default=0.01)
    p.add_argument("--keep-last", type=int, default=2)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--work", type=Path, default=Path("/tmp/colorfeat-weekly"))
    args = p.parse_args()
    weekly = simulate(
        args.work, weeks=args.weeks, pictures=args.pictures, share=args.share,
        keep_last=args.keep_last, image_size=args.image_size, backbone=args.backbone,
    )  # fmt: skip
    mib = 1 << 20
    print("| week | version | changed | decoded | extracted | versions kept | removed | store "
          "| work dir | both | both without retention |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for w in weekly:
        sizes = [w[k] / mib for k in ("store_bytes", "work_bytes", "both_bytes", "unbounded_bytes")]
        print(f"| {w['week']} | {w['version']} | {w['changed']} | {w['decoded']} "
              f"| {w['extracted']} | {w['versions']} | {w['removed']} | "
              + " | ".join(f"{v:.1f} MiB" for v in sizes) + " |")  # fmt: skip


if __name__ == "__main__":
    main()
