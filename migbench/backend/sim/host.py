"""The simulated host: N identical MIG-capable GPUs whose state lives on disk.

The state directory holds `host.json` and `host.lock`. Every operation takes an exclusive `fcntl.flock`
on the lock file, loads `host.json`, mutates it and writes it back atomically (temp file, fsync,
`os.replace`); reads take a shared lock. Separate processes (the launcher, `migbench-nvidia-smi`, a
trainer attaching itself, pynvml through `fake_nvml`) therefore see one consistent host.

The rules come from `/work/shared/mig/FACTS.md` (sections 0, a, b, c, d, e, g), the real captures in
`samples/` and `docs/facts-extra.md`. Markers as there: [V] verified, [D] derived, [U] inferred. Every
[U] rule below says why it was chosen. Geometry (profiles, legal starts, per-profile maximums, the +me
rule, driver rules) is the catalogue's: `GpuModel.check` decides whether a set of GPU instances is legal.

Units: memory in MiB (`*_mib`), GPU-instance placements in memory slices, compute-instance placements
in compute slices within their GPU instance.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import tempfile
import uuid as uuidlib
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Sequence

import psutil
import pynvml

from migbench.catalog import (
    Catalog,
    DriverVersion,
    GpuModel,
    Placement,
    Profile,
    default_catalog,
    driver_str,
    parse_driver,
)
from migbench.errors import HardwareError, MigbenchError

STATE_FILE = "host.json"
LOCK_FILE = "host.lock"
STATE_VERSION = 1

# NVML return codes (pynvml's values).
SUCCESS = pynvml.NVML_SUCCESS
INVALID_ARGUMENT = pynvml.NVML_ERROR_INVALID_ARGUMENT  # 2
NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED  # 3
NO_PERMISSION = pynvml.NVML_ERROR_NO_PERMISSION  # 4
NOT_FOUND = pynvml.NVML_ERROR_NOT_FOUND  # 6
DRIVER_NOT_LOADED = pynvml.NVML_ERROR_DRIVER_NOT_LOADED  # 9
RESET_REQUIRED = pynvml.NVML_ERROR_RESET_REQUIRED  # 16
IN_USE = pynvml.NVML_ERROR_IN_USE  # 19
MEMORY = pynvml.NVML_ERROR_MEMORY  # 20
INSUFFICIENT_RESOURCES = pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES  # 23

ERROR_NAMES = {
    "INVALID_ARGUMENT": INVALID_ARGUMENT,
    "NOT_SUPPORTED": NOT_SUPPORTED,
    "NO_PERMISSION": NO_PERMISSION,
    "NOT_FOUND": NOT_FOUND,
    "RESET_REQUIRED": RESET_REQUIRED,
    "IN_USE": IN_USE,
    "MEMORY": MEMORY,
    "INSUFFICIENT_RESOURCES": INSUFFICIENT_RESOURCES,
    "UNKNOWN": pynvml.NVML_ERROR_UNKNOWN,
}

# nvmlErrorString() of the simulated library. pynvml's own table for the rest; 19 and 23 are not in it and
# their text is what nvidia-smi prints for them in real pastes (FACTS.md d; docs/facts-extra.md 4.8, 6.8).
_ERROR_STRINGS = dict(pynvml.NVMLError._errcode_to_string)
_ERROR_STRINGS.update({IN_USE: "In use by another client", INSUFFICIENT_RESOURCES: "Insufficient Resources"})


def error_string(code: int) -> str:
    """The text the simulated `nvmlErrorString(code)` returns (and nvidia-smi prints)."""
    return _ERROR_STRINGS.get(code, "Unknown Error")


class SimError(HardwareError):
    """A simulated driver refusal, carrying the NVML return code (`code`) it maps to."""

    def __init__(self, code: int, message: str, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.code = code

    @property
    def reason(self) -> str:
        """NVML's text for the code, e.g. "Insufficient Resources"."""
        return error_string(self.code)


