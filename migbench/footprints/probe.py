"""`migbench profile`: run each configuration briefly on a MIG instance and record its peak memory.

Each probe is one run of the sweep started exactly as a launch starts it (`launch.spec.build_spec`,
the per-run shim, `CUDA_VISIBLE_DEVICES=<MIG uuid>`), one probe per instance, as many at once as
there are instances (`slots`), with, in its environment:

- `MIGBENCH_PROBE=1`;
- `MIGBENCH_REPORT_MEMORY=<file>`: the run may write its own peak there as JSON, e.g.
  `{"peak_mib": torch.cuda.max_memory_reserved() / 2**20}` (or `"peak_bytes"`), as often as it
  likes; the newest content counts;
- `MIGBENCH_PROBE_STEPS=N` with `--steps N`: the run may stop by itself after N steps.

The shim stops a probe at its time limit (`--seconds`, default 60 s; 300 s with `--steps`): SIGTERM
to its process group, SIGKILL after the grace (`--grace`, default 5 s), so a hung probe ends too.

Meanwhile NVML is sampled every `sample_s` (default 0.05 s) for the used memory of each probe's
processes on its MIG device (its child and anything in its session; every process on the device
when NVML's PIDs are not this machine's; the device's used memory, less what it used before the
probe, when NVML reports no per-process figure). The peak is the larger of the sampled peak and the
run's own report.

A probe that runs out of memory is data: it is probed again on a larger free instance when there
is one; otherwise it is recorded as a lower bound (`lower_bound: true`, the instance it died on).
A probe that fails otherwise is recorded with `outcome: failed` (not used by plans); one that showed
no memory at all is listed as skipped.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from migbench.backend.base import Backend, DeviceUsage
from migbench.errors import UsageError
from migbench.footprints.file import Footprints, Measurement
from migbench.footprints.resolve import footprints_to_merge
from migbench.footprints.select import ProbeTarget, probe_targets
from migbench.footprints.slots import ProbeHost, ProbeSlot, prepare_slots, release
from migbench.fsutil import require_trusted
from migbench.launch.procs import kill_group, read_json, spawn_shim
from migbench.launch.spec import build_spec, outcome_of, prepare_attempt
from migbench.plan import Assignment, Plan, PlanRun, SolverInfo
from migbench.sweep import Run, Sweep
from migbench.types import InstanceRef

REPORT_ENV = "MIGBENCH_REPORT_MEMORY"
PROBE_ENV = "MIGBENCH_PROBE"
STEPS_ENV = "MIGBENCH_PROBE_STEPS"
DEFAULT_SECONDS = 60.0
DEFAULT_STEPS_LIMIT_S = 300.0


@dataclass(frozen=True)
class ProbeOptions:
    """How to probe. `seconds` is each probe's time limit (None: 60 s, or 300 s with `steps`)."""

    seconds: float | None = None
    steps: int | None = None
    grace_s: float = 5.0
    sample_s: float = 0.05
    solver_time_s: float = 5.0
    gpus: tuple[int, ...] | None = None

    def limit_s(self) -> float:
        if self.seconds is not None:
            return self.seconds
        return DEFAULT_STEPS_LIMIT_S if self.steps else DEFAULT_SECONDS


@dataclass(frozen=True)
class ProbeEvent:
    """Progress: `kind` is layout, start, end, retry or skip; `done` of `total` probes finished."""

    kind: str
    done: int
    total: int
    run_id: str = ""
    text: str = ""


@dataclass
class ProfileResult:
    measurements: list[Measurement]
    skipped: list[tuple[str, str]]  # (run id, why)
    notes: list[str]
    problems: list[str]  # the host not left as found
    setup_s: float
    probing_s: float
    teardown_s: float
    slots: int
    interrupted: bool = False


@dataclass
class _Active:
    target: ProbeTarget
    slot: ProbeSlot
    attempt: int
    adir: Path
    popen: Any
    started: float
    started_wall: float
    baseline_mib: int
    nvml_peak: int | None = None
    samples: int = 0
    how: set[str] = field(default_factory=set)
    child_pid: int | None = None


