"""`migbench estimate --accuracy`: how good was each way of knowing a run's memory?

For every run with a measurement of its own, the *reference* is its peak in a launch (a whole run)
or, without one, its probe's peak. Against it, per group:

- **declared**: the memory the sweep declares (with whatever margin the author added);
- **analytic**: the analytic estimate without its headroom (groups whose memory is an estimate);
- **profile vs history**: a probe's peak against the same run's launch peak (do short probes see
  the whole peak?);
- **fit**: the group's fit, each point predicted from the others (leave-one-out).

Errors are signed, relative to the reference: +50 % means 1.5× the measured peak. Each column shows
the mean error and the worst one (largest in size).

Compute, when `migbench profile --speed` measured it: per group, the declared `compute` (or, without
one, the memory-sized instance's share the planner assumes) against the measured one.

Then the runs whose declared memory would have put them on another instance than their measured
peak plus the headroom needs: a *bigger* one (wasted slices) or one *too small* (an OOM), given the
fleet's profiles (the smallest profile whose memory holds each).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from migbench.footprints.fit import candidate_params, fit_group, loo_errors
from migbench.footprints.resolve import Resolution, config_key, with_headroom
from migbench.sweep import MeasuredMemory, Sweep

if TYPE_CHECKING:
    from migbench.planner import FleetGpu

PREDICTORS = ("declared", "analytic", "profile vs history", "fit")


@dataclass(frozen=True)
class ErrorStat:
    n: int
    mean: float  # signed, relative
    worst: float  # signed, the one of largest size

    @classmethod
    def of(cls, errors: Sequence[float]) -> ErrorStat | None:
        if not errors:
            return None
        return cls(len(errors), sum(errors) / len(errors), max(errors, key=abs))


@dataclass
class GroupAccuracy:
    group: str
    runs: int
    measured: int
    history: int
    stats: dict[str, ErrorStat] = field(default_factory=dict)
    fit: str | None = None


@dataclass(frozen=True)
class Missized:
    run_id: str
    group: str
    declared_mib: int
    peak_mib: int
    need_mib: int
    declared_instance: str | None
    needed_instance: str | None
    verdict: str  # "bigger" | "too small"


@dataclass(frozen=True)
class ComputeAccuracy:
    """A group's compute: what the plan would assume (declared, or the memory-sized default) and
    what `profile --speed` measured (`lower_bound`: at least that)."""

    group: str
    declared: float | None
    source: str  # declared | default
    measured: float
    lower_bound: bool
    instances: str  # the two instances it was timed on

    @property
    def error(self) -> float | None:
        return None if self.declared is None else self.declared / self.measured - 1


@dataclass
class AccuracyReport:
    sweep: str
    headroom: float
    groups: list[GroupAccuracy]
    missized: list[Missized]
    notes: list[str] = field(default_factory=list)
    compute: list[ComputeAccuracy] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sweep": self.sweep,
            "headroom": self.headroom,
            "groups": [
                {
                    "group": g.group,
                    "runs": g.runs,
                    "measured": g.measured,
                    "history": g.history,
                    "fit": g.fit,
                    "errors": {k: _round(asdict(v)) for k, v in g.stats.items()},
                }
                for g in self.groups
            ],
            "missized": [asdict(m) for m in self.missized],
            "compute": [{**_round(asdict(c)), "error": None if c.error is None else round(c.error, 4)} for c in self.compute],
            "notes": self.notes,
        }


def _round(d: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}


def accuracy_report(sweep: Sweep, res: Resolution, fleet: Sequence[FleetGpu]) -> AccuracyReport:
    """`sweep` as declared (not resolved), `res` its resolution (which holds the measurements)."""
    notes: list[str] = []
    hist, probe = res.measured_peaks()
    profiles = sorted({(p.memory_mib or 0, p.name) for g in fleet for p in g.model.profiles if p.memory_mib}, key=lambda t: t)
    if not fleet:
        notes.append("no fleet (no `fleet:`, --fleet or GPU): runs are compared in MiB, not by instance")
    groups = {g.name: g for g in sweep.groups}
    out: list[GroupAccuracy] = []
    missized: list[Missized] = []
    headrooms = set()
    for g in sweep.groups:
        gruns = [r for r in sweep.runs if r.group == g.name]
        errs: dict[str, list[float]] = {k: [] for k in PREDICTORS}
        measured = nhist = 0
        points: dict[str, tuple[dict[str, Any], float]] = {}
        for r in gruns:
            ref = hist.get(r.id) or probe.get(r.id)
            if not ref:
                continue
            measured += 1
            nhist += r.id in hist
            points.setdefault(config_key(groups[r.group], r), (r.params, float(ref)))
            rm = res.runs[r.id]
            if r.memory_mib > 0:
                errs["declared"].append(r.memory_mib / ref - 1)
            if r.memory_source == "estimate":
                analytic = sum(v for k, v in r.memory_parts if k != "headroom")
                errs["analytic"].append(analytic / ref - 1)
            if r.id in hist and r.id in probe:
                errs["profile vs history"].append(probe[r.id] / hist[r.id] - 1)
            headrooms.add(rm.headroom)
            if r.memory_mib > 0:
                need = with_headroom(ref, rm.headroom)
                m = _missized(r.id, r.group, r.memory_mib, ref, need, profiles)
                if m is not None:
                    missized.append(m)
        ga = GroupAccuracy(g.name, len(gruns), measured, nhist)
        pts = list(points.values())
        if len(pts) >= 2:
            by = g.memory.by if isinstance(g.memory, MeasuredMemory) else None
            fit = fit_group(g.name, pts, candidate_params([r.params for r in gruns], by))
            errs["fit"] = loo_errors(pts, fit)
            ga.fit = fit.describe()
        for k in PREDICTORS:
            st = ErrorStat.of(errs[k])
            if st is not None:
                ga.stats[k] = st
        out.append(ga)
    if not any(g.measured for g in out):
        notes.append("nothing measured yet: run `migbench profile SWEEP`, or launch the sweep, then ask again")
    return AccuracyReport(sweep.name, max(headrooms) if headrooms else 0.1, out, missized, notes, _compute(sweep, res, fleet))


def _compute(sweep: Sweep, res: Resolution, fleet: Sequence[FleetGpu]) -> list[ComputeAccuracy]:
    from migbench.planner.assemble import memory_sized

    out = []
    for g in sweep.groups:
        s = res.speeds.get(g.name)
        r = next((r for r in sweep.runs if r.group == g.name), None)
        if s is None or r is None:
            continue
        if r.compute_source == "declared":
            declared: float | None = r.compute
        else:
            sized = memory_sized(fleet, r.memory_mib, r.profiles, sweep.duration_model.compute_basis) if fleet else None
            declared = sized[0] if sized else None
        out.append(
            ComputeAccuracy(
                g.name,
                declared,
                "declared" if r.compute_source == "declared" else "default",
                s.compute,
                s.lower_bound,
                f"{s.small.profile} / {s.large.profile}",
            )
        )
    return out


def _missized(rid: str, group: str, declared: int, peak: int, need: int, profiles: list[tuple[int, str]]) -> Missized | None:
    """Bigger: the declared memory's instance is larger than the one the peak plus headroom needs.
    Too small: the declared memory's instance cannot hold the measured peak."""
    if not profiles:
        verdict = "bigger" if declared > need else "too small" if declared < peak else None
        return None if verdict is None else Missized(rid, group, declared, peak, need, None, None, verdict)
    got = _smallest(declared, profiles)
    want = _smallest(need, profiles)
    gm = got[0] if got else math.inf
    wm = want[0] if want else math.inf
    if gm > wm:
        verdict = "bigger"
    elif gm < peak:
        verdict = "too small"
    else:
        return None
    return Missized(rid, group, declared, peak, need, got[1] if got else None, want[1] if want else None, verdict)


def _smallest(mib: int, profiles: list[tuple[int, str]]) -> tuple[int, str] | None:
    for mem, name in profiles:
        if mem >= mib:
            return mem, name
    return None
