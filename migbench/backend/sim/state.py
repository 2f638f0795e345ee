"""The simulated host's state, as stored in `host.json`: GPUs, GPU and compute instances, processes,
clients, pending faults; the MIG devices derived from them; process liveness and identities (UUIDs,
bus ids).
"""

from __future__ import annotations

import hashlib
import uuid as uuidlib
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import psutil

from migbench.backend.sim.errors import INVALID_ARGUMENT, SimError
from migbench.backend.sim.rules import (
    CiProfile,
    choose_gpu_instance_start,
    ci_profiles,
    display_name,
    idle_gi_memory_mib,
    physical_start,
    resolve_model,
    uses_new_mig_uuids,
)
from migbench.catalog import (
    DriverVersion,
    GpuModel,
    Placement,
    Profile,
    model_from_spec,
    parse_driver,
)
from migbench.errors import MigbenchError

STATE_FILE = "host.json"
LOCK_FILE = "host.lock"
STATE_VERSION = 1

# ---------------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------------


@dataclass
class ComputeInstance:
    """A compute instance: `id` unique within its GI, placed at `start` over `size` compute slices."""

    id: int
    profile_id: int
    start: int
    size: int
    uuid: str
    serial: int


@dataclass
class GpuInstance:
    """A GPU instance: `id` as the driver numbers it, at memory slices `start`..`start+size-1`."""

    id: int
    profile_id: int
    start: int
    size: int
    serial: int
    compute_instances: list[ComputeInstance] = field(default_factory=list)

    def ci(self, ci_id: int) -> ComputeInstance | None:
        return next((c for c in self.compute_instances if c.id == ci_id), None)


@dataclass
class SimProcess:
    """A (real, local) process using a simulated device; `gi`/`ci` are None on a non-MIG GPU."""

    pid: int
    create_time: float
    gpu: int
    gi: int | None
    ci: int | None
    used_memory_mib: int
    name: str


@dataclass
class Fault:
    """Make the `remaining`-th next call of `op` (or any mutating op for "*") fail with NVML `code`."""

    op: str
    remaining: int
    code: int


@dataclass
class SimGpu:
    index: int
    uuid: str
    bus_id: str
    mig_current: bool
    mig_pending: bool
    clients: list[str] = field(default_factory=list)
    gpu_instances: list[GpuInstance] = field(default_factory=list)
    swapped: bool = False  # the two halves of the memory slices exchanged in GI numbering (docs/mig-facts.md#gi-ids)

    def gi(self, gi_id: int) -> GpuInstance | None:
        return next((g for g in self.gpu_instances if g.id == gi_id), None)


@dataclass(frozen=True)
class MigDevice:
    """A MIG device (one compute instance) as NVML and nvidia-smi show it. `index` is per parent GPU,
    in (GI id, CI id) order; `memory_mib` is its GI's memory (the CIs of a GI share it): the profile's, or
    what the catalogue records for that physical placement (`Profile.memory_at`)."""

    gpu: int
    index: int
    gi_id: int
    ci_id: int
    uuid: str
    name: str
    gi_profile: Profile
    ci_profile: CiProfile
    memory_mib: int
    serial: int


_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "bool": (bool,), "str": (str,), "int | None": (int, type(None)), "float": (int, float)}


def _check_types(obj: Any) -> None:
    """Raise TypeError naming the first field of a state record (read from host.json) whose value is
    not of its declared type (a hand-edited `"id": "x"` was found only where a reader computed with it)."""
    for f in fields(obj):
        v = getattr(obj, f.name)
        kinds = _TYPES.get(str(f.type))
        if kinds is not None and (not isinstance(v, kinds) or (isinstance(v, bool) and bool not in kinds)):
            raise TypeError(f"{type(obj).__name__}.{f.name} is {v!r}, not {f.type}")
        if str(f.type) == "list[str]" and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            raise TypeError(f"{type(obj).__name__}.{f.name} is not a list of strings")


