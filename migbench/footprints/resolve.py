"""Plan on measured footprints: put each run's measured (or predicted) memory into the sweep.

## Which runs

A group with `memory: measured` always; every group when footprints files are given explicitly
(`plan --footprints FILE`). Other groups keep their declared memory, but an OOM raises it (below).

## The order (the first that applies wins)

1. **history**: the run's own peak in an earlier launch of this sweep (`launch.db`, a succeeded
   attempt: a whole run, so it beats a short probe);
2. **profile**: the run's own probe in a footprints file (matched by run id, else by group and
   parameters);
3. the same **configuration**: another run of the group with equal memory parameters (`by:`;
   without `by:`, equal parameters, i.e. a repeat), from the history, else from a probe;
4. **fit**: predicted from the group's measured runs (`migbench.footprints.fit`), when the fit is
   usable;
5. the **declared** memory (the fallback of `memory: measured`, or the group's memory).

A measured or predicted peak is planned with a headroom on top: the group's `headroom:`, else
`--headroom`, else 10 %. The declared memory is used as written.

## An OOM is data

A run that ran out of memory in a launch (its observed peak, or one MiB more than the instance it
died alone on: the launcher's own judgement) or in a probe (one MiB more than the instance) has a
lower bound; it applies to the run and to every run of the same configuration, whatever the
source, with the headroom on top.

## Footprints from elsewhere

Measurements of another sweep, GPU model or driver are used, with a warning naming the difference.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from migbench.errors import MigbenchError, UsageError
from migbench.footprints.file import Footprints, Measurement, Speed, load_footprints
from migbench.footprints.fit import Fit, candidate_params, fit_group
from migbench.fsutil import output_problem, untrusted_reason
from migbench.launch.history import LaunchHistory, history_db, read_history
from migbench.sweep import MeasuredMemory, Run, Sweep
from migbench.sweep.model import Group, canonical_json

DEFAULT_HEADROOM = 0.10
MEASURED_SOURCES = ("history", "profile", "fit")


@dataclass(frozen=True)
class Sources:
    """What a plan may learn memory from."""

    footprints: tuple[Footprints, ...] = ()
    histories: tuple[LaunchHistory, ...] = ()
    headroom: float | None = None
    all_groups: bool = False  # measurements apply to every group, not only `memory: measured` ones


@dataclass(frozen=True)
class ResolvedMemory:
    """How one run's memory was decided. `source` is history, profile, config (history|profile),
    fit, or the declared memory's source (explicit, table:..., estimate, measured = none)."""

    run_id: str
    group: str
    declared_mib: int
    declared_source: str
    memory_mib: int
    source: str
    peak_mib: int | None = None
    headroom: float = DEFAULT_HEADROOM
    floor_mib: int | None = None
    raised: bool = False
    detail: str = ""

    @property
    def label(self) -> str:
        """`source` as the plan and estimate show it."""
        return self.source + (" +OOM bound" if self.raised else "")


@dataclass
class Resolution:
    sweep: Sweep
    runs: dict[str, ResolvedMemory]
    fits: dict[str, Fit] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    history_peaks: dict[str, int] = field(default_factory=dict)  # run id -> its peak in a launch (succeeded)
    probe_peaks: dict[str, int] = field(default_factory=dict)  # run id -> its probe's peak
    speeds: dict[str, Speed] = field(default_factory=dict)  # group -> its compute from `profile --speed`

    def measured_peaks(self) -> tuple[dict[str, int], dict[str, int]]:
        return self.history_peaks, self.probe_peaks

    @property
    def unresolved(self) -> list[str]:
        return [r.run_id for r in self.runs.values() if r.memory_mib <= 0]

    def counts(self) -> dict[str, int]:
        """Runs per source (history, profile, config, fit, explicit, table, estimate, measured)."""
        out: dict[str, int] = {}
        for r in self.runs.values():
            k = r.source.split(" ")[0].split(":")[0]
            out[k] = out.get(k, 0) + 1
        return out

    def measured(self) -> bool:
        """Whether any run's memory comes from a measurement, a fit or an OOM bound."""
        return any(r.source in MEASURED_SOURCES or r.source.startswith("config") or r.raised for r in self.runs.values())

    def summary(self) -> str:
        parts = ", ".join(f"{n} {k}" for k, n in sorted(self.counts().items(), key=lambda kv: (-kv[1], kv[0])))
        raised = sum(1 for r in self.runs.values() if r.raised)
        return f"memory of {len(self.runs)} run(s): {parts}" + (f"; {raised} raised by an OOM" if raised else "")


