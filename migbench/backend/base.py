"""The driver protocol and the observed-state types every backend returns.

Reading goes through NVML (`backend.nvml.NvmlReader`, real or over the simulated driver); changing
goes through nvidia-smi (`backend.smi_writer.SmiWriter`, a real subprocess of the real or the
simulated nvidia-smi), with NVML's create-with-placement where nvidia-smi cannot express a
placement. Nothing outside `migbench.backend` imports pynvml or subprocess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from migbench.catalog import GpuModel, Placement


@dataclass(frozen=True)
class ProcessState:
    """A compute process on a GPU or MIG device (NVML `nvmlDeviceGetComputeRunningProcesses`)."""

    pid: int
    used_memory_mib: int | None
    gi_id: int | None = None
    ci_id: int | None = None
    mig_uuid: str | None = None


@dataclass(frozen=True)
class DeviceUsage:
    """One device's used memory (MiB) and its compute processes as (PID, used MiB or None), from a
    fast sampling read (`NvmlReader.device_usage`)."""

    used_mib: int
    processes: tuple[tuple[int, int | None], ...] = ()


@dataclass(frozen=True)
class MigDeviceState:
    """One MIG device (a compute instance as CUDA sees it), `nvidia-smi -L`'s `MIG ... Device N`."""

    uuid: str
    index: int
    gi_id: int
    ci_id: int
    memory_total_mib: int
    memory_used_mib: int
    processes: tuple[ProcessState, ...] = ()


@dataclass(frozen=True)
class ComputeInstanceState:
    id: int
    profile_id: int
    start: int  # compute slices within the GPU instance
    size: int


@dataclass(frozen=True)
class GpuInstanceState:
    """One GPU instance (`nvidia-smi mig -lgi` row)."""

    id: int
    profile_id: int
    profile: str  # e.g. 3g.40gb
    start: int  # memory slices
    size: int
    memory_mib: int | None
    compute_instances: tuple[ComputeInstanceState, ...] = ()

    @property
    def placement(self) -> Placement:
        return Placement(self.profile, self.start)


@dataclass(frozen=True)
class GpuState:
    index: int
    uuid: str
    name: str
    bus_id: str
    pci_device_id: int
    mig_current: bool | None  # None: the GPU does not support MIG
    mig_pending: bool | None
    model: GpuModel | None  # live profile table (None when unknown / MIG unsupported)
    instances: tuple[GpuInstanceState, ...] = ()
    devices: tuple[MigDeviceState, ...] = ()
    processes: tuple[ProcessState, ...] = ()  # every compute process on the GPU or its MIG devices

    @property
    def model_key(self) -> str | None:
        return self.model.key if self.model else None

    def layout(self) -> tuple[Placement, ...]:
        return tuple(sorted((gi.placement for gi in self.instances), key=lambda p: (p.start, p.profile)))

    def instance_at(self, placement: Placement) -> GpuInstanceState | None:
        for gi in self.instances:
            if gi.placement == placement:
                return gi
        return None

    def devices_of(self, gi_id: int) -> list[MigDeviceState]:
        return [d for d in self.devices if d.gi_id == gi_id]

    def processes_of(self, gi_id: int) -> list[ProcessState]:
        return [p for p in self.processes if p.gi_id == gi_id]


@dataclass(frozen=True)
class HostState:
    driver: str
    gpus: tuple[GpuState, ...]
    simulated: bool = False

    def gpu(self, index: int) -> GpuState:
        for g in self.gpus:
            if g.index == index:
                return g
        raise KeyError(index)

    def layouts(self) -> dict[int, tuple[Placement, ...]]:
        """Each GPU's layout, by GPU index."""
        return {g.index: g.layout() for g in self.gpus}


@dataclass
class CommandRecord:
    """One side effect, as the operator would type it: the nvidia-smi argv, or the NVML call with
    its nvidia-smi equivalent."""

    argv: list[str]
    via: str = "nvidia-smi"  # nvidia-smi | nvml
    note: str = ""
    rc: int | None = None
    output: str = ""

    def line(self) -> str:
        from shlex import join

        text = join(self.argv)
        return f"{text}    # {self.note}" if self.note else text


class Reader(Protocol):
    def read(self) -> HostState: ...


class Writer(Protocol):
    dry_run: bool
    log: list[CommandRecord]

    def check_privileges(self) -> None: ...
    def set_mig_mode(self, gpu: int, enabled: bool) -> ModeOutcome: ...
    def reset_gpu(self, gpu: int) -> None: ...
    def create_gpu_instance(self, gpu: int, profile_id: int, start: int, size: int) -> int | None: ...
    def create_compute_instance(self, gpu: int, gi_id: int | str, profile_id: int | None = None) -> int | None: ...
    def destroy_compute_instance(self, gpu: int, gi_id: int, ci_id: int) -> None: ...
    def destroy_gpu_instance(self, gpu: int, gi_id: int) -> None: ...
    def destroy_all_instances(self, gpu: int) -> None: ...


@dataclass(frozen=True)
class ModeOutcome:
    """What `nvidia-smi -mig 0|1` did: applied now, or pending with the driver's reason."""

    applied: bool
    pending: bool
    reason: str = ""
    output: str = ""


@dataclass
class Backend:
    """A reader and a writer for one host (real or simulated)."""

    reader: Reader
    writer: Writer
    simulated: bool
    description: str
    lock_path: str
    extra: dict[str, str] = field(default_factory=dict)
