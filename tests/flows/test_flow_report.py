"""The run summary and colour table a person reads, and when a failed task is retried."""

from __future__ import annotations

import errno
import html
import re

import httpx
from markdown_it import MarkdownIt

from colorfeat.errors import UserError
from colorfeat.retry import is_transient
from flows.report import colour_rows, summary_markdown

CAPTION_COUNTS = {
    "train": {"colour_words": {"red": 5, "blue": 2}},
    "val": {"colour_words": {"red": 1, "green": 2}},
    "images_kept": 9,
    "captions_kept": 10,
    "colour_words": {"blue": 2, "green": 2, "red": 6},
}
SUMMARY = {
    "version": "0123456789abcdef",
    "path": "/stores/x/versions/0123456789abcdef",
    "published": True,
    "source": {"spec": "synthetic", "identity": "synthetic-42"},
    "counts": {
        "captions": CAPTION_COUNTS,
        "images": {
            "train": {"candidates": 8, "images": 7, "captions": 8, "skipped": {"corrupt": 1}},
            "val": {"candidates": 2, "images": 2, "captions": 2, "skipped": {}},
        },
    },
    "stages": {
        "acquire": {"key": "synthetic-42", "executed": None, "seconds": 0.5},
        "features": {"key": "features-abc", "executed": False, "seconds": 0.01},
        "publish": {"key": "0123456789abcdef", "executed": True, "seconds": 1.25},
    },
}


def test_colour_rows_count_each_colour_per_split_most_frequent_first():
    assert colour_rows(CAPTION_COUNTS) == [
        {"colour": "red", "train": 5, "val": 1, "total": 6},
        {"colour": "blue", "train": 2, "val": 0, "total": 2},
        {"colour": "green", "train": 0, "val": 2, "total": 2},
    ]


def test_summary_names_the_version_counts_skipped_pictures_colours_and_stage_times():
    skipped = [{"file": "train2014/COCO_1.jpg", "reason": "corrupt: truncated JPEG"}]
    text = summary_markdown(SUMMARY, skipped)
    assert text.startswith("# Feature store version `0123456789abcdef`")
    assert "- published: `/stores/x/versions/0123456789abcdef`" in text
    assert "| train | 8 | 7 | 8 | 1 |" in text
    assert "| `train2014/COCO_1.jpg` | corrupt\\: truncated JPEG |" in text
    assert "red 6, blue 2, green 2" in text
    assert "| features | `features-abc` | no (reused) | 0.01 |" in text
    assert "| publish | `0123456789abcdef` | yes | 1.25 |" in text
    assert "| acquire | `synthetic-42` | checked | 0.50 |" in text


EVIL = [
    "a`b`.jpg",
    "![pwned](http://evil.example/x.png)",
    "<img src=x onerror=alert(1)>",
    "x | y | z.jpg",
    "``` fence\n# heading",
    "[link](javascript:alert(1))",
]


def test_file_names_and_reasons_cannot_break_out_of_the_skipped_table():
    skipped = [{"file": name, "reason": name} for name in EVIL]
    page = MarkdownIt("commonmark").enable("table").render(summary_markdown(SUMMARY, skipped))
    for tag in ("<img", "<a ", "<h1>heading", "<script"):
        assert tag not in page
    table = page[page.index("<th>file</th>") :]
    table = table[: table.index("</table>")]
    rows = re.findall(r"<tr>(.*?)</tr>", table, flags=re.S)  # the body rows
    assert len(rows) == len(EVIL)
    for name, row in zip(EVIL, rows, strict=True):
        cells = re.findall(r"<td>(.*?)</td>", row, flags=re.S)
        shown = name.replace("\n", " ")
        assert len(cells) == 2 and cells[0] == f"<code>{html.escape(shown, quote=False)}</code>"
        assert html.unescape(cells[1]) == shown


def test_a_reused_version_says_so_and_no_skips_say_none():
    text = summary_markdown({**SUMMARY, "published": False}, [])
    assert "reused (identical version already published)" in text
    assert "## Skipped images (0)\n\nNone." in text


def test_network_failures_are_transient_user_errors_are_not():
    assert is_transient(httpx.ConnectError("refused"))
    assert is_transient(ConnectionResetError(errno.ECONNRESET, "reset"))
    assert is_transient(TimeoutError())
    try:
        try:
            raise httpx.ReadTimeout("slow")
        except httpx.ReadTimeout as exc:
            raise UserError("download of train2014.zip failed") from exc
    except UserError as wrapped:
        assert is_transient(wrapped)
    assert not is_transient(UserError("--source must be synthetic, ..."))
    assert not is_transient(FileNotFoundError(errno.ENOENT, "missing"))
    assert not is_transient(ValueError("bad"))