class Profiler:
    """Probes `targets` of `sweep` on the current host; `run()` returns when every probe has ended
    and the host is back as it was."""

    def __init__(
        self,
        sweep: Sweep,
        targets: Sequence[ProbeTarget],
        backend: Backend,
        opts: ProbeOptions,
        state_dir: Path,
        on_event: Callable[[ProbeEvent], None] = lambda e: None,
    ):
        if opts.sample_s <= 0 or opts.grace_s < 0 or opts.limit_s() <= 0:
            raise UsageError("--seconds, --grace and --sample-interval must be positive")
        self.sweep = sweep
        self.targets = list(targets)
        self.backend = backend
        self.opts = opts
        self.sd = Path(state_dir)
        self.on_event = on_event
        self.plan = _probe_plan(sweep)
        self.queue: list[tuple[ProbeTarget, int]] = []  # (target, memory it needs now)
        self.active: dict[str, _Active] = {}  # slot key -> probe
        self.results: list[Measurement] = []
        self.skipped: list[tuple[str, str]] = []
        self.done = 0
        self.reader: Any = None

    def say(self, kind: str, run_id: str = "", text: str = "") -> None:
        self.on_event(ProbeEvent(kind, self.done, len(self.targets), run_id, text))

    def run(self) -> ProfileResult:
        t0 = time.monotonic()
        ph = prepare_slots(self.backend, [t.need_mib for t in self.targets], gpus=self.opts.gpus, time_limit_s=self.opts.solver_time_s)
        for n in ph.notes:
            self.say("layout", text=n)
        t1 = time.monotonic()
        interrupted = False
        try:
            from migbench.backend.nvml import NvmlReader

            self.reader = self.backend.reader if isinstance(self.backend.reader, NvmlReader) else NvmlReader(simulated=ph.simulated)
            self._loop(ph)
        except KeyboardInterrupt:
            interrupted = True
            self.say("skip", text="interrupted: stopping the probes")
        finally:
            self._stop_all()
            t2 = time.monotonic()
            problems = release(self.backend, ph)
            t3 = time.monotonic()
        for t, _ in self.queue:
            self.skipped.append((t.run.id, "not probed (interrupted)"))
        return ProfileResult(self.results, self.skipped, ph.notes, problems, t1 - t0, t2 - t1, t3 - t2, len(ph.slots), interrupted)

    # -- the loop --------------------------------------------------------------------------------
    def _loop(self, ph: ProbeHost) -> None:
        largest = max(s.memory_mib for s in ph.slots)
        for t in sorted(self.targets, key=lambda t: -t.need_mib):
            self.queue.append((t, min(t.need_mib, largest)))
        while self.queue or self.active:
            self._start(ph)
            if self.queue and not self.active:  # every instance is free and none holds them: never spin
                for t, need in self.queue:
                    self.skipped.append((t.run.id, f"needs {need} MiB; no instance has that much"))
                self.queue.clear()
            time.sleep(self.opts.sample_s)
            self._sample()
            self._reap(ph)

    def _start(self, ph: ProbeHost) -> None:
        for slot in sorted(ph.slots, key=lambda s: (s.memory_mib, s.key)):
            if slot.key in self.active or not self.queue:
                continue
            fits = [i for i, (_, need) in enumerate(self.queue) if need <= slot.memory_mib]
            if not fits:
                continue
            i = fits[0]  # the queue is largest first: the largest probe this instance holds
            t, _need = self.queue.pop(i)
            with stops_deferred():  # started and recorded together: an interrupt stops every probe that runs
                self.active[slot.key] = self._spawn(t, slot, ph)
            self.say("start", t.run.id, f"{t.run.id} on GPU {slot.gpu} {slot.placement} ({slot.memory_mib} MiB)")

    def _spawn(self, t: ProbeTarget, slot: ProbeSlot, ph: ProbeHost) -> _Active:
        rdir = self.sd / t.run.id
        attempt = 1 + max((int(p.name.split("-", 1)[1]) for p in rdir.glob("attempt-*") if p.name.split("-", 1)[1].isdigit()), default=0)
        pr = _plan_run(t.run, slot)
        spec = build_spec(self.plan, pr, instance=slot.key, mig_uuid=slot.uuid, attempt=attempt, state_dir=self.sd)
        adir = Path(spec.attempt_dir)
        env = dict(spec.env)
        env.pop("MIGBENCH_RESUME", None)  # a probe starts from scratch, whatever attempt it is
        env[PROBE_ENV] = "1"
        env[REPORT_ENV] = str(adir / "memory.json")
        if self.opts.steps:
            env[STEPS_ENV] = str(self.opts.steps)
        spec = replace(spec, env=dict(sorted(env.items())), timeout_s=self.opts.limit_s(), stop_grace_s=self.opts.grace_s)
        prepare_attempt(spec)
        baseline = 0  # what the device uses before the probe (an idle MIG device shows a few MiB)
        try:
            baseline = self.reader.device_usage([slot.uuid]).get(slot.uuid, DeviceUsage(0)).used_mib
        except Exception:  # noqa: BLE001 - a baseline is a refinement only
            pass
        p = spawn_shim(adir)
        return _Active(t, slot, attempt, adir, p, time.monotonic(), time.time(), baseline)

    def _sample(self) -> None:
        if not self.active:
            return
        try:
            usage = self.reader.device_usage([a.slot.uuid for a in self.active.values()])
        except Exception:  # noqa: BLE001 - a failed sample is a missed sample, not a failed probe
            return
        for a in self.active.values():
            u = usage.get(a.slot.uuid)
            if u is None:
                continue
            if a.child_pid is None:
                doc = read_json(a.adir / "child.json")
                if doc and doc.get("pid"):
                    a.child_pid = int(doc["pid"])
            mine = [(pid, mib) for pid, mib in u.processes if self._belongs(pid, a)]
            procs = mine or list(u.processes)  # NVML's PIDs may be another namespace's: the device is this probe's
            used: int | None = None
            if procs and all(mib is not None for _, mib in procs):
                used = sum(int(mib or 0) for _, mib in procs)
                a.how.add("nvml-process" if mine else "nvml-device")
            elif procs:
                used = max(0, u.used_mib - a.baseline_mib)
                a.how.add("nvml-device")
            if used is not None:
                a.samples += 1
                a.nvml_peak = used if a.nvml_peak is None else max(a.nvml_peak, used)

    def _belongs(self, pid: int, a: _Active) -> bool:
        if pid == a.child_pid:
            return True
        try:
            return os.getsid(pid) == a.popen.pid
        except OSError:
            return False

    def _reap(self, ph: ProbeHost) -> None:
        for key, a in list(self.active.items()):
            if a.popen.poll() is None:
                continue
            del self.active[key]
            self._ended(a, ph)

    def _ended(self, a: _Active, ph: ProbeHost) -> None:
        res = outcome_of(read_json(a.adir / "exit.json"))
        reported = _reported_peak(a.adir / "memory.json")
        probe_s = (res.ended_at - a.started_wall) if res is not None else time.monotonic() - a.started
        rid = a.target.run.id
        if res is None:
            outcome = "failed"
        elif res.oom:
            outcome = "oom"
        elif res.returncode == 0:
            outcome = "finished"
        elif res.timed_out:
            outcome = "stopped"
        else:
            outcome = "failed"
        if outcome == "oom":
            larger = [s for s in ph.slots if s.memory_mib > a.slot.memory_mib]
            if larger:
                need = a.slot.memory_mib + 1
                self.queue.append((a.target, need))
                self.queue.sort(key=lambda tn: -tn[1])
                self.say("retry", rid, f"{rid}: out of memory on {a.slot.profile} ({a.slot.memory_mib} MiB); probing it again on a larger instance")
                return
        self.done += 1
        peaks = [p for p in (a.nvml_peak, reported) if p is not None]
        how = sorted(a.how) + (["run-report"] if reported is not None else [])
        if outcome == "oom":
            peak = max([a.slot.memory_mib + 1] + peaks)
            how = how or ["nvml-device"]
        elif not peaks or max(peaks) <= 0:
            if outcome == "failed":
                why = f"it failed ({_why(res)}) before using GPU memory"
            elif outcome == "stopped":
                why = f"it was stopped at its limit of {self.opts.limit_s():g} s before it used GPU memory: give it longer (--seconds)"
            else:
                why = "it showed no GPU memory (does it use the GPU?)"
            self.skipped.append((rid, why))
            self.say("skip", rid, f"{rid}: {why}; see {a.adir}")
            return
        else:
            peak = max(peaks)
        m = Measurement(
            run=rid,
            group=a.target.run.group,
            params=dict(a.target.run.params),
            repeat=a.target.run.repeat,
            peak_mib=int(peak),
            how="+".join(dict.fromkeys(how)),
            outcome=outcome,
            gpu_model=a.slot.model,
            profile=a.slot.profile,
            instance_mib=a.slot.memory_mib,
            driver=ph.driver,
            date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(a.started_wall)),
            probe_s=round(max(0.0, probe_s), 3),
            nvml_peak_mib=a.nvml_peak,
            reported_peak_mib=reported,
            samples=a.samples,
            sample_s=self.opts.sample_s,
            lower_bound=outcome == "oom",
            declared_mib=a.target.need_mib or None,
            simulated=ph.simulated,
        )
        self.results.append(m)
        note = {"oom": "out of memory on the largest instance: a lower bound", "failed": f"failed ({_why(res)}): not used by plans"}.get(outcome, outcome)
        self.say("end", rid, f"{rid}: peak {m.peak_mib} MiB ({m.how}; {note})")

    def _stop_all(self) -> None:
        """Staged stop of whatever still runs (an interrupt): SIGTERM, the grace, SIGKILL."""
        if not self.active:
            return
        for a in self.active.values():
            try:
                os.kill(a.popen.pid, signal.SIGTERM)  # the shim forwards it to the run's process group
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + self.opts.grace_s
        while time.monotonic() < deadline and any(a.popen.poll() is None for a in self.active.values()):
            time.sleep(0.05)
        for a in self.active.values():
            if a.popen.poll() is None:
                doc = read_json(a.adir / "child.json") or {}
                kill_group(int(doc.get("pgid") or 0), signal.SIGKILL)
                kill_group(a.popen.pid, signal.SIGKILL)
            a.popen.wait()
        self.active.clear()


