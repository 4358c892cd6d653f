"""Schema paths are named once: only colorfeat.store.schema and the stages that write them
spell them."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from colorfeat.store import schema

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("colorfeat", "colortrain", "flows", "benchmarks")
# The schema module; writers, validation, planning and the dry run use its names.
WRITERS = {
    "colorfeat/store/schema.py",
}
# A schema path inside a string: a table, a caption array, or a per-split array after a split.
SCHEMA_PATH = re.compile(
    r"\b(vocab/(tokens|embeddings)|lab/(grid|prior|weights)"
    r"|captions/(image_index|text|tokens|length))\b"
    r"|(\{\}|\btrain|\bval)/(rgb|ab_bins|image_id|captions|features)\b"
)


def _strings(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, text) of every string literal but docstrings; an f-string's fields become {}."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            skip.add(id(body[0].value))  # a docstring, if it is a string
        if isinstance(node, ast.JoinedStr):
            skip.update(id(v) for v in node.values)
            yield (
                node.lineno,
                "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values),
            )
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node.lineno, node.value


def schema_literals(root: Path) -> list[str]:
    """`path:line: text` of each schema path spelled outside WRITERS."""
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel in WRITERS:
                continue
            for line, text in _strings(ast.parse(path.read_text(), rel)):
                if SCHEMA_PATH.search(text):
                    found.append(f"{rel}:{line}: {text!r}")
    return found


def test_schema_paths_are_spelled_only_by_the_schema_module_and_writers() -> None:
    assert schema_literals(REPO) == []


def test_the_scan_finds_a_path_spelled_elsewhere(tmp_path: Path) -> None:
    (tmp_path / "colortrain").mkdir()
    (tmp_path / "colortrain" / "bad.py").write_text(
        '"""Reads vocab/tokens (a docstring may name it)."""\n'
        'def f(g, split):\n    return g["lab/weights"], g[f"{split}/captions/text"]\n'
    )
    assert schema_literals(tmp_path) == [
        "colortrain/bad.py:3: '{}/captions/text'",
        "colortrain/bad.py:3: 'lab/weights'",
    ]


def test_paths_are_built_from_the_names() -> None:
    assert schema.split_path("val", schema.CAPTION_TEXT) == "val/captions/text"
    assert schema.features_path("train", "resnet101.layer2") == "train/features/resnet101.layer2"
    assert set(schema.SPLIT_ARRAYS) == {
        schema.IMAGE_ID, schema.RGB, schema.AB_BINS, schema.CAPTION_IMAGE_INDEX,
        schema.CAPTION_TEXT, schema.CAPTION_TOKENS, schema.CAPTION_LENGTH,
    }  # fmt: skip
