"""Progress while `plan` works: a line on a terminal past a second, nothing in piped or JSON output."""

from __future__ import annotations

import io
import json
import time

import pytest
from rich.console import Console

from migbench.cli.progress import PlanProgress, describe
from migbench.planner.budget import Progress
from tests.support.cli import migbench


def test_the_line_shows_the_step_best_bound_gap_and_budget():
    p = Progress("bound", incumbent=30 * 3600.0, bound=27 * 3600.0, objective_name="makespan_s", spent=0.4)
    line = describe("solving", 3.21, p)
    assert line == "solving (proving a bound) · 3.2 s · best 1d6h · bound 1d3h · gap 10.0% · budget 40%"
    assert describe("writing the plan", 12.0, None) == "writing the plan · 12.0 s"
    tp = Progress("solving", incumbent=61, bound=64, objective_name="runs_at_once", spent=0.1)
    assert "best 61 runs at once · bound 64 runs at once · gap 4.7%" in describe("solving", 1.5, tp)


def test_on_a_terminal_the_line_appears_only_after_a_second():
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=True, width=120, color_system=None)
    fresh = PlanProgress(con, enabled=True, started=time.monotonic())
    con.print(fresh)
    assert buf.getvalue().strip() == ""
    late = PlanProgress(con, enabled=True, started=time.monotonic() - 5)
    late.update(Progress("search", incumbent=7200.0, bound=3600.0, spent=0.5))
    con.print(late)
    assert "solving (searching layouts and queues)" in buf.getvalue() and "gap 50.0%" in buf.getvalue()


@pytest.mark.slow
def test_piped_and_json_output_carry_no_progress(tmp_path):
    r = migbench("plan", "sweeps/phase2-ablations.yaml", "-o", str(tmp_path / "p.yaml"), "--json")
    assert r.returncode == 0, r.stderr
    json.loads(r.stdout)  # nothing but the JSON document
    assert "solving" not in r.stdout + r.stderr