def _why(res: Any) -> str:
    if res is None:
        return "the shim left no result"
    if res.exec_error:
        return str(res.exec_error)
    if res.signal is not None:
        return f"signal {res.signal}"
    return f"exit code {res.returncode}"


def _reported_peak(path: Path) -> int | None:
    """The run's own report: `{"peak_mib": N}` or `{"peak_bytes": N}`; None when absent or unreadable."""
    doc = read_json(path)
    if not doc:
        return None
    v = doc.get("peak_mib")
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
        return int(-(-v // 1))
    v = doc.get("peak_bytes")
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
        return int(-(-v // (1 << 20)))
    return None


def _probe_plan(sweep: Sweep) -> Plan:
    """What `build_spec` reads of a plan (the launch settings, where relative paths start)."""
    return Plan(
        name=sweep.name,
        sweep_file=sweep.path,
        sweep_sha256=sweep.sha256,
        fleet=[],
        instances=[],
        runs=[],
        unplaced=[],
        solver=SolverInfo("PROBE", "", 0.0, 0.0, 0.0),
        duration_model=sweep.duration_model,
        launch=sweep.launch,
        models={},
        path=sweep.path,
    )


def _plan_run(r: Run, slot: ProbeSlot) -> PlanRun:
    return PlanRun.of(r.core(), Assignment.on(InstanceRef(slot.gpu, slot.placement), 0))


# ---------------------------------------------------------------------------------------------
# The whole command
# ---------------------------------------------------------------------------------------------


@contextmanager
def _handled(signums: Sequence[int], handler: Callable[[int, Any], None]) -> Iterator[None]:
    """`handler` for `signums` while the block runs, the handlers before put back after it. Outside
    the main thread it does nothing."""
    old: dict[int, Any] = {}
    try:
        for s in signums:
            old[s] = signal.signal(s, handler)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for signum, h in old.items():
            signal.signal(signum, h if h is not None else signal.SIG_DFL)


@contextmanager
def stops_as_interrupts() -> Iterator[None]:
    """While probes run, SIGTERM and SIGHUP end them as Ctrl-C does (KeyboardInterrupt: the probes
    are stopped, the probe layout removed, what was measured written); by default they killed
    migbench at once, leaving the layout on the GPUs and the probes running."""

    def interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    with _handled((signal.SIGTERM, signal.SIGHUP), interrupt):
        yield


@contextmanager
def stops_deferred() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP while a probe is started and recorded, then deliver one that
    came meanwhile (as its own handler takes it): a stop between the start of a probe's shim and
    its record left that probe out of the ones the interrupt stops, so it ran on to its limit and
    `profile` waited for it with the probe layout still on the GPUs."""
    got: list[int] = []
    try:
        with _handled((signal.SIGINT, signal.SIGTERM, signal.SIGHUP), lambda signum, _frame: got.append(signum)):
            yield
    finally:
        if got:
            signal.raise_signal(got[0])


def profile_dir(sweep: Sweep) -> Path:
    """Where the probes' run directories and logs go: `<sweep dir>/<log_dir>/<sweep name>.profile/`."""
    base = Path(sweep.path).resolve().parent if sweep.path else Path.cwd()
    return base / sweep.launch.log_dir / f"{sweep.name}.profile"


def profile(
    sweep: Sweep,
    *,
    output: str | os.PathLike[str] | None = None,
    opts: ProbeOptions = ProbeOptions(),
    sample: int | None = None,
    groups: Sequence[str] | None = None,
    backend: Backend | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    on_event: Callable[[ProbeEvent], None] = lambda e: None,
) -> tuple[ProfileResult, Footprints, Path]:
    """Probe `sweep`'s configurations on the current host (real, or simulated under MIGBENCH_SIM)
    and merge the measurements into the footprints file (`output`, default beside the sweep).
    The file is written even after an interrupt (with what was measured)."""
    from migbench.backend.select import open_backend, sim_dir, use_simulated_host

    targets = probe_targets(sweep, sample=sample, groups=groups)
    if not targets:
        raise UsageError(f"sweep {sweep.name} has no runs to probe")
    out, existing = footprints_to_merge(sweep, output)
    sd = Path(state_dir) if state_dir else profile_dir(sweep)
    require_trusted(sd, "state directory")  # before the GPUs are cut for the probes (each probe's start checks it too)
    use_simulated_host(sim_dir())  # absolute: the probes start in other directories
    be = backend or open_backend()
    with stops_as_interrupts():
        result = Profiler(sweep, targets, be, opts, sd, on_event).run()
    base = existing or Footprints(sweep.name)
    fp = base.merged(result.measurements)
    fp.sweep, fp.sweep_sha256 = sweep.name, sweep.sha256
    fp.save(out)
    return result, fp, out
