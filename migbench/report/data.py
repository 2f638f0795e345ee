"""What the report shows, assembled: the plan (layouts, the planned timeline from the one event
player in `forecast.simulate`), the launch state (`launch.db`: runs, attempts, peaks) and the
duration model, as plain values the HTML renderer (`report.html`) draws without further thought.

Times are seconds from the sweep's start: t = 0 is the plan's time 0 for planned bars and the first
attempt's start for actual ones, so planned and actual line up.

At scale (more than `DETAIL_MAX_RUNS` runs) the report summarises instead of drawing every bar:
the Gantt draws the first `DETAIL_GPUS` GPUs' instances bar by bar and every GPU as one row of a
heat map of busy compute slices over time; the grid labels instances with counts, not run ids; the
memory chart goes per group; the per-run table is cut to its first `TABLE_MAX_ROWS` rows.
`Report.summarised` says which, in words the page prints.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from migbench.catalog import GpuModel, default_catalog
from migbench.duration import Demand, Slot, instance_capacity
from migbench.duration.replay import Result
from migbench.errors import MigbenchError
from migbench.forecast.simulate import SimReport, figures, play_plan
from migbench.launch.status import LauncherDoc, launcher_doc, open_state
from migbench.launch.store import ACTIVE_STATES, STATES, AttemptRow, RunRow, db_path, key_of
from migbench.plan import Plan
from migbench.state import StateDir
from migbench.types import InstanceRef

DETAIL_MAX_RUNS = 2000  # above this many runs the report summarises (see the module docstring)
DETAIL_GPUS = 8  # in summary mode the Gantt draws this many GPUs bar by bar
TABLE_MAX_ROWS = 500  # per-run tables in summary mode
HEAT_BINS = 240  # time bins of the summary heat map


@dataclass(frozen=True)
class Bar:
    """One bar of the timeline: a planned run (`kind` planned) or one attempt (`kind` actual)."""

    run: str
    instance: str
    start_s: float
    end_s: float
    kind: str  # planned | actual
    outcome: str  # planned | running | succeeded | failed | oom | interrupted | lost
    attempt: int = 0
    note: str = ""  # "retry 1", "moved from 0:1g.10gb@6 after an OOM", "on a lent instance (queued on 0:1g.10gb@6)"


@dataclass
class InstanceView:
    key: str
    gpu: int
    profile: str
    start: int
    memory_slices: int
    compute_slices: int
    memory_mib: int
    planned: tuple[str, ...]  # the plan's queue, in wave order
    runs: list[tuple[str, str]] = field(default_factory=list)  # (run id, state) shown on it now
    state: str = "planned"  # running | queued | done | idle | planned

    @property
    def label(self) -> str:
        return f"{self.profile}@{self.start}"


@dataclass
class GpuView:
    gpu: int
    model: str
    node: str | None
    memory_slices: int
    compute_slices: int
    instances: list[InstanceView]
    past: list[InstanceView] = field(default_factory=list)  # instances runs ran on that a re-cut of the bench destroyed since

    @property
    def title(self) -> str:
        where = f"{self.node}, " if self.node else ""
        return f"GPU {self.gpu} ({where}{self.model})"


@dataclass
class Series:
    """A quantity over time as a step function: (t, value from t on), planned and actual."""

    key: str
    title: str
    unit: str
    planned: list[tuple[float, float]] | None
    actual: list[tuple[float, float]] | None


@dataclass
class GpuUse:
    gpu: int
    slices: int
    planned: float | None  # busy slice-hours / available slice-hours
    actual: float | None
    runs_planned: int
    attempts: int


@dataclass
class MemoryRow:
    id: str
    group: str
    planned_mib: int  # what the plan sized it by: the sweep's declared or estimated memory
    peak_mib: int | None  # the largest measured peak over its attempts
    instance_mib: int | None  # the instance it last ran on
    source: str  # where the peak comes from (launch.db, or a footprints file)


@dataclass
class InstanceMemory:
    key: str
    memory_mib: int
    planned_peak_mib: int  # the most memory the plan's co-running runs hold on it at once
    measured_peak_mib: int | None  # the sum of co-running attempts' measured peaks, at most

    @property
    def planned_headroom_mib(self) -> int:
        return self.memory_mib - self.planned_peak_mib

    @property
    def measured_headroom_mib(self) -> int | None:
        return None if self.measured_peak_mib is None else self.memory_mib - self.measured_peak_mib


@dataclass
class LaunchInfo:
    state_dir: str
    counts: dict[str, int]
    total: int
    launcher: LauncherDoc
    t0: float | None  # Unix time of the first attempt's start
    span_s: float  # from t0 to the last end (or now, while something runs)
    running: bool  # the launcher is alive

    @property
    def done(self) -> int:
        return sum(self.counts.get(s, 0) for s in ("succeeded", "failed", "oom", "abandoned"))


@dataclass
class Report:
    title: str
    plan_file: str | None
    generated_at: float
    gpus: list[GpuView]
    bars: list[Bar]
    planned: SimReport | None
    actual: SimReport | None
    launch: LaunchInfo | None
    series: list[Series]
    utilisation: list[GpuUse]
    memory_runs: list[MemoryRow]
    memory_instances: list[InstanceMemory]
    runs: int
    detail: bool
    summarised: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    grain: Any = None  # report.grain.GrainLever, filled in by the caller when asked for
    grain_note: str = ""  # why there is no grain lever
    refresh_s: int | None = None  # the page reloads itself this often (the sweep is running)
    groups: dict[str, str] = field(default_factory=dict)  # run id -> group
    layouts: list[tuple[float, int, str]] = field(default_factory=list)  # the bench's layouts over time: (s from the start, GPU, layout)

    @property
    def horizon_s(self) -> float:
        ends = [self.planned.makespan_s if self.planned else 0.0, self.launch.span_s if self.launch else 0.0]
        return max(ends + [1.0])


# ---------------------------------------------------------------------------------------------
# The launch state (read side only)
# ---------------------------------------------------------------------------------------------


@dataclass
class LaunchState:
    """What the report reads from `launch.db`, once per build."""

    state_dir: Path
    rows: dict[str, RunRow]
    attempts: list[AttemptRow]
    launcher: LauncherDoc
    layouts: list[tuple[float, int, str]] = field(default_factory=list)  # a bench's layouts over time (s from its start)
    started_at: float | None = None  # the sweep's (the bench's) start, Unix s


def read_launch(state_dir: Path) -> LaunchState | None:
    """The launch state in `state_dir`, or None when nothing was launched there yet."""
    if not db_path(state_dir).exists():
        return None
    st = open_state(state_dir)
    try:
        started = st.meta("sweep_started_at")
        return LaunchState(state_dir, st.runs(), st.attempts(), launcher_doc(st.launcher()), _layouts(st.meta("layouts")), float(started) if started else None)
    finally:
        st.close()


# ---------------------------------------------------------------------------------------------
# Building the report
# ---------------------------------------------------------------------------------------------


@dataclass
class PlanSide:
    """The parts of the report that depend on the plan alone: computed once, reused by every
    refresh of a live report."""

    plan: Plan
    models: dict[int, GpuModel]
    sim: SimReport | None
    played: Result | None
    notes: list[str]


def plan_side(plan: Plan) -> PlanSide:
    """The plan played forward under its duration model (when every run has a duration)."""
    cat = default_catalog()
    models = {g.gpu: cat.model(g.model, g.driver) for g in plan.fleet}
    notes: list[str] = []
    sim = played = None
    if plan.placed_runs():
        try:
            sim, played = play_plan(plan)
        except MigbenchError as exc:
            notes.append(f"no planned timeline: {exc.message}")
    return PlanSide(plan, models, sim, played, notes)


def build_report(
    plan: Plan,
    *,
    state_dir: StateDir,
    side: PlanSide | None = None,
    peaks: Mapping[str, tuple[int, str]] | None = None,
    now: float | None = None,
    detail: bool | None = None,
    title: str | None = None,
    own_runs_only: bool = False,
) -> Report:
    """Assemble the report of `plan` and its launch state (`<plan dir>/runs/<sweep>/` or
    `state_dir`: the command's `StateDir`, or a path, or None, made here once). `side` reuses the plan's part between refreshes. `peaks` adds measured peaks
    from elsewhere (run id -> (MiB, source), e.g. a footprints file); launch.db's win where both."""
    side = side or plan_side(plan)
    now = time.time() if now is None else now
    launch = read_launch(state_dir.path)
    if launch is not None and own_runs_only:  # one sweep of a bench: its runs' rows and attempts only
        mine = {r.id for r in plan.runs}
        launch = replace(launch, rows={k: v for k, v in launch.rows.items() if k in mine}, attempts=[a for a in launch.attempts if a["run_id"] in mine])
    n_runs = len(plan.runs)
    detail = n_runs <= DETAIL_MAX_RUNS if detail is None else detail
    groups = {r.id: r.group for r in plan.runs}

    bars: list[Bar] = []
    if side.played is not None:
        res = side.played
        for rid, slot in res.slot_of.items():
            bars.append(Bar(rid, slot, res.start_s[rid], res.end_s[rid], "planned", "planned"))
    actual_bars, t0, span = _actual_bars(plan, launch, now) if launch else ([], None, 0.0)
    bars.extend(actual_bars)

    gpus = _gpu_views(plan, side.models, launch)
    slices_of = {i.key: i.compute_slices for g in gpus for i in [*g.instances, *g.past]}
    caps = {i.key: i.compute or 1.0 for i in plan.instances}
    caps.update(
        {v.key: instance_capacity(side.models[g.gpu], side.models[g.gpu].profile(v.profile), plan.duration_model.compute_basis) for g in gpus for v in g.past}
    )
    gpu_slices = {g.gpu: g.compute_slices for g in gpus}
    actual = _actual_figures(plan, actual_bars, slices_of, caps, span) if actual_bars else None
    info = None
    if launch is not None:
        counts = {s: 0 for s in STATES}
        for r in launch.rows.values():
            counts[r.state] = counts.get(r.state, 0) + 1
        info = LaunchInfo(str(launch.state_dir), counts, len(launch.rows), launch.launcher, t0, span, bool(launch.launcher.get("alive")))

    report = Report(
        title=title or plan.name,
        plan_file=plan.path,
        generated_at=now,
        gpus=gpus,
        bars=bars,
        planned=side.sim,
        actual=actual,
        launch=info,
        series=_series(plan, [b for b in bars if b.kind == "planned"] if side.played else None, actual_bars, slices_of),
        utilisation=_utilisation(gpus, gpu_slices, side.sim, actual, bars),
        memory_runs=_run_memory(plan, launch, peaks or {}),
        memory_instances=_instance_memory(gpus, bars, launch, groups_mib={r.id: r.memory_mib for r in plan.runs}),
        runs=n_runs,
        detail=detail,
        notes=list(side.notes),
        groups=groups,
        layouts=_relative(launch, t0),
    )
    if plan.unplaced:
        report.notes.append(f"{len(plan.unplaced)} run(s) are unplaced by the plan and have no bar: " + ", ".join(u.id for u in plan.unplaced[:5]))
    if launch is None:
        report.notes.append(f"not launched yet (no launch state in {state_dir}): the page shows the plan only")
    if not detail:
        report.summarised = [
            f"{n_runs:,} runs are more than {DETAIL_MAX_RUNS:,}: the timeline draws the instances of the first {DETAIL_GPUS} GPUs "
            f"bar by bar and every GPU as one row of a heat map of busy compute slices ({HEAT_BINS} time bins)",
            "the layout grid draws each GPU as one row of instances, with their run counts by state in each block's tooltip instead of run ids",
            "the memory chart shows each group's planned memory against its measured peaks (least, median, most) instead of one mark per run",
            f"per-run tables list their first {TABLE_MAX_ROWS} rows; `migbench status --json` and the plan file hold them all",
        ]
    return report


def _relative(launch: LaunchState | None, t0: float | None) -> list[tuple[float, int, str]]:
    """The bench's layouts over time, on the report's clock (from the first attempt's start)."""
    if launch is None or not launch.layouts:
        return []
    shift = (launch.started_at or 0.0) - (t0 if t0 is not None else launch.started_at or 0.0)
    return [(max(0.0, t + shift), g, lay) for t, g, lay in launch.layouts]


def _layouts(doc: str | None) -> list[tuple[float, int, str]]:
    """The `layouts` meta entry of a bench's launch state (`launch.benchmode`), checked."""
    try:
        items = json.loads(doc or "[]")
    except ValueError:
        return []
    out = []
    for x in items if isinstance(items, list) else []:
        if isinstance(x, list) and len(x) == 3 and isinstance(x[0], (int, float)) and isinstance(x[1], int) and isinstance(x[2], str):
            out.append((float(x[0]), x[1], x[2]))
    return out


def _where(row: RunRow, home: str | None) -> str | None:
    """The instance a run belongs to now: where its latest attempt ran (or runs), else its queue."""
    if row.attempt and row.instance and row.state != "queued":
        return row.instance.key
    return key_of(row.queue or row.home) or home


_RANK = {"running": 0, "starting": 0, "queued": 1, "interrupted": 1}


def _gpu_views(plan: Plan, models: Mapping[int, GpuModel], launch: LaunchState | None) -> list[GpuView]:
    home = {r.id: r.instance_key for r in plan.runs}
    on: dict[str, list[tuple[str, str]]] = {}
    if launch is not None:
        for rid, row in launch.rows.items():
            w = _where(row, home.get(rid))
            if w:
                on.setdefault(w, []).append((rid, row.state))
    out = []
    for g in plan.fleet:
        model = models[g.gpu]
        views = []
        for i in sorted(plan.instances_of(g.gpu), key=lambda i: i.start):
            p = model.profile(i.profile)
            v = InstanceView(i.key, i.gpu, i.profile, i.start, p.memory_slices, p.compute_slices, i.memory_mib, tuple(i.runs))
            if launch is None:
                v.runs = [(rid, "planned") for rid in i.runs]
                v.state = "planned" if i.runs else "idle"
            else:
                v.runs = sorted(on.get(i.key, []), key=lambda rs: _RANK.get(rs[1], 2))
                states = {s for _, s in v.runs}
                if states & set(ACTIVE_STATES):
                    v.state = "running"
                elif "queued" in states or "interrupted" in states:
                    v.state = "queued"
                elif v.runs:
                    v.state = "done"
                else:
                    v.state = "idle"
            views.append(v)
        out.append(GpuView(g.gpu, g.model, g.node, model.memory_slices, model.compute_slices, views, _past(g.gpu, model, views, launch)))
    return out


def _past(gpu: int, model: GpuModel, now: Sequence[InstanceView], launch: LaunchState | None) -> list[InstanceView]:
    """The instances of GPU `gpu` attempts ran on that the plan no longer has (a bench re-cut them)."""
    have = {v.key for v in now}
    keys = sorted({k for a in (launch.attempts if launch else []) if (k := a.get("instance")) and k not in have})
    out = []
    for k in keys:
        try:
            ref = InstanceRef.parse(k)
            p = model.profile(ref.placement.profile)
        except (ValueError, KeyError):
            continue
        if ref.gpu == gpu:
            runs = sorted({(a["run_id"], str(a.get("outcome") or "running")) for a in launch.attempts if a.get("instance") == k} if launch else set())
            out.append(InstanceView(k, gpu, p.name, ref.placement.start, p.memory_slices, p.compute_slices, int(p.memory_mib or 0), (), list(runs), "done"))
    return out


def _actual_bars(plan: Plan, launch: LaunchState, now: float) -> tuple[list[Bar], float | None, float]:
    """Every attempt as a bar, from the first attempt's start; retries and OOM moves noted."""
    atts = [(a, float(s)) for a in launch.attempts if (s := a["start_at"]) is not None]
    if not atts:
        return [], None, 0.0
    t0 = min(s for _, s in atts)
    if not launch.launcher.get("alive"):
        # A launcher that is gone left its last attempts "running": they were last seen at its heartbeat.
        seen = launch.launcher.get("ended_at") or launch.launcher.get("heartbeat_at")
        if seen:
            now = min(now, float(seen))
    home = {r.id: r.instance_key for r in plan.runs}
    prev_instance: dict[str, str | None] = {}
    prev_outcome: dict[str, str] = {}
    retries: dict[str, int] = {}
    bars = []
    span = 0.0
    for a, start in sorted(atts, key=lambda x: (x[0]["run_id"], x[0]["attempt"])):
        rid, n = a["run_id"], int(a["attempt"])
        end = a.get("end_at")
        outcome = str(a.get("outcome") or "running")
        if end is None:
            end = now if outcome == "running" else start
        inst = a.get("instance") or home.get(rid) or "?"
        notes = []
        before, last = prev_instance.get(rid, home.get(rid)), prev_outcome.get(rid)
        if last == "failed":
            retries[rid] = retries.get(rid, 0) + 1
            notes.append(f"retry {retries[rid]}")
        elif last in ("interrupted", "lost", "unknown"):
            notes.append(f"resumed after attempt {n - 1} was {last}")
        if before and inst != before:
            # An OOM moves a run to a larger instance; otherwise an idle instance was lent to it.
            notes.append(f"moved from {before} after an OOM" if last == "oom" else f"on a lent instance (queued on {before})")
        if a.get("error"):
            notes.append(str(a["error"]))
        bars.append(Bar(rid, inst, start - t0, float(end) - t0, "actual", outcome, n, "; ".join(notes)))
        span = max(span, float(end) - t0)
        prev_instance[rid] = inst
        prev_outcome[rid] = outcome
    return bars, t0, span


def _actual_figures(plan: Plan, bars: Sequence[Bar], slices_of: Mapping[str, int], caps: Mapping[str, float], span: float) -> SimReport:
    """Utilisation of what ran, by the same definition (`forecast.simulate.figures`) as the plan's."""
    demand = {r.id: r.demand() for r in plan.runs}
    jobs, start, end, slot_of = [], {}, {}, {}
    for b in bars:
        if b.instance not in slices_of:
            continue
        key = f"{b.run}#{b.attempt}"
        d = demand.get(b.run)
        jobs.append(Demand(key, d.memory_mib if d else 0, None, d.compute if d else 1.0))
        start[key], end[key], slot_of[key] = b.start_s, max(b.end_s, b.start_s), b.instance
    slots = [Slot(k, 0, caps.get(k, 1.0)) for k in slices_of]
    res = Result(start, end, slot_of, {}, span, sum(1 for k in start if start[k] <= 1e-9))
    total = sum(default_catalog().model(g.model, g.driver).compute_slices for g in plan.fleet)
    return figures("actual", res, slots, dict(slices_of), jobs, total, len(plan.fleet))


# ---------------------------------------------------------------------------------------------
# Over time
# ---------------------------------------------------------------------------------------------


def step_series(intervals: Iterable[tuple[float, float, float]]) -> list[tuple[float, float]]:
    """The sum of weights of the intervals (start, end, weight) covering each moment, as
    (t, value from t on) steps, starting at t = 0."""
    changes: dict[float, float] = {0.0: 0.0}
    for s, e, w in intervals:
        if e <= s:
            continue
        changes[s] = changes.get(s, 0.0) + w
        changes[e] = changes.get(e, 0.0) - w
    out: list[tuple[float, float]] = []
    v = 0.0
    for t in sorted(changes):
        v += changes[t]
        if out and abs(out[-1][1] - v) < 1e-9:
            continue
        out.append((t, round(v, 6)))
    return out


def peak_of(intervals: Iterable[tuple[float, float, float]]) -> float:
    return max((v for _, v in step_series(intervals)), default=0.0)


def busy_intervals(bars: Iterable[Bar]) -> dict[str, list[tuple[float, float]]]:
    """Per instance, the union of its bars' intervals (an instance is busy while any run is on it)."""
    per: dict[str, list[tuple[float, float]]] = {}
    for b in bars:
        per.setdefault(b.instance, []).append((b.start_s, b.end_s))
    out = {}
    for k, ivs in per.items():
        ivs.sort()
        merged: list[tuple[float, float]] = []
        for s, e in ivs:
            if merged and s <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], e))
            else:
                merged.append((s, e))
        out[k] = merged
    return out