MUTATING_OPS = (
    "create_gpu_instance",
    "create_compute_instance",
    "destroy_compute_instance",
    "destroy_gpu_instance",
    "set_mig_mode",
    "reset",
)

# ---------------------------------------------------------------------------------------------
# Driver facts used by the simulator
# ---------------------------------------------------------------------------------------------

# A real release of each branch, used when only a branch is known (the catalogue files some memory
# observations under a bare branch such as "525"); nvidia-smi always prints a full version.
_BRANCH_RELEASE = {
    450: "450.80.02",  # FACTS.md a, minimum driver table (A100)
    460: "460.73.01",  # FACTS.md a, minimum driver table (A30)
    470: "470.42.01",  # FACTS.md d (first R470 release with MIG- UUIDs)
    510: "510.47.03",  # samples/a100-40gb_lgip_1.txt
    525: "525.125.06",  # docs/facts-extra.md 2.1 (scaleway, H100 PCIe)
    535: "535.216.01",  # FACTS.md a (DataDog/datadog-agent#33120)
    550: "550.90.07",  # FACTS.md a, minimum driver table (H200)
    560: "560.35.03",  # samples/h100-nvl_lgip-lgipp_1.txt
    570: "570.133.20",  # FACTS.md a, minimum driver table (B200)
    580: "580.65.06",  # FACTS.md a (User Guide MPS example)
}

# Minimum driver for MIG per GPU family (FACTS.md a, "Minimum drivers for MIG" [V]); by catalogue key prefix.
_MIN_MIG_DRIVER: tuple[tuple[str, DriverVersion], ...] = (
    ("A100", (450, 80, 2)),
    ("A30", (460, 73, 1)),
    ("H100", (525, 85, 12)),
    ("H200", (550, 90, 7)),
    ("B200", (570, 133, 20)),
)

# CUDA version reported by a driver branch (nvmlSystemGetCudaDriverVersion, nvidia-smi header).
# Seen in real nvidia-smi headers: 470 -> 11.4, 510 -> 11.6, 515.86.01 -> 11.7, 525.125.06 -> 12.0,
# 535.129.03 -> 12.2, 550.90.07 -> 12.4, 560 -> 12.6, 570 -> 12.8, 580 -> 13.0 (public pastes found by
# the project's search, e.g. index ids 67228245037, 18063748901, 62910148370, 10921549056). The other
# branches follow NVIDIA's CUDA toolkit/driver release table [U: not checked against a paste].
_CUDA_BY_BRANCH = {
    450: 11000, 455: 11010, 460: 11020, 465: 11030, 470: 11040, 495: 11050, 510: 11060, 515: 11070,
    520: 11080, 525: 12000, 530: 12010, 535: 12020, 545: 12030, 550: 12040, 555: 12050, 560: 12060,
    565: 12070, 570: 12080, 575: 12090, 580: 13000,
}

R470 = (470,)


def uses_new_mig_uuids(driver: DriverVersion) -> bool:
    """R470+ prints `MIG-<uuid>`; R450/R460 print `MIG-GPU-<gpu uuid>/<gi>/<ci>` (FACTS.md d [V])."""
    return driver >= R470


def cuda_driver_version(driver: DriverVersion) -> int:
    """`nvmlSystemGetCudaDriverVersion` for a driver: 12020 for 535.x (newest branch not above it)."""
    known = [b for b in sorted(_CUDA_BY_BRANCH) if b <= driver[0]]
    return _CUDA_BY_BRANCH[known[-1]] if known else 11000


def full_driver(text: str) -> str:
    """Turn a user's driver text into a full version string: "535" / "R535" -> "535.216.01"."""
    v = parse_driver(text)
    assert v is not None
    if len(v) == 1:
        if v[0] not in _BRANCH_RELEASE:
            raise MigbenchError(
                f"driver {text!r} is a branch only",
                hint="give a full driver version, e.g. 535.216.01; known branches: "
                + ", ".join(f"R{b}" for b in sorted(_BRANCH_RELEASE)),
            )
        return _BRANCH_RELEASE[v[0]]
    return str(text).strip().lstrip("rR")


