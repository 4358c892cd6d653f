"""`make demo`: the product end to end on the synthetic source, offline, on a small CPU machine.

1. `colorfeat run --source synthetic` builds and publishes a small feature store (Prefect flow);
2. `colortrain fit --preset small` trains the FiLM colorizer on it;
3. `colortrain evaluate` measures it on the held-out split;
4. two held-out pictures (one shape, two shapes) are saved as grayscale and `colortrain colorize`
   recolours each of them with two captions, the true one and one with other colours (for two
   shapes: their colours swapped), at full resolution.

Writes everything under OUT (default `demo/`) and prints where the store, checkpoint, metrics,
sample sheet and pictures are; its last line is the wall time and the CPU-minutes it took (a
busy machine's wall time follows from those). Run it again and the finished steps are reused.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

BIN = Path(sys.executable).parent
# Sized so the whole demo takes a few minutes on two CPU cores (see docs/operations.md).
DEFAULTS = {"limit": 1000, "image_size": 64, "epochs": 20, "seed": 0}
LABEL_LINES = 4  # caption lines above each picture of the contact sheet


def sh(*cmd: str, capture: bool = False) -> str:
    """Run a command (printed first, like a shell would); its stdout when `capture`."""
    shown = [Path(cmd[0]).name, *(f"'{a}'" if " " in a else a for a in cmd[1:])]
    print("$ " + " ".join(shown), flush=True)
    done = subprocess.run(cmd, stdout=subprocess.PIPE if capture else None, text=True)
    if done.returncode != 0:
        raise SystemExit(f"demo: `{cmd[0]} {cmd[1]}` failed with exit status {done.returncode}")
    return done.stdout or ""


def pick_held_out(source_root: Path) -> list[dict]:
    """A validation picture with one shape and one with two, each with a caption naming every
    colour and a second caption that changes them: another colour for the single shape, the two
    colours swapped between the two shapes (which only a model that binds colours can follow)."""
    from colorfeat.sources.synthetic import PALETTE, load_ground_truth
    from colorfeat.stages.captions import tokenize

    truth = load_ground_truth(source_root, "val")
    pictures = next(p for p in sorted(source_root.glob("val*")) if p.is_dir())
    annotations = source_root / "annotations" / f"captions_{pictures.name}.json"
    captions = json.loads(annotations.read_text())
    by_image: dict[int, list[str]] = {}
    for ann in captions["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann["caption"].strip())
    names = list(PALETTE)
    picked: dict[int, dict] = {}
    for record in truth["images"]:
        n = len(record["objects"])
        if n > 2 or n in picked:
            continue
        colours = [o["color"] for o in record["objects"]]
        named = [c for c in by_image.get(record["id"], []) if set(colours) <= set(tokenize(c))]
        if not named:
            continue
        if n == 1:
            changed = [names[(names.index(colours[0]) + 3) % len(names)]]  # far on the wheel
        else:
            changed = colours[::-1]
        picked[n] = {
            "file": pictures / record["file_name"],
            "id": record["id"],
            "captions": [named[0], _recolour(named[0], dict(zip(colours, changed, strict=True)))],
            "colours": ["-".join(colours), "-".join(changed)],
        }
        if len(picked) == 2:
            return [picked[1], picked[2]]
    raise SystemExit("demo: no one- and two-shape validation pictures with colour captions")


def _recolour(caption: str, change: dict[str, str]) -> str:
    """The caption with its colour words replaced, and "a"/"an" before them made to agree."""
    out: list[str] = []
    for word in caption.split():
        core = word.strip(".,").lower()
        if core not in change:
            out.append(word)
            continue
        new = change[core]
        out.append(word.lower().replace(core, new))
        if out[-2:-1] and out[-2].lower() in ("a", "an"):
            article = "an" if new[0] in "aeiou" else "a"
            out[-2] = article.capitalize() if out[-2][0].isupper() else article
    return " ".join(out)


def write_gray(src: Path, dst: Path) -> Path:
    """Save a picture as 8-bit grayscale (BT.601 luma), the input a user would have."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.open(src).convert("L").save(dst)
    return dst


def contact_sheet(rows: list[list[tuple[Path, str]]], dst: Path) -> Path:
    """One row per picture: the gray input, then its colorizations, each under its label."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default(size=13)
    gap, label = 8, 4 + 16 * LABEL_LINES
    images = [[(Image.open(p).convert("RGB"), text) for p, text in row] for row in rows]
    cell_w = max(im.width for row in images for im, _ in row)
    cell_h = max(im.height for row in images for im, _ in row) + label
    columns = max(len(row) for row in images)
    size = (columns * (cell_w + gap) + gap, len(images) * (cell_h + gap) + gap)
    sheet = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(images):
        for c, (im, text) in enumerate(row):
            x, y = gap + c * (cell_w + gap), gap + r * (cell_h + gap)
            draw.multiline_text((x, y), _wrap(text, cell_w, font), fill="black", font=font)
            sheet.paste(im, (x, y + label))
    sheet.save(dst)
    return dst


def _wrap(text: str, width: int, font) -> str:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and font.getlength(trial) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return "\n".join([*lines, line][:LABEL_LINES])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo"), help="where everything goes")
    parser.add_argument("--limit", type=int, default=DEFAULTS["limit"], help="synthetic pictures")
    parser.add_argument("--image-size", type=int, default=DEFAULTS["image_size"])
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    return parser.parse_args(argv)


def build_store(args: argparse.Namespace, work: Path, store: Path) -> str:
    """Step 1: `colorfeat run` on the synthetic source; the published version's path."""
    print("\n== 1. rebuild the feature store (Prefect flow, embedded API)", flush=True)
    return sh(
        str(BIN / "colorfeat"), "run", "--source", "synthetic", "--store", str(store),
        "--work-dir", str(work), "--limit", str(args.limit), "--image-size", str(args.image_size),
        "--backbone", "resnet101", "--layer", "layer2", "--weights", "none", "--device", "cpu",
        "--seed", str(args.seed), capture=True,
    ).strip().splitlines()[-1]  # fmt: skip


