"""What a person wants to see after a rebuild, as Prefect artifacts: a summary and colour counts."""

from __future__ import annotations

from typing import Any

import zarr
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from colortrain.text import markdown_code as code
from colortrain.text import markdown_text as text
from flows.summary import skip_reasons

_MAX_SKIPPED_LISTED = 50
_DID_WORK = {True: "yes", False: "no (reused)", None: "checked"}


def colour_rows(caption_counts: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per colour word: its kept-caption mentions per store split and in all, most first."""
    splits = sorted(
        k for k, v in caption_counts.items() if isinstance(v, dict) and "colour_words" in v
    )
    rows = []
    for word, total in caption_counts.get("colour_words", {}).items():
        row: dict[str, Any] = {"colour": word}
        row.update({s: caption_counts[s]["colour_words"].get(word, 0) for s in splits})
        row["total"] = total
        rows.append(row)
    return sorted(rows, key=lambda r: (-r["total"], r["colour"]))


def summary_markdown(summary: dict[str, Any], skipped: list[dict[str, str]]) -> str:
    """The rebuild summary: version, counts, skipped images with reasons, colours, stage timings.

    File names, reasons, paths and words come from the source: every one is escaped (`text`) or
    put in a code span (`code`), so none can add a link, an image, HTML or a table cell.
    """
    verb = "published" if summary["published"] else "reused (identical version already published)"
    lines = [
        f"# Feature store version {code(summary['version'])}",
        "",
        f"- {verb}: {code(summary['path'])}",
        f"- source: {code(summary['source']['spec'])} "
        f"(identity {code(summary['source']['identity'])})",
        "",
        "## Counts",
        "",
        "| split | candidate images | kept images | captions | skipped |",
        "|---|---:|---:|---:|---:|",
    ]
    for split, c in sorted(summary["counts"]["images"].items()):
        n_skipped = sum(c.get("skipped", {}).values())
        lines.append(
            f"| {text(split)} | {c.get('candidates', '')} | {c.get('images', '')} "
            f"| {c.get('captions', '')} | {n_skipped} |"
        )
    cap = summary["counts"]["captions"]
    lines += [
        "",
        f"Images with a colour caption: {cap.get('images_kept')}; "
        f"colour captions kept: {cap.get('captions_kept')}.",
        "",
        f"## Skipped images ({len(skipped)})",
        "",
    ]
    if skipped:
        reasons = skip_reasons(summary["counts"]["images"])
        lines += ["By reason: " + ", ".join(f"{r} {n}" for r, n in reasons.items()) + ".", ""]
        lines += ["| file | reason |", "|---|---|"]
        shown = skipped[:_MAX_SKIPPED_LISTED]
        lines += [f"| {code(s.get('file'))} | {text(s.get('reason'))} |" for s in shown]
        if len(skipped) > _MAX_SKIPPED_LISTED:
            lines.append(f"| ... | {len(skipped) - _MAX_SKIPPED_LISTED} more |")
    else:
        lines.append("None.")
    lines += ["", "## Colour words in kept captions", ""]
    rows = colour_rows(cap)
    lines.append(", ".join(f"{text(r['colour'])} {r['total']}" for r in rows) or "None.")
    lines += ["", "## Stages", "", "| stage | key | did work | seconds |", "|---|---|---|---:|"]
    for name, s in summary["stages"].items():
        did = _DID_WORK[s["executed"]]
        lines.append(f"| {text(name)} | {code(s['key'])} | {did} | {s['seconds']:.2f} |")
    return "\n".join(lines) + "\n"


def skipped_images(images: dict[str, Any]) -> list[dict[str, str]]:
    """The skipped pictures and reasons the images stage recorded in its Zarr attrs."""
    return list(zarr.open_group(images["path"], mode="r").attrs.get("skipped", []))


@task(name="report")
def report_rebuild(summary: dict[str, Any], images: dict[str, Any]) -> str:
    """Leave the summary (markdown) and per-colour counts (table) as artifacts of this run."""
    markdown = summary_markdown(summary, skipped_images(images))
    create_markdown_artifact(
        markdown, key="rebuild-summary", description=f"rebuild of {summary['version']}"
    )
    create_table_artifact(
        colour_rows(summary["counts"]["captions"]),
        key="colour-counts",
        description="kept-caption mentions of each colour word, per store split",
    )
    return markdown
