"""Pictures of a sweep: the layout grid, the timeline (planned and actual), use over time, the grain
lever and memory, as one self-contained HTML file (`migbench report`), and the live progress that
`migbench status --watch` draws.

Modules: `data` (plan + launch state + duration model -> the values each picture shows), `grain`
(the sweep planned at every partition grain), `progress` (the live view's runs, progress and ETA),
`charts` and `svg` (inline SVG by hand), `html` (the page).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from migbench.fsutil import write_text_atomic
from migbench.plan import Plan
from migbench.report.data import DETAIL_MAX_RUNS, PlanSide, Report, build_report, plan_side
from migbench.report.grain import GrainLever, grain_lever, lever_of_plan
from migbench.report.html import render
from migbench.state import StateDir


@dataclass
class Page:
    report: Report
    html: str


class ReportBuilder:
    """Builds a plan's report; the plan's side (its replay, the grain lever) is computed once and
    reused by every rebuild, so a live report re-reads only the launch state."""

    def __init__(
        self,
        plan: Plan,
        *,
        state_dir: StateDir,
        grain: bool | None = None,
        grain_time_limit_s: float = 2.0,
        peaks: Mapping[str, tuple[int, str]] | None = None,
        say: Callable[[str], None] | None = None,
        sweep: str | None = None,
    ):
        """`peaks`: measured peaks from elsewhere than launch.db (run id -> (MiB, source)), e.g. a
        footprints file; launch.db's win where both have one. `state_dir`: the command's `StateDir`.
        `sweep`: of a bench plan, that sweep's runs only (`launch.bench.sweep_view`), over its own span."""
        self.sweep = sweep
        self.title = None
        if sweep is not None:
            from migbench.launch.bench import sweep_view

            self.title = f"{plan.name}: sweep {sweep}"
            plan = sweep_view(plan, sweep)
        self.plan = plan
        self.peaks = peaks
        self.state_dir = state_dir
        self.side: PlanSide = plan_side(plan)
        self.lever: GrainLever | None = None
        self.grain_note = "not computed for this page (`migbench report --no-grain`)"
        if grain is None and len(plan.runs) > DETAIL_MAX_RUNS:
            grain = False
            self.grain_note = (
                f"not computed by default above {DETAIL_MAX_RUNS:,} runs: it plans the sweep once per grain (minutes at "
                "10,000 runs on 512 GPUs); `migbench report --grain` computes it"
            )
        if grain is not False and plan.placed_runs():
            self.lever = lever_of_plan(plan, self.side.sim, time_limit_s=grain_time_limit_s, say=say)

    def build(self, *, refresh_s: int | None = None, detail: bool | None = None, now: float | None = None) -> Page:
        report = build_report(
            self.plan,
            state_dir=self.state_dir,
            side=self.side,
            detail=detail,
            now=now,
            peaks=self.peaks,
            title=self.title,
            own_runs_only=self.sweep is not None,
        )
        report.grain = self.lever
        report.grain_note = self.grain_note
        if refresh_s and report.launch is not None and report.launch.running:
            report.refresh_s = refresh_s
        return Page(report, render(report))

    def write(self, out: str | os.PathLike[str], **kw: object) -> Page:
        page = self.build(**kw)  # type: ignore[arg-type]
        write_text_atomic(Path(out), page.html, raw_names=True)
        return page


__all__ = ["GrainLever", "Page", "Report", "ReportBuilder", "build_report", "grain_lever", "render"]
