"""The planner's effort, its clock and its progress reports.

`--time-limit S` is seconds of wall time for the whole command, as a user reads it. A plan must not
depend on the machine's speed or load, so the planner decides nothing from the clock:

- it gets a deterministic **work budget** of `WORK_SHARE * S` reference seconds (what the work takes
  on the calibration machine: 2 cores, idle, one CP-SAT worker), less what the rest of the command
  costs there for a sweep of that size (`COMMAND_S_PER_RUN`: reading and expanding the sweep,
  assembling and writing the plan), so that the whole command, not only the planner, takes about
  `WORK_SHARE` of the limit on that machine; every phase sizes its effort
  from that budget and the problem's size — CP-SAT deterministic time, LP bisection steps, layouts
  evaluated, schedule variants, local-search evaluations, exact-search states. Each phase charges a
  deterministic estimate of its cost (`charge`), so what one phase leaves unused goes to the next;
- the clock serves one purpose: a **hard stop** at the limit, less what writing the plan needs
  (`deadline`). Only when it fires does the search end early, with the best plan found so far, and
  the plan then says so (`WALL_STOP_WARNING`): it may differ on another run.

So on an idle machine the command takes about half the limit, and under load the same plan comes
out more slowly until the load is so heavy that the hard stop fires.

`--work W` sets the work budget itself (W reference seconds) instead of deriving it from the limit:
with a generous `--time-limit` beside it, the plan is the same on any machine that finishes within
the limit, however loaded. `$MIGBENCH_DEADLINE_SLACK=K` keeps the budget the limit gives and moves
only the hard stop to K times the limit (the test suite sets it: no test depends on the machine's
speed or load).
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ortools.sat.python import cp_model

WORK_SHARE = 0.5  # the deterministic budget, as a share of the limit
MIN_WORK = 0.05  # reference seconds, whatever the limit
RESCUE_WALL_S = 30.0  # the rescue solver's wall-clock safety net, plus ten times the limit
WALL_STOP_WARNING = "stopped at the wall-clock limit; this plan may not be reproducible"

# Costs in reference seconds, calibrated with `time.process_time()` on the calibration machine
# (bench/calibrate.py prints the measured ratios). They only need to be roughly right: they turn a
# budget into amounts of work, and the amounts are what makes plans reproducible.
CPSAT_S_PER_DTIME = 0.9  # CP-SAT, one worker: CPU seconds per unit of deterministic time
CPSAT_BUILD_S = (0.04, 1.3e-4)  # building and presolving a relaxation: fixed + per (class, type) pair
LP_S = (0.02, 1.2e-5)  # one GLOP relaxation with its cut rounds: fixed + per (class, type) pair
REPLAY_S_PER_RUN = 22e-6  # one schedule played on the fleet (list scheduling or replay), per run
PLAY_S = (8e-6, 4.5e-6)  # one instance's queue played alone: fixed + per run
COMMAND_S_PER_RUN = 155e-6  # the command around the planner (load, expand, assemble, write), per run
WRITE_S_PER_RUN = 90e-6  # assembling and writing the plan file, per run (the hard stop keeps this much back)
WRITE_S_FIXED = 0.2


class Solver(cp_model.CpSolver):
    """A CP-SAT solver that gives SIGINT back to Python after each search. CP-SAT catches SIGINT while
    it searches (a Ctrl-C ends that search with what it found), then sets the kernel's default
    action, not the handler it replaced: the next Ctrl-C killed migbench outright, with no cleanup
    (`profile` left its probe layout on the GPUs and its probes running)."""

    def solve(self, model: cp_model.CpModel, solution_callback: cp_model.CpSolverSolutionCallback | None = None) -> Any:
        try:
            return super().solve(model, solution_callback)
        finally:
            give_sigint_back()


def give_sigint_back() -> None:
    """Install Python's SIGINT handler again where the kernel sees it (after CP-SAT replaced it)."""
    if threading.current_thread() is threading.main_thread():
        handler = signal.getsignal(signal.SIGINT)
        if handler is not None:
            signal.signal(signal.SIGINT, handler)


@dataclass(frozen=True)
class Progress:
    """What the planner reports while it works: the phase, the best plan's objective so far
    (`incumbent`), the proven bound, and the share of the work budget spent (0 to 1)."""

    phase: str
    incumbent: float | None = None
    bound: float | None = None
    objective_name: str = "makespan_s"
    spent: float = 0.0

    @property
    def gap(self) -> float | None:
        """(incumbent - bound) / incumbent for the makespan, (bound - incumbent) / bound for runs at once."""
        if self.incumbent is None or self.bound is None:
            return None
        if self.objective_name == "makespan_s":
            return max(0.0, (self.incumbent - self.bound) / self.incumbent) if self.incumbent > 0 else 0.0
        return max(0.0, (self.bound - self.incumbent) / self.bound) if self.bound > 0 else 0.0


ProgressFn = Callable[[Progress], None]


def short_limit_note(limit_s: float, n_runs: int) -> str | None:
    """A warning when the command's own work around the planner takes more than a quarter of the
    limit: the planner is then left little budget, and a machine twice as slow as the reference
    reaches the hard stop. It depends only on the limit and the sweep's size, so plans stay
    reproducible."""
    around = COMMAND_S_PER_RUN * n_runs
    if around <= 0.25 * limit_s:
        return None
    suggest = 10 * math.ceil(4 * around / 10)
    return (
        f"{n_runs} runs leave little of the {limit_s:g} s time limit for planning (reading and writing "
        f"them takes about {around:.0f} s here): pass --time-limit {suggest} or more for a better plan "
        "that stays reproducible on a loaded machine"
    )


