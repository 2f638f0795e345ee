"""The MIG instances `migbench profile` probes on, and leaving the host as it found it.

- A GPU in MIG mode that already has instances lends its **idle** ones (a compute instance, no
  process), unchanged.
- A GPU in MIG mode with no instance gets a **probe layout**: the planner's runs-at-once layout
  for the probes' declared memory (OR-Tools CP-SAT, as `migbench plan`), of which the instances
  some probe is assigned to are created at their exact placements, and destroyed at the end.
- A GPU with MIG off is left alone (turning MIG on needs a GPU reset; `migbench apply` does it).

Nothing else is changed: an instance profile did not create is never destroyed, and at the end the
host is read back and compared with what it was.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from dataclasses import dataclass, field

from migbench.apply import HostLock
from migbench.apply.recovery import ApplyInterrupted, SignalGuard
from migbench.backend.base import Backend, HostState
from migbench.duration import Demand
from migbench.errors import HardwareError, MigbenchError
from migbench.planner import FleetGpu, SolveOptions, solve
from migbench.types import InstanceRef, Objective, Placement


@dataclass(frozen=True)
class ProbeSlot:
    """One MIG device a probe can run on."""

    gpu: int
    placement: Placement
    memory_mib: int
    uuid: str
    model: str
    created: bool = False

    @property
    def key(self) -> str:
        return str(InstanceRef(self.gpu, self.placement))

    @property
    def profile(self) -> str:
        return self.placement.profile


@dataclass
class ProbeHost:
    """The slots, what was created for them, and the host as it was before."""

    slots: list[ProbeSlot]
    driver: str
    simulated: bool
    before: dict[int, tuple[Placement, ...]]
    created: list[tuple[int, Placement]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def prepare_slots(
    backend: Backend,
    needs: Sequence[int],
    *,
    gpus: Sequence[int] | None = None,
    time_limit_s: float = 5.0,
    profiles: Sequence[tuple[str, ...] | None] | None = None,
) -> ProbeHost:
    """Read the host, take its idle instances, create a probe layout on its empty MIG GPUs
    (`profiles`, one per need: the profiles that need's instance may have, as `profiles:` in a sweep)."""
    host = backend.reader.read()
    notes: list[str] = []
    wanted = set(gpus) if gpus is not None else None
    if wanted is not None:
        missing = sorted(wanted - {g.index for g in host.gpus})
        if missing:
            raise MigbenchError(f"--gpus: the host has no GPU {', '.join(map(str, missing))}", hint=f"it has {len(host.gpus)} GPU(s)")
    slots: list[ProbeSlot] = []
    empty: list[FleetGpu] = []
    for g in host.gpus:
        if wanted is not None and g.index not in wanted:
            continue
        if not g.mig_current or g.model is None:
            notes.append(f"GPU {g.index}: MIG is off; not used (enable it with `migbench apply` or `sudo nvidia-smi -i {g.index} -mig 1`)")
            continue
        if not g.instances:
            empty.append(FleetGpu(g.index, g.model))
            continue
        idle = 0
        for gi in g.instances:
            devs = g.devices_of(gi.id)
            if len(devs) != 1 or devs[0].processes or g.processes_of(gi.id):
                continue
            slots.append(ProbeSlot(g.index, gi.placement, devs[0].memory_total_mib or int(gi.memory_mib or 0), devs[0].uuid, g.model.key))
            idle += 1
        notes.append(f"GPU {g.index}: probes use its {idle} idle instance(s) as they are" if idle else f"GPU {g.index}: every instance is busy; not used")
    ph = ProbeHost(slots, host.driver, host.simulated, {g.index: g.layout() for g in host.gpus}, notes=notes)
    if empty and needs:
        _create_layout(backend, ph, empty, needs, time_limit_s, profiles)
    if not ph.slots:
        raise MigbenchError(
            "no MIG instance to probe on: " + ("; ".join(notes) if notes else "the host has no MIG-capable GPU"),
            hint="enable MIG (`migbench apply PLAN`, or on the simulator `migbench sim init DIR --mig on`), "
            "or free an instance; profile never changes an instance it did not create",
        )
    return ph


def _create_layout(
    backend: Backend, ph: ProbeHost, empty: list[FleetGpu], needs: Sequence[int], time_limit_s: float, profiles: Sequence[tuple[str, ...] | None] | None = None
) -> None:
    largest = {g.index: max(int(p.memory_mib or 0) for p in g.model.profiles) for g in empty}
    cap = max(largest.values())
    demands = [Demand(f"probe-{i}", max(1, min(n, cap)), profiles=profiles[i] if profiles else None) for i, n in enumerate(needs)]
    # Probes hold memory, not compute: no second objective growing their instances past their memory.
    sol = solve(demands, empty, SolveOptions(time_limit_s=time_limit_s, objective=Objective.THROUGHPUT, allow_unplaced=True, most_compute=False))
    used = {(a.gpu, a.placement) for a in sol.assigned.values()}
    model_of = {g.index: g.model for g in empty}
    todo = sorted(used, key=lambda gp: (gp[0], -model_of[gp[0]].profile(gp[1].profile).memory_slices, gp[1].start))
    w = backend.writer
    # a signal (Ctrl-C, SIGTERM, SIGHUP) waits for the step under way; on it or an error, what was
    # created is removed (once the lock is let go: removing takes it again)
    with SignalGuard() as guard:
        failed: MigbenchError | None = None
        with HostLock(backend.lock_path):
            try:
                for gpu, pl in todo:
                    guard.check()
                    prof = model_of[gpu].profile(pl.profile)
                    gid = w.create_gpu_instance(gpu, prof.id, pl.start, prof.memory_slices)
                    ph.created.append((gpu, pl))
                    if gid is None:
                        gi = backend.reader.read().gpu(gpu).instance_at(pl)
                        gid = gi.id if gi else None
                    if gid is None:
                        raise HardwareError(f"GPU {gpu}: the probe instance {pl} vanished after it was created")
                    w.create_compute_instance(gpu, gid)
                guard.check()
            except MigbenchError as exc:
                failed = exc
        if failed is not None:
            problems = _destroy(backend, ph)
            if isinstance(failed, ApplyInterrupted):
                failed.message = f"profile interrupted by {signal.Signals(failed.signum).name} while it created the probe layout; nothing was probed"
                failed.message += "" if problems else " and the instances it had created are removed"
            if problems:
                failed.message += "\nRemoving the probe instances also failed:\n  " + "\n  ".join(problems)
            raise failed
    host = backend.reader.read()
    for gpu, pl in todo:
        g = host.gpu(gpu)
        gi = g.instance_at(pl)
        devs = g.devices_of(gi.id) if gi else []
        if gi is None or not devs:
            continue
        ph.slots.append(ProbeSlot(gpu, pl, devs[0].memory_total_mib or int(gi.memory_mib or 0), devs[0].uuid, model_of[gpu].key, created=True))
    by_gpu: dict[int, list[str]] = {}
    for gpu, pl in todo:
        by_gpu.setdefault(gpu, []).append(str(pl))
    for gpu, pls in sorted(by_gpu.items()):
        ph.notes.append(f"GPU {gpu}: created a probe layout {', '.join(pls)} (removed at the end)")


def release(backend: Backend, ph: ProbeHost) -> list[str]:
    """Destroy the instances profile created; read the host back and compare each GPU with how it
    was found. Returns the problems (empty when the host is as it was)."""
    problems = _destroy(backend, ph) if ph.created else []
    try:
        after = backend.reader.read()
    except MigbenchError as exc:
        return problems + [f"cannot read the host back: {exc.message}"]
    problems += changed_since(ph.before, after)
    return problems


def changed_since(before: dict[int, tuple[Placement, ...]], after: HostState) -> list[str]:
    out = []
    for g in after.gpus:
        if g.index in before and g.layout() != before[g.index]:
            was = ", ".join(map(str, before[g.index])) or "no instance"
            now = ", ".join(map(str, g.layout())) or "no instance"
            out.append(f"GPU {g.index}: its instances were {was} before profiling and are {now} now")
    return out


def _destroy(backend: Backend, ph: ProbeHost) -> list[str]:
    """Destroy what profile created, under the apply lock. A GPU whose instances are exactly the
    ones profile created on it (it had none) is emptied in two commands; otherwise one by one."""
    problems: list[str] = []
    w = backend.writer
    with HostLock(backend.lock_path):
        try:
            host = backend.reader.read()
        except MigbenchError as exc:
            return [f"cannot read the host to remove the probe instances: {exc.message}"]
        left: list[tuple[int, Placement]] = []
        for gpu in sorted({g for g, _ in ph.created}):
            mine = [pl for g, pl in ph.created if g == gpu]
            st = host.gpu(gpu)
            if not ph.before.get(gpu) and set(st.layout()) == set(mine) and not st.processes:
                try:
                    w.destroy_all_instances(gpu)
                    continue
                except MigbenchError:
                    host = backend.reader.read()  # fall back to one by one, from what is left
                    st = host.gpu(gpu)
            for pl in reversed(mine):
                gi = st.instance_at(pl)
                if gi is None:
                    continue
                try:
                    for ci in gi.compute_instances:
                        w.destroy_compute_instance(gpu, gi.id, ci.id)
                    w.destroy_gpu_instance(gpu, gi.id)
                except MigbenchError as exc:
                    problems.append(f"GPU {gpu}: cannot remove the probe instance {pl}: {exc.message}")
                    left.append((gpu, pl))
    ph.created = left
    return problems