def _series(plan: Plan, planned: Sequence[Bar] | None, actual: Sequence[Bar], slices_of: Mapping[str, int]) -> list[Series]:
    mem = {r.id: r.memory_mib for r in plan.runs}

    def runs(bs: Sequence[Bar]) -> list[tuple[float, float]]:
        return step_series((b.start_s, b.end_s, 1.0) for b in bs)

    def busy(bs: Sequence[Bar]) -> list[tuple[float, float]]:
        return step_series((s, e, float(slices_of.get(k, 0))) for k, ivs in busy_intervals(bs).items() for s, e in ivs)

    def memory(bs: Sequence[Bar]) -> list[tuple[float, float]]:
        return step_series((b.start_s, b.end_s, mem.get(b.run, 0) / 1024) for b in bs)

    has_actual = bool(actual)
    return [
        Series("runs", "Runs at once", "runs", runs(planned) if planned else None, runs(actual) if has_actual else None),
        Series("slices", "Busy compute slices", "slices", busy(planned) if planned else None, busy(actual) if has_actual else None),
        Series(
            "memory", "Memory held by running runs (their planned memory)", "GiB", memory(planned) if planned else None, memory(actual) if has_actual else None
        ),
    ]


def _utilisation(
    gpus: Sequence[GpuView], gpu_slices: Mapping[int, int], planned: SimReport | None, actual: SimReport | None, bars: Sequence[Bar]
) -> list[GpuUse]:
    gpu_of = {i.key: g.gpu for g in gpus for i in g.instances}

    def per_gpu(rep: SimReport | None) -> dict[int, float]:
        if rep is None or rep.makespan_s <= 0:
            return {}
        busy: dict[int, float] = {}
        for slot, s in rep.busy_compute_s.items():
            if slot in gpu_of:
                busy[gpu_of[slot]] = busy.get(gpu_of[slot], 0.0) + s
        return {g: busy.get(g, 0.0) / rep.makespan_s for g in gpu_slices}  # a GPU's whole compute is 1

    p, a = per_gpu(planned), per_gpu(actual)
    count_p: dict[int, int] = {}
    count_a: dict[int, int] = {}
    for b in bars:
        g = gpu_of.get(b.instance)
        if g is None:
            continue
        target = count_p if b.kind == "planned" else count_a
        target[g] = target.get(g, 0) + 1
    return [
        GpuUse(g.gpu, g.compute_slices, p.get(g.gpu) if planned else None, a.get(g.gpu) if actual else None, count_p.get(g.gpu, 0), count_a.get(g.gpu, 0))
        for g in gpus
    ]