def newest_driver(cat: Catalog, key: str) -> str:
    """The newest driver the catalogue has a memory observation for on model `key`, as a full version."""
    spec = cat.specs[key]
    seen: list[tuple[DriverVersion, str]] = []
    for ps in spec.get("profiles", []):
        for obs in ps.get("memory_mib") or []:
            v = parse_driver(str(obs["driver"]))
            if v is not None:
                seen.append((v, str(obs["driver"])))
    if not seen:
        raise MigbenchError(f"the catalogue has no driver observation for {key}")
    v, text = max(seen)
    if len(v) == 1:
        return full_driver(text)
    return text


def display_name(model: GpuModel, driver: DriverVersion) -> str:
    """NVML product name. Drivers up to R470 print it without the `NVIDIA ` prefix (FACTS.md d; User Guide
    R470 `-L`), 510.47.03 with it (yokatayama/e-learning, the A100 `-lgip` sample's host). Where the switch
    happened between those two is unknown [U]: the simulator switches at R495."""
    name = model.names[0] if model.names else model.key
    if driver < (495,):
        legacy = [n for n in model.names if not n.startswith("NVIDIA ")]
        if legacy:
            return legacy[0]
    return name


@lru_cache(maxsize=64)
def _model_cached(key: str, driver: str, catalog_id: int) -> GpuModel:
    return default_catalog().model(key, driver=driver)


def resolve_model(key: str, driver: str) -> GpuModel:
    """The catalogue model (built-in + user catalogue) resolved for `driver`; cached while the catalogue is."""
    return _model_cached(key, driver, id(default_catalog()))


# ---------------------------------------------------------------------------------------------
# GPU-instance ids and placement choice
# ---------------------------------------------------------------------------------------------


