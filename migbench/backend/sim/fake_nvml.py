"""A fake libnvidia-ml for the real, unmodified `pynvml` module, backed by the simulated host.

pynvml resolves every C symbol with `getattr(pynvml.nvmlLib, name)` (`_nvmlGetFunctionPointer`) and
loads the library only while `nvmlLib` is None (`_LoadNvmlLibrary`). `install(state_dir)` puts a
`FakeNvmlLibrary` there, so pynvml's own marshalling, `_nvmlCheckReturn`, list conversions and
`nvmlStructToFriendlyObject` all run unchanged.

Each fake function takes the arguments the C function would get from pynvml (ctypes values, `byref(...)`
pointers, handles that are ctypes pointers to pynvml's opaque handle structs), writes its outputs through
the pointers and returns an int NVML return code (0 = success), like the C ABI. Every call re-reads the
host state from disk (other processes' changes are seen); mutating calls write it back.

Handles are stable: one opaque struct per GPU, GPU instance, compute instance and MIG device (keyed by the
object's creation serial), so a pointer maps back to its object. A handle to an object that has since been
destroyed returns INVALID_ARGUMENT (nvml.h: "the GPU instance handle would become invalid").

A simulator bug surfaces as a Python exception, never as a made-up NVML code.

nvidia-smi equivalents of the main calls (units: memory in MiB in `memorySizeMB`, bytes in memory and
process info; placements in memory slices for GIs, compute slices for CIs):

    nvmlDeviceGetMigMode / SetMigMode                 nvidia-smi -q (MIG Mode) / nvidia-smi -i N -mig 0|1
    nvmlDeviceGetGpuInstanceProfileInfoV              nvidia-smi mig -lgip
    nvmlDeviceGetGpuInstancePossiblePlacements_v2     nvidia-smi mig -lgipp
    nvmlDeviceGetGpuInstanceRemainingCapacity         the Free column of -lgip
    nvmlDeviceCreateGpuInstance(WithPlacement)        nvidia-smi mig -cgi <id>[:<start>]
    nvmlDeviceGetGpuInstances / nvmlGpuInstanceGetInfo   nvidia-smi mig -lgi
    nvmlGpuInstanceDestroy                            nvidia-smi mig -dgi -gi N
    nvmlGpuInstanceGetComputeInstanceProfileInfoV     nvidia-smi mig -lcip -gi N
    nvmlGpuInstanceCreateComputeInstance              nvidia-smi mig -gi N -cci [<id>]
    nvmlGpuInstanceGetComputeInstances / ...GetInfo_v2   nvidia-smi mig -lci
    nvmlComputeInstanceDestroy                        nvidia-smi mig -dci -gi N -ci M
    nvmlDeviceGetMigDeviceHandleByIndex + GetUUID     nvidia-smi -L (MIG lines)
    nvmlDeviceGetComputeRunningProcesses_v3           the Processes table of nvidia-smi

Note: pynvml caches the text of codes missing from its table (19, 23) in `NVMLError._errcode_to_string` the
first time an error is printed while a library is loaded; with this library installed that text is
"In use by another client" / "Insufficient Resources" (nvidia-smi's wording, docs/mig-facts.md#nvml).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pynvml

from migbench.backend.sim.cabi import CFunction, as_int, buffer_of, fail, placement_arg, set_string, set_uint, target_of
from migbench.backend.sim.errors import DRIVER_NOT_LOADED, INVALID_ARGUMENT, NO_PERMISSION, NOT_FOUND, NOT_SUPPORTED, error_string
from migbench.backend.sim.host import MigDevice, SimError, SimGpu, SimHost, SimState
from migbench.backend.sim.rules import CiProfile, ci_profiles, cuda_driver_version
from migbench.backend.sim.state import ComputeInstance, GpuInstance, ci_remaining
from migbench.catalog import Profile

NVML_SUCCESS = pynvml.NVML_SUCCESS
_NA_UINT = 0xFFFFFFFF  # NVML_VALUE_NOT_AVAILABLE_uint: GI/CI id of a process on a non-MIG GPU

# --------------------------------------------------------------------------------------------------
# GPU-instance profile index <-> catalogue profile
# --------------------------------------------------------------------------------------------------


def profile_index(p: Profile) -> int | None:
    """The NVML_GPU_INSTANCE_PROFILE_* index of a catalogue profile, by its kind.

    [U] The pairing of index and profile is inferred from names and the nvml.h comments (docs/mig-facts.md#profile-ids):
    1 compute/1 memory slice -> 1_SLICE (0), its +me variant -> 1_SLICE_REV1 (7), 1 compute/2 memory slices
    -> 1_SLICE_REV2 (9), 2-slice -> 2_SLICE (1), 2-slice +me -> 2_SLICE_REV1 (8), 3 -> 3_SLICE (2),
    4 -> 4_SLICE (3), 7 -> 7_SLICE (4); the RTX PRO 6000 variants +gfx, -me and +me.all -> *_GFX, *_NO_ME,
    *_ALL_ME of their compute slices.
    """
    c, m, me = p.compute_slices, p.memory_slices, p.media
    if p.variant:  # RTX PRO 6000: nvml.h *_GFX, *_NO_ME, *_ALL_ME by compute slices [U pairing]
        return {
            ("gfx", 1): pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE_GFX,
            ("gfx", 2): pynvml.NVML_GPU_INSTANCE_PROFILE_2_SLICE_GFX,
            ("gfx", 3): pynvml.NVML_GPU_INSTANCE_PROFILE_3_SLICE_GFX,
            ("gfx", 4): pynvml.NVML_GPU_INSTANCE_PROFILE_4_SLICE_GFX,
            ("no_me", 1): pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE_NO_ME,
            ("no_me", 2): pynvml.NVML_GPU_INSTANCE_PROFILE_2_SLICE_NO_ME,
            ("all_me", 1): pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE_ALL_ME,
            ("all_me", 2): pynvml.NVML_GPU_INSTANCE_PROFILE_2_SLICE_ALL_ME,
        }.get((p.variant, c))
    if c == 1 and m == 1:
        return pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1 if me else pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE
    if c == 1 and m == 2 and not me:
        return pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2
    if c == 2:
        return pynvml.NVML_GPU_INSTANCE_PROFILE_2_SLICE_REV1 if me else pynvml.NVML_GPU_INSTANCE_PROFILE_2_SLICE
    if me:
        return None
    return {
        3: pynvml.NVML_GPU_INSTANCE_PROFILE_3_SLICE,
        4: pynvml.NVML_GPU_INSTANCE_PROFILE_4_SLICE,
        6: pynvml.NVML_GPU_INSTANCE_PROFILE_6_SLICE,
        7: pynvml.NVML_GPU_INSTANCE_PROFILE_7_SLICE,
        8: pynvml.NVML_GPU_INSTANCE_PROFILE_8_SLICE,
    }.get(c)


# --------------------------------------------------------------------------------------------------
# The library
# --------------------------------------------------------------------------------------------------


class FakeNvmlLibrary:
    """What `pynvml.nvmlLib` holds while the simulation is installed. Attribute lookup yields C-like
    functions for the symbols implemented below (`_fn_<symbol>`); any other symbol is missing, which
    pynvml reports as NVMLError_FunctionNotFound."""

    def __init__(self, state_dir: Any):
        self.host = SimHost(state_dir)
        self._lock = threading.RLock()
        self._init_count = 0
        self._structs: dict[tuple, Any] = {}
        self._keys: dict[int, tuple] = {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        impl = getattr(type(self), "_fn_" + name, None)
        if impl is None:
            raise AttributeError(name)
        bound = impl.__get__(self)
        no_init = name in ("nvmlInit", "nvmlInit_v2", "nvmlInitWithFlags", "nvmlErrorString", "nvmlShutdown")

        def call(*args: Any) -> Any:
            if not no_init and self._init_count <= 0:
                return pynvml.NVML_ERROR_UNINITIALIZED
            try:
                return bound(*args)
            except SimError as exc:
                return exc.code

        fn = CFunction(name, call)
        self.__dict__[name] = fn
        return fn

    # -- handles -----------------------------------------------------------------------------------
    def _handle(self, cls: Any, key: tuple) -> Any:
        with self._lock:
            s = self._structs.get(key)
            if s is None:
                s = cls()
                self._structs[key] = s
                self._keys[ctypes.addressof(s)] = key
            return s

    def _key(self, handle: Any) -> tuple | None:
        if handle is None:
            return None
        try:
            addr = ctypes.cast(handle, ctypes.c_void_p).value
        except ctypes.ArgumentError:
            return None
        return self._keys.get(addr or 0)

    def _gpu_struct(self, index: int) -> Any:
        return self._handle(pynvml.struct_c_nvmlDevice_t, ("gpu", index))

    def _mig_struct(self, d: MigDevice) -> Any:
        return self._handle(pynvml.struct_c_nvmlDevice_t, ("mig", d.gpu, d.gi_id, d.ci_id, d.serial))

    def _gi_struct(self, gpu: int, gi: GpuInstance) -> Any:
        return self._handle(pynvml.struct_c_nvmlGpuInstance_t, ("gi", gpu, gi.id, gi.serial))

    def _ci_struct(self, gpu: int, gi: GpuInstance, ci: ComputeInstance) -> Any:
        return self._handle(pynvml.struct_c_nvmlComputeInstance_t, ("ci", gpu, gi.id, ci.id, ci.serial))

    @staticmethod
    def _write_handle(out: Any, struct: Any) -> None:
        tgt = target_of(out)
        if not isinstance(tgt, ctypes._Pointer):
            raise fail(INVALID_ARGUMENT, "output is not a handle")
        tgt.contents = struct

    def _device(self, st: SimState, handle: Any) -> tuple[SimGpu, MigDevice | None]:
        """(parent GPU, MIG device or None) for a device handle; stale or foreign -> INVALID_ARGUMENT."""
        key = self._key(handle)
        if key is None or key[0] not in ("gpu", "mig"):
            raise fail(INVALID_ARGUMENT, "not a device handle")
        if key[0] == "gpu":
            if key[1] >= len(st.gpus):
                raise fail(INVALID_ARGUMENT, "stale device handle")
            return st.gpus[key[1]], None
        _, gpu, gi, ci, serial = key
        for d in st.mig_devices(gpu) if gpu < len(st.gpus) else []:
            if d.gi_id == gi and d.ci_id == ci and d.serial == serial:
                return st.gpus[gpu], d
        raise fail(INVALID_ARGUMENT, "stale MIG device handle (its compute instance is gone)")

    def _parent(self, st: SimState, handle: Any) -> SimGpu:
        g, d = self._device(st, handle)
        if d is not None:
            raise fail(INVALID_ARGUMENT, "a MIG device handle where a GPU handle is needed")
        return g

    def _gi(self, st: SimState, handle: Any) -> tuple[SimGpu, GpuInstance]:
        key = self._key(handle)
        if key is None or key[0] != "gi":
            raise fail(INVALID_ARGUMENT, "not a GPU instance handle")
        _, gpu, gi_id, serial = key
        g = st.gpus[gpu] if gpu < len(st.gpus) else None
        gi = g.gi(gi_id) if g else None
        if g is None or gi is None or gi.serial != serial:
            raise fail(INVALID_ARGUMENT, "stale GPU instance handle")
        return g, gi

    def _ci(self, st: SimState, handle: Any) -> tuple[SimGpu, GpuInstance, ComputeInstance]:
        key = self._key(handle)
        if key is None or key[0] != "ci":
            raise fail(INVALID_ARGUMENT, "not a compute instance handle")
        _, gpu, gi_id, ci_id, serial = key
        g = st.gpus[gpu] if gpu < len(st.gpus) else None
        gi = g.gi(gi_id) if g else None
        ci = gi.ci(ci_id) if gi else None
        if g is None or gi is None or ci is None or ci.serial != serial:
            raise fail(INVALID_ARGUMENT, "stale compute instance handle")
        return g, gi, ci

    @staticmethod
    def _need_root(st: SimState) -> None:
        if not st.privileged:
            raise fail(NO_PERMISSION, "needs a privileged user")

    @staticmethod
    def _need_mig(g: SimGpu) -> None:
        if not g.mig_current:
            raise fail(NOT_SUPPORTED, "MIG mode is not enabled")

    # -- init, system --------------------------------------------------------------------------------
    def _fn_nvmlInitWithFlags(self, flags: Any = 0) -> int:
        if not self.host.exists():
            return DRIVER_NOT_LOADED
        self.host.read()  # validates the state file
        with self._lock:
            self._init_count += 1
        return NVML_SUCCESS

    def _fn_nvmlInit_v2(self) -> int:
        return self._fn_nvmlInitWithFlags(0)

    def _fn_nvmlInit(self) -> int:
        return self._fn_nvmlInitWithFlags(0)

    def _fn_nvmlShutdown(self) -> int:
        with self._lock:
            if self._init_count <= 0:
                return pynvml.NVML_ERROR_UNINITIALIZED
            self._init_count -= 1
        return NVML_SUCCESS

    def _fn_nvmlErrorString(self, result: Any) -> bytes:
        return error_string(as_int(result)).encode()

    def _fn_nvmlSystemGetDriverVersion(self, buf: Any, length: Any) -> int:
        set_string(buf, length, self.host.read().driver)
        return NVML_SUCCESS

    def _fn_nvmlSystemGetNVMLVersion(self, buf: Any, length: Any) -> int:
        st = self.host.read()
        cuda = cuda_driver_version(st.driver_version)
        # "<CUDA major>.<driver version>" [U: format recalled, not seen in a paste here]
        set_string(buf, length, f"{cuda // 1000}.{st.driver}")
        return NVML_SUCCESS

    def _fn_nvmlSystemGetCudaDriverVersion(self, out: Any) -> int:
        set_uint(out, cuda_driver_version(self.host.read().driver_version))
        return NVML_SUCCESS

    def _fn_nvmlSystemGetCudaDriverVersion_v2(self, out: Any) -> int:
        return self._fn_nvmlSystemGetCudaDriverVersion(out)

    # -- device enumeration and identity ---------------------------------------------------------------
    def _fn_nvmlDeviceGetCount_v2(self, out: Any) -> int:
        set_uint(out, len(self.host.read().gpus))
        return NVML_SUCCESS

    def _fn_nvmlDeviceGetHandleByIndex_v2(self, index: Any, out: Any) -> int:
        st = self.host.read()
        i = as_int(index)
        if not 0 <= i < len(st.gpus):
            return INVALID_ARGUMENT
        self._write_handle(out, self._gpu_struct(i))
        return NVML_SUCCESS

    def _fn_nvmlDeviceGetHandleByUUID(self, uuid: Any, out: Any) -> int:
        raw = getattr(uuid, "value", uuid)
        if raw is None:
            return INVALID_ARGUMENT
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        st = self.host.read()
        g = st.gpu_by_uuid(text)
        if g is not None:
            self._write_handle(out, self._gpu_struct(g.index))
            return NVML_SUCCESS
        d = st.find_mig_device(text)
        if d is not None:
            self._write_handle(out, self._mig_struct(d))
            return NVML_SUCCESS
        return NOT_FOUND

    def _fn_nvmlDeviceGetHandleByPciBusId_v2(self, bus_id: Any, out: Any) -> int:
        raw = getattr(bus_id, "value", bus_id)
        if raw is None:
            return INVALID_ARGUMENT
        st = self.host.read()
        g = st.gpu_by_bus_id(raw.decode() if isinstance(raw, bytes) else str(raw))
        if g is None:
            return NOT_FOUND
        self._write_handle(out, self._gpu_struct(g.index))
        return NVML_SUCCESS

    def _fn_nvmlDeviceGetName(self, handle: Any, buf: Any, length: Any) -> int:
        st = self.host.read()
        g, d = self._device(st, handle)
        # MIG device names: "<GPU name> MIG <profile>" [U: format not seen in a paste here]
        name = st.product_name if d is None else f"{st.product_name} MIG {d.name}"
        set_string(buf, length, name)
        return NVML_SUCCESS

    def _fn_nvmlDeviceGetUUID(self, handle: Any, buf: Any, length: Any) -> int:
        st = self.host.read()
        g, d = self._device(st, handle)
        set_string(buf, length, g.uuid if d is None else d.uuid)
        return NVML_SUCCESS

    def _fn_nvmlDeviceGetIndex(self, handle: Any, out: Any) -> int:
        """GPU index; for a MIG handle its per-parent MIG index (nvml.h)."""
        st = self.host.read()
        g, d = self._device(st, handle)
        set_uint(out, g.index if d is None else d.index)
        return NVML_SUCCESS

    def _fn_nvmlDeviceGetPciInfo_v3(self, handle: Any, out: Any) -> int:
        """busId `00000000:07:00.0`, pciDeviceId = (device << 16) | 0x10DE. A MIG handle reports its
        parent's [U]. pciSubSystemId is 0 (the catalogue has no subsystem ids)."""
        st = self.host.read()
        g, _ = self._device(st, handle)
        info = target_of(out)
        dom, bus, rest = g.bus_id.split(":")
        dev = int(rest.split(".")[0], 16)
        info.domain = int(dom, 16)
        info.bus = int(bus, 16)
        info.device = dev
        ids = st.model.pci_device_ids
        info.pciDeviceId = ((ids[0] if ids else 0) << 16) | 0x10DE
        info.pciSubSystemId = 0
        info.busId = g.bus_id.encode()
        info.busIdLegacy = f"{int(dom, 16):04X}:{bus}:{rest}".encode()
        return NVML_SUCCESS

    # -- MIG mode ---------------------------------------------------------------------------------------
    def _fn_nvmlDeviceGetMigMode(self, handle: Any, current: Any, pending: Any) -> int:
        st = self.host.read()
        g, d = self._device(st, handle)
        if d is not None:
            return NOT_SUPPORTED
        set_uint(current, int(g.mig_current))
        set_uint(pending, int(g.mig_pending))
        return NVML_SUCCESS

    def _fn_nvmlDeviceSetMigMode(self, handle: Any, mode: Any, activation: Any) -> int:
        st = self.host.read()
        g = self._parent(st, handle)
        m = as_int(mode)
        if m not in (pynvml.NVML_DEVICE_MIG_DISABLE, pynvml.NVML_DEVICE_MIG_ENABLE):
            return INVALID_ARGUMENT
        if activation is None:
            return INVALID_ARGUMENT
        status = self.host.set_mig_mode(g.index, bool(m))
        set_uint(activation, status)
        return NVML_SUCCESS

    # -- GPU-instance profiles ----------------------------------------------------------------------------
    def _profile_for_index(self, st: SimState, index: int) -> Profile:
        if not 0 <= index < pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT:
            raise fail(INVALID_ARGUMENT, "profile index out of range")
        for p in st.model.profiles:
            if profile_index(p) == index:
                return p
        raise fail(NOT_SUPPORTED, f"profile index {index} is not supported on {st.model.key}")

    @staticmethod
    def _fill_profile_info(info: Any, p: Profile, v2: bool) -> None:
        if v2 and getattr(info, "version", None) != pynvml.nvmlGpuInstanceProfileInfo_v2:
            raise fail(INVALID_ARGUMENT, "info->version is not nvmlGpuInstanceProfileInfo_v2")
        e = p.engines
        info.id = p.id
        info.isP2pSupported = 0  # "P2P No" in every -lgip seen (docs/mig-facts.md#smi-formats)
        info.sliceCount = p.compute_slices
        info.instanceCount = p.max_count
        info.multiprocessorCount = e.sm or 0
        info.copyEngineCount = e.ce or 0
        info.decoderCount = e.dec or 0
        info.encoderCount = e.enc or 0
        info.jpegCount = e.jpeg or 0
        info.ofaCount = e.ofa or 0
        info.memorySizeMB = int(p.memory_mib or 0)
        if v2:
            info.name = p.full_name.encode()  # "MIG 1g.5gb" [U: as nvidia-smi -lgip prints it]

    def _gi_profile_info(self, handle: Any, index: Any, out: Any, v2: bool, by_id: bool) -> int:
        st = self.host.read()
        g = self._parent(st, handle)
        self._need_mig(g)
        if by_id:
            p = self._profile_by_id(st, as_int(index))
        else:
            p = self._profile_for_index(st, as_int(index))
        self._fill_profile_info(target_of(out), p, v2)
        return NVML_SUCCESS

    def _fn_nvmlDeviceGetGpuInstanceProfileInfo(self, handle: Any, profile: Any, out: Any) -> int:
        return self._gi_profile_info(handle, profile, out, v2=False, by_id=False)

    def _fn_nvmlDeviceGetGpuInstanceProfileInfoV(self, handle: Any, profile: Any, out: Any) -> int:
        return self._gi_profile_info(handle, profile, out, v2=True, by_id=False)

    def _fn_nvmlDeviceGetGpuInstanceProfileInfoByIdV(self, handle: Any, profile_id: Any, out: Any) -> int:
        return self._gi_profile_info(handle, profile_id, out, v2=True, by_id=True)

    @staticmethod
    def _profile_by_id(st: SimState, profile_id: int) -> Profile:
        for p in st.model.profiles:
            if p.id == profile_id:
                return p
        raise fail(INVALID_ARGUMENT, f"no GPU instance profile ID {profile_id}")

    def _fn_nvmlDeviceGetGpuInstancePossiblePlacements_v2(self, handle: Any, profile_id: Any, placements: Any, count: Any) -> int:
        """All placements of the profile, regardless of MIG mode or occupancy (nvml.h). NULL array -> count."""
        st = self.host.read()
        self._parent(st, handle)  # validates the handle
        self._need_root(st)
        if count is None:
            return INVALID_ARGUMENT
        p = self._profile_by_id(st, as_int(profile_id))
        if placements is not None:
            arr = buffer_of(placements, pynvml.c_nvmlGpuInstancePlacement_t, len(p.starts))
            for i, s in enumerate(p.starts):
                arr[i].start = s
                arr[i].size = p.memory_slices
        set_uint(count, len(p.starts))
        return NVML_SUCCESS

    def _fn_nvmlDeviceGetGpuInstanceRemainingCapacity(self, handle: Any, profile_id: Any, count: Any) -> int:
        st = self.host.read()
        g = self._parent(st, handle)
        self._need_root(st)
        self._need_mig(g)
        p = self._profile_by_id(st, as_int(profile_id))
        set_uint(count, st.remaining_capacity(g.index, p))
        return NVML_SUCCESS

    # -- GPU instances ---------------------------------------------------------------------------------
    def _fn_nvmlDeviceCreateGpuInstance(self, handle: Any, profile_id: Any, out: Any) -> int:
        st = self.host.read()
        g = self._parent(st, handle)
        if out is None:
            return INVALID_ARGUMENT
        gi = self.host.create_gpu_instance(g.index, as_int(profile_id))
        self._write_handle(out, self._gi_struct(g.index, gi))
        return NVML_SUCCESS

    def _fn_nvmlDeviceCreateGpuInstanceWithPlacement(self, handle: Any, profile_id: Any, placement: Any, out: Any) -> int:
        st = self.host.read()
        g = self._parent(st, handle)
        pl = placement_arg(placement)
        if out is None:
            return INVALID_ARGUMENT
        gi = self.host.create_gpu_instance(g.index, as_int(profile_id), start=int(pl.start), size=int(pl.size))
        self._write_handle(out, self._gi_struct(g.index, gi))
        return NVML_SUCCESS

    def _fn_nvmlGpuInstanceDestroy(self, gi_handle: Any) -> int:
        st = self.host.read()
        g, gi = self._gi(st, gi_handle)
        self.host.destroy_gpu_instance(g.index, gi.id)
        return NVML_SUCCESS

    def _fn_nvmlDeviceGetGpuInstances(self, handle: Any, profile_id: Any, instances: Any, count: Any) -> int:
        """The GIs of one profile ID, by GI id. The buffer must hold `instanceCount` handles (nvml.h)."""
        st = self.host.read()
        g = self._parent(st, handle)
        self._need_root(st)
        self._need_mig(g)
        if count is None or instances is None:
            return INVALID_ARGUMENT
        p = self._profile_by_id(st, as_int(profile_id))
        gis = sorted((x for x in g.gpu_instances if x.profile_id == p.id), key=lambda x: x.id)
        if gis:
            arr = buffer_of(instances, pynvml.c_nvmlGpuInstance_t, len(gis))
            for i, gi in enumerate(gis):
                arr[i] = ctypes.pointer(self._gi_struct(g.index, gi))
        set_uint(count, len(gis))
        return NVML_SUCCESS

    def _fn_nvmlDeviceGetGpuInstanceById(self, handle: Any, gi_id: Any, out: Any) -> int:
        st = self.host.read()
        g = self._parent(st, handle)
        self._need_root(st)
        self._need_mig(g)
        gi = g.gi(as_int(gi_id))
        if gi is None:
            return NOT_FOUND
        self._write_handle(out, self._gi_struct(g.index, gi))
        return NVML_SUCCESS

    def _fn_nvmlGpuInstanceGetInfo(self, gi_handle: Any, out: Any) -> int:
        st = self.host.read()
        g, gi = self._gi(st, gi_handle)
        info = target_of(out)
        info.device = ctypes.pointer(self._gpu_struct(g.index))
        info.id = gi.id
        info.profileId = gi.profile_id
        info.placement.start = gi.start
        info.placement.size = gi.size
        return NVML_SUCCESS

    # -- compute instances ------------------------------------------------------------------------------
    def _ci_profile(self, st: SimState, gi: GpuInstance, profile: int) -> CiProfile:
        if not 0 <= profile < pynvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT:
            raise fail(INVALID_ARGUMENT, "compute instance profile out of range")
        for cp in ci_profiles(st.model, st.gi_profile(gi)):
            if cp.id == profile:
                return cp
        raise fail(NOT_SUPPORTED, f"compute instance profile {profile} is not supported in this GPU instance")

    def _ci_profile_info(self, gi_handle: Any, profile: Any, eng: Any, out: Any, v2: bool) -> int:
        st = self.host.read()
        g, gi = self._gi(st, gi_handle)
        if as_int(eng) != pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED:
            return INVALID_ARGUMENT
        cp = self._ci_profile(st, gi, as_int(profile))
        info = target_of(out)
        if v2 and getattr(info, "version", None) != pynvml.nvmlComputeInstanceProfileInfo_v2:
            return INVALID_ARGUMENT
        e = cp.engines
        info.id = cp.id
        info.sliceCount = cp.slices
        info.instanceCount = cp.max_count
        info.multiprocessorCount = cp.sm or 0
        info.sharedCopyEngineCount = e.ce or 0
        info.sharedDecoderCount = e.dec or 0
        info.sharedEncoderCount = e.enc or 0
        info.sharedJpegCount = e.jpeg or 0
        info.sharedOfaCount = e.ofa or 0
        if v2:
            info.name = f"MIG {cp.name}".encode()
        return NVML_SUCCESS

    def _fn_nvmlGpuInstanceGetComputeInstanceProfileInfo(self, gi_handle: Any, profile: Any, eng: Any, out: Any) -> int:
        return self._ci_profile_info(gi_handle, profile, eng, out, v2=False)

    def _fn_nvmlGpuInstanceGetComputeInstanceProfileInfoV(self, gi_handle: Any, profile: Any, eng: Any, out: Any) -> int:
        return self._ci_profile_info(gi_handle, profile, eng, out, v2=True)

    def _fn_nvmlGpuInstanceGetComputeInstanceRemainingCapacity(self, gi_handle: Any, profile_id: Any, count: Any) -> int:
        st = self.host.read()
        g, gi = self._gi(st, gi_handle)
        self._need_root(st)
        cp = self._ci_profile(st, gi, as_int(profile_id))
        set_uint(count, ci_remaining(gi, cp))
        return NVML_SUCCESS

    def _fn_nvmlGpuInstanceGetComputeInstancePossiblePlacements(self, gi_handle: Any, profile_id: Any, placements: Any, count: Any) -> int:
        st = self.host.read()
        g, gi = self._gi(st, gi_handle)
        self._need_root(st)
        if count is None:
            return INVALID_ARGUMENT
        cp = self._ci_profile(st, gi, as_int(profile_id))
        if placements is not None:
            arr = buffer_of(placements, pynvml.c_nvmlComputeInstancePlacement_t, len(cp.starts))
            for i, s in enumerate(cp.starts):
                arr[i].start = s
                arr[i].size = cp.slices
        set_uint(count, len(cp.starts))
        return NVML_SUCCESS

    def _fn_nvmlGpuInstanceCreateComputeInstance(self, gi_handle: Any, profile_id: Any, out: Any) -> int:
        st = self.host.read()
        g, gi = self._gi(st, gi_handle)
        if out is None:
            return INVALID_ARGUMENT
        ci = self.host.create_compute_instance(g.index, gi.id, as_int(profile_id))
        self._write_handle(out, self._ci_struct(g.index, gi, ci))
        return NVML_SUCCESS

    def _fn_nvmlGpuInstanceCreateComputeInstanceWithPlacement(self, gi_handle: Any, profile_id: Any, placement: Any, out: Any) -> int:
        st = self.host.read()
        g, gi = self._gi(st, gi_handle)
        pl = placement_arg(placement)
        cp = self._ci_profile(st, gi, as_int(profile_id))
        if int(pl.size) != cp.slices:
            return INVALID_ARGUMENT
        if out is None:
            return INVALID_ARGUMENT
        ci = self.host.create_compute_instance(g.index, gi.id, cp.id, start=int(pl.start))
        self._write_handle(out, self._ci_struct(g.index, gi, ci))
        return NVML_SUCCESS

    def _fn_nvmlComputeInstanceDestroy(self, ci_handle: Any) -> int:
        st = self.host.read()
        g, gi, ci = self._ci(st, ci_handle)
        self.host.destroy_compute_instance(g.index, gi.id, ci.id)
        return NVML_SUCCESS

    def _fn_nvmlGpuInstanceGetComputeInstances(self, gi_handle: Any, profile_id: Any, instances: Any, count: Any) -> int:
        st = self.host.read()
        g, gi = self._gi(st, gi_handle)
        self._need_root(st)
        if count is None or instances is None:
            return INVALID_ARGUMENT
        cp = self._ci_profile(st, gi, as_int(profile_id))
        cis = sorted((c for c in gi.compute_instances if c.profile_id == cp.id), key=lambda c: c.id)
        if cis:
            arr = buffer_of(instances, pynvml.c_nvmlComputeInstance_t, len(cis))
            for i, ci in enumerate(cis):
                arr[i] = ctypes.pointer(self._ci_struct(g.index, gi, ci))
        set_uint(count, len(cis))
        return NVML_SUCCESS

    def _fn_nvmlGpuInstanceGetComputeInstanceById(self, gi_handle: Any, ci_id: Any, out: Any) -> int:
        st = self.host.read()
        g, gi = self._gi(st, gi_handle)
        self._need_root(st)
        ci = gi.ci(as_int(ci_id))
        if ci is None:
            return NOT_FOUND
        self._write_handle(out, self._ci_struct(g.index, gi, ci))
        return NVML_SUCCESS

    def _fn_nvmlComputeInstanceGetInfo_v2(self, ci_handle: Any, out: Any) -> int:
        st = self.host.read()
        g, gi, ci = self._ci(st, ci_handle)
        info = target_of(out)
        info.device = ctypes.pointer(self._gpu_struct(g.index))
        info.gpuInstance = ctypes.pointer(self._gi_struct(g.index, gi))
        info.id = ci.id
        info.profileId = ci.profile_id
        info.placement.start = ci.start
        info.placement.size = ci.size
        return NVML_SUCCESS

    def _fn_nvmlComputeInstanceGetInfo(self, ci_handle: Any, out: Any) -> int:
        return self._fn_nvmlComputeInstanceGetInfo_v2(ci_handle, out)

    # -- MIG device handles ----------------------------------------------------------------------------
    def _fn_nvmlDeviceGetMaxMigDeviceCount(self, handle: Any, count: Any) -> int:
        """Zero when MIG is not enabled (nvml.h); else the GPU's compute slices (7 x 1c, or 4 on A30)."""
        st = self.host.read()
        g = self._parent(st, handle)
        set_uint(count, st.model.compute_slices if g.mig_current else 0)
        return NVML_SUCCESS

    def _fn_nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, index: Any, out: Any) -> int:
        st = self.host.read()
        g = self._parent(st, handle)
        if not g.mig_current:
            return NOT_SUPPORTED
        i = as_int(index)
        devs = st.mig_devices(g.index)
        if not 0 <= i < len(devs):
            return NOT_FOUND
        self._write_handle(out, self._mig_struct(devs[i]))
        return NVML_SUCCESS

    def _fn_nvmlDeviceIsMigDeviceHandle(self, handle: Any, out: Any) -> int:
        st = self.host.read()
        _, d = self._device(st, handle)
        set_uint(out, 1 if d is not None else 0)
        return NVML_SUCCESS

    def _fn_nvmlDeviceGetGpuInstanceId(self, handle: Any, out: Any) -> int:
        st = self.host.read()
        _, d = self._device(st, handle)
        if d is None:
            return NOT_SUPPORTED
        set_uint(out, d.gi_id)
        return NVML_SUCCESS

    def _fn_nvmlDeviceGetComputeInstanceId(self, handle: Any, out: Any) -> int:
        st = self.host.read()
        _, d = self._device(st, handle)
        if d is None:
            return NOT_SUPPORTED
        set_uint(out, d.ci_id)
        return NVML_SUCCESS

    def _fn_nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: Any, out: Any) -> int:
        st = self.host.read()
        g, d = self._device(st, handle)
        if d is None:
            return INVALID_ARGUMENT
        self._write_handle(out, self._gpu_struct(g.index))
        return NVML_SUCCESS

    # -- memory and processes --------------------------------------------------------------------------
    def _memory(self, handle: Any) -> tuple[int, int]:
        """(total, used) in bytes. A MIG handle: its GI's memory (shared by the GI's CIs). A parent in MIG
        mode: the aggregate, privileged callers only (nvml.h)."""
        st = self.host.read()
        g, d = self._device(st, handle)
        mib = 1024 * 1024
        if d is not None:
            return d.memory_mib * mib, st.used_memory_mib(g.index, d.gi_id) * mib
        if g.mig_current:
            self._need_root(st)
        return st.gpu_memory_mib(g.index) * mib, st.used_memory_mib(g.index) * mib

    def _fn_nvmlDeviceGetMemoryInfo(self, handle: Any, out: Any) -> int:
        total, used = self._memory(handle)
        m = target_of(out)
        m.total, m.used, m.free = total, used, total - used
        return NVML_SUCCESS

    def _fn_nvmlDeviceGetMemoryInfo_v2(self, handle: Any, out: Any) -> int:
        m = target_of(out)
        if getattr(m, "version", None) != pynvml.nvmlMemory_v2:
            return INVALID_ARGUMENT
        total, used = self._memory(handle)
        m.total, m.reserved, m.used, m.free = total, 0, used, total - used
        return NVML_SUCCESS

    def _processes(self, handle: Any, count: Any, infos: Any) -> int:
        """The C two-call protocol: too small a buffer (or NULL) -> *count = needed, INSUFFICIENT_SIZE;
        none running -> *count = 0, SUCCESS."""
        st = self.host.read()
        g, d = self._device(st, handle)
        if count is None:
            return INVALID_ARGUMENT
        if d is not None:
            procs = st.processes_on(g.index, d.gi_id, d.ci_id)
        else:
            if g.mig_current:
                self._need_root(st)
            procs = st.processes_on(g.index)
        have = as_int(target_of(count))
        n = len(procs)
        if n == 0:
            set_uint(count, 0)
            return NVML_SUCCESS
        if infos is None or have < n:
            set_uint(count, n)
            return pynvml.NVML_ERROR_INSUFFICIENT_SIZE
        arr = buffer_of(infos, pynvml.c_nvmlProcessInfo_v2_t, n)
        for i, p in enumerate(procs):
            arr[i].pid = p.pid
            arr[i].usedGpuMemory = p.used_memory_mib * 1024 * 1024
            arr[i].gpuInstanceId = _NA_UINT if p.gi is None else p.gi
            arr[i].computeInstanceId = _NA_UINT if p.ci is None else p.ci
        set_uint(count, n)
        return NVML_SUCCESS

    def _fn_nvmlDeviceGetComputeRunningProcesses_v3(self, handle: Any, count: Any, infos: Any) -> int:
        return self._processes(handle, count, infos)

    def _fn_nvmlDeviceGetComputeRunningProcesses_v2(self, handle: Any, count: Any, infos: Any) -> int:
        return self._processes(handle, count, infos)

    def _no_processes(self, handle: Any, count: Any, infos: Any) -> int:
        st = self.host.read()
        self._device(st, handle)
        if count is None:
            return INVALID_ARGUMENT
        set_uint(count, 0)
        return NVML_SUCCESS

    def _fn_nvmlDeviceGetGraphicsRunningProcesses_v3(self, handle: Any, count: Any, infos: Any) -> int:
        return self._no_processes(handle, count, infos)

    def _fn_nvmlDeviceGetGraphicsRunningProcesses_v2(self, handle: Any, count: Any, infos: Any) -> int:
        return self._no_processes(handle, count, infos)