@dataclass
class SimState:
    """Everything in `host.json`."""

    model_key: str
    driver: str
    seed: int
    vm: bool
    privileged: bool
    gpus: list[SimGpu]
    processes: list[SimProcess] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    serial: int = 0
    version: int = STATE_VERSION
    model_spec: dict[str, Any] | None = None
    """The profile table in catalogue form when the host was built from a real host's captures
    (`migbench sim init --from`); None: the catalogue's model `model_key`."""

    # -- derived ---------------------------------------------------------------------------------
    @property
    def model(self) -> GpuModel:
        if self.model_spec is None:
            return resolve_model(self.model_key, self.driver)
        cached = self.__dict__.get("_captured_model")
        if cached is None or cached[0] != self.driver:
            cached = (self.driver, model_from_spec(self.model_key, self.model_spec, self.driver, origin="capture"))
            self.__dict__["_captured_model"] = cached
        return cached[1]

    @property
    def driver_version(self) -> DriverVersion:
        v = parse_driver(self.driver)
        assert v is not None
        return v

    @property
    def product_name(self) -> str:
        return display_name(self.model, self.driver_version)

    @property
    def reset_possible(self) -> bool:
        """False in VM passthrough, where `nvidia-smi --gpu-reset` is not supported
        (docs/mig-facts.md#mode-reset-persistence)."""
        return not self.vm

    def gpu(self, index: int) -> SimGpu:
        if not 0 <= index < len(self.gpus):
            raise SimError(INVALID_ARGUMENT, f"there is no GPU {index} (the host has {len(self.gpus)})")
        return self.gpus[index]

    def gpu_by_uuid(self, uuid: str) -> SimGpu | None:
        return next((g for g in self.gpus if g.uuid.lower() == uuid.lower()), None)

    def gpu_by_bus_id(self, bus_id: str) -> SimGpu | None:
        want = _norm_bus_id(bus_id)
        return next((g for g in self.gpus if _norm_bus_id(g.bus_id) == want), None)

    def gi_profile(self, gi: GpuInstance) -> Profile:
        return self.model.profile_by_id(gi.profile_id)

    def processes_on(self, gpu: int, gi: int | None = None, ci: int | None = None) -> list[SimProcess]:
        out = [p for p in self.processes if p.gpu == gpu]
        if gi is not None:
            out = [p for p in out if p.gi == gi]
        if ci is not None:
            out = [p for p in out if p.ci == ci]
        return sorted(out, key=lambda p: (p.gi if p.gi is not None else -1, p.ci if p.ci is not None else -1, p.pid))

    def placements(self, gpu: int) -> list[Placement]:
        g = self.gpu(gpu)
        return [Placement(self.gi_profile(gi).name, gi.start) for gi in g.gpu_instances]

    def mig_devices(self, gpu: int) -> list[MigDevice]:
        """The MIG devices of GPU `gpu`, ordered (GI id, CI id) with their per-GPU index."""
        g = self.gpu(gpu)
        if not g.mig_current:
            return []
        out: list[MigDevice] = []
        for gi in sorted(g.gpu_instances, key=lambda x: x.id):
            prof = self.gi_profile(gi)
            cps = {c.id: c for c in ci_profiles(self.model, prof)}
            for ci in sorted(gi.compute_instances, key=lambda x: x.id):
                cp = cps[ci.profile_id]
                out.append(
                    MigDevice(
                        gpu=gpu,
                        index=len(out),
                        gi_id=gi.id,
                        ci_id=ci.id,
                        uuid=ci.uuid,
                        name=cp.name,
                        gi_profile=prof,
                        ci_profile=cp,
                        memory_mib=self.gi_memory_mib(g, gi),
                        serial=ci.serial,
                    )
                )
        return out

    def gi_memory_mib(self, g: SimGpu, gi: GpuInstance) -> int:
        """The memory a GPU instance reports: its profile's, or the catalogue's value for its physical placement."""
        prof = self.gi_profile(gi)
        return int(prof.memory_at(physical_start(self.model, gi.start, gi.size, g.swapped)) or 0)

    def all_mig_devices(self) -> list[MigDevice]:
        return [d for g in self.gpus for d in self.mig_devices(g.index)]

    def find_mig_device(self, uuid: str) -> MigDevice | None:
        u = uuid.strip()
        return next((d for d in self.all_mig_devices() if d.uuid == u), None)

    def gpu_memory_mib(self, gpu: int) -> int:
        """Total memory of a whole GPU: the catalogue's `memory_total_mib` when it knows it, else the
        largest profile's memory [U: a lower bound; the catalogue lacks the full-GPU figure]."""
        m = self.model
        return int(m.memory_total_mib or m.max_memory_mib())

    def used_memory_mib(self, gpu: int, gi: int | None = None) -> int:
        """Memory the simulated processes use (on GPU `gpu`, or one of its GPU instances)."""
        return sum(p.used_memory_mib for p in self.processes_on(gpu, gi))

    def gi_used_mib(self, gpu: int, gi: GpuInstance) -> int:
        """What nvidia-smi shows as used on a GPU instance: the driver's idle use (once compute instances exist;
        [U] by driver, `idle_gi_memory_mib`) plus its processes."""
        idle = idle_gi_memory_mib(self.driver_version, gi.size) if gi.compute_instances else 0
        return idle + self.used_memory_mib(gpu, gi.id)

    def remaining_capacity(self, gpu: int, profile: Profile) -> int:
        """How many more GIs of `profile` fit, created one after another with driver-chosen placements
        (`nvmlDeviceGetGpuInstanceRemainingCapacity`; nvidia-smi -lgip Free)."""
        existing = self.placements(gpu)
        n = 0
        while True:
            s = choose_gpu_instance_start(self.model, existing, profile)
            if s is None:
                return n
            existing = existing + [Placement(profile.name, s)]
            n += 1

    # -- (de)serialisation -------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if d["model_spec"] is None:
            del d["model_spec"]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SimState:
        if d.get("version") != STATE_VERSION:
            raise MigbenchError(
                f"simulated host state has version {d.get('version')!r}, expected {STATE_VERSION}",
                hint="re-create it with `migbench sim init`",
            )
        gpus = []
        for g in d["gpus"]:
            gis = []
            for gi in g.get("gpu_instances", []):
                cis = [ComputeInstance(**c) for c in gi.get("compute_instances", [])]
                gis.append(GpuInstance(**{**gi, "compute_instances": cis}))
            gpus.append(SimGpu(**{**g, "gpu_instances": gis}))
        processes = [SimProcess(**p) for p in d.get("processes", [])]
        faults = [Fault(**f) for f in d.get("faults", [])]
        all_gis = [gi for g in gpus for gi in g.gpu_instances]
        for obj in [*gpus, *all_gis, *(c for gi in all_gis for c in gi.compute_instances), *processes, *faults]:
            _check_types(obj)
        state = cls(
            model_key=d["model_key"],
            driver=d["driver"],
            seed=int(d["seed"]),
            vm=bool(d["vm"]),
            privileged=bool(d["privileged"]),
            gpus=gpus,
            processes=processes,
            faults=faults,
            serial=int(d.get("serial", 0)),
            version=int(d["version"]),
            model_spec=d.get("model_spec"),
        )
        problem = layout_problem(state)
        if problem is not None:
            raise ValueError(problem)
        return state


