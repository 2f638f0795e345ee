"""The real, unmodified pynvml against the fake libnvidia-ml (C-ABI style functions over the simulated host)."""

from __future__ import annotations

from ctypes import byref, c_uint

import pynvml as N
import pytest

from migbench.backend.sim import fake_nvml
from migbench.backend.sim.host import init_host


@pytest.fixture
def nvml(tmp_path):
    """An A100-40GB x2 host (R525, MIG on) with pynvml initialised against it."""
    host = init_host(tmp_path, "A100-SXM4-40GB", 2, mig=True)
    with fake_nvml.installed(tmp_path):
        N.nvmlInit()
        try:
            yield host
        finally:
            N.nvmlShutdown()


def test_install_replaces_and_restores_the_library(tmp_path):
    init_host(tmp_path, "A30", 1)
    before = N.nvmlLib
    with fake_nvml.installed(tmp_path) as lib:
        assert N.nvmlLib is lib
        assert fake_nvml.install(tmp_path) is lib  # same directory: same library, handles stay valid
        fake_nvml.uninstall()
        N.nvmlInit()
        assert N.nvmlDeviceGetName(N.nvmlDeviceGetHandleByIndex(0)) == "NVIDIA A30"
        N.nvmlShutdown()
    assert N.nvmlLib is before


def test_init_without_a_host_is_driver_not_loaded(tmp_path):
    with fake_nvml.installed(tmp_path / "missing"):
        with pytest.raises(N.NVMLError_DriverNotLoaded):
            N.nvmlInit()


def test_calls_before_init_are_uninitialized(tmp_path):
    init_host(tmp_path, "A30", 1)
    with fake_nvml.installed(tmp_path):
        with pytest.raises(N.NVMLError_Uninitialized):
            N.nvmlDeviceGetCount()
        with pytest.raises(N.NVMLError_FunctionNotFound):
            N.nvmlDeviceGetPowerUsage(None)


def test_enumerate_devices(nvml):
    st = nvml.read()
    assert N.nvmlSystemGetDriverVersion() == "525.125.06"
    assert N.nvmlSystemGetCudaDriverVersion() == 12000
    assert N.nvmlDeviceGetCount() == 2
    for i in range(2):
        h = N.nvmlDeviceGetHandleByIndex(i)
        assert N.nvmlDeviceGetIndex(h) == i
        assert N.nvmlDeviceGetName(h) == "NVIDIA A100-SXM4-40GB"
        assert N.nvmlDeviceGetUUID(h) == st.gpus[i].uuid
        pci = N.nvmlDeviceGetPciInfo(h)
        assert pci.busId == st.gpus[i].bus_id
        assert pci.pciDeviceId == 0x20B010DE
        assert N.nvmlDeviceGetMigMode(h) == [1, 1]
        assert not N.nvmlDeviceIsMigDeviceHandle(h)
    h1 = N.nvmlDeviceGetHandleByUUID(st.gpus[1].uuid)
    assert N.nvmlDeviceGetIndex(h1) == 1
    with pytest.raises(N.NVMLError_NotFound):
        N.nvmlDeviceGetHandleByUUID("GPU-00000000-0000-0000-0000-000000000000")
    with pytest.raises(N.NVMLError_InvalidArgument):
        N.nvmlDeviceGetHandleByIndex(2)


def test_gpu_instance_profiles_by_nvml_index(nvml):
    h = N.nvmlDeviceGetHandleByIndex(0)
    seen = {}
    for idx in range(N.NVML_GPU_INSTANCE_PROFILE_COUNT):
        try:
            info = N.nvmlDeviceGetGpuInstanceProfileInfo(h, idx)
        except N.NVMLError_NotSupported:
            continue
        seen[idx] = (info.id, info.name, info.sliceCount, info.instanceCount, info.memorySizeMB, info.multiprocessorCount)
    assert seen == {
        0: (19, "MIG 1g.5gb", 1, 7, 4864, 14),
        1: (14, "MIG 2g.10gb", 2, 3, 9856, 28),
        2: (9, "MIG 3g.20gb", 3, 2, 19968, 42),
        3: (5, "MIG 4g.20gb", 4, 1, 19968, 56),
        4: (0, "MIG 7g.40gb", 7, 1, 40192, 98),
        7: (20, "MIG 1g.5gb+me", 1, 1, 4864, 14),
        9: (15, "MIG 1g.10gb", 1, 4, 9856, 14),
    }
    with pytest.raises(N.NVMLError_InvalidArgument):  # the end of the enumeration
        N.nvmlDeviceGetGpuInstanceProfileInfo(h, N.NVML_GPU_INSTANCE_PROFILE_COUNT)
    assert N.nvmlDeviceGetGpuInstanceProfileInfoById(h, 9).memorySizeMB == 19968
    assert N.nvmlDeviceGetGpuInstanceProfileInfo(h, 0, version=1).instanceCount == 7


