"""The captions stage: the captions that name a colour, per image, per store split.

Writes `captions.json` = {"lexicon": [...], "source_splits": {coco split: store split},
"splits": {store split: [{"image_id", "file", "captions": [str]}]}, "counts": {...}}.

Tokens are lowercase runs of letters and digits (an inner apostrophe stays: "man's"), so
word boundaries are respected: "redwood" is not "red", but "red-haired" holds "red". A caption is
kept when one of its tokens is exactly a lexicon word. Plurals do not count: in COCO, "oranges",
"greens" and "whites" are nearly always things (fruit, vegetables, clothes), not colours of things.
The adjective use of a fruit name ("orange slices") is kept; no word list can tell those apart.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from colorfeat.errors import UserError
from colorfeat.parallel import commit, completed, partial_dir
from colorfeat.sources.coco import read_split, split_limits
from colorfeat.stages.context import Context

_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens of a caption, punctuation stripped."""
    return _TOKEN.findall(text.lower())


def clean_caption(text: str) -> str:
    """A caption with surrounding and repeated whitespace (newlines included) collapsed."""
    return " ".join(text.split())


def load_lexicon(path: str | Path) -> frozenset[str]:
    """The colour words of a lexicon file: one a line, '#' comments and blank lines ignored."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UserError(f"cannot read the colour lexicon {path}: {exc.strerror or exc}") from None
    words = {ln.split("#", 1)[0].strip().lower() for ln in lines}
    words.discard("")
    if not words:
        raise UserError(f"the colour lexicon has no words: {path}")
    return frozenset(words)


def colour_words(text: str, lexicon: frozenset[str]) -> list[str]:
    """The lexicon words of a caption, in order, with repeats."""
    return [t for t in tokenize(text) if t in lexicon]


def select(images: list[dict], lexicon: frozenset[str]) -> tuple[list[dict], dict]:
    """Keep the captions naming a colour; drop images left with none. -> (kept images, counts)."""
    kept: list[dict] = []
    words: Counter[str] = Counter()
    seen = empty = n_kept = 0
    for img in images:
        captions = []
        for raw in img["captions"]:
            seen += 1
            text = clean_caption(raw)
            if not text:
                empty += 1
                continue
            found = colour_words(text, lexicon)
            if found:
                captions.append(text)
                words.update(found)
        if captions:
            kept.append({"image_id": img["image_id"], "file": img["file"], "captions": captions})
            n_kept += len(captions)
    counts = {
        "images_seen": len(images),
        "images_kept": len(kept),
        "captions_seen": seen,
        "captions_kept": n_kept,
        "captions_empty": empty,
        "colour_words": dict(sorted(words.items())),
    }
    return kept, counts


def captions_stage(
    source: dict, lexicon: str | Path, out_dir: Path, *, limit: int | None = None
) -> dict:
    """Read every split of an acquired source, keep colour captions -> {"path", "counts"}."""
    if done := completed(out_dir):
        return done
    lex = load_lexicon(lexicon)
    limits = split_limits(limit, list(source["splits"].values()))
    splits: dict[str, list[dict]] = {}
    counts: dict = {}
    words: Counter[str] = Counter()
    for coco_split, store in sorted(source["splits"].items()):
        data = read_split(source["root"], coco_split, limits[store])
        kept, c = select(data["images"], lex)
        c["captions_orphan"] = data["orphan_captions"]
        words.update(c["colour_words"])
        splits[store] = kept
        counts[store] = c
    counts["images_kept"] = sum(len(v) for v in splits.values())
    counts["captions_kept"] = sum(counts[s]["captions_kept"] for s in splits)
    counts["colour_words"] = dict(sorted(words.items()))
    if counts["images_kept"] == 0:
        raise UserError(f"no caption of {source['root']} names a colour of the lexicon {lexicon}")
    partial = partial_dir(out_dir)
    doc = {
        "lexicon": sorted(lex),
        "source_splits": source["splits"],
        "splits": splits,
        "counts": counts,
    }
    (partial / "captions.json").write_text(json.dumps(doc))
    result = {"path": str(Path(out_dir) / "captions.json"), "counts": counts}
    return commit(partial, out_dir, result)


def run(ctx: Context) -> dict:
    """The stage function of the table: `captions_stage` on the acquired source."""
    cfg = ctx.config
    return captions_stage(ctx.inputs["acquire"], cfg.lexicon, ctx.out_dir, limit=cfg.limit)


def load_captions(captions: dict) -> dict:
    """The document a captions stage wrote."""
    return json.loads(Path(captions["path"]).read_text())