def with_headroom(mib: float, headroom: float) -> int:
    """`mib` plus the headroom, rounded up to a MiB (1500 MiB + 10 % is 1650, not 1651)."""
    return int(math.ceil(mib * (1 + headroom) - 1e-6))


def config_key(group: Group | None, run: Run) -> str:
    """Runs with equal keys have the same footprint: same group and equal memory parameters (`by:`;
    all parameters without it, so repeats share a key)."""
    by = group.memory.by if group is not None and isinstance(group.memory, MeasuredMemory) else None
    params = run.params if by is None else {k: run.params.get(k) for k in by}
    return canonical_json([run.group, params])


def _params_key(group: str, params: dict) -> str:
    return canonical_json([group, params])


def _from_histories(sweep: Sweep, sources: Sources, ids: set[str], warnings: list[str]) -> tuple[dict[str, int], dict[str, str], dict[str, int]]:
    """What the launch histories measured, per run id of the sweep: (the highest peak of a run that
    succeeded, which attempt it was, the memory a run ran out of)."""
    hist: dict[str, int] = {}
    hist_from: dict[str, str] = {}
    floors: dict[str, int] = {}
    for h in sources.histories:
        if h.sweep and h.sweep != sweep.name:
            warnings.append(f"the launch history in {h.state_dir} is of sweep {h.sweep!r}, not {sweep.name!r}: its peaks are used for the run ids they share")
        for a in h.succeeded_peaks():
            if a.run_id in ids and a.peak_mib and a.peak_mib > hist.get(a.run_id, 0):
                hist[a.run_id] = a.peak_mib
                hist_from[a.run_id] = f"attempt {a.attempt}" + (f" on {a.instance}" if a.instance else "")
        for rid, f in h.oom_floor_mib.items():
            if rid in ids:
                floors[rid] = max(floors.get(rid, 0), f)
    return hist, hist_from, floors


def _from_footprints(
    sweep: Sweep,
    sources: Sources,
    ids: set[str],
    targets: Sequence[tuple[str, str | None]],
    floors: dict[str, int],
    warnings: list[str],
    notes: list[str],
) -> dict[str, Measurement]:
    """What the footprints files measured, per run id of the sweep (a run matched by id, else by
    group and parameters); a lower bound or an OOM raises `floors` instead."""
    by_params = {_params_key(r.group, r.params): r.id for r in sweep.runs}
    probe: dict[str, Measurement] = {}
    for fp in sources.footprints:
        used: list[Measurement] = []
        for m in fp.measurements:
            found = m.run if m.run in ids else by_params.get(_params_key(m.group, m.params))
            if found is None:
                continue
            rid = found
            used.append(m)
            if m.lower_bound or m.outcome == "oom":
                floors[rid] = max(floors.get(rid, 0), max(m.peak_mib, m.instance_mib + 1 if m.instance_mib else 0))
            elif m.outcome != "failed":  # a probe that crashed saw a part of the run at best
                probe[rid] = m
        where = fp.path or "the footprints"
        if not used:
            notes.append(f"{where}: none of its {len(fp.measurements)} measurement(s) is of a run of this sweep")
            continue
        warnings.extend(_mismatches(where, fp, sweep, used, targets))
    return probe


def _measured_peak(
    r: Run,
    hist: dict[str, int],
    hist_from: dict[str, str],
    probe: dict[str, Measurement],
    best_of_config: Callable[[str], tuple[int, str, str] | None],
    key: str,
    fit: Fit | None,
) -> tuple[int, str, str] | None:
    """A run's measured peak, (MiB, source, detail), from the best evidence there is: its own
    launch, its own probe, another run of its configuration, the group's fit; None without any."""
    if r.id in hist:
        return hist[r.id], "history", f"peak {hist[r.id]} MiB in a launch ({hist_from[r.id]})"
    if r.id in probe:
        m = probe[r.id]
        return m.peak_mib, "profile", f"peak {m.peak_mib} MiB in a {m.probe_s:.1f} s probe on {m.gpu_model} {m.profile} ({m.how})"
    if (b := best_of_config(key)) is not None:
        return b
    if fit is not None and fit.ok and (pred := fit.predict(r.params)) is not None and pred > 0:
        peak = int(math.ceil(pred - 1e-6))
        return peak, "fit", f"predicted {peak} MiB: {fit.describe()}" + (" (extrapolated)" if fit.extrapolates(r.params) else "")
    return None