def test_profiles_need_mig_enabled(tmp_path):
    init_host(tmp_path, "A100-SXM4-40GB", 1, mig=False)
    with fake_nvml.installed(tmp_path):
        N.nvmlInit()
        h = N.nvmlDeviceGetHandleByIndex(0)
        with pytest.raises(N.NVMLError_NotSupported):
            N.nvmlDeviceGetGpuInstanceProfileInfo(h, 0)
        assert N.nvmlDeviceGetMaxMigDeviceCount(h) == 0
        N.nvmlShutdown()


def test_possible_placements_two_call_protocol(nvml):
    h = N.nvmlDeviceGetHandleByIndex(0)
    count = c_uint()
    N.nvmlDeviceGetGpuInstancePossiblePlacements(h, 19, None, byref(count))
    assert count.value == 7
    arr = (N.c_nvmlGpuInstancePlacement_t * count.value)()
    N.nvmlDeviceGetGpuInstancePossiblePlacements(h, 15, arr, byref(count))
    assert [(p.start, p.size) for p in arr[: count.value]] == [(0, 2), (2, 2), (4, 2), (6, 2)]
    small = (N.c_nvmlGpuInstancePlacement_t * 1)()
    with pytest.raises(N.NVMLError_InsufficientSize):
        N.nvmlDeviceGetGpuInstancePossiblePlacements(h, 19, small, byref(count))
    assert N.nvmlDeviceGetGpuInstanceRemainingCapacity(h, 9) == 2


def test_create_with_placement_and_compute_instance(nvml):
    h = N.nvmlDeviceGetHandleByIndex(0)
    gi = N.nvmlDeviceCreateGpuInstanceWithPlacement(h, 9, byref(N.c_nvmlGpuInstancePlacement_t(4, 4)))
    info = N.nvmlGpuInstanceGetInfo(gi)
    assert (info.id, info.profileId, info.placement.start, info.placement.size) == (2, 9, 4, 4)
    assert N.nvmlDeviceGetIndex(info.device) == 0
    with pytest.raises(N.NVMLError_InvalidArgument):  # by value, not a pointer: the C library would misread it
        N.nvmlDeviceCreateGpuInstanceWithPlacement(h, 9, N.c_nvmlGpuInstancePlacement_t(0, 4))
    with pytest.raises(N.NVMLError_InsufficientResources) as exc:
        N.nvmlDeviceCreateGpuInstanceWithPlacement(h, 9, byref(N.c_nvmlGpuInstancePlacement_t(4, 4)))
    assert str(exc.value) == "Insufficient Resources"
    assert N.nvmlDeviceGetGpuInstanceRemainingCapacity(h, 9) == 1

    cip = N.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, 2, N.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
    assert (cip.id, cip.sliceCount, cip.instanceCount, cip.multiprocessorCount, cip.name) == (2, 3, 1, 42, "MIG 3g.20gb")
    with pytest.raises(N.NVMLError_NotSupported):
        N.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, 3, 0)  # 4c does not exist in a 3g GI
    ci = N.nvmlGpuInstanceCreateComputeInstance(gi, 2)
    cinfo = N.nvmlComputeInstanceGetInfo(ci)
    assert (cinfo.id, cinfo.profileId, cinfo.placement.start, cinfo.placement.size) == (0, 2, 0, 3)
    assert N.nvmlGpuInstanceGetInfo(cinfo.gpuInstance).id == 2

    arr = (N.c_nvmlGpuInstance_t * 2)()
    count = c_uint()
    N.nvmlDeviceGetGpuInstances(h, 9, arr, byref(count))
    assert count.value == 1 and N.nvmlGpuInstanceGetInfo(arr[0]).id == 2
    assert N.nvmlGpuInstanceGetInfo(N.nvmlDeviceGetGpuInstanceById(h, 2)).placement.start == 4
    with pytest.raises(N.NVMLError_NotFound):
        N.nvmlDeviceGetGpuInstanceById(h, 5)
    cis = (N.c_nvmlComputeInstance_t * 1)()
    N.nvmlGpuInstanceGetComputeInstances(gi, 2, cis, byref(count))
    assert count.value == 1 and N.nvmlComputeInstanceGetInfo(cis[0]).id == 0
    assert N.nvmlComputeInstanceGetInfo(N.nvmlGpuInstanceGetComputeInstanceById(gi, 0)).profileId == 2