def gpu_instance_id(model: GpuModel, start: int, size: int) -> int:
    """The id the driver gives a GPU instance at `start` of `size` memory slices.

    [U] Inferred from the real captures (samples/a100-40gb_cgi-insufficient-resources_1.txt,
    samples/a30_lgip-lgipp-lgi_1.txt, the scaleway H100 -lgi in docs/facts-extra.md 3.1): a slot tree over
    the memory slices, id = (number of slots of that size - 1) + start/size. On an 8-slice GPU: size 8 -> 0,
    size 4 -> 1 + start/4, size 2 -> 3 + start/2, size 1 -> 7 + start; on the 4-slice A30: size 4 -> 0,
    size 2 -> 1 + start/2, size 1 -> 3 + start. samples/a100-40gb_cgi-C-lgi_1.txt disagrees on which of
    two 3g instances gets id 1 and which id 2 (its -lgi lists id 1 at 4:4), and the H100 NVL main table in
    samples/h100-nvl_lgip-lgipp_1.txt (560.35.03) shows ids 1, 5, 13 after `-cgi 9,15,19`, i.e. placements
    0, 4 and 6, which the placement rule below does not reproduce (see `choose_gpu_instance_start`).
    """
    slots = max(model.memory_slices // max(size, 1), 1)
    return (slots - 1) + start // max(size, 1)


def remaining_placements(model: GpuModel, existing: Sequence[Placement]) -> int:
    """How many (plain profile, start) pairs could still be created next to `existing` (one at a time)."""
    n = 0
    for prof in model.plain_profiles():
        for s in prof.starts:
            if model.is_legal(list(existing) + [Placement(prof.name, s)]):
                n += 1
    return n


def choose_gpu_instance_start(model: GpuModel, existing: Sequence[Placement], profile: Profile) -> int | None:
    """The start the driver picks for `nvmlDeviceCreateGpuInstance` (no placement given), or None if none fits.

    [U] Inferred from the captures: among the legal free starts for the profile, the one that leaves the
    largest number of still-possible placements (over the model's plain profiles and their starts, given
    overlap, per-profile maximums and the compute budget after this creation); ties go to the lowest start.
    It reproduces `-cgi 19,19,14,9` (13, 11, 3, then Insufficient Resources) and `-cgi 9,19,14,19` (2, 7, 4,
    8) on an A100-40GB before R525, and `-cgi 9,19,19,19` on an H100 PCIe 525.125.06 (2, 7, 8, 9). It does
    not reproduce the H100 NVL 560.35.03 main table (which looks like lowest-start-first on that driver).
    """
    best: tuple[int, int] | None = None
    for s in profile.starts:
        trial = list(existing) + [Placement(profile.name, s)]
        if not model.is_legal(trial):
            continue
        score = remaining_placements(model, trial)
        if best is None or score > best[0]:
            best = (score, s)
    return None if best is None else best[1]


# ---------------------------------------------------------------------------------------------
# Compute-instance profiles
# ---------------------------------------------------------------------------------------------

# FACTS.md c [V as mig-parted's model]: CI layouts per GI compute size -> {CI compute slices: max count}.
CI_LAYOUTS: dict[int, dict[int, int]] = {
    7: {1: 7, 2: 3, 3: 2, 4: 1, 7: 1},
    4: {1: 4, 2: 2, 4: 1},
    3: {1: 3, 2: 1, 3: 1},
    2: {1: 2, 2: 1},
    1: {1: 1},
}
# FACTS.md c: CI profile id = NVML_COMPUTE_INSTANCE_PROFILE_<n>_SLICE (0, 1, 2 [V]; the rest [U]).
CI_PROFILE_ID: dict[int, int] = {1: 0, 2: 1, 3: 2, 4: 3, 7: 4, 8: 5, 6: 6}


@dataclass(frozen=True)
class CiProfile:
    """A compute-instance profile inside one GPU instance (`nvmlComputeInstanceProfileInfo_v2_t`)."""

    id: int
    slices: int  # compute slices
    max_count: int
    starts: tuple[int, ...]  # compute-slice starts within the GI
    name: str  # "1c.3g.20gb", or the GI's name for the full-size CI
    sm: int | None
    engines: Any  # the GI profile's Engines (CIs share the GI's CE/DEC/ENC/JPEG/OFA)
    is_default: bool


def _align(c: int) -> int:
    a = 1
    while a < c:
        a *= 2
    return a


def ci_profiles(model: GpuModel, gi_profile: Profile) -> list[CiProfile]:
    """The CI profiles a GI of `gi_profile` offers, by CI profile id.

    Counts come from FACTS.md c. Placements [U]: starts aligned to the CI size rounded up to a power of two,
    which yields exactly those counts (e.g. 3c in a 7g GI at {0,4}, 2c at {0,2,4}). SMs [U]: the GI's SMs for
    the full-size CI, else slices x the SMs of the model's 1g (1-compute, 1-memory-slice) profile, which gives
    the User Guide's 14/28/42 for 1c/2c/3g on A100 (FACTS.md c).
    """
    g = gi_profile.compute_slices
    layout = CI_LAYOUTS.get(g, {g: 1})
    one = [p for p in model.plain_profiles() if p.compute_slices == 1 and p.memory_slices == 1]
    per_slice = one[0].engines.sm if one else None
    out = []
    for c, mx in sorted(layout.items()):
        starts = tuple(s for s in range(0, g, _align(c)) if s + c <= g)[:mx]
        name = gi_profile.name if c == g else f"{c}c.{gi_profile.name}"
        if c == g:
            sm = gi_profile.engines.sm
        else:
            sm = None if per_slice is None else per_slice * c
        out.append(
            CiProfile(
                id=CI_PROFILE_ID[c], slices=c, max_count=mx, starts=starts, name=name, sm=sm,
                engines=gi_profile.engines, is_default=(c == g),
            )
        )
    return out


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

    def gi(self, gi_id: int) -> GpuInstance | None:
        return next((g for g in self.gpu_instances if g.id == gi_id), None)


@dataclass(frozen=True)
class MigDevice:
    """A MIG device (one compute instance) as NVML and nvidia-smi show it. `index` is per parent GPU,
    in (GI id, CI id) order; `memory_mib` is the GI profile's memory (the CIs of a GI share it)."""

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


@dataclass
class HostState:
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

    # -- derived ---------------------------------------------------------------------------------
    @property
    def model(self) -> GpuModel:
        return resolve_model(self.model_key, self.driver)

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
        """False in VM passthrough, where `nvidia-smi --gpu-reset` is not supported (FACTS.md d)."""
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
                        gpu=gpu, index=len(out), gi_id=gi.id, ci_id=ci.id, uuid=ci.uuid, name=cp.name,
                        gi_profile=prof, ci_profile=cp, memory_mib=int(prof.memory_mib or 0), serial=ci.serial,
                    )
                )
        return out

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
        return sum(p.used_memory_mib for p in self.processes_on(gpu, gi))

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
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "HostState":
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
        return cls(
            model_key=d["model_key"], driver=d["driver"], seed=int(d["seed"]), vm=bool(d["vm"]),
            privileged=bool(d["privileged"]), gpus=gpus,
            processes=[SimProcess(**p) for p in d.get("processes", [])],
            faults=[Fault(**f) for f in d.get("faults", [])], serial=int(d.get("serial", 0)),
            version=int(d["version"]),
        )


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


