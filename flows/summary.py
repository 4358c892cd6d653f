"""What a rebuild says about its pictures: how many were kept, and each skip reason's count.

From the images stage's per-split counts (`{split: {"candidates", "images", "skipped": {reason:
n}}}`, as a version's `counts.images` attrs hold them); read by the run's stderr summary, its
Prefect artifact and `WORK/runs.jsonl`. No Prefect.
"""

from __future__ import annotations

from collections import Counter
from typing import Any


def skip_reasons(image_counts: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Every reason a picture was skipped, with its count over all splits; most frequent first."""
    total: Counter[str] = Counter()
    for split in image_counts.values():
        total.update(split.get("skipped", {}))
    return dict(sorted(total.items(), key=lambda item: (-item[1], item[0])))


def pictures_line(image_counts: dict[str, dict[str, Any]]) -> str:
    """One line: pictures kept of the candidates, and the skips by reason."""
    kept = sum(split.get("images", 0) for split in image_counts.values())
    candidates = sum(split.get("candidates", 0) for split in image_counts.values())
    reasons = skip_reasons(image_counts)
    line = f"kept {kept} of {candidates} pictures with a colour caption"
    if not reasons:
        return line + "; skipped none"
    skipped = sum(reasons.values())
    return line + f"; skipped {skipped}: " + ", ".join(f"{r} {n}" for r, n in reasons.items())
