"""Reading a host's MIG state through NVML (nvidia-ml-py). The only module that calls pynvml for reads.

Every call goes through `_call`, which turns an `NVMLError` into a `HardwareError` that names the
NVML function, the likely cause and the equivalent nvidia-smi command. Under `MIGBENCH_SIM` the
same code runs unchanged: `migbench.backend.sim.fake_nvml` installs a simulated libnvidia-ml under
the real pynvml module.

Units: NVML reports memory in bytes (`nvmlDeviceGetMemoryInfo`, process `usedGpuMemory`) and profile
memory in MiB (`memorySizeMB`); this module returns MiB everywhere.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable
from typing import Any

import pynvml

from migbench.backend.base import (
    ComputeInstanceState,
    DeviceUsage,
    GpuInstanceState,
    GpuState,
    HostState,
    MigDeviceState,
    ProcessState,
)
from migbench.catalog import Catalog, Engines, GpuModel, ProfileRow, default_catalog, model_from_rows, parse_driver
from migbench.errors import HardwareError

MIB = 1024 * 1024

_HINTS = {
    pynvml.NVML_ERROR_NO_PERMISSION: "run as root, or grant /proc/driver/nvidia/capabilities/mig/config",
    pynvml.NVML_ERROR_NOT_SUPPORTED: "MIG is not enabled (or not supported) on this GPU",
    pynvml.NVML_ERROR_IN_USE: "a process or a monitoring handle (DCGM, nvidia-persistenced) still uses it",
    pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES: "the placement overlaps an instance or a profile maximum is reached",
    pynvml.NVML_ERROR_DRIVER_NOT_LOADED: "the NVIDIA kernel driver is not loaded",
    pynvml.NVML_ERROR_LIBRARY_NOT_FOUND: "libnvidia-ml.so.1 was not found (no NVIDIA driver on this machine)",
}


READ_TRIES = 5
_CHANGED_MEANWHILE = (pynvml.NVML_ERROR_INVALID_ARGUMENT, pynvml.NVML_ERROR_NOT_FOUND)


def _call(fn: Callable[..., Any], *args: Any, what: str, smi: str = "") -> Any:
    try:
        return fn(*args)
    except pynvml.NVMLError as exc:
        hint = _HINTS.get(exc.value, "")
        if smi:
            hint = (hint + "; " if hint else "") + f"the nvidia-smi equivalent is `{smi}`"
        raise HardwareError(f"NVML {what} failed: {exc}", hint=hint or None) from exc


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class NvmlReader:
    """Reads GPUs, MIG mode, the live profile table, instances, MIG devices and processes."""

    def __init__(self, catalog: Catalog | None = None, simulated: bool = False):
        self._catalog = catalog
        self.simulated = simulated
        self._inited = False
        self._handles: dict[str, Any] = {}  # device handles by uuid, for device_usage

    @property
    def catalog(self) -> Catalog:
        """The catalogue, loaded only when a GPU is there to be matched against it."""
        if self._catalog is None:
            self._catalog = default_catalog()
        return self._catalog

    def __enter__(self) -> NvmlReader:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        if not self._inited:
            _call(pynvml.nvmlInit, what="nvmlInit")
            self._inited = True

    def close(self) -> None:
        if self._inited:
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError:
                pass
            self._inited = False
            self._handles.clear()

    # -- the whole host ------------------------------------------------------------------------
    def read(self) -> HostState:
        """The whole host. A read that meets a handle another process's re-cut destroyed meanwhile
        (a bench re-cutting one GPU while a run reads its own instance, `status` during an `apply`)
        is read again, up to `READ_TRIES` times: the simulated driver answers Invalid Argument for a
        handle it no longer knows; NVML's answer for such a handle is not documented, so Not Found
        counts the same. Any other error, or the same one at the last try, is raised."""
        for attempt in range(1, READ_TRIES + 1):
            try:
                return self._read_once()
            except HardwareError as exc:
                cause = exc.__cause__
                if attempt == READ_TRIES or not isinstance(cause, pynvml.NVMLError) or cause.value not in _CHANGED_MEANWHILE:
                    raise
                time.sleep(0.02 * attempt)  # let the re-cut finish
        raise AssertionError("unreachable")  # pragma: no cover

    def _read_once(self) -> HostState:
        self.open()
        driver = _s(_call(pynvml.nvmlSystemGetDriverVersion, what="nvmlSystemGetDriverVersion", smi="nvidia-smi -q"))
        n = _call(pynvml.nvmlDeviceGetCount, what="nvmlDeviceGetCount", smi="nvidia-smi -L")
        gpus = tuple(self._gpu(i, driver) for i in range(n))
        return HostState(driver, gpus, self.simulated)

    def _gpu(self, index: int, driver: str) -> GpuState:
        h = _call(pynvml.nvmlDeviceGetHandleByIndex, index, what="nvmlDeviceGetHandleByIndex")
        name = _s(_call(pynvml.nvmlDeviceGetName, h, what="nvmlDeviceGetName"))
        uuid = _s(_call(pynvml.nvmlDeviceGetUUID, h, what="nvmlDeviceGetUUID"))
        pci = _call(pynvml.nvmlDeviceGetPciInfo, h, what="nvmlDeviceGetPciInfo")
        bus = _s(pci.busId)
        dev_id = int(pci.pciDeviceId)
        try:
            cur, pend = pynvml.nvmlDeviceGetMigMode(h)
            mig_cur, mig_pend = bool(cur), bool(pend)
        except pynvml.NVMLError_NotSupported:
            return GpuState(index, uuid, name, bus, dev_id, None, None, None)
        model = self._live_model(h, name, dev_id, driver)
        instances: list[GpuInstanceState] = []
        devices: list[MigDeviceState] = []
        processes: list[ProcessState] = []
        if mig_cur:
            instances = self._instances(h, model)
            devices = self._devices(h)
            for d in devices:
                processes.extend(d.processes)
        else:
            processes = self._processes(h, None)
        return GpuState(
            index,
            uuid,
            name,
            bus,
            dev_id,
            mig_cur,
            mig_pend,
            model,
            tuple(sorted(instances, key=lambda g: (g.start, g.id))),
            tuple(devices),
            tuple(processes),
        )

    # -- profile table -------------------------------------------------------------------------
    def _live_model(self, h: Any, name: str, dev_id: int, driver: str) -> GpuModel:
        """The GPU's profile table from NVML (`nvidia-smi mig -lgip` and `-lgipp`)."""
        key = self.catalog.find_by_pci(dev_id) or self.catalog.find_key(name)
        base = self.catalog.model(key, driver) if key else None
        rows: list[ProfileRow] = []
        seen: set[int] = set()
        for idx in range(pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT):
            try:
                info = pynvml.nvmlDeviceGetGpuInstanceProfileInfo(h, idx)
            except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_InvalidArgument):
                continue
            except pynvml.NVMLError as exc:
                raise HardwareError(f"NVML nvmlDeviceGetGpuInstanceProfileInfo({idx}) failed: {exc}") from exc
            if info.id in seen:
                continue
            seen.add(info.id)
            pname = _s(info.name)
            if pname.startswith("MIG "):
                pname = pname[4:]
            try:
                starts, size = self._placements(h, info.id)
            except HardwareError:
                # Placements need a privileged caller (nvml.h); unprivileged reads fall back to
                # the catalogue's placements for the same profile.
                if base is None or not base.has_profile(pname):
                    raise
                bp = base.profile(pname)
                starts, size = bp.starts, bp.memory_slices
            rows.append(
                ProfileRow(
                    name=pname,
                    id=int(info.id),
                    compute_slices=int(info.sliceCount),
                    max_count=int(info.instanceCount),
                    memory_mib=int(info.memorySizeMB),
                    starts=starts,
                    memory_slices=size,
                    engines=Engines(
                        sm=int(info.multiprocessorCount),
                        ce=int(info.copyEngineCount),
                        dec=int(info.decoderCount),
                        enc=int(info.encoderCount),
                        jpeg=int(info.jpegCount),
                        ofa=int(info.ofaCount),
                    ),
                )
            )
        if not rows:
            # With MIG disabled the driver reports no profile table; use the catalogue's, resolved
            # for this driver (the next read after enabling MIG replaces it with the live one).
            if base is None:
                raise HardwareError(
                    f"{name}: MIG is disabled, NVML reports no profiles, and the catalogue does not know this GPU",
                    hint="enable MIG (`sudo nvidia-smi -i N -mig 1`) or teach it with `migbench catalog import`",
                )
            return base
        return model_from_rows(
            key or name.replace("NVIDIA ", "").replace(" ", "-"),
            rows,
            names=[name],
            architecture=base.architecture if base else "unknown",
            driver=parse_driver(driver),
            origin="nvml",
            pci_device_ids=[dev_id >> 16],
            memory_source=f"NVML memorySizeMB, driver {driver}",
            base=base,
        )

    def _placements(self, h: Any, profile_id: int) -> tuple[tuple[int, ...], int]:
        """`nvmlDeviceGetGpuInstancePossiblePlacements_v2`: call once for the count, once for data."""
        count = ctypes.c_uint(0)
        _call(
            pynvml.nvmlDeviceGetGpuInstancePossiblePlacements,
            h,
            profile_id,
            None,
            ctypes.byref(count),
            what="nvmlDeviceGetGpuInstancePossiblePlacements",
            smi="nvidia-smi mig -lgipp",
        )
        arr = (pynvml.c_nvmlGpuInstancePlacement_t * max(1, count.value))()
        _call(
            pynvml.nvmlDeviceGetGpuInstancePossiblePlacements,
            h,
            profile_id,
            arr,
            ctypes.byref(count),
            what="nvmlDeviceGetGpuInstancePossiblePlacements",
            smi="nvidia-smi mig -lgipp",
        )
        pl = [(arr[i].start, arr[i].size) for i in range(count.value)]
        if not pl:
            return (), 0
        return tuple(sorted(s for s, _ in pl)), int(pl[0][1])

    # -- instances -----------------------------------------------------------------------------
    def _instances(self, h: Any, model: GpuModel) -> list[GpuInstanceState]:
        out = []
        for prof in model.profiles:
            cap = max(1, prof.max_count)
            arr = (pynvml.c_nvmlGpuInstance_t * cap)()
            count = ctypes.c_uint(0)
            _call(
                pynvml.nvmlDeviceGetGpuInstances,
                h,
                prof.id,
                arr,
                ctypes.byref(count),
                what="nvmlDeviceGetGpuInstances",
                smi="nvidia-smi mig -lgi",
            )
            for i in range(count.value):
                gi = arr[i]
                info = _call(pynvml.nvmlGpuInstanceGetInfo, gi, what="nvmlGpuInstanceGetInfo")
                cis = self._compute_instances(gi)
                out.append(
                    GpuInstanceState(
                        id=int(info.id),
                        profile_id=int(info.profileId),
                        profile=prof.name,
                        start=int(info.placement.start),
                        size=int(info.placement.size),
                        memory_mib=prof.memory_mib,
                        compute_instances=tuple(cis),
                    )
                )
        return out

    def _compute_instances(self, gi: Any) -> list[ComputeInstanceState]:
        out = []
        seen: set[int] = set()
        for idx in range(pynvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
            try:
                info = pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, idx, pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
            except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_InvalidArgument):
                continue
            if info.id in seen:
                continue
            seen.add(info.id)
            cap = max(1, int(info.instanceCount))
            arr = (pynvml.c_nvmlComputeInstance_t * cap)()
            count = ctypes.c_uint(0)
            _call(
                pynvml.nvmlGpuInstanceGetComputeInstances,
                gi,
                info.id,
                arr,
                ctypes.byref(count),
                what="nvmlGpuInstanceGetComputeInstances",
                smi="nvidia-smi mig -lci",
            )
            for i in range(count.value):
                ci = _call(pynvml.nvmlComputeInstanceGetInfo, arr[i], what="nvmlComputeInstanceGetInfo")
                out.append(ComputeInstanceState(int(ci.id), int(ci.profileId), int(ci.placement.start), int(ci.placement.size)))
        return sorted(out, key=lambda c: c.id)

    def _devices(self, h: Any) -> list[MigDeviceState]:
        out = []
        n = _call(pynvml.nvmlDeviceGetMaxMigDeviceCount, h, what="nvmlDeviceGetMaxMigDeviceCount")
        for k in range(n):
            try:
                mh = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(h, k)
            except pynvml.NVMLError_NotFound:
                continue
            uuid = _s(_call(pynvml.nvmlDeviceGetUUID, mh, what="nvmlDeviceGetUUID", smi="nvidia-smi -L"))
            gi_id = _call(pynvml.nvmlDeviceGetGpuInstanceId, mh, what="nvmlDeviceGetGpuInstanceId")
            ci_id = _call(pynvml.nvmlDeviceGetComputeInstanceId, mh, what="nvmlDeviceGetComputeInstanceId")
            mem = _call(pynvml.nvmlDeviceGetMemoryInfo, mh, what="nvmlDeviceGetMemoryInfo")
            procs = tuple(self._processes(mh, uuid, gi_id, ci_id))
            out.append(MigDeviceState(uuid, k, int(gi_id), int(ci_id), int(mem.total) // MIB, int(mem.used) // MIB, procs))
        return out

    # -- fast reads for sampling ----------------------------------------------------------------
    def device_usage(self, uuids: list[str]) -> dict[str, DeviceUsage]:
        """Used memory and compute processes of the named devices (MIG or GPU uuids) only, a few NVML
        calls each, for sampling many times a second. A device that is gone is left out."""
        self.open()
        handles = self._handles
        out: dict[str, DeviceUsage] = {}
        for u in uuids:
            try:
                h = handles.get(u)
                if h is None:
                    h = handles[u] = pynvml.nvmlDeviceGetHandleByUUID(u)
                mem = pynvml.nvmlDeviceGetMemoryInfo(h)
                procs = pynvml.nvmlDeviceGetComputeRunningProcesses(h)
            except pynvml.NVMLError:
                handles.pop(u, None)
                continue
            out[u] = DeviceUsage(
                int(mem.used) // MIB,
                tuple((int(p.pid), None if p.usedGpuMemory is None else int(p.usedGpuMemory) // MIB) for p in procs),
            )
        return out

    def _processes(self, h: Any, uuid: str | None, gi: int | None = None, ci: int | None = None) -> list[ProcessState]:
        procs = _call(
            pynvml.nvmlDeviceGetComputeRunningProcesses,
            h,
            what="nvmlDeviceGetComputeRunningProcesses",
            smi="nvidia-smi --query-compute-apps=pid,used_memory --format=csv",
        )
        out = []
        for p in procs:
            used = None if p.usedGpuMemory is None else int(p.usedGpuMemory) // MIB
            out.append(ProcessState(int(p.pid), used, gi, ci, uuid))
        return out
