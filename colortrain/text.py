"""Untrusted text (captions, file names, config values) made safe to draw and to write.

A caption is whatever a source or a user typed: it is drawn literally (matplotlib must not read
`$...$` as mathematics), written into HTML escaped, written into Markdown with every punctuation
mark escaped and no line breaks, and shortened before it is wrapped, so a 20,000-character caption
costs what a long sentence costs. File names in Markdown tables go in code spans that nothing
can close early.
"""

from __future__ import annotations

import html
import re
import textwrap
from typing import Any

MAX_TEXT_CHARS = 300  # a value shown in a card or a table cell, at most
ELLIPSIS = "…"
# CommonMark lets any ASCII punctuation be backslash-escaped; escaping all of it leaves no
# emphasis, link, image, code span, HTML tag, entity or table pipe to begin.
_MARKDOWN_SPECIAL = re.compile(r"([!-/:-@\[-`{-~])")
_LINE_BREAKS = re.compile(r"[\r\n\t\v\f\u2028\u2029\x85]+")


def shorten(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """`text` cut to at most `limit` characters, an ellipsis marking the cut."""
    text = str(text)
    return text if len(text) <= limit else text[: max(0, limit - 1)] + ELLIPSIS


def wrapped_lines(text: str, width: int, max_lines: int) -> str:
    """At most `max_lines` lines of at most `width` characters, an ellipsis where it is cut."""
    text = str(text)
    cap = 2 * width * max_lines  # what max_lines lines hold, twice: room for runs of spaces
    flat = " ".join(text[:cap].split())
    lines = textwrap.wrap(flat, width) or [""]
    if len(lines) > max_lines or (len(text) > cap and text[cap:].strip()):
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: width - 1] + ELLIPSIS
    return "\n".join(lines)


def literal(**text_kwargs: Any) -> dict[str, Any]:
    """Keywords for a matplotlib text call that draw the string as written (no mathtext)."""
    return {**text_kwargs, "parse_math": False}


def html_text(text: str, limit: int | None = None) -> str:
    """Text for an HTML element or attribute, escaped (quotes too), shortened if `limit`."""
    text = str(text)
    return html.escape(shorten(text, limit) if limit else text, quote=True)


def markdown_text(text: Any, limit: int = MAX_TEXT_CHARS) -> str:
    """Text for Markdown (a paragraph or a table cell): one line, every punctuation escaped."""
    one_line = _LINE_BREAKS.sub(" ", shorten(str(text), limit))
    return _MARKDOWN_SPECIAL.sub(r"\\\1", one_line)


def markdown_code(text: Any, limit: int = MAX_TEXT_CHARS) -> str:
    """Text as a Markdown code span (shown as written, nothing interpreted) that a table cell
    holds: one line, a fence longer than any run of backticks in it, pipes escaped."""
    one_line = _LINE_BREAKS.sub(" ", shorten(str(text), limit)).replace("|", "\\|")
    fence = "`" * (1 + max((len(run) for run in re.findall("`+", one_line)), default=0))
    pad = " " if len(fence) > 1 or one_line.startswith(" ") else ""
    return f"{fence}{pad}{one_line}{pad}{fence}"
