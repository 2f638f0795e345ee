"""Use cases that take several steps across the core: the fleet a plan is for, and `run` (plan, apply,
launch), with plan reuse, a grown sweep joining the host's instances, and the auto-created simulated
host. The CLI calls these and renders."""

from __future__ import annotations

import os
import shlex
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from migbench.apply import apply_plan
from migbench.apply.bookings import Register, refuse_running
from migbench.apply.recovery import InterruptedApplyPending
from migbench.backend.select import (
    SIM_DIR_NAME,
    SIM_ENV,
    host_models,
    init_simulated_host,
    is_simulated_host,
    launches_dir,
    live_models,
    open_backend,
    read_host_if_available,
    require_own_simulated_host,
    sim_dir,
    use_simulated_host,
)
from migbench.errors import MigbenchError, UsageError, from_os_error
from migbench.footprints import Resolution, gather_sources, resolve
from migbench.fsutil import ForeignFile, require_trusted
from migbench.launch.procs import LauncherLock
from migbench.launch.status import open_state
from migbench.launch.store import key_of
from migbench.plan import Plan, PlanGpu
from migbench.plancheck import DONE_STATES
from migbench.planner import FleetGpu, FleetSpec, SolveOptions, build_fleet, make_plan, parse_fleet_option
from migbench.planner.budget import ProgressFn
from migbench.planner.grow import Grown, HostNow, RunState, grow_plan, host_plan, instances_on, same_fleet
from migbench.state import StateDir, configure_modes
from migbench.sweep import Sweep, load_fleet_file
from migbench.types import InstanceRef, Layout


def fleet_for(sweep: Sweep, fleet_opt: str | None, fleet_file: Path | None = None) -> tuple[list[FleetGpu], list[str]]:
    """The fleet to plan for: `--fleet`, else `--fleet-file`, else the sweep's `fleet:`, else the
    host's GPUs through NVML. Models the host's NVML reports use its live profile table. Returns
    (fleet, notes)."""
    live = live_models()
    if fleet_opt and fleet_file:
        raise UsageError("--fleet and --fleet-file both name a fleet", hint="give one of them")
    if fleet_opt:
        return build_fleet(parse_fleet_option(fleet_opt), live=live), []
    if fleet_file:
        entries = load_fleet_file(fleet_file)
        return build_fleet([FleetSpec(f.gpu, f.count, f.driver, f.node) for f in entries], live=live), []
    if sweep.fleet:
        return build_fleet([FleetSpec(f.gpu, f.count, f.driver, f.node) for f in sweep.fleet], live=live), []
    host = [FleetGpu(i, m) for i, m in host_models()]
    if host:
        return host, ["fleet read from the host through NVML"]
    raise MigbenchError(
        "no fleet: the sweep has no `fleet:`, --fleet was not given, and no GPU is visible through NVML",
        hint="add `fleet: [{gpu: A100-SXM4-80GB, count: 4}]` to the sweep, pass --fleet A100-SXM4-80GB:4, "
        "or try the simulated host: migbench sim init ./sim --gpu A100-SXM4-80GB --count 4 && export MIGBENCH_SIM=./sim",
    )


def resolve_memory(
    sweep: Sweep,
    fleet: list[FleetGpu] | None,
    *,
    footprints: Sequence[str | Path] = (),
    history: Sequence[str | Path] | None = None,
    use_history: bool = True,
    plan_path: str | Path | None = None,
    headroom: float | None = None,
) -> Resolution:
    """The sweep with each run's memory from its measurements (`migbench.footprints.resolve`):
    footprints files, the launch history beside the plan and the sweep, fits, OOM lower bounds.
    `fleet` names the GPU models and drivers measurements from elsewhere are warned about."""
    sources, notes = gather_sources(sweep, footprints=footprints, history=history, use_history=use_history, plan_path=plan_path, headroom=headroom)
    targets = sorted(
        {(g.model.key, None if g.model.driver is None else ".".join(map(str, g.model.driver))) for g in fleet or ()}, key=lambda t: (t[0], t[1] or "")
    )
    res = resolve(sweep, sources, targets=targets)
    res.notes[:0] = notes
    return res