def prune_dead(state: HostState) -> bool:
    """Drop processes whose local PID has died (or was reused by another process). True if any went."""
    keep = [p for p in state.processes if _alive(p)]
    changed = len(keep) != len(state.processes)
    state.processes = keep
    return changed


# ---------------------------------------------------------------------------------------------
# Identity: UUIDs, bus ids
# ---------------------------------------------------------------------------------------------


def _gpu_uuid(seed: int, key: str, index: int) -> str:
    h = hashlib.sha256(f"migbench-sim:{seed}:{key}:{index}".encode()).hexdigest()
    return f"GPU-{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _bus_id(index: int, vm: bool) -> str:
    if vm:
        # VM passthrough: devices on bus 0, like the pending-vm sample's 00000000:00:03.0.
        return f"00000000:00:{3 + index:02X}.0"
    # Bare metal: the PCI buses of an 8-GPU HGX/DGX A100 board, then further buses.
    buses = [0x07, 0x0F, 0x47, 0x4E, 0x87, 0x90, 0xB7, 0xBD]
    bus = buses[index] if index < len(buses) else 0xC0 + (index - len(buses)) * 2
    return f"00000000:{bus:02X}:00.0"


def _mig_uuid(state: HostState, gpu: SimGpu, gi_id: int, ci_id: int, serial: int) -> str:
    """R470+: `MIG-` + a UUIDv5 (new per creation: the creation serial is hashed in); before R470 the
    `MIG-GPU-<gpu uuid>/<gi>/<ci>` form (FACTS.md d [V])."""
    if not uses_new_mig_uuids(state.driver_version):
        return f"MIG-{gpu.uuid}/{gi_id}/{ci_id}"
    ns = uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"migbench-sim:{state.seed}:{gpu.uuid}")
    return "MIG-" + str(uuidlib.uuid5(ns, f"{gi_id}/{ci_id}/{serial}"))


# ---------------------------------------------------------------------------------------------
# The host
# ---------------------------------------------------------------------------------------------