def _fit(
    sweep: Sweep,
    grp: Group,
    key_of: dict[str, str],
    runs_by_key: dict[str, list[Run]],
    best_of_config: Callable[[str], tuple[int, str, str] | None],
) -> Fit | None:
    """The group's memory fitted to its measured configurations; None when nothing was measured,
    or every configuration was (nothing to predict)."""
    gruns = [r for r in sweep.runs if r.group == grp.name]
    points = []
    for key in dict.fromkeys(key_of[r.id] for r in gruns):
        b = best_of_config(key)
        if b is not None:
            points.append((runs_by_key[key][0].params, float(b[0])))
    if not points or len(points) == len({key_of[r.id] for r in gruns}):
        return None
    by = grp.memory.by if isinstance(grp.memory, MeasuredMemory) else None
    return fit_group(grp.name, points, candidate_params([r.params for r in gruns], by))


def _headroom(sources: Sources, g: Group | None) -> float:
    """The headroom over a measured peak: the group's own, else the command line's, else the default."""
    if g is not None and isinstance(g.memory, MeasuredMemory) and g.memory.headroom is not None:
        return g.memory.headroom
    return sources.headroom if sources.headroom is not None else DEFAULT_HEADROOM


def resolve(sweep: Sweep, sources: Sources, *, targets: Sequence[tuple[str, str | None]] = ()) -> Resolution:
    """The sweep with each run's memory decided as the module says, and how. `targets` are the
    (GPU model, driver) pairs the plan is for, to warn about footprints measured elsewhere."""
    groups = {g.name: g for g in sweep.groups}
    warnings: list[str] = []
    notes: list[str] = []
    ids = {r.id for r in sweep.runs}

    # -- what was measured, per run id
    hist, hist_from, floors = _from_histories(sweep, sources, ids, warnings)
    probe = _from_footprints(sweep, sources, ids, targets, floors, warnings, notes)

    # -- per configuration
    runs_by_key: dict[str, list[Run]] = {}
    for r in sweep.runs:
        runs_by_key.setdefault(config_key(groups.get(r.group), r), []).append(r)
    key_of = {r.id: k for k, rs in runs_by_key.items() for r in rs}

    def best_of_config(key: str) -> tuple[int, str, str] | None:
        rs = runs_by_key[key]
        h = [(hist[r.id], r.id) for r in rs if r.id in hist]
        if h:
            peak, rid = max(h)
            return peak, "config (history)", f"peak {peak} MiB of {rid}, same configuration, in a launch"
        p = [(probe[r.id].peak_mib, r.id) for r in rs if r.id in probe]
        if p:
            peak, rid = max(p)
            return peak, "config (profile)", f"peak {peak} MiB of {rid}, same configuration, in a probe"
        return None

    key_floor = {k: max((floors.get(r.id, 0) for r in rs), default=0) for k, rs in runs_by_key.items()}

    # -- fits, per group that uses measurements
    def uses(g: Group | None) -> bool:
        return g is not None and (isinstance(g.memory, MeasuredMemory) or sources.all_groups)

    fits = {grp.name: fit for grp in sweep.groups if uses(grp) and (fit := _fit(sweep, grp, key_of, runs_by_key, best_of_config)) is not None}

    # -- each run
    out: dict[str, ResolvedMemory] = {}
    new_runs: list[Run] = []
    for r in sweep.runs:
        g = groups.get(r.group)
        hr = _headroom(sources, g)
        peak: int | None = None
        source, detail = r.memory_source, ""
        if uses(g) and (found := _measured_peak(r, hist, hist_from, probe, best_of_config, key_of[r.id], fits.get(r.group))) is not None:
            peak, source, detail = found
        if peak is not None:
            mem = with_headroom(peak, hr)
            parts: tuple[tuple[str, int], ...] = ((f"{source.split(' ')[0]} peak", peak), (f"headroom {hr * 100:.0f}%", mem - peak))
        else:
            mem, parts = r.memory_mib, r.memory_parts
            if uses(g) and r.memory_source != "measured":
                detail = "declared: nothing measured" + (f"; {fits[r.group].describe()}" if r.group in fits else "")
        floor = key_floor.get(key_of[r.id]) or None
        raised = False
        if floor and (need := with_headroom(floor, hr)) > mem:
            raised = True
            parts = parts + (("OOM lower bound", floor), (f"headroom {hr * 100:.0f}%", need - floor))
            detail = (detail + "; " if detail else "") + f"raised to {need} MiB: it (or its configuration) ran out of memory needing more than {floor} MiB"
            mem = need
        out[r.id] = ResolvedMemory(r.id, r.group, r.memory_mib, r.memory_source, mem, source, peak, hr, floor, raised, detail)
        label = out[r.id].label
        new_runs.append(r if (mem, label) == (r.memory_mib, r.memory_source) else replace(r, memory_mib=mem, memory_source=label, memory_parts=parts))
    for name, gf in sorted(fits.items()):
        notes.append(f"group {name}: {gf.describe()}" + ("" if gf.ok else "; its runs never measured keep their declared memory"))
    new_runs = _measured_compute(new_runs, sources, notes)
    return Resolution(
        replace(sweep, runs=tuple(new_runs)),
        out,
        fits,
        warnings,
        notes,
        dict(hist),
        {rid: m.peak_mib for rid, m in probe.items()},
        {g: s for fp in sources.footprints for g, s in fp.speed_of().items()},
    )