def simulate_if_no_gpu(sweep: Sweep, sweep_file: Path, fleet: str | None, *, mig: bool = False) -> str | None:
    """With no NVIDIA driver and no simulated host set, use one shaped like the sweep's fleet in
    `<sweep dir>/.migbench-sim/` (kept between runs), created with MIG on when `mig`. Returns what
    it did, for the user: where the host is and how later commands reach it."""
    if sim_dir() is not None or read_host_if_available() is not None:
        return None
    specs = parse_fleet_option(fleet) if fleet else [FleetSpec(f.gpu, f.count, f.driver) for f in (sweep.fleet or ())]
    if not specs:
        raise MigbenchError(
            "no GPU is visible and the sweep names no fleet to simulate",
            hint="add `fleet: [{gpu: A100-SXM4-80GB, count: 2}]` to the sweep or pass --fleet A100-SXM4-80GB:2",
        )
    if len({s.model for s in specs}) > 1:
        raise MigbenchError(
            "no GPU is visible, and the simulated host holds one GPU model, but the fleet mixes several",
            hint="create a simulated host yourself (`migbench sim init DIR --gpu MODEL --count N`) and set MIGBENCH_SIM",
        )
    state = (sweep_file.parent / SIM_DIR_NAME).resolve()
    require_own_simulated_host(sweep_file.parent.resolve() / SIM_DIR_NAME)  # never one another user put (or linked) there
    count = sum(s.count for s in specs)
    if not is_simulated_host(state):
        init_simulated_host(state, specs[0].model, count, specs[0].driver, mig=mig)
        said = f"no NVIDIA GPU found: created a simulated host with {count} x {specs[0].model} in {state}"
    else:
        said = f"no NVIDIA GPU found: using the simulated host in {state}"
    use_simulated_host(state)
    return (
        said + "\n  `check`, `status`, `apply` and `launch` of the plan next to it find it there when no driver is "
        f"present; elsewhere: export {SIM_ENV}={shlex.quote(str(state))}"
    )


CARRIED_STATES = DONE_STATES
"""Runs an earlier launch finished: a later `run` of the sweep keeps them, by id, and does not plan
them again (a grown plan marks them `done:`)."""


@dataclass
class Earlier:
    """What an earlier launch of a sweep left in its state directory."""

    state_dir: Path
    plan_file: str | None
    finished: dict[str, str]  # run id -> its final state (CARRIED_STATES)
    states: dict[str, RunState] = field(default_factory=dict)  # every run's state and where it last ran


def earlier_launch(sd: StateDir) -> Earlier | None:
    """Read (only) the launch state in `sd` (the one the sweep's plan would use): None when there is
    none; refuses when a launcher is running it (before anything touches the GPUs)."""
    if not sd.db.exists():
        return None
    LauncherLock(sd.lock).ensure_free()
    st = open_state(sd)
    try:
        rows = st.runs()
        made_from = st.meta("plan_file")
    finally:
        st.close()
    return Earlier(
        sd.path,
        made_from,
        {rid: r.state for rid, r in rows.items() if r.state in CARRIED_STATES},
        {rid: RunState(r.state, key_of(r.instance)) for rid, r in sorted(rows.items())},
    )


@dataclass
class RunReady:
    """What `run` launches: the plan, applied (None when every run has finished already), and
    whether it continues an earlier launch state of the sweep (then the launch keeps that state's
    runs by id even though the plan file changed), and its state directory (resolved once)."""

    plan: Plan | None
    state_dir: StateDir
    continues: bool = False


