"""The report as a person sees it: opened from disk in a real headless Chromium (driven over the
DevTools pipe, tests/support/browser.py), screenshotted, and checked for what a person would check:
every GPU of the plan has a grid, every run has a bar (drawn, not zero-width), planned next to
actual, no console errors, nothing requested from the network."""

from __future__ import annotations

import struct

import pytest

from migbench.report import ReportBuilder
from tests.support.browser import Browser, find_chromium
from tests.support.cli import migbench
from tests.support.launchkit import TOY_CMD
from tests.support.reportkit import plan_sweep, seed_like_yaml, write_state
from tests.support.statedir import sd_of

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed here (.ci/install-chromium installs Debian's; it needs apt-get and root)"),
]

DRAWN = """(kind) => [...document.querySelectorAll(`rect[data-kind="${kind}"]`)]
  .filter(e => { const b = e.getBoundingClientRect(); return b.width > 0 && b.height > 0; })
  .map(e => e.getAttribute('data-run'))"""

TOY = """
version: 1
name: toy
launch: {retries: 0}
groups:
  - name: a
    command: {toy} --steps 3 --step-seconds 0.1 --memory 1GiB --seed {seed}
    parameters: {seed: [0, 1, 2, 3, 4, 5]}
    memory: 2GiB
    duration: 1s
    compute: 0.2
  - name: b
    command: {toy} --steps 4 --step-seconds 0.1 --memory 12GiB --seed {seed}
    parameters: {seed: [0, 1]}
    memory: 14GiB
    duration: 2s
    compute: 0.5
"""


def png_size(path) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    head = open(path, "rb").read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def check_page(html_path, plan, shot, *, actual: bool) -> dict:  # type: ignore[no-untyped-def]
    with Browser(width=1200, height=900) as b:
        visit = b.open(html_path)
        assert visit.errors == [], visit.errors
        assert visit.requests and all(u.startswith(("file:", "data:")) for u in visit.requests), visit.requests
        assert b.evaluate("document.documentElement.dataset.ready") == "1"  # the inline script ran
        gpus = b.evaluate(
            "[...document.querySelectorAll('figure.gpu')].filter(f => f.querySelector('svg').getBoundingClientRect().width > 0).map(f => +f.dataset.gpu)"
        )
        assert sorted(gpus) == plan.gpus()
        placed = {r.id for r in plan.placed_runs()}
        assert set(b.evaluate(f"({DRAWN})('planned')")) == placed
        if actual:
            assert set(b.evaluate(f"({DRAWN})('actual')")) == placed
        # a click lights the run up in the grid and on the timeline
        rid = sorted(placed)[0]
        b.evaluate(f"document.querySelector('rect[data-run=\"{rid}\"]').dispatchEvent(new MouseEvent('click', {{bubbles: true}}))")
        lit = b.evaluate(
            "[...document.querySelectorAll('.hl')].map(e => e.getAttribute('data-run') || e.getAttribute('data-grid-run') || e.getAttribute('data-mem-run'))"
        )
        assert set(lit) == {rid} and len(lit) >= 3  # its planned bar, its actual bar(s), its grid entry
        b.screenshot(shot)
        return {"load_s": visit.load_s}


def test_a_real_simulated_run_opens_in_chromium_with_every_gpu_and_every_bar(rig, tmp_path):
    r = rig(TOY.replace("{toy}", TOY_CMD), gpus=2)
    rc, out = r.launch(timeout=120)
    assert rc == 0, out
    html = tmp_path / "report.html"
    res = migbench("report", str(r.plan_path), "-o", str(html), "--grain-time-limit", "0.3")
    assert res.returncode == 0, res.stderr
    shot = tmp_path / "report.png"
    check_page(html, r.plan, shot, actual=True)
    assert png_size(shot) == (1200, 900)
    text = html.read_text()
    assert "this plan" in text and 'data-grain="7"' in text  # the grain lever, drawn


def test_the_seed_like_report_90_runs_4_gpus_planned_and_actual(tmp_path):
    plan = plan_sweep(tmp_path, seed_like_yaml(), time_limit_s=1.0)
    write_state(plan)
    html = tmp_path / "seed.html"
    ReportBuilder(plan, state_dir=sd_of(plan), grain=False).write(html)
    assert len(plan.runs) == 90 and len(plan.gpus()) == 4
    check_page(html, plan, tmp_path / "seed.png", actual=True)


def test_the_summarised_page_at_scale_opens_cleanly(tmp_path):
    plan = plan_sweep(tmp_path, seed_like_yaml(), time_limit_s=1.0)
    write_state(plan)
    html = tmp_path / "summary.html"
    ReportBuilder(plan, state_dir=sd_of(plan), grain=False).write(html, detail=False)
    with Browser() as b:
        visit = b.open(html)
        assert visit.errors == [] and all(u.startswith(("file:", "data:")) for u in visit.requests)
        assert b.evaluate("document.querySelector('svg.heat image').getBoundingClientRect().height") > 0