def _check_model(model: GpuModel) -> None:
    missing = [p.name for p in model.profiles if p.memory_mib is None]
    if missing:
        raise MigbenchError(
            f"the catalogue does not know the memory of {model.key} profile(s) {', '.join(missing)}, "
            "so the simulator cannot model this GPU",
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
) -> "SimHost":
    """Create (or replace) a simulated host of `count` identical GPUs of catalogue model `model_key`.

    `driver` defaults to the newest driver the catalogue has an observation for on that model; `mig` is the
    initial MIG mode (current = pending); `vm` models VM passthrough (no GPU reset: mode changes on Ampere
    stay pending until a reboot); `privileged` is whether the caller is root; `clients` are non-CUDA
    clients holding every GPU (nvidia-persistenced, dcgm...), which block GPU resets. UUIDs are
    deterministic from `seed` (or given in `gpu_uuids`). The model comes from the default catalogue
    (built-in + user file), which every later operation resolves again for the host's driver.
    """
    cat = default_catalog()
    key = cat.find_key(model_key)
    if key is None:
        raise MigbenchError(f"unknown GPU model {model_key!r}", hint="known models: " + ", ".join(cat.keys()))
    drv = full_driver(driver) if driver else newest_driver(cat, key)
    dv = parse_driver(drv)
    assert dv is not None
    model = cat.model(key, driver=drv)
    _check_model(model)
    for prefix, minimum in _MIN_MIG_DRIVER:
        if key.startswith(prefix) and dv < minimum:
            raise MigbenchError(
                f"{key} needs driver {driver_str(minimum)} or newer for MIG; {drv} is older",
                hint="FACTS.md a, minimum drivers for MIG",
            )
    if not 1 <= count <= 64:
        raise MigbenchError(f"a simulated host has 1 to 64 GPUs, not {count}")
    if gpu_uuids is not None and len(gpu_uuids) != count:
        raise MigbenchError(f"{len(gpu_uuids)} GPU UUIDs given for {count} GPUs")
    gpus = [
        SimGpu(
            index=i,
            uuid=(gpu_uuids[i] if gpu_uuids else _gpu_uuid(seed, key, i)),
            bus_id=_bus_id(i, vm),
            mig_current=mig,
            mig_pending=mig,
            clients=sorted(set(clients)),
        )
        for i in range(count)
    ]
    state = HostState(model_key=key, driver=drv, seed=seed, vm=vm, privileged=privileged, gpus=gpus)
    host = SimHost(state_dir)
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

    def _load(self) -> HostState:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            raise self._missing() from None
        try:
            return HostState.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError) as exc:
            raise MigbenchError(
                f"{self.path} is not a valid simulated host state ({exc})",
                hint="re-create it with `migbench sim init`",
            ) from exc

    def _write(self, state: HostState) -> None:
        data = json.dumps(state.to_json(), indent=1, sort_keys=True)
        fd, tmp = tempfile.mkstemp(prefix=".host.", suffix=".tmp", dir=self.dir)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        try:
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:  # pragma: no cover - some filesystems refuse directory fsync
            if exc.errno not in (errno.EINVAL, errno.EBADF, errno.EACCES):
                raise

    def read(self) -> HostState:
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
    def transaction(self) -> Iterator[HostState]:
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
    def _fire_fault(st: HostState, op: str) -> None:
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
    def _need_root(st: HostState, what: str) -> None:
        if not st.privileged:
            raise SimError(NO_PERMISSION, f"{what} needs root (the simulated caller is unprivileged)")

    @staticmethod
    def _need_mig(st: HostState, gpu: SimGpu) -> None:
        if not gpu.mig_current:
            raise SimError(NOT_SUPPORTED, f"GPU {gpu.index} does not have MIG mode enabled")

    @staticmethod
    def _next_serial(st: HostState) -> int:
        st.serial += 1
        return st.serial

    # -- MIG mode, reset, reboot ----------------------------------------------------------------------
    def set_mig_mode(self, gpu: int, enable: bool) -> int:
        """`nvmlDeviceSetMigMode` / `nvidia-smi -i N -mig 0|1`. Returns the activation status.

        Ampere (FACTS.md 0.6, d): the requested mode becomes *pending*; it is applied at once (a GPU reset)
        when nothing holds the GPU and a reset is possible -> SUCCESS. Otherwise it stays pending until
        `reset()` or `reboot()`: IN_USE when processes or clients hold the GPU, NOT_SUPPORTED in a VM
        (the activation status nvidia-smi printed in the VM sample, "...pending enable state...:Not
        Supported"; nvml.h documents RESET_REQUIRED for pass-through, the real text shows otherwise).
        Hopper and later change the mode at once; with processes running the change is refused
        (activation status IN_USE, mode unchanged) [U: no paste of that case].
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

    def reset_blocker(self, st: HostState, gpu: int) -> SimError | None:
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
        and later MIG mode does not survive a reset (FACTS.md g, "Hopper reset clears MIG").
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
    def _apply_reset(st: HostState, g: SimGpu) -> None:
        g.gpu_instances = []
        if st.model.mode_persists_across_reboot:
            g.mig_current = g.mig_pending
        else:
            g.mig_current = g.mig_pending = False
        st.processes = [p for p in st.processes if p.gpu != g.index]

    def reboot(self) -> None:
        """All GPU/compute instances and processes vanish. Ampere keeps the MIG mode (a pending change takes
        effect); Hopper and later come back with MIG disabled (FACTS.md 0.5)."""
        with self.transaction() as st:
            st.processes = []
            for g in st.gpus:
                self._apply_reset(st, g)

    # -- GPU instances -------------------------------------------------------------------------------
    def create_gpu_instance(self, gpu: int, profile_id: int, start: int | None = None,
                            size: int | None = None) -> GpuInstance:
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
            gi_id = gpu_instance_id(model, s, prof.memory_slices)
            used = {x.id for x in g.gpu_instances}
            if gi_id in used:  # cannot happen with power-of-two slot sizes; keep ids unique regardless
                gi_id = min(i for i in range(len(used) + 64) if i not in used)
            gi = GpuInstance(id=gi_id, profile_id=prof.id, start=s, size=prof.memory_slices,
                             serial=self._next_serial(st))
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
    def create_compute_instance(self, gpu: int, gi_id: int, ci_profile_id: int | None = None,
                                start: int | None = None) -> ComputeInstance:
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
                    raise SimError(
                        NOT_SUPPORTED, f"a {prof.name} GPU instance has no compute instance profile ID {ci_profile_id}"
                    )
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
            ci = ComputeInstance(id=ci_id, profile_id=cp.id, start=choice, size=cp.slices,
                                 uuid=_mig_uuid(st, g, gi.id, ci_id, serial), serial=serial)
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
                raise SimError(IN_USE, f"compute instance {gi_id}/{ci_id} on GPU {gpu} is used by pid "
                               + ", ".join(str(p.pid) for p in busy))
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
                    f"out of memory: {used_memory_mib} MiB requested, {total - used} MiB free of {total} MiB "
                    f"on {dev.uuid if dev else gpu.uuid}",
                )
            proc = SimProcess(pid=int(pid), create_time=ctime, gpu=gpu.index,
                              gi=dev.gi_id if dev else None, ci=dev.ci_id if dev else None,
                              used_memory_mib=int(used_memory_mib), name=name)
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
    def _select(st: HostState, gpus: Sequence[int] | None) -> list[SimGpu]:
        return [st.gpu(i) for i in gpus] if gpus is not None else list(st.gpus)

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


def parse_error_code(code: int | str) -> int:
    """An NVML error code from an int, "23", "IN_USE" or "NVML_ERROR_IN_USE"."""
    if isinstance(code, int):
        return code
    t = str(code).strip().upper()
    if t.isdigit():
        return int(t)
    t = t.removeprefix("NVML_ERROR_")
    if t in ERROR_NAMES:
        return ERROR_NAMES[t]
    v = getattr(pynvml, f"NVML_ERROR_{t}", None)
    if isinstance(v, int):
        return v
    raise MigbenchError(f"unknown NVML error {code!r}", hint="e.g. " + ", ".join(ERROR_NAMES))


def load_host(state_dir: str | os.PathLike[str]) -> HostState:
    """A snapshot of the simulated host in `state_dir` (shared lock; dead processes left out)."""
    return SimHost(state_dir).read()


def host_from_env(state: str | os.PathLike[str] | None = None) -> SimHost:
    """The simulated host named by `state`, else by `$MIGBENCH_SIM`."""
    d = state or os.environ.get("MIGBENCH_SIM")
    if not d:
        raise MigbenchError(
            "no simulated host given",
            hint="pass --state DIR or set MIGBENCH_SIM=<state dir> (created with `migbench sim init`)",
        )
    return SimHost(d)


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