def run_state_dir(sweep: Sweep, sweep_file: Path, given: Path | None) -> StateDir:
    """The state directory `run` uses: `--state-dir` when given, else that of the plan it writes
    beside the sweep (`<sweep dir>/<log_dir>/<sweep name>/`)."""
    return StateDir.in_dir(sweep_file.parent, sweep.launch.log_dir, sweep.name, given)


def plan_and_apply(
    sweep: Sweep,
    sweep_file: Path,
    *,
    fleet: str | None,
    time_limit_s: float,
    state_dir: StateDir,
    say: Callable[[str], None] = lambda _: None,
    started: float | None = None,
    progress: ProgressFn | None = None,
) -> RunReady:
    """`run` up to the launch, idempotent: read the sweep's launch state first (a running launcher
    is refused before anything changes); use a simulated host where no GPU is; reuse the plan file
    next to the sweep when the sweep and fleet are unchanged; else, when the sweep launched before,
    grow that plan (`planner.grow`: its runs kept, the runs to start on the instances it made, idle
    GPUs re-cut only for runs nothing holds); else plan the runs that have not finished (finished
    runs are carried forward by id: a run keeps its id while its parameters do);
    `state_dir`: the command's (`run_state_dir`: the plan's, once written beside the sweep);
    with nothing left to run, stop before touching the GPUs; else apply. `started` and `progress`
    go to the planner (`SolveOptions`)."""
    if not sweep.runs:
        raise MigbenchError(f"sweep {sweep.name} has no runs", hint="check its parameters")
    if not fleet:
        _one_host([f.node for f in sweep.fleet or ()])
    out = sweep_file.parent / f"{sweep.name}.plan.yaml"
    sd = state_dir
    configure_modes(sweep.launch)  # before the trust check: a team's `state_mode: 0660` lets the group write the directory
    require_trusted(sd.path, "state directory")  # before its launch state is read: another user's could mark runs finished
    earlier = _earlier_unless_running(out, sd)
    said = simulate_if_no_gpu(sweep, sweep_file, fleet)
    if said:
        say(said)
    fleet_gpus, notes = fleet_for(sweep, fleet)
    _one_host([g.node for g in fleet_gpus])
    res = resolve_memory(sweep, fleet_gpus, history=[earlier.state_dir] if earlier else None, plan_path=out)
    if res.measured():
        say(res.summary())
    notes = list(notes) + res.warnings
    sweep = res.sweep
    finished = {rid: st for rid, st in (earlier.finished if earlier else {}).items() if rid in {r.id for r in sweep.runs}}
    plan = _reusable_plan(out, sweep, fleet_gpus)
    if earlier is not None:
        counts = Counter(finished.values())
        say(
            f"continuing the launch state in {earlier.state_dir}"
            + (
                f": {len(finished)} of the sweep's {len(sweep.runs)} runs finished there ("
                + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
                + "), carried forward by id"
                if finished
                else ""
            )
        )
    if len(finished) == len(sweep.runs):
        say(f"nothing to launch: every run of {sweep.name} has finished (see `migbench status {shlex.quote(str(out))}`)")
        return RunReady(None, sd, continues=True)
    plan, grown = _reuse_or_grow(plan, out, sweep, fleet_gpus, earlier, notes)
    if plan is not None:
        say(f"the sweep and fleet are unchanged: reusing {out}")
    elif grown is not None:
        plan = grown.plan
        plan.save(out)
        _say_grown(say, out, grown)
    else:
        todo = replace(sweep, runs=tuple(r for r in sweep.runs if r.id not in finished)) if finished else sweep
        if finished:
            notes = [*notes, f"{len(finished)} run(s) of the sweep finished in an earlier launch; they are kept in its launch state and not planned again"]
        opts = SolveOptions(time_limit_s=time_limit_s, started=started, progress=progress)
        plan = make_plan(todo, fleet_gpus, opts, notes=notes)
        plan.save(out)
        say(
            f"plan written to {out}: {len(plan.placed_runs())} runs on {len(plan.instances)} MIG instances of "
            f"{len(plan.fleet)} GPU(s)" + (f", {len(plan.unplaced)} unplaced" if plan.unplaced else "")
        )
    LauncherLock(sd.lock).ensure_free()
    report = apply_plan(plan, open_backend(), confirm=None, state_dir=sd)
    say(f"applied: {len(report.commands)} command(s); every GPU read back as planned" if report.changed else "applied: every GPU already matches the plan")
    return RunReady(plan, sd, continues=earlier is not None)