# --------------------------------------------------------------------------------------------------
# Installing into pynvml
# --------------------------------------------------------------------------------------------------

_saved: list[Any] = []


def install(state_dir: Any) -> FakeNvmlLibrary:
    """Make pynvml talk to the simulated host in `state_dir`. Returns the fake library. Installing the same
    directory again keeps the library already in place (so handles pynvml gave out stay valid)."""
    with pynvml.libLoadLock:
        cur = pynvml.nvmlLib
        if isinstance(cur, FakeNvmlLibrary) and cur.host.dir.resolve() == Path(state_dir).resolve():
            _saved.append(cur)
            return cur
    lib = FakeNvmlLibrary(state_dir)
    with pynvml.libLoadLock:
        _saved.append(pynvml.nvmlLib)
        pynvml.nvmlLib = lib
        pynvml._nvmlGetFunctionPointer_cache.clear()
    return lib


def uninstall() -> None:
    """Undo the last `install()` (pynvml gets back whatever library it had before)."""
    with pynvml.libLoadLock:
        pynvml.nvmlLib = _saved.pop() if _saved else None
        pynvml._nvmlGetFunctionPointer_cache.clear()


@contextmanager
def installed(state_dir: Any) -> Iterator[FakeNvmlLibrary]:
    """`with installed(state): pynvml.nvmlInit(); ...`"""
    lib = install(state_dir)
    try:
        yield lib
    finally:
        uninstall()