# ---------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------


def measured_peaks(launch: LaunchState | None) -> dict[str, tuple[int, str]]:
    """Each run's largest measured peak in launch.db (over its attempts and its row)."""
    out: dict[str, tuple[int, str]] = {}
    if launch is None:
        return out
    for a in launch.attempts:
        if (peak := a["peak_mib"]) is not None:
            rid = a["run_id"]
            out[rid] = (max(int(peak), out.get(rid, (0, ""))[0]), "launch.db")
    for rid, row in launch.rows.items():
        if row.peak_mib is not None:
            out[rid] = (max(int(row.peak_mib), out.get(rid, (0, ""))[0]), "launch.db")
    return out


def _run_memory(plan: Plan, launch: LaunchState | None, extra: Mapping[str, tuple[int, str]]) -> list[MemoryRow]:
    peaks = dict(extra)
    peaks.update(measured_peaks(launch))
    inst_mem = {i.key: i.memory_mib for i in plan.instances}
    rows = launch.rows if launch else {}
    out = []
    for r in plan.runs:
        row = rows.get(r.id)
        where = (key_of(row.instance) if row else None) or r.instance_key
        inst_mib = (row.instance_mib if row and row.instance_mib else None) or (inst_mem.get(where) if where else None)
        peak = peaks.get(r.id)
        out.append(MemoryRow(r.id, r.group, r.memory_mib, peak[0] if peak else None, inst_mib, peak[1] if peak else ""))
    return out


def _instance_memory(gpus: Sequence[GpuView], bars: Sequence[Bar], launch: LaunchState | None, groups_mib: Mapping[str, int]) -> list[InstanceMemory]:
    peak_of_attempt = {(a["run_id"], int(a["attempt"])): a.get("peak_mib") for a in (launch.attempts if launch else [])}
    planned: dict[str, list[tuple[float, float, float]]] = {}
    measured: dict[str, list[tuple[float, float, float]]] = {}
    for b in bars:
        if b.kind == "planned":
            planned.setdefault(b.instance, []).append((b.start_s, b.end_s, float(groups_mib.get(b.run, 0))))
        else:
            pk = peak_of_attempt.get((b.run, b.attempt))
            if pk is not None:
                measured.setdefault(b.instance, []).append((b.start_s, max(b.end_s, b.start_s + 1e-6), float(pk)))
    out = []
    for g in gpus:
        for i in g.instances:
            pl = planned.get(i.key)
            plan_peak = int(peak_of(pl)) if pl else 0
            me = measured.get(i.key)
            out.append(InstanceMemory(i.key, i.memory_mib, plan_peak, int(peak_of(me)) if me else None))
    return out