def _measured_compute(runs: list[Run], sources: Sources, notes: list[str]) -> list[Run]:
    """Runs of a group whose compute `migbench profile --speed` measured get it (`compute_source:
    profile`), in place of the declared or default share; the later footprints file wins."""
    speeds = {g: s for fp in sources.footprints for g, s in fp.speed_of().items()}
    if not speeds:
        return runs
    out = []
    said: set[str] = set()
    for r in runs:
        s = speeds.get(r.group)
        if s is None:
            out.append(r)
            continue
        if r.group not in said:
            said.add(r.group)
            was = f"declared {r.compute:.3g}" if r.compute_source == "declared" else "no `compute` declared"
            notes.append(
                f"group {r.group}: compute {'at least ' if s.lower_bound else ''}{s.compute:.3g} measured by "
                f"`profile --speed` ({s.small.profile} vs {s.large.profile}; {was})"
            )
        out.append(replace(r, compute=s.compute, compute_source="profile"))
    return out


def _mismatches(where: str, fp: Footprints, sweep: Sweep, used: list[Measurement], targets: Sequence[tuple[str, str | None]]) -> list[str]:
    out = []
    if fp.sweep != sweep.name:
        out.append(f"{where} was measured for sweep {fp.sweep!r}, not {sweep.name!r}: its {len(used)} measurement(s) of runs with the same ids are used")
    models = {t[0] for t in targets}
    if models:
        other = sorted({m.gpu_model for m in used} - models)
        for model in other:
            n = sum(1 for m in used if m.gpu_model == model)
            out.append(
                f"{where}: {n} measurement(s) were taken on {model}, this plan is for {', '.join(sorted(models))}: "
                "used as they are (a footprint can differ between GPU models)"
            )
    drivers = {(t[0], t[1]) for t in targets if t[1]}
    seen: set[tuple[str, str, str]] = set()
    for model, drv in sorted(drivers):
        for m in used:
            if m.gpu_model == model and not _same_driver(m.driver, drv) and (model, m.driver, drv) not in seen:
                seen.add((model, m.driver, drv))
                n = sum(1 for x in used if x.gpu_model == model and x.driver == m.driver)
                out.append(
                    f"{where}: {n} measurement(s) on {model} were taken with driver {m.driver}, this plan is for driver {drv}: "
                    "used as they are (the CUDA context's size can change with the driver)"
                )
    return out


