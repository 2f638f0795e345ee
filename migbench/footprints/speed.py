"""`migbench profile --speed`: measure a group's compute instead of assuming it.

One run of each group (its largest-memory configuration) is run briefly on two MIG instances at
once: the smallest that holds its memory and one with about three times its compute (at least twice,
else the largest there is). Its step times are read from its output while it runs:

- `MIGBENCH_STEP` markers: any line containing `MIGBENCH_STEP` is one step (used when there are any);
- otherwise progress lines: a line with `step N` (`step 12/100`, `Step 12:`, `step=12`) is step N.

The seconds per step are (time of the last step - time of the second) / steps between, the first step
left out as warm-up. Under the duration model (`migbench.duration.model`) a run of compute u takes
step x max(1, u / c) on an instance of share c, so with shares c1 < c2 and step times s1 >= s2:

- s1 / s2 <= 1 + TOLERANCE: it needs no more than c1 (compute = c1, the memory-sized default);
- c1 x s1 / s2 below c2: compute = c1 x s1 / s2;
- otherwise it is as compute-bound on the larger instance too: compute >= c2 (`lower_bound`).

The result goes into the footprints file's `speeds:` beside the memory, and `plan --footprints` plans
the group with it (`compute_source: profile`).
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from migbench.backend.base import Backend
from migbench.duration import instance_capacity
from migbench.footprints.file import Footprints, Speed, SpeedSide
from migbench.footprints.probe import ProbeEvent, ProbeOptions, _plan_run, _probe_plan, profile_dir, stops_as_interrupts, stops_deferred
from migbench.footprints.resolve import footprints_to_merge
from migbench.footprints.select import ProbeTarget, probe_targets
from migbench.footprints.slots import ProbeHost, ProbeSlot, prepare_slots, release
from migbench.fsutil import require_trusted
from migbench.launch.procs import kill_group, read_json, spawn_shim
from migbench.launch.spec import build_spec, prepare_attempt
from migbench.sweep import Sweep

MARKER = "MIGBENCH_STEP"
PROGRESS = re.compile(r"\bstep\s*[=:#]?\s*(\d+)", re.IGNORECASE)
TOLERANCE = 0.1  # step-time ratios within 10 % of 1 count as "no faster on the larger instance"
MIN_STEPS = 3  # steps needed after the warm-up step
LARGER = (3.0, 2.0)  # the larger instance: about this many times the small one's compute


@dataclass
class StepClock:
    """Step lines of a growing log file, each with the moment it was first seen."""

    path: Path
    offset: int = 0
    partial: str = ""
    markers: list[float] = field(default_factory=list)
    progress: list[tuple[int, float]] = field(default_factory=list)

    def poll(self, now: float) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return
        self.offset += len(data)
        lines = (self.partial + data.decode("utf-8", "replace")).split("\n")
        self.partial = lines.pop()
        for line in lines:
            self.feed(line, now)

    def feed(self, line: str, now: float) -> None:
        if MARKER in line:
            self.markers.append(now)
        elif (m := PROGRESS.search(line)) is not None:
            self.progress.append((int(m.group(1)), now))

    def step_s(self) -> tuple[float, int, str] | None:
        """(seconds per step, steps timed, how), the first step left out; None with too few steps."""
        if self.markers:
            pts = [(k, t) for k, t in enumerate(self.markers)]
            how = "step-markers"
        else:
            pts, how = self.progress, "progress-lines"
        if len(pts) < MIN_STEPS + 1:
            return None
        (n0, t0), (n1, t1) = pts[1], pts[-1]
        if n1 <= n0 or t1 <= t0:
            return None
        return (t1 - t0) / (n1 - n0), n1 - n0, how


def fit_compute(small: SpeedSide, large: SpeedSide) -> tuple[float, bool]:
    """(compute, lower bound) from the step times on two instances (see the module's docstring)."""
    ratio = small.step_s / large.step_s
    if ratio <= 1 + TOLERANCE:
        return small.capacity, False
    u = small.capacity * ratio
    if u >= large.capacity * (1 - TOLERANCE):
        return min(1.0, large.capacity), True
    return min(1.0, u), False


@dataclass
class _Probe:
    target: ProbeTarget
    side: str  # small | large
    slot: ProbeSlot
    capacity: float
    adir: Path
    popen: Any
    clock: StepClock


def _choose(slots: Sequence[ProbeSlot], caps: dict[str, float], need_mib: int) -> tuple[ProbeSlot, ProbeSlot] | None:
    """The memory-sized slot and one with about LARGER x its compute (on the same GPU model)."""
    fit = sorted((s for s in slots if s.memory_mib >= need_mib), key=lambda s: (caps[s.key], s.memory_mib, s.key))
    for small in fit:
        bigger = [s for s in fit if s.model == small.model and caps[s.key] > caps[small.key] * (1 + TOLERANCE)]
        for times in LARGER:
            far = [s for s in bigger if caps[s.key] >= times * caps[small.key] - 1e-9]
            if far:
                return small, min(far, key=lambda s: (caps[s.key], s.key))
        if bigger:
            return small, max(bigger, key=lambda s: (caps[s.key], s.key))
    return None


def _wanted(backend: Backend, targets: Sequence[ProbeTarget]) -> tuple[list[int], list[tuple[str, ...] | None]]:
    """The instances to create on an empty MIG GPU: for each target its memory-sized profile and the
    larger one, on the host's first MIG GPU model."""
    host = backend.reader.read()
    model = next((g.model for g in host.gpus if g.mig_current and g.model is not None), None)
    needs: list[int] = []
    profs: list[tuple[str, ...] | None] = []
    if model is None:
        return needs, profs
    plain = [p for p in model.plain_profiles() if p.memory_mib]
    for t in targets:
        fit = sorted((p for p in plain if (p.memory_mib or 0) >= t.need_mib), key=lambda p: (p.compute_slices, p.memory_mib or 0))
        if not fit:
            continue
        small = fit[0]
        cap = instance_capacity(model, small)
        bigger = [p for p in fit if instance_capacity(model, p) > cap * (1 + TOLERANCE)]
        large = next(
            (
                min((p for p in bigger if instance_capacity(model, p) >= k * cap - 1e-9), key=lambda p: (p.compute_slices, p.memory_mib or 0), default=None)
                for k in LARGER
            ),
            None,
        )
        large = large or (max(bigger, key=lambda p: (p.compute_slices, p.memory_mib or 0)) if bigger else None)
        if large is None:
            continue
        needs += [t.need_mib, t.need_mib]
        profs += [(small.name,), (large.name,)]
    return needs, profs


def measure_speeds(
    sweep: Sweep,
    backend: Backend,
    opts: ProbeOptions,
    state_dir: Path,
    *,
    groups: Sequence[str] | None = None,
    on_event: Callable[[ProbeEvent], None] = lambda e: None,
) -> tuple[list[Speed], list[tuple[str, str]], list[str], list[str]]:
    """Time one run per group on two instance sizes at once. Returns (speeds, skipped (group, why),
    notes, problems leaving the host)."""
    targets = probe_targets(sweep, sample=1, groups=groups)
    needs, profs = _wanted(backend, targets)
    ph = prepare_slots(backend, needs or [t.need_mib for t in targets], gpus=opts.gpus, time_limit_s=opts.solver_time_s, profiles=profs or None)
    host = backend.reader.read()
    models = {g.model.key: g.model for g in host.gpus if g.model is not None}
    caps = {s.key: instance_capacity(models[s.model], models[s.model].profile(s.profile)) for s in ph.slots}
    plan = _probe_plan(sweep)
    speeds: list[Speed] = []
    skipped: list[tuple[str, str]] = []
    free = list(ph.slots)
    probes: list[_Probe] = []
    try:
        for t in targets:
            pair = _choose(free, caps, t.need_mib)
            if pair is None:
                skipped.append((t.run.group, f"no two free instances of different compute hold {t.need_mib} MiB"))
                continue
            for side, slot in zip(("small", "large"), pair):
                free.remove(slot)
                with stops_deferred():  # started and recorded together: the interrupt's stop reaches it
                    probes.append(_spawn(plan, t, side, slot, caps[slot.key], state_dir, opts))
                on_event(ProbeEvent("start", 0, len(targets) * 2, t.run.id, f"{t.run.id} on {slot.profile} ({side})"))
        _watch(probes, opts)
    finally:
        _stop(probes, opts.grace_s)
        problems = release(backend, ph)
    by_run: dict[str, dict[str, _Probe]] = {}
    for p in probes:
        by_run.setdefault(p.target.run.id, {})[p.side] = p
    for sides in by_run.values():
        s, lg = sides["small"], sides["large"]
        a, b = s.clock.step_s(), lg.clock.step_s()
        group = s.target.run.group
        if a is None or b is None:
            skipped.append(
                (group, f"fewer than {MIN_STEPS + 1} step lines (print `{MARKER}` once per step, or a `step N` progress line; see {s.adir / 'stdout.log'})")
            )
            continue
        sp = _speed(s, lg, a, b, ph)
        speeds.append(sp)
        compute, lower, small, large = sp.compute, sp.lower_bound, sp.small, sp.large
        on_event(
            ProbeEvent(
                "end",
                len(speeds),
                len(by_run),
                s.target.run.id,
                f"group {group}: compute {'at least ' if lower else ''}{compute:.3g} ({small.step_s:.3g} s/step on "
                f"{small.profile}, {large.step_s:.3g} s/step on {large.profile})",
            )
        )
    return speeds, skipped, ph.notes, problems


def _watch(probes: list[_Probe], opts: ProbeOptions) -> None:
    """Read the probes' step lines until every probe has ended or the time limit (and grace) passed."""
    deadline = time.monotonic() + opts.limit_s() + opts.grace_s + 5
    while any(p.popen.poll() is None for p in probes) and time.monotonic() < deadline:
        time.sleep(min(opts.sample_s, 0.02))
        now = time.monotonic()
        for p in probes:
            p.clock.poll(now)
    for p in probes:
        p.clock.poll(time.monotonic())


def _speed(s: _Probe, lg: _Probe, a: tuple[float, int, str], b: tuple[float, int, str], ph: ProbeHost) -> Speed:
    """The group's speed from its run timed on a small (`s`, `a`) and a large (`lg`, `b`) instance."""
    small = SpeedSide(s.slot.profile, s.capacity, a[0], a[1])
    large = SpeedSide(lg.slot.profile, lg.capacity, b[0], b[1])
    compute, lower = fit_compute(small, large)
    return Speed(
        s.target.run.group,
        s.target.run.id,
        compute,
        lower,
        a[2] if a[2] == b[2] else "progress-lines",
        s.slot.model,
        small,
        large,
        ph.driver,
        ph.simulated,
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def _spawn(plan: Any, t: ProbeTarget, side: str, slot: ProbeSlot, capacity: float, state_dir: Path, opts: ProbeOptions) -> _Probe:
    run = replace(t.run, id=f"{t.run.id}.{side}")
    rdir = state_dir / run.id
    attempt = 1 + sum(1 for _ in rdir.glob("attempt-*"))
    spec = build_spec(plan, _plan_run(run, slot), instance=slot.key, mig_uuid=slot.uuid, attempt=attempt, state_dir=state_dir)
    env = dict(spec.env)
    env.pop("MIGBENCH_RESUME", None)
    env["MIGBENCH_PROBE"] = "1"
    if opts.steps:
        env["MIGBENCH_PROBE_STEPS"] = str(opts.steps)
    spec = replace(spec, env=dict(sorted(env.items())), timeout_s=opts.limit_s(), stop_grace_s=opts.grace_s)
    prepare_attempt(spec)
    adir = Path(spec.attempt_dir)
    return _Probe(t, side, slot, capacity, adir, spawn_shim(adir), StepClock(adir / "stdout.log"))


def _stop(probes: Sequence[_Probe], grace_s: float) -> None:
    """Whatever still runs: SIGTERM, the grace, SIGKILL (as `migbench profile` stops its probes)."""
    live = [p for p in probes if p.popen.poll() is None]
    for p in live:
        try:
            os.kill(p.popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(p.popen.poll() is None for p in live):
        time.sleep(0.05)
    for p in live:
        if p.popen.poll() is None:
            doc = read_json(p.adir / "child.json") or {}
            kill_group(int(doc.get("pgid") or 0), signal.SIGKILL)
            kill_group(p.popen.pid, signal.SIGKILL)
        p.popen.wait()


def profile_speed(
    sweep: Sweep,
    *,
    output: str | os.PathLike[str] | None = None,
    opts: ProbeOptions = ProbeOptions(),
    groups: Sequence[str] | None = None,
    backend: Backend | None = None,
    on_event: Callable[[ProbeEvent], None] = lambda e: None,
) -> tuple[list[Speed], list[tuple[str, str]], list[str], list[str], Footprints, Path]:
    """`migbench profile --speed`: measure each group's compute and merge it into the footprints file."""
    from migbench.backend.select import open_backend, sim_dir, use_simulated_host

    out, existing = footprints_to_merge(sweep, output)
    sd = profile_dir(sweep) / "speed"
    require_trusted(sd, "state directory")  # before the GPUs are cut for the probes (each probe's start checks it too)
    use_simulated_host(sim_dir())
    be = backend or open_backend()
    with stops_as_interrupts():
        speeds, skipped, notes, problems = measure_speeds(sweep, be, opts, sd, groups=groups, on_event=on_event)
    fp = (existing or Footprints(sweep.name)).with_speeds(speeds)
    fp.sweep, fp.sweep_sha256 = sweep.name, sweep.sha256
    fp.save(out)
    return speeds, skipped, notes, problems, fp, out