SLACK_ENV = "MIGBENCH_DEADLINE_SLACK"


def deadline_slack() -> float:
    """`$MIGBENCH_DEADLINE_SLACK` (a number, at least 1; default 1): the hard stop comes at that many
    times the limit, while the work budget, and so the plan, stays what the limit gives. For a CI
    runner shared with other jobs (and the test suite, which sets it), where a plan must not depend
    on how busy the machine is. Anything else reads as 1."""
    try:
        k = float(os.environ.get(SLACK_ENV, "1"))
    except ValueError:
        return 1.0
    return k if math.isfinite(k) and k >= 1.0 else 1.0


def default_work(limit_s: float, n_runs: int = 0) -> float:
    """The work budget a `--time-limit` of `limit_s` gives for a sweep of `n_runs` runs (the
    makespan objective) when `--work` is not given: `WORK_SHARE` of the limit less the command's
    own work around the planner."""
    return max(MIN_WORK, limit_s * WORK_SHARE - COMMAND_S_PER_RUN * n_runs)


def write_reserve(n_runs: int) -> float:
    """Seconds the hard stop keeps back for writing a plan of `n_runs` runs."""
    return WRITE_S_FIXED + WRITE_S_PER_RUN * n_runs


class Budget:
    """A deterministic work budget (reference seconds) and a wall-clock deadline."""

    def __init__(
        self,
        limit_s: float,
        *,
        started: float | None = None,
        reserve_s: float = 0.0,
        workers: int = 1,
        n_runs: int = 0,
        progress: ProgressFn | None = None,
        objective_name: str = "makespan_s",
        work_s: float | None = None,
    ) -> None:
        self.limit_s = limit_s
        self.work = default_work(limit_s, n_runs) if work_s is None else max(MIN_WORK, work_s)
        self.spent = 0.0
        start = time.monotonic() if started is None else started
        self.deadline = start + max(0.0, limit_s * deadline_slack() - reserve_s)
        self.workers = max(1, workers)
        self.stopped = False  # the hard stop fired
        self.progress = progress
        self.objective_name = objective_name
        self._incumbent: float | None = None
        self._bound: float | None = None
        self._phase = ""

    # -- the deterministic side ---------------------------------------------------------------
    def charge(self, seconds: float) -> None:
        self.spent += max(0.0, seconds)

    def left(self) -> float:
        """Reference seconds not yet charged (never negative)."""
        return max(0.0, self.work - self.spent)

    def share(self, fraction: float, floor: float = 0.0) -> float:
        """A phase's allowance: `fraction` of what is left, at least `floor` reference seconds."""
        return max(floor, fraction * self.left())

    def dtime(self, seconds: float) -> float:
        """CP-SAT deterministic time worth `seconds` reference seconds."""
        return max(0.01, seconds / CPSAT_S_PER_DTIME)

    # -- the clock (the hard stop only) -------------------------------------------------------
    def expired(self) -> bool:
        """True once the wall-clock deadline has passed; the caller then stops with what it has."""
        if not self.stopped and time.monotonic() >= self.deadline:
            self.stopped = True
        return self.stopped

    def solver(self, seconds: float) -> cp_model.CpSolver:
        """A CP-SAT solver for a call worth `seconds` reference seconds: its deterministic time
        decides; the wall-clock limit is the time left to the deadline, so that it only fires with
        the hard stop. More than one worker runs CP-SAT's interleaved search, which is
        deterministic too."""
        s = Solver()
        p = s.parameters
        p.max_deterministic_time = self.dtime(seconds) / (self.workers if self.workers > 1 else 1)
        p.max_time_in_seconds = max(0.01, self.deadline - time.monotonic())
        p.num_workers = self.workers
        if self.workers > 1:
            p.interleave_search = True
        p.random_seed = 0
        return s

    def rescue_solver(self) -> cp_model.CpSolver:
        """A CP-SAT solver for a model that must give some answer when the budget or the hard stop
        left its call none: it stops at the first solution, within a deterministic time of its own.
        Its wall-clock cap is only a safety net (30 s plus ten times the limit): a short grace (2 s,
        once) left a machine at load 15 on 2 cores with no plan at all, and any plan beats none."""
        s = Solver()
        p = s.parameters
        p.stop_after_first_solution = True
        p.max_deterministic_time = self.dtime(max(2.0, self.work))
        p.max_time_in_seconds = RESCUE_WALL_S + 10.0 * self.limit_s
        p.num_workers = 1
        p.random_seed = 0
        return s

    def solved(self, s: cp_model.CpSolver, status: object) -> None:
        """Charge a finished CP-SAT call and notice when it was the wall clock that stopped it."""
        self.charge(s.deterministic_time * CPSAT_S_PER_DTIME)
        limit = s.parameters.max_time_in_seconds
        if status not in (cp_model.OPTIMAL, cp_model.INFEASIBLE) and s.wall_time >= 0.98 * limit:
            self.stopped = True
        self.expired()

    # -- progress -------------------------------------------------------------------------------
    def report(self, phase: str | None = None, *, incumbent: float | None = None, bound: float | None = None) -> None:
        """Tell the progress callback (if any) about a new phase, incumbent or bound."""
        if phase is not None:
            self._phase = phase
        if incumbent is not None:
            self._incumbent = incumbent
        if bound is not None:
            self._bound = bound
        if self.progress is not None:
            self.progress(
                Progress(
                    self._phase,
                    self._incumbent,
                    self._bound,
                    self.objective_name,
                    min(1.0, self.spent / self.work) if self.work else 1.0,
                )
            )
