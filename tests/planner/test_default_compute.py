"""A run without `compute` follows the bench's rule (issue 20, item 1): it needs no more compute than
the smallest instance that holds its memory, so the planner partitions instead of queueing on 7g."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.support.cli import migbench

SWEEP = """version: 1
name: wb
fleet: [{gpu: A100-SXM4-80GB, count: 1}]
groups:
  - name: g
    command: python3 -c pass --seed {seed}
    parameters: {seed: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]}
    memory: 6GiB
    duration: 2h
"""


def _plan(tmp_path: Path, text: str) -> tuple[dict, str]:
    (tmp_path / "wb.yaml").write_text(text)
    r = migbench("plan", "wb.yaml", "-o", "wb.plan.yaml", "--no-runs", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    return yaml.safe_load((tmp_path / "wb.plan.yaml").read_text()), r.stdout


def test_duration_only_sweep_is_partitioned_to_memory_sized_instances(tmp_path: Path) -> None:
    """Bug: 12 x 6 GiB with `duration: 2h` and no `compute` was planned as one 7g.80gb running 12 waves."""
    doc, out = _plan(tmp_path, SWEEP)
    assert len(doc["instances"]) == 7
    assert all(i["profile"].startswith("1g.") for i in doc["instances"])
    assert doc["solver"]["makespan_s"] == 4 * 3600
    assert all(r["compute_source"] == "default" and abs(r["compute"] - 1 / 7) < 1e-6 for r in doc["runs"])
    flat = " ".join(out.split())
    assert "group g: 12 run(s) give no `compute`" in flat and "1g.10gb" in flat
    assert "give the group `compute:` to change this" in flat


def test_declared_compute_is_kept_and_a_compute_bound_run_may_take_a_whole_gpu(tmp_path: Path) -> None:
    """A declared `compute: 1.0` is the user's word: slicing cannot make such runs finish sooner."""
    doc, out = _plan(tmp_path, SWEEP + "    compute: 1.0\n")
    assert all(r["compute_source"] == "declared" and r["compute"] == 1.0 for r in doc["runs"])
    assert doc["solver"]["makespan_s"] == 24 * 3600
    assert "give no `compute`" not in out
