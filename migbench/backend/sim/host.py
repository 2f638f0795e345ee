"""The simulated host: N identical MIG-capable GPUs whose state lives on disk.

The state directory holds `host.json` and `host.lock`. Every operation takes an exclusive `fcntl.flock`
on the lock file, loads `host.json`, mutates it and writes it back atomically (temp file, fsync,
`os.replace`); reads take a shared lock. Separate processes (the launcher, `migbench-nvidia-smi`, a
trainer attaching itself, pynvml through `fake_nvml`) therefore see one consistent host.

The rules come from docs/mig-facts.md and the real captures in tests/data/samples/ (indexed in
docs/captures.md); `rules` holds the driver's, `state` the data, `errors` NVML's codes. Markers: [V]
verified, [D] derived, [U] inferred; every [U] rule says why it was chosen. Geometry (profiles, legal
starts, per-profile maximums, the +me rule) is the catalogue's: `GpuModel.check` decides whether a set
of GPU instances is legal.

Units: memory in MiB (`*_mib`), GPU-instance placements in memory slices, compute-instance placements
in compute slices within their GPU instance.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pynvml

from migbench.backend.sim.errors import (
    DRIVER_NOT_LOADED,
    IN_USE,
    INSUFFICIENT_RESOURCES,
    INVALID_ARGUMENT,
    MEMORY,
    NO_PERMISSION,
    NOT_FOUND,
    NOT_SUPPORTED,
    SUCCESS,
    SimError,
    error_string,
    parse_error_code,
)
from migbench.backend.sim.rules import (
    MIN_MIG_DRIVER,
    CiProfile,
    choose_gpu_instance_start,
    ci_profiles,
    cuda_driver_version,
    full_driver,
    gpu_instance_id,
    newest_driver,
    resolve_model,
    uses_new_mig_uuids,
)
from migbench.backend.sim.state import (
    LOCK_FILE,
    STATE_FILE,
    ComputeInstance,
    Fault,
    GpuInstance,
    MigDevice,
    SimGpu,
    SimProcess,
    SimState,
    bus_id_of,
    ci_remaining,
    gpu_uuid_of,
    mig_uuid_of,
    process_create_time,
    prune_dead,
)
from migbench.catalog import (
    GpuModel,
    Placement,
    default_catalog,
    driver_str,
    parse_driver,
)
from migbench.errors import MigbenchError
from migbench.fsutil import read_input_text

MUTATING_OPS = (
    "create_gpu_instance",
    "create_compute_instance",
    "destroy_compute_instance",
    "destroy_gpu_instance",
    "set_mig_mode",
    "reset",
)

# ---------------------------------------------------------------------------------------------
# The host
# ---------------------------------------------------------------------------------------------


def _check_model(model: GpuModel) -> None:
    missing = [p.name for p in model.profiles if p.memory_mib is None]
    if missing:
        raise MigbenchError(
            f"the catalogue does not know the memory of {model.key} profile(s) {', '.join(missing)}, so the simulator cannot model this GPU",
            hint="simulate a model whose profiles are all known (see `migbench catalog list`), or teach "
            "the catalogue this GPU's real -lgip/-lgipp with `migbench catalog import`",
        )


def init_host(
    state_dir: str | os.PathLike[str],
    model_key: str,
    count: int,
    driver: str | None = None,
    mig: bool = False,
    *,
    vm: bool = False,
    privileged: bool = True,
    clients: Sequence[str] = (),
    seed: int = 0,
    gpu_uuids: Sequence[str] | None = None,
    swapped: Sequence[int] = (),
) -> SimHost:
    """Create (or replace) a simulated host of `count` identical GPUs of catalogue model `model_key`.

    `driver` defaults to the newest driver the catalogue has an observation for on that model; `mig` is the
    initial MIG mode (current = pending); `vm` models VM passthrough (no GPU reset: mode changes on Ampere
    stay pending until a reboot); `privileged` is whether the caller is root; `clients` are non-CUDA
    clients holding every GPU (nvidia-persistenced, dcgm...), which block GPU resets. UUIDs are
    deterministic from `seed` (or given in `gpu_uuids`). `swapped` lists the GPUs that number their GPU
    instances with the two halves of the memory slices exchanged (docs/mig-facts.md#gi-ids; default none, as in
    NVIDIA's own examples). The model comes from the default catalogue
    (built-in + user file), which every later operation resolves again for the host's driver.
    """
    cat = default_catalog()
    key = cat.find_key(model_key)
    if key is None:
        raise MigbenchError(f"unknown GPU model {model_key!r}", hint="known models: " + ", ".join(cat.keys()))
    if not driver:
        try:
            driver = newest_driver(cat, key)
        except MigbenchError:
            _check_model(cat.model(key))  # no observation at all: say which memory is unknown
            raise
    drv = full_driver(driver)
    dv = parse_driver(drv)
    assert dv is not None
    model = cat.model(key, driver=drv)
    _check_model(model)
    for prefix, minimum in MIN_MIG_DRIVER:
        if key.startswith(prefix) and dv < minimum:
            raise MigbenchError(
                f"{key} needs driver {driver_str(minimum)} or newer for MIG; {drv} is older",
                hint="docs/mig-facts.md#minimum-drivers, minimum drivers for MIG",
            )
    if not 1 <= count <= 64:
        raise MigbenchError(f"a simulated host has 1 to 64 GPUs, not {count}")
    if gpu_uuids is not None and len(gpu_uuids) != count:
        raise MigbenchError(f"{len(gpu_uuids)} GPU UUIDs given for {count} GPUs")
    gpus = [
        SimGpu(
            index=i,
            uuid=(gpu_uuids[i] if gpu_uuids else gpu_uuid_of(seed, key, i)),
            bus_id=bus_id_of(i, vm),
            mig_current=mig,
            mig_pending=mig,
            clients=sorted(set(clients)),
            swapped=i in set(swapped),
        )
        for i in range(count)
    ]
    if any(not 0 <= i < count for i in swapped):
        raise MigbenchError(f"swapped GPU index out of range: {sorted(swapped)} (the host has {count} GPUs)")
    state = SimState(model_key=key, driver=drv, seed=seed, vm=vm, privileged=privileged, gpus=gpus)
    return create_host(state_dir, state)


def create_host(state_dir: str | os.PathLike[str], state: SimState) -> SimHost:
    """Write a prepared state as the simulated host in `state_dir` (created; replaced if present)."""
    host = SimHost(state_dir)
    if host.dir.exists() and not host.dir.is_dir():
        raise MigbenchError(f"{host.dir} exists and is not a directory", hint="a simulated host is a directory: give a new or existing one")
    host.dir.mkdir(parents=True, exist_ok=True)
    with host._locked(exclusive=True):
        host._write(state)
    return host


class SimHost:
    """A handle on a simulated host directory. Each method is one locked transaction on `host.json`."""

    def __init__(self, state_dir: str | os.PathLike[str]):
        self.dir = Path(state_dir)
        self.path = self.dir / STATE_FILE
        self.lock_path = self.dir / LOCK_FILE

    def __repr__(self) -> str:
        return f"SimHost({str(self.dir)!r})"

    def exists(self) -> bool:
        return self.path.exists()

    # -- locking and persistence -------------------------------------------------------------------
    @contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            raise self._missing() from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def _missing(self) -> SimError:
        return SimError(
            DRIVER_NOT_LOADED,
            f"no simulated host in {self.dir}",
            hint=f"create one with `migbench sim init {self.dir} --gpu A100-SXM4-40GB --count 1`",
        )

    def _load(self) -> SimState:
        if not self.path.exists() and not self.path.is_symlink():
            raise self._missing()
        text = read_input_text(self.path, "simulated host state", hint="re-create it with `migbench sim init`", regular=True)
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict):
                raise TypeError(f"a JSON object was expected, not {type(doc).__name__}")
            return SimState.from_json(doc)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            if isinstance(exc, MigbenchError):
                raise
            raise MigbenchError(
                f"{self.path} is not a valid simulated host state ({type(exc).__name__}: {exc})",
                hint="re-create it with `migbench sim init`",
            ) from None

    def _write(self, state: SimState) -> None:
        """Replace `host.json` atomically (temp file + rename): a process killed mid-write leaves the
        old state or the new one. No fsync: like the driver's own state, the simulated host's
        instances do not outlive the machine (a crash of the machine is a reboot), so durability
        across power loss buys nothing and would cost every simulated driver call a disk flush."""
        data = json.dumps(state.to_json(), indent=1, sort_keys=True)
        fd, tmp = tempfile.mkstemp(prefix=".host.", suffix=".tmp", dir=self.dir)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(data)
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def read(self) -> SimState:
        """A snapshot under a shared lock (processes that died are left out, not written back).

        Snapshots are read-only: callers must not mutate them (use `transaction()` to change the
        host). The parsed state is reused while the file is unchanged; every write replaces the
        file (a new inode), so a changed host is always re-read."""
        with self._locked(exclusive=False):
            try:
                stat = os.stat(self.path)
            except FileNotFoundError:
                raise self._missing() from None
            ident = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            cached = getattr(self, "_cache", None)
            if cached is not None and cached[0] == ident:
                st = cached[1]
            else:
                st = self._load()
                self._cache = (ident, st)
        prune_dead(st)
        return st

    @contextmanager
    def transaction(self) -> Iterator[SimState]:
        """Exclusive lock, load, yield for mutation, write back. A `SimError` raised inside still writes
        the state (fault counters were consumed; operations validate before they mutate), then propagates;
        any other exception discards the changes."""
        if not self.path.exists():
            raise self._missing()
        with self._locked(exclusive=True):
            st = self._load()
            prune_dead(st)
            try:
                yield st
            except SimError:
                self._write(st)
                raise
            self._write(st)

    # -- helpers inside a transaction ---------------------------------------------------------------
    @staticmethod
    def _fire_fault(st: SimState, op: str) -> None:
        """Count this call against pending faults; raise the first one that reaches its nth call."""
        fired: Fault | None = None
        for f in st.faults:
            if f.op == op or f.op == "*":
                f.remaining -= 1
                if f.remaining <= 0 and fired is None:
                    fired = f
        st.faults = [f for f in st.faults if f.remaining > 0]
        if fired is not None:
            raise SimError(fired.code, f"injected fault on {op}: {error_string(fired.code)}")

    @staticmethod
    def _need_root(st: SimState, what: str) -> None:
        if not st.privileged:
            raise SimError(NO_PERMISSION, f"{what} needs root (the simulated caller is unprivileged)")

    @staticmethod
    def _need_mig(st: SimState, gpu: SimGpu) -> None:
        if not gpu.mig_current:
            raise SimError(NOT_SUPPORTED, f"GPU {gpu.index} does not have MIG mode enabled")

    @staticmethod
    def _next_serial(st: SimState) -> int:
        st.serial += 1
        return st.serial

    # -- MIG mode, reset, reboot ----------------------------------------------------------------------
    def set_mig_mode(self, gpu: int, enable: bool) -> int:
        """`nvmlDeviceSetMigMode` / `nvidia-smi -i N -mig 0|1`. Returns the activation status.

        Ampere (docs/mig-facts.md#mode-reset-persistence): the requested mode becomes *pending*; it is applied
        at once (a GPU reset) when nothing holds the GPU and a reset is possible -> SUCCESS. Otherwise it stays
        pending until `reset()` or `reboot()`: IN_USE when processes or clients hold the GPU, NOT_SUPPORTED in a
        VM (the activation status nvidia-smi printed in the VM sample, "...pending enable state...:Not
        Supported"; nvml.h documents RESET_REQUIRED for pass-through, the real text shows otherwise). Hopper and
        later change the mode at once; with processes running the change is refused (activation status IN_USE,
        mode unchanged) [U: no paste of that case].
        Disabling MIG while GPU instances exist is refused with IN_USE [U: conservative; no source says
        what the driver does].
        """
        with self.transaction() as st:
            g = st.gpu(gpu)
            self._need_root(st, "changing the MIG mode")
            self._fire_fault(st, "set_mig_mode")
            model = st.model
            if not enable and g.gpu_instances:
                raise SimError(
                    IN_USE,
                    f"GPU {gpu} still has {len(g.gpu_instances)} GPU instance(s); destroy them before disabling MIG",
                )
            if not model.mode_change_needs_reset:
                if g.mig_current == enable:
                    g.mig_pending = enable
                    return SUCCESS
                if st.processes_on(gpu):
                    g.mig_pending = g.mig_current
                    return IN_USE
                g.mig_current = g.mig_pending = enable
                return SUCCESS
            g.mig_pending = enable
            if g.mig_current == enable:
                return SUCCESS
            if not st.reset_possible:
                return NOT_SUPPORTED
            if st.processes_on(gpu) or g.clients:
                return IN_USE
            g.mig_current = enable
            g.gpu_instances = []
            return SUCCESS

    def reset_blocker(self, st: SimState, gpu: int) -> SimError | None:
        """Why GPU `gpu` cannot be reset now (None if it can)."""
        g = st.gpu(gpu)
        if not st.reset_possible:
            return SimError(NOT_SUPPORTED, f"resetting GPU {g.bus_id} is not supported (VM passthrough)")
        users = [f"pid {p.pid}" for p in st.processes_on(gpu)] + list(g.clients)
        if users:
            return SimError(IN_USE, f"GPU {g.bus_id} is in use by {', '.join(users)}")
        return None

    def reset(self, gpus: Sequence[int]) -> None:
        """`nvidia-smi --gpu-reset [-i ...]`: all of `gpus` or none (the first blocker is raised).

        A reset applies a pending MIG mode (Ampere) and destroys every GPU and compute instance. On Hopper
        and later MIG mode does not survive a reset (docs/mig-facts.md#mode-reset-persistence,
        NVIDIA/gpu-admin-tools#2).
        """
        with self.transaction() as st:
            for i in gpus:
                st.gpu(i)
            self._need_root(st, "a GPU reset")
            self._fire_fault(st, "reset")
            for i in gpus:
                err = self.reset_blocker(st, i)
                if err is not None:
                    raise err
            for i in gpus:
                self._apply_reset(st, st.gpus[i])

    @staticmethod
    def _apply_reset(st: SimState, g: SimGpu) -> None:
        g.gpu_instances = []
        if st.model.mode_persists_across_reboot:
            g.mig_current = g.mig_pending
        else:
            g.mig_current = g.mig_pending = False
        st.processes = [p for p in st.processes if p.gpu != g.index]

    def reboot(self) -> None:
        """All GPU/compute instances and processes vanish. Ampere keeps the MIG mode (a pending change takes
        effect); Hopper and later come back with MIG disabled (docs/mig-facts.md#mode-reset-persistence)."""
        with self.transaction() as st:
            st.processes = []
            for g in st.gpus:
                self._apply_reset(st, g)

    # -- GPU instances -------------------------------------------------------------------------------
    def create_gpu_instance(self, gpu: int, profile_id: int, start: int | None = None, size: int | None = None) -> GpuInstance:
        """`nvmlDeviceCreateGpuInstance` (start None: the driver picks the placement, see
        `choose_gpu_instance_start`) or `nvmlDeviceCreateGpuInstanceWithPlacement` (exactly `start`, with
        `size` memory slices when given). Errors: NOT_SUPPORTED (MIG not enabled), INVALID_ARGUMENT
        (unknown profile id, illegal start or size), INSUFFICIENT_RESOURCES (occupied, over the maximum,
        over the compute budget, driver rule)."""
        with self.transaction() as st:
            g = st.gpu(gpu)
            self._need_root(st, "creating a GPU instance")
            self._fire_fault(st, "create_gpu_instance")
            self._need_mig(st, g)
            model = st.model
            try:
                prof = model.profile_by_id(int(profile_id))
            except MigbenchError:
                raise SimError(INVALID_ARGUMENT, f"{model.key} has no GPU instance profile ID {profile_id}") from None
            existing = st.placements(gpu)
            if start is None:
                s = choose_gpu_instance_start(model, existing, prof)
                if s is None:
                    raise SimError(
                        INSUFFICIENT_RESOURCES,
                        f"no room for a {prof.name} (ID {prof.id}) on GPU {gpu}",
                    )
            else:
                s = int(start)
                if s not in prof.starts or (size is not None and int(size) != prof.memory_slices):
                    starts = ",".join(map(str, prof.starts))
                    raise SimError(
                        INVALID_ARGUMENT,
                        f"{{{s}}}:{size if size is not None else prof.memory_slices} is not a placement of "
                        f"{prof.name} (its placements: {{{starts}}}:{prof.memory_slices})",
                    )
                problems = model.check(existing + [Placement(prof.name, s)])
                if problems:
                    raise SimError(INSUFFICIENT_RESOURCES, f"cannot create {prof.name}@{s} on GPU {gpu}: " + "; ".join(problems))
            gi_id = gpu_instance_id(model, s, prof.memory_slices, g.swapped)
            used = {x.id for x in g.gpu_instances}
            if gi_id in used:  # cannot happen with power-of-two slot sizes; keep ids unique regardless
                gi_id = min(i for i in range(len(used) + 64) if i not in used)
            gi = GpuInstance(id=gi_id, profile_id=prof.id, start=s, size=prof.memory_slices, serial=self._next_serial(st))
            g.gpu_instances.append(gi)
            g.gpu_instances.sort(key=lambda x: x.id)
            return gi

    def destroy_gpu_instance(self, gpu: int, gi_id: int) -> None:
        """`nvmlGpuInstanceDestroy`: IN_USE while compute instances or processes exist on it (nvml.h)."""
        with self.transaction() as st:
            g = st.gpu(gpu)
            self._need_root(st, "destroying a GPU instance")
            self._fire_fault(st, "destroy_gpu_instance")
            self._need_mig(st, g)
            gi = g.gi(gi_id)
            if gi is None:
                raise SimError(NOT_FOUND, f"GPU {gpu} has no GPU instance {gi_id}")
            if gi.compute_instances or st.processes_on(gpu, gi_id):
                raise SimError(IN_USE, f"GPU instance {gi_id} on GPU {gpu} still has compute instances or processes")
            g.gpu_instances.remove(gi)

    # -- compute instances ---------------------------------------------------------------------------
    def create_compute_instance(self, gpu: int, gi_id: int, ci_profile_id: int | None = None, start: int | None = None) -> ComputeInstance:
        """`nvmlGpuInstanceCreateComputeInstance(WithPlacement)`. Profile None = the default (the GI's full
        compute). The CI takes the lowest free legal start [U] and the lowest free CI id [U]."""
        with self.transaction() as st:
            g = st.gpu(gpu)
            self._need_root(st, "creating a compute instance")
            self._fire_fault(st, "create_compute_instance")
            self._need_mig(st, g)
            gi = g.gi(gi_id)
            if gi is None:
                raise SimError(NOT_FOUND, f"GPU {gpu} has no GPU instance {gi_id}")
            prof = st.gi_profile(gi)
            cps = ci_profiles(st.model, prof)
            if ci_profile_id is None:
                cp = next(c for c in cps if c.is_default)
            else:
                if not 0 <= int(ci_profile_id) < pynvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT:
                    raise SimError(INVALID_ARGUMENT, f"{ci_profile_id} is not a compute instance profile ID")
                found = [c for c in cps if c.id == int(ci_profile_id)]
                if not found:
                    raise SimError(NOT_SUPPORTED, f"a {prof.name} GPU instance has no compute instance profile ID {ci_profile_id}")
                cp = found[0]
            same = [c for c in gi.compute_instances if c.profile_id == cp.id]
            if len(same) >= cp.max_count:
                raise SimError(INSUFFICIENT_RESOURCES, f"GPU instance {gi_id} already has {len(same)} x {cp.name}")
            used_slices = {s for c in gi.compute_instances for s in range(c.start, c.start + c.size)}

            def free(s: int) -> bool:
                return not any(x in used_slices for x in range(s, s + cp.slices))

            if start is None:
                choice = next((s for s in cp.starts if free(s)), None)
                if choice is None:
                    raise SimError(INSUFFICIENT_RESOURCES, f"no free compute slices for {cp.name} in GPU instance {gi_id}")
            else:
                choice = int(start)
                if choice not in cp.starts:
                    raise SimError(INVALID_ARGUMENT, f"{choice} is not a placement start of {cp.name}")
                if not free(choice):
                    raise SimError(INSUFFICIENT_RESOURCES, f"compute slices {choice}.. of GPU instance {gi_id} are in use")
            ids = {c.id for c in gi.compute_instances}
            ci_id = min(i for i in range(len(ids) + 1) if i not in ids)
            serial = self._next_serial(st)
            ci = ComputeInstance(id=ci_id, profile_id=cp.id, start=choice, size=cp.slices, uuid=mig_uuid_of(st, g, gi.id, ci_id, serial), serial=serial)
            gi.compute_instances.append(ci)
            gi.compute_instances.sort(key=lambda x: x.id)
            return ci

    def destroy_compute_instance(self, gpu: int, gi_id: int, ci_id: int) -> None:
        """`nvmlComputeInstanceDestroy`: IN_USE while a process runs on it (nvml.h)."""
        with self.transaction() as st:
            g = st.gpu(gpu)
            self._need_root(st, "destroying a compute instance")
            self._fire_fault(st, "destroy_compute_instance")
            self._need_mig(st, g)
            gi = g.gi(gi_id)
            ci = gi.ci(ci_id) if gi is not None else None
            if gi is None or ci is None:
                raise SimError(NOT_FOUND, f"GPU {gpu} has no compute instance {gi_id}/{ci_id}")
            busy = st.processes_on(gpu, gi_id, ci_id)
            if busy:
                raise SimError(IN_USE, f"compute instance {gi_id}/{ci_id} on GPU {gpu} is used by pid " + ", ".join(str(p.pid) for p in busy))
            gi.compute_instances.remove(ci)

    # -- processes -----------------------------------------------------------------------------------
    def attach(self, target: str | int, pid: int, used_memory_mib: int, name: str = "python") -> SimProcess:
        """Put local process `pid` on a MIG device (`MIG-...` UUID) or a whole non-MIG GPU (`GPU-...` UUID,
        or a GPU index) using `used_memory_mib` MiB. MEMORY (out of memory) when the device's used memory
        would exceed its total (a GI's CIs share its memory). The entry disappears when the process dies;
        attaching the same PID again replaces its entry."""
        if used_memory_mib < 0:
            raise SimError(INVALID_ARGUMENT, "used memory cannot be negative")
        ctime = process_create_time(int(pid))
        if ctime is None:
            raise SimError(NOT_FOUND, f"there is no running process with pid {pid}")
        with self.transaction() as st:
            t = str(target).strip()
            gpu: SimGpu | None = None
            dev: MigDevice | None = None
            if t.upper().startswith("MIG-"):
                dev = st.find_mig_device(t)
                if dev is None:
                    raise SimError(NOT_FOUND, f"no MIG device {t}")
                gpu = st.gpus[dev.gpu]
            elif t.upper().startswith("GPU-"):
                gpu = st.gpu_by_uuid(t)
                if gpu is None:
                    raise SimError(NOT_FOUND, f"no GPU {t}")
            elif t.isdigit():
                gpu = st.gpu(int(t))
            else:
                raise SimError(INVALID_ARGUMENT, f"{t!r} is not a GPU index, GPU UUID or MIG UUID")
            if dev is None and gpu.mig_current:
                raise SimError(
                    INVALID_ARGUMENT,
                    f"GPU {gpu.index} is in MIG mode: CUDA only sees its MIG devices; attach to a MIG UUID",
                )
            # Attaching a PID again replaces its earlier entry (a process updating its footprint),
            # so its own earlier usage does not count against the new amount.
            mine = [p for p in st.processes if p.pid == int(pid)]
            if dev is not None:
                total = dev.memory_mib
                used = st.used_memory_mib(gpu.index, dev.gi_id)
                used -= sum(p.used_memory_mib for p in mine if p.gpu == gpu.index and p.gi == dev.gi_id)
            else:
                total = st.gpu_memory_mib(gpu.index)
                used = st.used_memory_mib(gpu.index)
                used -= sum(p.used_memory_mib for p in mine if p.gpu == gpu.index)
            if used + used_memory_mib > total:
                raise SimError(
                    MEMORY,
                    f"out of memory: {used_memory_mib} MiB requested, {total - used} MiB free of {total} MiB on {dev.uuid if dev else gpu.uuid}",
                )
            proc = SimProcess(
                pid=int(pid),
                create_time=ctime,
                gpu=gpu.index,
                gi=dev.gi_id if dev else None,
                ci=dev.ci_id if dev else None,
                used_memory_mib=int(used_memory_mib),
                name=name,
            )
            st.processes = [p for p in st.processes if p.pid != int(pid)] + [proc]
            return proc

    def detach(self, pid: int) -> int:
        """Remove every entry of `pid`; returns how many there were."""
        with self.transaction() as st:
            before = len(st.processes)
            st.processes = [p for p in st.processes if p.pid != int(pid)]
            return before - len(st.processes)

    # -- host configuration --------------------------------------------------------------------------
    def add_client(self, name: str, gpus: Sequence[int] | None = None) -> None:
        """A non-CUDA client (nvidia-persistenced, dcgm, nvsm, nvidia_drm...) now holds the GPU(s)."""
        with self.transaction() as st:
            for g in self._select(st, gpus):
                if name not in g.clients:
                    g.clients = sorted(g.clients + [name])

    def remove_client(self, name: str, gpus: Sequence[int] | None = None) -> None:
        with self.transaction() as st:
            for g in self._select(st, gpus):
                g.clients = [c for c in g.clients if c != name]

    @staticmethod
    def _select(st: SimState, gpus: Sequence[int] | None) -> list[SimGpu]:
        return [st.gpu(i) for i in gpus] if gpus is not None else list(st.gpus)

    def set_swapped(self, gpu: int, swapped: bool) -> None:
        """Whether GPU `gpu` numbers GPU instances with the halves of its memory slices exchanged (a property of
        the board, docs/mig-facts.md#gi-ids); only while it has no GPU instances."""
        with self.transaction() as st:
            g = st.gpu(gpu)
            if g.gpu_instances:
                raise MigbenchError(f"GPU {gpu} has GPU instances; destroy them before changing its numbering")
            g.swapped = bool(swapped)

    def set_privileged(self, privileged: bool) -> None:
        with self.transaction() as st:
            st.privileged = bool(privileged)

    def inject_fault(self, op: str, nth: int, code: int | str) -> None:
        """Make the `nth` future call (1 = the next) of mutating `op` (or "*" for any) fail with NVML `code`
        (an int or a name such as "IN_USE"). Persisted; consumed when it fires."""
        if op != "*" and op not in MUTATING_OPS:
            raise MigbenchError(f"unknown operation {op!r}", hint="one of: " + ", ".join(MUTATING_OPS) + ", *")
        if nth < 1:
            raise MigbenchError("nth counts from 1 (the next call)")
        c = parse_error_code(code)
        with self.transaction() as st:
            st.faults.append(Fault(op=op, remaining=int(nth), code=c))


def load_host(state_dir: str | os.PathLike[str]) -> SimState:
    """A snapshot of the simulated host in `state_dir` (shared lock; dead processes left out)."""
    return SimHost(state_dir).read()


# The simulator's vocabulary in one place, for its nvidia-smi, its NVML and the tests.
__all__ = [
    "DRIVER_NOT_LOADED",
    "INSUFFICIENT_RESOURCES",
    "INVALID_ARGUMENT",
    "IN_USE",
    "MEMORY",
    "NOT_FOUND",
    "NOT_SUPPORTED",
    "NO_PERMISSION",
    "SUCCESS",
    "CiProfile",
    "ComputeInstance",
    "GpuInstance",
    "MigDevice",
    "SimError",
    "SimGpu",
    "SimHost",
    "SimState",
    "ci_profiles",
    "ci_remaining",
    "create_host",
    "cuda_driver_version",
    "error_string",
    "gpu_instance_id",
    "init_host",
    "load_host",
    "parse_error_code",
    "resolve_model",
    "uses_new_mig_uuids",
]
