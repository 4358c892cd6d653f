"""A weekly schedule with retention stays within a bounded disk: ten rebuilds, simulated small
(benchmarks/weekly.py, whose full run is the walk-through in docs/operations.md)."""

from __future__ import annotations

import pytest

from benchmarks.weekly import simulate


@pytest.mark.slow
def test_ten_weekly_rebuilds_with_retention_keep_the_disk_bounded(tmp_path):
    weekly = simulate(tmp_path, weeks=10, pictures=30, share=0.07, keep_last=2, image_size=32)
    assert [w["week"] for w in weekly] == list(range(11))
    assert len({w["version"] for w in weekly}) == 11  # every week's change made a new version
    for w in weekly[1:]:
        assert w["versions"] <= 2
        # New and edited pictures, and the pictures last week's edit changed (the generator
        # writes every file again, undoing it): never the whole source again.
        assert 0 < w["extracted"] <= w["decoded"] <= 3 * w["changed"], w
    both = [w["both_bytes"] for w in weekly]
    assert max(both[3:]) <= 1.25 * both[2], both
    assert weekly[-1]["unbounded_bytes"] > 3 * both[-1]  # without retention it keeps growing
