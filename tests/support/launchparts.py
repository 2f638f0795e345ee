"""Helpers for the unit tests of the launcher's parts: a small plan, a journal on a fresh state
directory, and the parts put together as the supervisor does (no process, no host)."""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from migbench.duration import DurationModel
from migbench.launch.admission import Admission
from migbench.launch.children import Active, Children
from migbench.launch.journal import Journal
from migbench.launch.keeper import Keeper
from migbench.launch.outcomes import Outcomes
from migbench.launch.spec import Outcome
from migbench.plan import Assignment, Plan, PlanGpu, PlanInstance, PlanRun, SolverInfo, Unplaced
from migbench.sweep.model import LaunchSettings
from migbench.types import InstanceRef

SMALL = PlanInstance(0, "1g.10gb", 0, 9728, 1 / 7, ("a", "b"))
LARGE = PlanInstance(0, "3g.40gb", 4, 40192, 3 / 7, ("c",))


def run(rid: str, inst: PlanInstance = SMALL, **kw) -> PlanRun:  # type: ignore[no-untyped-def]
    base = dict(group="g", memory_mib=1024, memory_source="", argv=("true",), shell=False, env={}, workdir=".", params={})
    base.update(duration_s=None, compute=1.0, max_runs_per_instance=1, profiles=None, retries=None, timeout_s=None)
    base.update(kw)
    return PlanRun(id=rid, at=Assignment(inst.gpu, inst.profile, inst.start, 0), **base)  # type: ignore[arg-type]


def plan(
    tmp: Path,
    runs: list[PlanRun] | None = None,
    instances: list[PlanInstance] | None = None,
    unplaced: list[Unplaced] | None = None,
    **launch,  # type: ignore[no-untyped-def]
) -> Plan:
    p = Plan(
        name="t",
        sweep_file=None,
        sweep_sha256="",
        fleet=[PlanGpu(0, "A100-SXM4-80GB")],
        instances=instances if instances is not None else [SMALL, LARGE],
        runs=runs if runs is not None else [run("a"), run("b"), run("c", LARGE)],
        unplaced=unplaced or [],
        solver=SolverInfo("OPTIMAL", "x", 0, 0, 0.0),
        duration_model=DurationModel(),
        launch=LaunchSettings(**{"retries": 1, "backoff_s": 5.0, "flapping_max": 0, **launch}),
        models={},
    )
    p.path = str(tmp / "plan.yaml")
    return p


def journal(tmp: Path, stack: ExitStack, said: list[str] | None = None) -> Journal:
    """A journal on a fresh state directory `tmp/state` (its database open until `stack` closes)."""
    keeper = Keeper(tmp / "state")
    keeper.open(stack)
    return Journal(keeper, (said if said is not None else []).append)


@dataclass
class Parts:
    journal: Journal
    admission: Admission
    children: Children
    outcomes: Outcomes
    said: list[str]
    unbound: set[str]


def parts(tmp: Path, stack: ExitStack, p: Plan | None = None, stop_reason: str | None = None) -> Parts:
    """The parts as the supervisor puts them together, the plan admitted."""
    p = p or plan(tmp)
    said: list[str] = []
    j = journal(tmp, stack, said)
    unbound: set[str] = set()
    adm = Admission(j, unbound=unbound, t0=time.time())
    adm.admit(p, time.time())
    ch = Children(said.append, 0.1)
    out = Outcomes(
        j,
        adm,
        ch,
        said.append,
        backoff_s=p.launch.backoff_s,
        flap_window_s=p.launch.flapping_window_s,
        flap_max=p.launch.flapping_max,
        plan_file="plan.yaml",
        stop_reason=lambda: stop_reason,
    )
    return Parts(j, adm, ch, out, said, unbound)


def started(ps: Parts, rid: str, instance: str, adir: Path | None = None) -> Active:
    """Run `rid` as the supervisor leaves it once started on `instance` (no process behind it)."""
    row = ps.journal.rows[rid]
    row.attempt += 1
    row.state, row.instance, row.start_at = "running", InstanceRef.parse(instance), time.time()
    a = Active(rid, row.attempt, instance, adir or Path("/nonexistent") / rid, 0, None)
    ps.children.active[rid] = a
    return a


def outcome(returncode: int | None = 0, *, sig: int | None = None, oom: bool = False, timed_out: bool = False, exec_error: str | None = None) -> Outcome:
    return Outcome(returncode, returncode if sig is None else None, sig, oom, "CUDA out of memory" if oom else None, timed_out, exec_error, time.time())