def layout_problem(state: SimState) -> str | None:
    """What makes `state` a host no driver could be in (a hand-edited host file), or None: GPUs out of
    index order, a GPU instance of a profile the model lacks, at a placement the profile does not
    have, or over memory slices another instance holds; compute instances outside their GPU
    instance's slices or over each other's; ids given twice; a process on a GPU the host lacks."""
    model = state.model
    for pos, g in enumerate(state.gpus):
        if g.index != pos:
            return f"GPU {g.index} is listed at position {pos}: GPUs must be listed by index, from 0"
        taken: dict[int, int] = {}
        for gi in g.gpu_instances:
            where = f"GPU {g.index}'s GPU instance {gi.id}"
            if sum(1 for o in g.gpu_instances if o.id == gi.id) > 1:
                return f"GPU {g.index} has two GPU instances with id {gi.id}"
            try:
                prof = model.profile_by_id(gi.profile_id)
            except (KeyError, ValueError, MigbenchError):
                return f"{where} has profile id {gi.profile_id}, which {model.key} does not have"
            if gi.size != prof.memory_slices or gi.start not in prof.starts:
                starts = ", ".join(map(str, prof.starts))
                return f"{where} ({prof.name}) is at memory slices {gi.start}+{gi.size}; {prof.name} takes {prof.memory_slices} slices at start {starts}"
            for sl in range(gi.start, gi.start + gi.size):
                if sl in taken:
                    return f"{where} ({prof.name}) overlaps GPU instance {taken[sl]} at memory slice {sl}"
                taken[sl] = gi.id
            problem = _ci_problem(gi, prof, where)
            if problem is not None:
                return problem
    for proc in state.processes:
        if not 0 <= proc.gpu < len(state.gpus):
            return f"process {proc.pid} is on GPU {proc.gpu}, which the host does not have"
    return None