def _earlier_unless_running(out: Path, sd: StateDir) -> Earlier | None:
    """The sweep's earlier launch state; refused while a launch runs its plan (one launch per plan
    per host, whatever the state directory), with the way to grow a sweep while it runs."""
    try:
        refuse_running(Register(launches_dir()), out)  # one launch per plan per host, whatever the state directory
        return earlier_launch(sd)
    except MigbenchError as exc:
        exc.hint = (exc.hint + "; " if exc.hint else "") + (
            "a sweep that grows while it runs goes to the host's bench instead: `migbench submit SWEEP` takes it, and takes it again grown, while its runs run"
        )
        raise


def _say_grown(say: Callable[[str], None], out: Path, grown: Grown) -> None:
    """What growing the earlier plan decided, and what the grown plan (written to `out`) holds."""
    plan = grown.plan
    for line in grown.decided:
        say(line)
    n_done = sum(r.done is not None for r in plan.runs)
    n_live = len(plan.placed_runs()) - sum(r.done is not None for r in plan.placed_runs()) - len(grown.starting)
    parts = [
        f"{n_done} finished earlier, kept and marked done" if n_done else "",
        f"{n_live} still live, kept where they run" if n_live else "",
        f"{len(grown.starting)} to start",
    ]
    say(
        f"plan written to {out}: {len(plan.runs)} runs ({'; '.join(x for x in parts if x)}) on {len(plan.instances)} "
        f"MIG instances of {len(plan.fleet)} GPU(s)" + (f", {len(plan.unplaced)} unplaced" if plan.unplaced else "")
    )


def _grown(out: Path, sweep: Sweep, fleet: list[FleetGpu], earlier: Earlier, notes: Sequence[str]) -> Grown | None:
    """The earlier plan next to the sweep grown to the sweep now (`planner.grow`): the runs to start
    on the instances the host has, re-cutting only idle GPUs, and only for runs nothing holds.
    None when there is no earlier plan to grow (or it cannot be read) or the fleet changed."""
    old = _grown_base(out, sweep)
    if old is None:
        return None
    return grow_plan(old, sweep, fleet, earlier.states, notes=notes)


def _reuse_or_grow(
    plan: Plan | None, out: Path, sweep: Sweep, fleet: list[FleetGpu], earlier: Earlier | None, notes: Sequence[str]
) -> tuple[Plan | None, Grown | None]:
    """The plan to reuse, or the grown one: beside other live launches (`host_shared`), the sweep is
    grown over the host as it is (a reusable plan only while the host still has its layout); else a
    sweep that launched before grows its earlier plan. (None, None): plan from scratch."""
    shared = host_shared(out, fleet)
    if shared is not None and plan is not None and any(tuple(plan.layout(g)) != tuple(shared.layouts.get(g, ())) for g in shared.layouts):
        plan = None  # the host was re-cut since: the plan cannot be applied beside the other launches
    if plan is not None:
        return plan, None
    if shared is not None:
        return None, _grown_beside(out, sweep, fleet, earlier, notes, shared)
    return None, None if earlier is None else _grown(out, sweep, fleet, earlier, notes)