def train_and_evaluate(args: argparse.Namespace, version: str, run_dir: Path, out: Path) -> Path:
    """Steps 2 and 3: fit the small FiLM colorizer, evaluate it; the evaluation JSON file."""
    print("\n== 2. train the small FiLM colorizer", flush=True)
    sh(
        str(BIN / "colortrain"), "fit", "--store", version, "--out", str(run_dir),
        "--model", "film", "--preset", "small", "--epochs", str(args.epochs),
        "--device", "cpu", "--seed", str(args.seed), "--in-memory", "--resume",
    )  # fmt: skip
    print("\n== 3. evaluate on the held-out split", flush=True)
    metrics = out / "evaluation.json"
    checkpoint = str(run_dir / "checkpoint.pt")
    metrics.write_text(
        sh(
            str(BIN / "colortrain"),
            "evaluate",
            "--checkpoint",
            checkpoint,
            "--store",
            version,
            "--split",
            "val",
            "--json",
            capture=True,
        )  # fmt: skip
    )
    print(metrics.read_text())
    return metrics


def source_root(args: argparse.Namespace, work: Path) -> Path:
    """The generated source step 1 acquired (the acquire stage finds it done)."""
    from colorfeat.config import PipelineConfig
    from colorfeat.stages.runner import run_stages

    config = PipelineConfig(work_dir=str(work), limit=args.limit, seed=args.seed)
    return Path(run_stages(config, until="acquire").results["acquire"]["root"])


def colorize_held_out(root: Path, checkpoint: Path, out: Path) -> tuple[list, Path]:
    """Step 4: two held-out gray pictures, two captions each -> (pictures, contact sheet)."""
    print("\n== 4. colorize two held-out gray pictures, two captions each", flush=True)
    rows, pictures = [], []
    for pick in pick_held_out(root):
        gray = write_gray(pick["file"], out / "inputs" / f"{pick['id']}-gray.png")
        row = [(gray, "gray input")]
        for caption, colour in zip(pick["captions"], pick["colours"], strict=True):
            dst = out / "colorized" / f"{pick['id']}-{colour}.png"
            dst.parent.mkdir(parents=True, exist_ok=True)
            sh(str(BIN / "colortrain"), "colorize", str(gray), "--caption", caption,
               "--checkpoint", str(checkpoint), "--out", str(dst))  # fmt: skip
            row.append((dst, f'"{caption}"'))
            pictures.append((dst, caption))
        rows.append(row)
    return pictures, contact_sheet(rows, out / "colorized" / "contact-sheet.png")


def report(
    version: str, run_dir: Path, metrics: Path, probe: dict, pictures: list, sheet: Path
) -> None:
    """Where everything is, and the headline figures."""
    checkpoint = run_dir / "checkpoint.pt"
    sample_sheets = sorted((run_dir / "samples").glob("*.png"))
    print(f"store version        {version}")
    print(f"checkpoint           {checkpoint}")
    print(f"training metrics     {run_dir / 'metrics.json'}")
    print(f"evaluation           {metrics}  {_headline(json.loads(metrics.read_text()))}")
    print(
        f"caption colour acc.  {probe['caption_accuracy']:.0%} of {probe['objects']} held-out "
        f"shapes (swap test {probe['swap_accuracy']:.0%}, chance {probe['chance']:.0%})"
    )
    if sample_sheets:
        print(f"sample sheet         {sample_sheets[-1]}")
    print(f"gray inputs          {metrics.parent / 'inputs'}")
    for path, caption in pictures:
        print(f"colorized            {path}  <- {caption!r}")
    print(f"side by side         {sheet}")
    report_dir = metrics.parent / "report"
    sh(str(BIN / "colortrain"), "evaluate", "--checkpoint", str(checkpoint), "--store", version,
       "--device", "cpu", "--report", str(report_dir), capture=True)  # fmt: skip
    print(f"evaluation report    {report_dir / 'report.html'}")


def main(argv: list[str] | None = None) -> None:
    from colortrain.learnability import caption_colour_accuracy

    args = parse_args(argv)
    out = args.out.resolve()
    work, started = out / "work", time.perf_counter()
    version = build_store(args, work, out / "store")
    run_dir = out / "runs" / Path(version).name / "film-small"
    metrics = train_and_evaluate(args, version, run_dir, out)
    root = source_root(args, work)
    pictures, sheet = colorize_held_out(root, run_dir / "checkpoint.pt", out)
    probe = caption_colour_accuracy(run_dir / "checkpoint.pt", version, root, limit=200)
    report(version, run_dir, metrics, probe, pictures, sheet)
    print(f"\n== done: {_cost(started)}", flush=True)


def _cost(started: float) -> str:
    """Wall time since `started`, and the CPU time this process and its children spent."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    cpu = sum(r.ru_utime + r.ru_stime for r in (own, children))
    return f"{time.perf_counter() - started:.0f} s, {cpu / 60:.1f} CPU-minutes"


def _headline(evaluation: dict) -> str:
    metrics = evaluation.get("metrics", {})
    return ", ".join(f"{k} {v:.3g}" for k, v in metrics.items() if isinstance(v, int | float))


if __name__ == "__main__":
    main()