def test_driver_chosen_placement_through_nvml(nvml):
    h = N.nvmlDeviceGetHandleByIndex(1)
    ids = [N.nvmlGpuInstanceGetInfo(N.nvmlDeviceCreateGpuInstance(h, p)).id for p in (9, 19, 14, 19)]
    assert ids == [2, 7, 4, 8]


def test_mig_devices_and_uuids(nvml):
    h = N.nvmlDeviceGetHandleByIndex(0)
    for p in (19, 9):
        gi = N.nvmlDeviceCreateGpuInstance(h, p)
        N.nvmlGpuInstanceCreateComputeInstance(gi, 0 if p == 19 else 2)
    assert N.nvmlDeviceGetMaxMigDeviceCount(h) == 7
    found = []
    for i in range(N.nvmlDeviceGetMaxMigDeviceCount(h)):
        try:
            m = N.nvmlDeviceGetMigDeviceHandleByIndex(h, i)
        except N.NVMLError_NotFound:
            continue
        assert N.nvmlDeviceIsMigDeviceHandle(m)
        assert N.nvmlDeviceGetIndex(m) == i
        assert N.nvmlDeviceGetIndex(N.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(m)) == 0
        uuid = N.nvmlDeviceGetUUID(m)
        assert uuid.startswith("MIG-")
        assert N.nvmlDeviceGetGpuInstanceId(N.nvmlDeviceGetHandleByUUID(uuid)) == N.nvmlDeviceGetGpuInstanceId(m)
        found.append(
            (N.nvmlDeviceGetGpuInstanceId(m), N.nvmlDeviceGetComputeInstanceId(m), N.nvmlDeviceGetName(m), N.nvmlDeviceGetMemoryInfo(m).total // 2**20)
        )
    assert found == [(1, 0, "NVIDIA A100-SXM4-40GB MIG 3g.20gb", 19968), (13, 0, "NVIDIA A100-SXM4-40GB MIG 1g.5gb", 4864)]
    with pytest.raises(N.NVMLError_NotSupported):
        N.nvmlDeviceGetGpuInstanceId(h)


def test_processes_memory_and_in_use(nvml, sleeper):
    h = N.nvmlDeviceGetHandleByIndex(0)
    gi = N.nvmlDeviceCreateGpuInstance(h, 9)
    ci = N.nvmlGpuInstanceCreateComputeInstance(gi, 2)
    m = N.nvmlDeviceGetMigDeviceHandleByIndex(h, 0)
    assert N.nvmlDeviceGetComputeRunningProcesses(m) == []
    p1, p2 = sleeper(), sleeper()
    nvml.attach(N.nvmlDeviceGetUUID(m), p1.pid, 3000, "a")
    nvml.attach(N.nvmlDeviceGetUUID(m), p2.pid, 1000, "b")
    procs = N.nvmlDeviceGetComputeRunningProcesses(m)
    assert sorted((p.pid, p.usedGpuMemory, p.gpuInstanceId, p.computeInstanceId) for p in procs) == sorted(
        [(p1.pid, 3000 * 2**20, 2, 0), (p2.pid, 1000 * 2**20, 2, 0)]
    )
    mem = N.nvmlDeviceGetMemoryInfo(m)
    assert (mem.total, mem.used, mem.free) == (19968 * 2**20, 4000 * 2**20, 15968 * 2**20)
    assert len(N.nvmlDeviceGetComputeRunningProcesses(h)) == 2  # aggregate on the parent (privileged)
    assert N.nvmlDeviceGetGraphicsRunningProcesses(m) == []
    with pytest.raises(N.NVMLError_InUse) as exc:
        N.nvmlComputeInstanceDestroy(ci)
    assert str(exc.value) == "In use by another client"
    with pytest.raises(N.NVMLError_InUse):
        N.nvmlGpuInstanceDestroy(gi)
    for p in (p1, p2):
        p.kill()
        p.wait()
    assert N.nvmlDeviceGetComputeRunningProcesses(m) == []
    N.nvmlComputeInstanceDestroy(ci)
    N.nvmlGpuInstanceDestroy(gi)
    with pytest.raises(N.NVMLError_InvalidArgument):  # stale handles
        N.nvmlGpuInstanceGetInfo(gi)
    with pytest.raises(N.NVMLError_InvalidArgument):
        N.nvmlDeviceGetUUID(m)
    with pytest.raises(N.NVMLError_NotFound):
        N.nvmlDeviceGetMigDeviceHandleByIndex(h, 0)


def test_processes_on_a_whole_gpu(tmp_path, sleeper):
    host = init_host(tmp_path, "H100-NVL", 1)
    p = sleeper()
    host.attach("0", p.pid, 5000, "x")
    with fake_nvml.installed(tmp_path):
        N.nvmlInit()
        h = N.nvmlDeviceGetHandleByIndex(0)
        (proc,) = N.nvmlDeviceGetComputeRunningProcesses(h)
        assert (proc.pid, proc.usedGpuMemory, proc.gpuInstanceId) == (p.pid, 5000 * 2**20, 0xFFFFFFFF)
        mem = N.nvmlDeviceGetMemoryInfo(h)
        assert mem.total == 95830 * 2**20 and mem.used == 5000 * 2**20
        N.nvmlShutdown()


def test_set_mig_mode_activation_status(tmp_path):
    host = init_host(tmp_path, "A100-SXM4-40GB", 1, clients=["nvidia-persistenced"])
    with fake_nvml.installed(tmp_path):
        N.nvmlInit()
        h = N.nvmlDeviceGetHandleByIndex(0)
        assert N.nvmlDeviceSetMigMode(h, N.NVML_DEVICE_MIG_ENABLE) == N.NVML_ERROR_IN_USE
        assert N.nvmlDeviceGetMigMode(h) == [0, 1]
        host.remove_client("nvidia-persistenced")  # another process changes the host: seen on the next call
        assert N.nvmlDeviceSetMigMode(h, N.NVML_DEVICE_MIG_ENABLE) == N.NVML_SUCCESS
        assert N.nvmlDeviceGetMigMode(h) == [1, 1]
        with pytest.raises(N.NVMLError_InvalidArgument):
            N.nvmlDeviceSetMigMode(h, 7)
        N.nvmlShutdown()


def test_unprivileged_caller(tmp_path):
    init_host(tmp_path, "A100-SXM4-40GB", 1, mig=True, privileged=False)
    with fake_nvml.installed(tmp_path):
        N.nvmlInit()
        h = N.nvmlDeviceGetHandleByIndex(0)
        count = c_uint()
        with pytest.raises(N.NVMLError_NoPermission) as exc:
            N.nvmlDeviceGetGpuInstancePossiblePlacements(h, 19, None, byref(count))
        assert str(exc.value) == "Insufficient Permissions"
        with pytest.raises(N.NVMLError_NoPermission):
            N.nvmlDeviceCreateGpuInstance(h, 19)
        with pytest.raises(N.NVMLError_NoPermission):
            N.nvmlDeviceSetMigMode(h, 0)
        assert N.nvmlDeviceGetGpuInstanceProfileInfo(h, 0).id == 19  # profile info is not privileged
        N.nvmlShutdown()


def test_injected_fault_surfaces_as_nvml_error(tmp_path):
    host = init_host(tmp_path, "A100-SXM4-40GB", 1, mig=True)
    host.inject_fault("create_gpu_instance", 1, "IN_USE")
    with fake_nvml.installed(tmp_path):
        N.nvmlInit()
        h = N.nvmlDeviceGetHandleByIndex(0)
        with pytest.raises(N.NVMLError_InUse):
            N.nvmlDeviceCreateGpuInstance(h, 19)
        assert N.nvmlGpuInstanceGetInfo(N.nvmlDeviceCreateGpuInstance(h, 19)).id == 13
        N.nvmlShutdown()


def test_pre_r470_mig_uuid_through_nvml(tmp_path):
    host = init_host(tmp_path, "A100-SXM4-40GB", 1, driver="460.73.01", mig=True)
    gi = host.create_gpu_instance(0, 9)
    host.create_compute_instance(0, gi.id)
    with fake_nvml.installed(tmp_path):
        N.nvmlInit()
        h = N.nvmlDeviceGetHandleByIndex(0)
        assert N.nvmlDeviceGetName(h) == "A100-SXM4-40GB"
        m = N.nvmlDeviceGetMigDeviceHandleByIndex(h, 0)
        uuid = N.nvmlDeviceGetUUID(m)
        assert uuid == f"MIG-{N.nvmlDeviceGetUUID(h)}/{gi.id}/0"
        assert N.nvmlDeviceGetGpuInstanceId(N.nvmlDeviceGetHandleByUUID(uuid)) == gi.id
        N.nvmlShutdown()


def test_error_strings():
    lib = fake_nvml.FakeNvmlLibrary("/nonexistent")
    assert lib.nvmlErrorString(19) == b"In use by another client"
    assert lib.nvmlErrorString(23) == b"Insufficient Resources"
    assert lib.nvmlErrorString(6) == b"Not Found"


def test_device_usage_reads_only_the_named_devices_and_drops_gone_ones(tmp_path, sleeper):
    """NvmlReader.device_usage, the sampling read of `migbench profile`: used memory and per-process
    memory of the named MIG devices; a device destroyed in between is left out, not an error."""
    from migbench.backend.nvml import NvmlReader

    host = init_host(tmp_path, "A100-SXM4-40GB", 1, mig=True)
    with fake_nvml.installed(tmp_path):
        r = NvmlReader(simulated=True)
        gi = host.create_gpu_instance(0, 19)
        ci = host.create_compute_instance(0, gi.id)
        (dev,) = [d.uuid for g in r.read().gpus for d in g.devices]
        p = sleeper()
        host.attach(dev, p.pid, 1234, "x")
        got = r.device_usage([dev, "MIG-00000000-0000-0000-0000-000000000000"])
        assert list(got) == [dev] and got[dev].used_mib == 1234 and got[dev].processes == ((p.pid, 1234),)
        p.kill()
        p.wait()
        host.destroy_compute_instance(0, gi.id, ci.id)
        host.destroy_gpu_instance(0, gi.id)
        assert r.device_usage([dev]) == {}
        r.close()


def test_a_read_that_meets_an_instance_destroyed_meanwhile_is_read_again(tmp_path, monkeypatch):
    """Guards: a run reading its instance's compute share (the toy trainer) failed with "NVML
    nvmlComputeInstanceGetInfo failed: Invalid Argument" when the bench re-cut another GPU during
    the read: the compute instance listed a moment before was gone. The read is taken again; an
    error that stays is still raised."""
    from migbench.backend.nvml import READ_TRIES, NvmlReader
    from migbench.errors import HardwareError

    host = init_host(tmp_path, "A100-SXM4-40GB", 2, mig=True)
    keep = host.create_gpu_instance(0, 19)
    host.create_compute_instance(0, keep.id)
    gone = host.create_gpu_instance(1, 19)
    gone_ci = host.create_compute_instance(1, gone.id)
    real = N.nvmlComputeInstanceGetInfo
    calls = {"n": 0}

    def recut_meanwhile(ci):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:  # GPU 1's instance is listed, then destroyed before its info is read
            host.destroy_compute_instance(1, gone.id, gone_ci.id)
            host.destroy_gpu_instance(1, gone.id)
        return real(ci)

    with fake_nvml.installed(tmp_path):
        r = NvmlReader(simulated=True)
        monkeypatch.setattr(N, "nvmlComputeInstanceGetInfo", recut_meanwhile)
        state = r.read()
        assert [len(g.instances) for g in state.gpus] == [1, 0]  # the host as it is after the re-cut
        assert calls["n"] >= 3

        def broken(ci):  # type: ignore[no-untyped-def]
            calls["n"] += 1
            raise N.NVMLError(N.NVML_ERROR_INVALID_ARGUMENT)

        monkeypatch.setattr(N, "nvmlComputeInstanceGetInfo", broken)
        calls["n"] = 0
        with pytest.raises(HardwareError, match="Invalid Argument"):
            r.read()
        assert calls["n"] == READ_TRIES
        r.close()