def host_shared(plan_file: Path, fleet: Sequence[FleetGpu]) -> HostNow | None:
    """The host as it is, when other live launches hold some of its instances (the launch
    register, read without its lock): each GPU's layout and who holds which instance. None when no
    other launch holds one (or the register or the GPUs cannot be read: then `apply` and `launch`
    still refuse what another launch holds)."""
    me = str(plan_file.resolve())
    try:
        others = [b for b in Register(launches_dir()).entries() if b.plan_file != me]
    except MigbenchError:
        return None
    who = {u: b.who() for b in others for u in b.instances}
    host = read_host_if_available() if who else None
    if host is None:
        return None
    indexes = {g.index for g in fleet}
    layouts: dict[int, Layout] = {}
    held: dict[InstanceRef, str] = {}
    for g in host.gpus:
        if g.index not in indexes:
            continue
        layouts[g.index] = g.layout()
        gis = {gi.id: gi for gi in g.instances}
        for d in g.devices:
            if d.uuid in who and d.gi_id in gis:
                held[InstanceRef(g.index, gis[d.gi_id].placement)] = who[d.uuid]
    return HostNow(layouts, held) if held else None


def _grown_beside(out: Path, sweep: Sweep, fleet: list[FleetGpu], earlier: Earlier | None, notes: Sequence[str], shared: HostNow) -> Grown | None:
    """The sweep planned beside the host's other launches: its earlier plan (or, for a sweep that
    never ran here, the host's layouts with no run) grown over the host as it is, the instances
    other launches hold busy (its runs queued there start once they are let go)."""
    old = _grown_base(out, sweep)
    if old is None or not same_fleet(old, fleet):
        old = host_plan(sweep, fleet, shared.layouts)
    holders = sorted(set(shared.held.values()))
    beside = f"planned beside {len(holders)} other live launch(es) on this host ({'; '.join(holders)})"
    notes = [*notes, f"{beside}: their instances are not re-cut; runs queued there start when they are let go"]
    grown = grow_plan(old, sweep, fleet, earlier.states if earlier else {}, notes=notes, host=shared)
    if grown is not None:
        grown.decided.insert(0, notes[-1])
    return grown


def _grown_base(out: Path, sweep: Sweep) -> Plan | None:
    if not out.exists():
        return None
    try:
        old = Plan.load(out, owned=True)
    except ForeignFile:
        raise
    except MigbenchError:
        return None
    return old if old.name == sweep.name else None


def _one_host(nodes: list[str | None]) -> None:
    names = sorted({n for n in nodes if n})
    if len(names) > 1:
        raise MigbenchError(
            f"the fleet spans {len(names)} nodes ({', '.join(names)}); `run` plans, applies and launches on this one host",
            hint="plan it with `migbench plan SWEEP -o PLAN`, then hand it to the cluster: "
            "`migbench export slurm PLAN -o DIR` or `migbench export k8s PLAN -o DIR`",
        )


def _reusable_plan(path: Path, sweep: Sweep, fleet: list[FleetGpu]) -> Plan | None:
    if not path.exists():
        return None
    try:
        old = Plan.load(path, owned=True)  # its commands are launched: one another user could have written is refused
    except ForeignFile:
        raise
    except MigbenchError:
        return None
    same_fleet = [(g.gpu, g.model, g.node) for g in old.fleet] == [(g.index, g.model.key, g.node) for g in fleet]
    # measurements since (a launch's peaks, an OOM) change a run's memory: plan again
    memory = {r.id: r.memory_mib for r in sweep.runs}
    same_memory = all(memory.get(r.id) == r.memory_mib for r in old.runs)
    return old if old.sweep_sha256 == sweep.sha256 and same_fleet and same_memory else None


# ---------------------------------------------------------------------------------------------
# submit: a sweep's runs into the host's bench
# ---------------------------------------------------------------------------------------------


@dataclass
class Submitted:
    """A sweep handed to the host's bench: the bench's plan and the submission in its inbox."""

    bench_plan: Path
    inbox_file: Path
    runs: int


