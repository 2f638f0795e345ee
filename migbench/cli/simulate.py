"""`migbench simulate`: the sweep played forward under the plan's duration model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from migbench.cli.common import console, load_plan
from migbench.cli.render import simulate_view
from migbench.plan import Plan


def simulate_cmd(
    plan_file: Annotated[Path, typer.Argument(help="The plan file.")],
    compare: Annotated[bool, typer.Option("--compare", help="Also run the sweep under the baselines (no MIG, mig-parted layouts, greedy).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    no_lend: Annotated[bool, typer.Option("--no-lend", help="Idle instances do not take runs queued elsewhere.")] = False,
    sweep: Annotated[
        Optional[str], typer.Option("--sweep", help="Of a bench plan (`migbench submit`): when this sweep's runs end, the bench's others played beside.")
    ] = None,
) -> None:
    from migbench.forecast.compare import compare_plan
    from migbench.forecast.simulate import simulate_plan

    plan = load_plan(plan_file)
    if plan.solver.status == "BENCH" or sweep is not None:
        from migbench.launch.bench import sweep_view

        mine = None if sweep is None else {r.id for r in sweep_view(plan, sweep).runs}
        _simulate_bench(plan, as_json, sweep, mine)
        return
    reports = compare_plan(plan, lend=not no_lend) if compare else [simulate_plan(plan, lend=not no_lend)]
    if as_json:
        typer.echo(json.dumps({"plan": str(plan_file), "simulations": [r.to_dict() for r in reports]}, indent=2))
        return
    con = console()
    con.print(simulate_view(reports, width=con.width))


def _simulate_bench(plan: Plan, as_json: bool, sweep: str | None = None, mine: set[str] | None = None) -> None:
    """A host's bench: the runs it has not finished, played from now under its scheduler; with
    `sweep`, when that sweep's runs (`mine`) end among them."""
    from migbench.forecast.living import play_bench
    from migbench.launch.benchmode import fleet_of
    from migbench.launch.store import FINAL_STATES, read_state
    from migbench.report.svg import fmt_t
    from migbench.state import StateDir, require_trusted_state

    sd = StateDir.of(plan)
    require_trusted_state(sd, plan)
    rows = read_state(sd, lambda st: st.runs()) if sd.db.exists() else {}
    done = {rid for rid, r in rows.items() if r.state in FINAL_STATES or r.state == "abandoned"}
    res = play_bench(plan, fleet_of(plan), frozenset(done))
    left = len(plan.runs) - len(done & {r.id for r in plan.runs})
    doc: dict[str, object] = {
        "plan": plan.path,
        "bench": True,
        "runs_left": left,
        "makespan_s": res.makespan_s,
        "recuts": sum(len(t) for t in res.recut_times.values()),
        "compute_use": res.average(),
        "unrunnable": list(res.unrunnable),
    }
    if sweep is not None and mine is not None:
        ends = [rec.end_s for rid, rec in res.runs.items() if rid in mine]
        doc["sweep"] = {
            "name": sweep,
            "runs": len(mine),
            "runs_left": len(mine - done),
            "end_s": max(ends, default=0.0),
            "unrunnable": [rid for rid in res.unrunnable if rid in mine],
        }
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    con = console()
    con.print(
        f"the host's bench: {left} run(s) not finished, played from now under its scheduler (re-cuts at each start and end, "
        f"from the layouts it has): makespan {fmt_t(res.makespan_s)}, {doc['recuts']} re-cut(s), compute use {100 * res.average():.0f} %"
    )
    if sweep is not None and mine is not None:
        one = doc["sweep"]
        assert isinstance(one, dict)
        con.print(f"sweep {sweep}: {one['runs_left']} of its {one['runs']} run(s) not finished; the last ends in {fmt_t(one['end_s'])} from now")
    if res.unrunnable:
        con.print(f"{len(res.unrunnable)} run(s) never start: {', '.join(res.unrunnable[:5])}")


def register(app: typer.Typer) -> None:
    app.command("simulate", help="Play the whole sweep forward under the plan's duration model; --compare shows the baselines.")(simulate_cmd)
