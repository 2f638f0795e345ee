"""`migbench report`, `migbench grain` and `migbench status --watch` from the command line (in-process)."""

from __future__ import annotations

import json
import os

import pytest

from tests.report.test_data import SMALL
from tests.support.cli import migbench
from tests.support.reportkit import plan_sweep, write_state


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    return plan_sweep(tmp_path_factory.mktemp("cli-report"), SMALL, time_limit_s=0.5)


def test_report_writes_one_html_file_next_to_the_plan(plan):
    write_state(plan)
    res = migbench("report", str(plan.path), "--no-grain")
    assert res.returncode == 0, res.stderr
    out = os.path.join(os.path.dirname(str(plan.path)), "small.report.html")
    assert f"report written to {out}" in res.stdout.replace("\n", "")
    html = open(out).read()
    assert html.startswith("<!DOCTYPE html>") and 'data-gpu="1"' in html


def test_report_watch_on_a_finished_sweep_writes_once_and_says_it_is_final(plan, tmp_path):
    write_state(plan)
    res = migbench("report", str(plan.path), "--no-grain", "--watch", "-o", str(tmp_path / "r.html"))
    assert res.returncode == 0 and "the report is final" in res.stdout
    assert "http-equiv" not in (tmp_path / "r.html").read_text()


def test_report_of_a_missing_plan_is_an_error_not_a_traceback(tmp_path):
    res = migbench("report", str(tmp_path / "nope.yaml"))
    assert res.returncode == 1 and res.stderr.startswith("Error:") and "Traceback" not in res.stderr


@pytest.mark.slow
def test_grain_json_lists_every_grain_and_marks_the_finest_chosen(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(SMALL)
    res = migbench("grain", str(f), "--json", "--time-limit", "0.3")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert [g["grain"] for g in doc["grains"]] == [7, 4, 3, 2, 1]
    assert [g["chosen"] for g in doc["grains"]][-1] is True and doc["gpus"] == 2
    assert doc["grains"][0]["instances"] == 2
    table = migbench("grain", str(f), "--time-limit", "0.3", env={"MIGBENCH_WIDTH": "160"})
    assert "7g (coarsest)" in table.stdout and "◀ chosen" in table.stdout


def test_status_watch_after_the_launcher_exited_draws_the_grid_once(plan):
    write_state(plan)
    res = migbench("status", str(plan.path), "--watch", env={"MIGBENCH_WIDTH": "160"})
    assert res.returncode == 0, res.stderr
    assert "GPU 0 (A100-SXM4-80GB)" in res.stdout and "GPU 1 (A100-SXM4-80GB)" in res.stdout
    assert f"{len(plan.runs)}/{len(plan.runs)} done" in res.stdout
    assert "all runs finished" in res.stdout and "nothing to follow" in res.stdout


def test_status_watch_with_json_is_a_usage_error_naming_both(plan):
    """Guards: `status --watch --json` was accepted and one of the two silently ignored."""
    write_state(plan)
    for args in (["--watch", "--json"], ["--json", "--watch"]):
        res = migbench("status", str(plan.path), *args)
        assert res.returncode == 2 and "--watch" in res.stderr and "--json" in res.stderr and not res.stdout, res.stdout + res.stderr


def test_live_view_of_a_running_sweep_shows_progress_and_an_eta(plan):
    from rich.console import Console

    from migbench.cli.live import live_view
    from migbench.launch.status import status_doc
    from migbench.report.progress import SweepProgress

    w = write_state(plan, done_fraction=0.5, alive_pid=os.getpid())
    snap = SweepProgress(plan).snapshot(status_doc(w.state_dir))
    con = Console(width=160, record=True, color_system=None)
    con.print(live_view(snap))
    text = con.export_text()
    assert "▶" in text and "%" in text and "ETA" in text and "launcher running" in text
    assert snap.running > 0 and snap.queued > 0 and snap.eta_s is not None and snap.eta_s > 0


@pytest.mark.slow
def test_grain_piped_at_80_columns_cuts_nothing(tmp_path):
    """Issue 22 item 4: `grain` cut its labels and layout strips with "…" at 80 columns."""
    f = tmp_path / "s.yaml"
    f.write_text(SMALL)
    table = migbench("grain", str(f), "--time-limit", "0.3", env={"MIGBENCH_WIDTH": "80"})
    assert table.returncode == 0 and "…" not in table.stdout, table.stdout
    assert "7g (coarsest)" in table.stdout and "◀ chosen" in table.stdout