def submit_sweep(
    sweep: Sweep,
    sweep_file: Path,
    *,
    fleet: str | None,
    bench: str | Path | None,
    replace_file: bool = False,
    say: Callable[[str], None] = lambda _: None,
) -> Submitted:
    """Put the sweep's runs (memory resolved as `run` resolves it) in the inbox of the host's bench
    (`launch.bench`), creating the bench plan on the host's layout as it is when there is none; a
    simulated host is used where no GPU is. The bench launcher adopts the submission. Another file
    with the name of a sweep the bench has is refused unless `replace_file` (`claim_sweep_name`)."""
    from migbench.launch.bench import (
        bench_dir,
        bench_plan_path,
        bench_wide_differences,
        claim_sweep_name,
        inbox_dir,
        inbox_problem,
        require_own_dir,
        submission,
        write_submission,
    )
    from migbench.planner.assemble import _planned

    if not sweep.runs:
        raise MigbenchError(f"sweep {sweep.name} has no runs", hint="check its parameters")
    said = simulate_if_no_gpu(sweep, sweep_file, fleet)
    if said:
        say(said)
    fleet_gpus, _ = fleet_for(sweep, fleet)
    _one_host([g.node for g in fleet_gpus])
    res = resolve_memory(sweep, fleet_gpus, plan_path=sweep_file.parent / f"{sweep.name}.plan.yaml")
    if res.measured():
        say(res.summary())
    sweep = res.sweep
    _fits_the_fleet(sweep, fleet_gpus)
    _bench_ids_fit(sweep, sweep_file)
    d = bench_dir(bench)
    require_trusted(d, "bench directory")  # the bench runs what its inbox holds, as this user
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    require_own_dir(d)
    why = inbox_problem(d)  # the bench would never take a submission from there: refused before one is written
    if why is not None:
        fix = "remove it" if why.endswith("not a directory") else f"make it yours alone (`chmod go-w {inbox_dir(d)}`, `chown`), or remove it"
        raise MigbenchError(f"{why}, so the bench takes no submission from it", hint=f"{fix} (submit makes it again); nothing was submitted")
    claim_sweep_name(d, sweep.name, sweep_file, take_over=replace_file, dry=True)  # refused before anything is written
    gpus = [PlanGpu(g.index, g.model.key, None if g.model.driver is None else ".".join(map(str, g.model.driver)), g.node) for g in fleet_gpus]
    bp = bench_plan_path(d)
    have = _bench_plan_for(d, bp, sweep, fleet_gpus, gpus)
    claim_sweep_name(d, sweep.name, sweep_file, take_over=replace_file)
    differ = bench_wide_differences(have.launch, sweep.launch)
    if differ:
        say(
            f"note: the bench applies its own launch settings to every run; this sweep's {'; '.join(differ)} "
            "are not used (each run keeps its own retries, env, workdir and timeout)"
        )
    sub = submission(
        sweep.name,
        os.path.relpath(sweep_file),
        sweep.sha256,
        gpus,
        [_planned(r, None) for r in sweep.runs],
        sweep.launch,
        sweep_file.resolve().parent,
        sweep.duration_model,
    )
    return Submitted(bp, write_submission(d, sub), len(sub.runs))


def _bench_plan_for(d: Path, bp: Path, sweep: Sweep, fleet_gpus: Sequence[FleetGpu], gpus: Sequence[PlanGpu]) -> Plan:
    """The bench plan a submission goes to: made on the host's layout as it is when there is none
    (never over one another submit made meanwhile), refused when it is not a bench plan or is for
    another fleet."""
    from migbench.launch.bench import empty_bench, is_bench

    if not bp.exists():
        host = read_host_if_available()
        layouts = host.layouts() if host is not None else {}
        instances = instances_on({g.index: g.model for g in fleet_gpus}, layouts, sweep.duration_model.compute_basis)
        _create_once(empty_bench(gpus, instances, sweep.launch, sweep.duration_model), bp)
    try:
        have = Plan.load(bp, regular=True)
    except MigbenchError as exc:  # the hint a plan file gets (`migbench plan`) would make a plan the bench refuses
        exc.hint = (
            f"the bench writes {bp}: when no bench launcher runs (`migbench status {bp}`), move the damaged file away and submit "
            "again; the launch state in runs/bench stays, and each sweep submitted again keeps its finished runs"
        )
        raise
    if not is_bench(have):
        raise MigbenchError(
            f"{bp} is a plan of sweep {have.name}, not a bench plan: the bench would launch it and never take the submission",
            hint="give the bench a directory of its own (--bench-dir), or move that plan away",
        )
    if [(g.gpu, g.model) for g in have.fleet] != [(g.gpu, g.model) for g in gpus]:
        raise MigbenchError(
            f"the bench in {d} is for another fleet ({', '.join(f'{g.gpu}:{g.model}' for g in have.fleet)})",
            hint="submit the sweep with the bench's fleet (--fleet), or give another bench directory (--bench-dir)",
        )
    return have