def _ci_problem(gi: GpuInstance, prof: Profile, where: str) -> str | None:
    """`layout_problem` for the compute instances of `gi` (of profile `prof`)."""
    used: dict[int, int] = {}
    for ci in gi.compute_instances:
        if sum(1 for o in gi.compute_instances if o.id == ci.id) > 1:
            return f"{where} has two compute instances with id {ci.id}"
        if ci.size < 1 or ci.start < 0 or ci.start + ci.size > prof.compute_slices:
            return f"{where}'s compute instance {ci.id} is at compute slices {ci.start}+{ci.size}, outside the {prof.compute_slices} of {prof.name}"
        for sl in range(ci.start, ci.start + ci.size):
            if sl in used:
                return f"{where}'s compute instances {used[sl]} and {ci.id} overlap at compute slice {sl}"
            used[sl] = ci.id
    return None


def _norm_bus_id(bus_id: str) -> str:
    """`00000000:07:00.0`, `0000:07:00.0` and `07:00.0` compare equal."""
    parts = bus_id.strip().upper().split(":")
    if len(parts) == 3:
        parts = parts[1:]
    return ":".join(parts)


# ---------------------------------------------------------------------------------------------
# Process liveness
# ---------------------------------------------------------------------------------------------


def process_create_time(pid: int) -> float | None:
    """The start time of a live local process, or None when it does not exist (or is a zombie)."""
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        return p.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
        return None


def _alive(proc: SimProcess) -> bool:
    t = process_create_time(proc.pid)
    return t is not None and abs(t - proc.create_time) < 0.05


def prune_dead(state: SimState) -> bool:
    """Drop processes whose local PID has died (or was reused by another process). True if any went."""
    keep = [p for p in state.processes if _alive(p)]
    changed = len(keep) != len(state.processes)
    state.processes = keep
    return changed


# ---------------------------------------------------------------------------------------------
# Identity: UUIDs, bus ids
# ---------------------------------------------------------------------------------------------


def gpu_uuid_of(seed: int, key: str, index: int) -> str:
    h = hashlib.sha256(f"migbench-sim:{seed}:{key}:{index}".encode()).hexdigest()
    return f"GPU-{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def bus_id_of(index: int, vm: bool) -> str:
    if vm:
        # VM passthrough: devices on bus 0, like the pending-vm sample's 00000000:00:03.0.
        return f"00000000:00:{3 + index:02X}.0"
    # Bare metal: the PCI buses of an 8-GPU HGX/DGX A100 board, then further buses.
    buses = [0x07, 0x0F, 0x47, 0x4E, 0x87, 0x90, 0xB7, 0xBD]
    bus = buses[index] if index < len(buses) else 0xC0 + (index - len(buses)) * 2
    return f"00000000:{bus:02X}:00.0"


def mig_uuid_of(state: SimState, gpu: SimGpu, gi_id: int, ci_id: int, serial: int) -> str:
    """R470+: `MIG-` + a UUIDv5 (new per creation: the creation serial is hashed in); before R470 the
    `MIG-GPU-<gpu uuid>/<gi>/<ci>` form (docs/mig-facts.md#smi-formats [V])."""
    if not uses_new_mig_uuids(state.driver_version):
        return f"MIG-{gpu.uuid}/{gi_id}/{ci_id}"
    ns = uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"migbench-sim:{state.seed}:{gpu.uuid}")
    return "MIG-" + str(uuidlib.uuid5(ns, f"{gi_id}/{ci_id}/{serial}"))


def ci_remaining(gi: GpuInstance, cp: CiProfile) -> int:
    """How many more compute instances of `cp` fit in `gi`, lowest free start first [U]
    (`nvmlGpuInstanceGetComputeInstanceRemainingCapacity`, the -lcip Free column)."""
    used = {s for c in gi.compute_instances for s in range(c.start, c.start + c.size)}
    n = sum(1 for c in gi.compute_instances if c.profile_id == cp.id)
    free = 0
    for s in cp.starts:
        span = set(range(s, s + cp.slices))
        if not span & used and n + free < cp.max_count:
            used |= span
            free += 1
    return free