def _same_driver(a: str, b: str) -> bool:
    """`550.54.15` and `550.54` are the same driver as far as a plan can tell."""
    pa, pb = a.split("."), b.split(".")
    n = min(len(pa), len(pb))
    return pa[:n] == pb[:n]


# ---------------------------------------------------------------------------------------------
# Where measurements are found
# ---------------------------------------------------------------------------------------------


def default_footprints_path(sweep: Sweep) -> Path:
    """`<sweep dir>/<sweep name>.footprints.yaml`: where `migbench profile` writes by default."""
    base = Path(sweep.path).resolve().parent if sweep.path else Path.cwd()
    return base / f"{sweep.name}.footprints.yaml"


def footprints_to_merge(sweep: Sweep, output: str | os.PathLike[str] | None) -> tuple[Path, Footprints | None]:
    """The file `profile` (and `profile --speed`) merges its measurements into, `output` or else the
    default beside the sweep, and what it holds now (None: no file yet); checked before anything is
    probed. The default, found by its name, is read as `plan` reads it: a regular file (a named
    pipe is refused, never waited on) that no other user could have written (`ForeignFile`), so
    her planted measurements are never merged into the user's own file. A link or special file
    where the file is written is refused (`fsutil.output_problem`), and so is another sweep's file."""
    out = Path(output) if output is not None else default_footprints_path(sweep)
    why = output_problem(out)
    if why is not None:  # found now, not after the probes
        raise MigbenchError(
            f"cannot write the footprints file {out}: it {why}", hint="give the footprints file's name with -o FILE: a regular file or a new one"
        )
    existing = None
    if os.path.lexists(out):
        existing = load_footprints(out, regular=output is None, owned=output is None)
    if existing is not None and existing.sweep != sweep.name:
        raise UsageError(f"{out} holds the footprints of sweep {existing.sweep!r}, not {sweep.name!r}", hint="write these elsewhere with -o FILE")
    return out, existing


def default_history_dirs(sweep: Sweep, plan_path: str | Path | None) -> list[Path]:
    """The launch state directories of this sweep's plans: beside the plan file to be written (or
    `./`), and beside the sweep file (where `migbench run` puts its plan)."""
    bases = [Path(plan_path).resolve().parent if plan_path else Path.cwd()]
    if sweep.path:
        bases.append(Path(sweep.path).resolve().parent)
    out: list[Path] = []
    for b in bases:
        d = b / sweep.launch.log_dir / sweep.name
        if d not in out:
            out.append(d)
    return out


def gather_sources(
    sweep: Sweep,
    *,
    footprints: Sequence[str | Path] = (),
    history: Sequence[str | Path] | None = None,
    use_history: bool = True,
    plan_path: str | Path | None = None,
    headroom: float | None = None,
) -> tuple[Sources, list[str]]:
    """The measurements a plan of `sweep` uses, and notes on what was found. `footprints` given:
    those files, for every group; none: the default footprints file for `memory: measured` groups.
    `history` None: the default state directories (where they have a `launch.db`)."""
    notes: list[str] = []
    measured_groups = [g.name for g in sweep.groups if isinstance(g.memory, MeasuredMemory)]
    files: list[Footprints] = []
    if footprints:
        files = [load_footprints(f) for f in footprints]
    else:
        default = default_footprints_path(sweep)
        if default.is_file():
            if measured_groups:
                files = [load_footprints(default, regular=True, owned=True)]  # found by its name: ours alone
                notes.append(f"footprints from {default}")
            else:
                notes.append(f"{default} holds measured footprints; pass --footprints {default} to plan on them")
    hists: list[LaunchHistory] = []
    if use_history:
        for d in history if history is not None else default_history_dirs(sweep, plan_path):
            why = untrusted_reason(d, group_ok=True) if history is None else None  # found by its name: no other user's
            if why is not None:
                if history_db(d).is_file():
                    notes.append(f"launch history in {d} not used: {why}, so another user could have written it")
                continue
            h = read_history(d)
            if h is not None:
                hists.append(h)
                notes.append(f"launch history from {h.state_dir}")
            elif history is not None:
                notes.append(f"no launch history in {d}")
    return Sources(tuple(files), tuple(hists), headroom, all_groups=bool(footprints)), notes