def _create_once(plan: Plan, path: Path) -> None:
    """Write `plan` at `path` unless a file is there by then: another submit (whose bench may have
    adopted sweeps into it since) made it first, and it is never replaced."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    plan.save(tmp)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    except OSError as exc:
        raise from_os_error(exc, "write the bench plan") from None
    finally:
        tmp.unlink(missing_ok=True)


def _bench_ids_fit(sweep: Sweep, sweep_file: Path) -> None:
    """Refuse a sweep whose runs' ids on the bench (`<sweep>.<run id>`) are longer than a run id may
    be: the bench would refuse the submission after submit had written it (a sweep name and a group
    name of 100 characters each pass the sweep's own limits)."""
    from migbench.launch.bench import bench_id
    from migbench.names import MAX_SAFE_NAME, SAFE_NAME_RE

    longest = max((bench_id(sweep.name, r.id) for r in sweep.runs), key=len)
    if not SAFE_NAME_RE.fullmatch(longest):
        raise MigbenchError(
            f"{sweep_file}: sweep {sweep.name}'s runs are named <sweep>.<run id> on the bench, and {longest} is {len(longest)} characters "
            f"long; a run id has at most {MAX_SAFE_NAME}",
            hint=f"shorten the sweep's `name:` ({len(sweep.name)} characters) or its group names; nothing was submitted",
        )


def _fits_the_fleet(sweep: Sweep, fleet: Sequence[FleetGpu]) -> None:
    """Refuse a sweep with runs no instance of the fleet can hold (the bench would take them and
    abandon them), as `plan` does."""
    from migbench.units import format_mib

    unfit = []
    for r in sweep.runs:
        if not any(r.memory_mib <= (p.memory_mib or 0) and (r.profiles is None or p.name in r.profiles) for g in fleet for p in g.model.profiles):
            where = f" on one of {', '.join(r.profiles)}" if r.profiles is not None else ""
            unfit.append(f"{r.id}: needs {format_mib(r.memory_mib)} ({r.memory_mib} MiB){where}, more than any instance of the fleet holds")
    if unfit:
        raise MigbenchError(
            f"{len(unfit)} run(s) of sweep {sweep.name} fit no instance of the fleet:\n  " + "\n  ".join(unfit[:20]) + ("\n  ..." if len(unfit) > 20 else ""),
            hint="lower the run's memory or allow a larger profile; nothing was submitted",
        )


def start_bench(bench_plan: Path, say: Callable[[str], None] = lambda _: None) -> int | None:
    """Start the host's bench launcher (in the background) unless it runs: the bench plan's
    instances first brought to the host's layout as it is (nothing of the bench runs while no
    launcher does: a run that outlived a killed launcher keeps its instance, which the host has),
    applied (it only binds), then launched; under the bench's start lock. Returns the new
    launcher's PID (None: it ran already)."""
    from migbench.launch.bench import start_lock

    lock = start_lock(bench_plan.parent)
    lock.acquire(blocking=True)  # one starter at a time: the host as it is, then the launcher
    try:
        return _start_bench_locked(bench_plan, say)
    finally:
        lock.release()


def _start_bench_locked(bench_plan: Path, say: Callable[[str], None]) -> int | None:
    from migbench.launch.detach import detach
    from migbench.launch.options import LaunchOptions

    plan = Plan.load(bench_plan, regular=True)
    sd = StateDir.of(plan)
    if LauncherLock(sd.lock).is_held():
        return None
    host = read_host_if_available()
    if host is not None:
        from migbench.launch.benchmode import models_of

        instances = instances_on(models_of(plan), host.layouts(), plan.duration_model.compute_basis, keep=plan.instances)
        if [i.ref for i in instances] != [i.ref for i in plan.instances]:
            plan = replace(plan, instances=instances)
            plan.save(bench_plan)
    try:
        apply_plan(plan, open_backend(), confirm=None, state_dir=sd)
    except InterruptedApplyPending as exc:
        if not exc.found.same_plan(plan) or exc.found.path.resolve() != sd.checkpoint.resolve():
            raise  # another plan's apply: its owner resolves it
        # the bench was killed during one of its re-cuts, which change idle instances only (nothing
        # started on them): the GPUs as they were before it (an instance in use is never destroyed)
        apply_plan(plan, open_backend(), confirm=None, state_dir=sd, resume="rollback")
        say(f"the bench was killed during a re-cut of GPU(s) {', '.join(map(str, exc.found.gpus))}: rolled back to the instances before it")
        return _start_bench_locked(bench_plan, say)
    d = detach(plan, LaunchOptions(state_dir=sd, force=True))
    say(f"bench launcher started in the background (PID {d.pid}); state and logs in {d.state_dir}")
    return d.pid


def wait_adopted(inbox_file: Path, bench_plan: Path, timeout_s: float = 120.0, say: Callable[[str], None] = lambda _: None) -> str:
    """Wait until the bench launcher has adopted the submission `inbox_file` (it leaves the inbox
    with its summary in `inbox/done/`), starting the launcher if it is not running (the first
    submit's, or after one that ended as the submission arrived). Returns the summary. When the
    launcher cannot be started, the submission is withdrawn and the error raised."""
    import time

    from migbench.launch.bench import REFUSED, UNKNOWN, adopted_summary, done_dir

    deadline = time.monotonic() + timeout_s
    while inbox_file.exists():
        try:
            start_bench(bench_plan, say)
        except MigbenchError:
            inbox_file.unlink(missing_ok=True)  # no bench runs to take it: nothing half-done (submit again once fixed)
            raise
        if time.monotonic() > deadline:
            raise MigbenchError(
                f"the bench has not taken {inbox_file} in {timeout_s:g} s",
                hint=f"it stays in the inbox and is taken when the bench runs: see `migbench status {bench_plan}`",
            )
        time.sleep(0.1)
    summary = adopted_summary(inbox_file)
    done = done_dir(bench_plan.parent)
    if summary == UNKNOWN and (done.is_symlink() or (done.exists() and not done.is_dir())):
        raise MigbenchError(
            f"the bench took {inbox_file} out of its inbox but could not keep its record in {done}, which is not a directory: "
            "whether its runs were taken is unknown",
            hint=f"remove {done} (the bench makes it again), then see `migbench status {bench_plan}` and submit the sweep again "
            "(what the bench took already is kept, not run twice)",
        )
    if summary == UNKNOWN:
        raise MigbenchError(
            f"the bench took {inbox_file} out of its inbox but left no record of taking or refusing it (is the disk full?): "
            "whether its runs were taken is unknown",
            hint=f"see `migbench status {bench_plan}` and the bench's launcher.log; once there is space, submit the sweep again "
            "(what the bench took already is kept, not run twice)",
        )
    if summary.startswith(REFUSED):
        raise MigbenchError(
            f"the bench refused the submission {inbox_file}: {summary.removeprefix(REFUSED)}",
            hint="none of its runs was taken: fix what it says and submit the sweep again",
        )
    return summary
