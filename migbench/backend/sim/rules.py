"""Driver facts and rules the simulator applies: driver branches and their CUDA versions, the minimum
driver per GPU family, GPU-instance ids and the placement the driver picks, compute-instance profiles.

Sourced in docs/mig-facts.md. Markers: [V] verified, [D] derived, [U] inferred; every [U] rule says why
it was chosen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from migbench.catalog import (
    Catalog,
    DriverVersion,
    GpuModel,
    Placement,
    Profile,
    default_catalog,
    parse_driver,
)
from migbench.errors import MigbenchError

# ---------------------------------------------------------------------------------------------
# Driver facts used by the simulator
# ---------------------------------------------------------------------------------------------

# A real release of each branch, used when only a branch is known (the catalogue files some memory
# observations under a bare branch such as "525"); nvidia-smi always prints a full version.
_BRANCH_RELEASE = {
    450: "450.80.02",  # docs/mig-facts.md#minimum-drivers (A100)
    460: "460.73.01",  # docs/mig-facts.md#minimum-drivers (A30)
    470: "470.42.01",  # docs/mig-facts.md#smi-formats, `-L` (first R470 release with MIG- UUIDs)
    510: "510.47.03",  # samples/a100-40gb_lgip_1.txt
    525: "525.125.06",  # docs/mig-facts.md#h100-pcie-80gb (scaleway, H100 PCIe)
    535: "535.216.01",  # docs/mig-facts.md#a100-80gb (DataDog/datadog-agent#33120)
    550: "550.90.07",  # docs/mig-facts.md#minimum-drivers (H200)
    560: "560.35.03",  # samples/h100-nvl_lgip-lgipp_1.txt
    570: "570.133.20",  # docs/mig-facts.md#minimum-drivers (B200)
    575: "575.51.03",  # docs/mig-facts.md#minimum-drivers (RTX PRO 6000 Blackwell)
    580: "580.65.06",  # docs/mig-facts.md#h100-sxm5-80gb (User Guide MPS example)
}

# Minimum driver for MIG per GPU family (docs/mig-facts.md#minimum-drivers [V]); by catalogue key prefix.
MIN_MIG_DRIVER: tuple[tuple[str, DriverVersion], ...] = (
    ("A100", (450, 80, 2)),
    ("A30", (460, 73, 1)),
    ("H100", (525, 85, 12)),
    ("H200", (550, 90, 7)),
    ("B200", (570, 133, 20)),
    ("GB200", (570, 133, 20)),
    ("RTX-PRO-6000", (575, 51, 3)),
)

# CUDA version reported by a driver branch (nvmlSystemGetCudaDriverVersion, nvidia-smi header).
# Seen in real nvidia-smi headers: 470 -> 11.4, 510 -> 11.6, 515.86.01 -> 11.7, 525.125.06 -> 12.0,
# 535.129.03 -> 12.2, 550.90.07 -> 12.4, 560 -> 12.6, 570 -> 12.8, 580 -> 13.0 (public pastes found by
# the project's search, e.g. index ids 67228245037, 18063748901, 62910148370, 10921549056). The other
# branches follow NVIDIA's CUDA toolkit/driver release table [U: not checked against a paste].
_CUDA_BY_BRANCH = {
    450: 11000,
    455: 11010,
    460: 11020,
    465: 11030,
    470: 11040,
    495: 11050,
    510: 11060,
    515: 11070,
    520: 11080,
    525: 12000,
    530: 12010,
    535: 12020,
    545: 12030,
    550: 12040,
    555: 12050,
    560: 12060,
    565: 12070,
    570: 12080,
    575: 12090,
    580: 13000,
}

R470 = (470,)


def uses_new_mig_uuids(driver: DriverVersion) -> bool:
    """R470+ prints `MIG-<uuid>`; R450/R460 print `MIG-GPU-<gpu uuid>/<gi>/<ci>` (docs/mig-facts.md#smi-formats [V])."""
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
                hint="give a full driver version, e.g. 535.216.01; known branches: " + ", ".join(f"R{b}" for b in sorted(_BRANCH_RELEASE)),
            )
        return _BRANCH_RELEASE[v[0]]
    return str(text).strip().lstrip("rR")


def newest_driver(cat: Catalog, key: str) -> str:
    """The newest driver the catalogue has a memory observation for on model `key`, as a full version: the
    newest stated observation from a source of known provenance, else the newest filed one."""
    spec = cat.specs[key]
    seen: list[tuple[DriverVersion, str]] = []
    trusted: list[tuple[DriverVersion, str]] = []
    for ps in spec.get("profiles", []):
        for obs in ps.get("memory_mib") or []:
            v = parse_driver(str(obs["driver"]))
            if v is not None:
                seen.append((v, str(obs["driver"])))
                if obs.get("driver_stated", True) and not obs.get("unverified", False):
                    trusted.append((v, str(obs["driver"])))
    seen = trusted or seen
    if not seen:
        raise MigbenchError(f"the catalogue has no driver observation for {key}")
    v, text = max(seen)
    if len(v) == 1:
        return full_driver(text)
    return text


def display_name(model: GpuModel, driver: DriverVersion) -> str:
    """NVML product name. Drivers up to R470 print it without the `NVIDIA ` prefix
    (docs/mig-facts.md#smi-formats; User Guide R470 `-L`), 510.47.03 with it (yokatayama/e-learning, the A100
    `-lgip` sample's host). Where the switch happened between those two is unknown [U]: the simulator switches
    at R495."""
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


def physical_start(model: GpuModel, start: int, size: int, swapped: bool) -> int:
    """Where an instance printed at `start` sits on a GPU whose two halves of the memory slices are exchanged
    (`swapped`, a per-board property, docs/mig-facts.md#gi-ids): `start XOR N/2` for instances smaller than
    the GPU, the printed start otherwise."""
    n = model.memory_slices
    return start ^ (n // 2) if swapped and size < n else start


def gpu_instance_id(model: GpuModel, start: int, size: int, swapped: bool = False) -> int:
    """The id the driver gives a GPU instance at `start` of `size` memory slices.

    [D] One slot tree over the memory slices, id = (number of slots of that size - 1) + start/size: on an
    8-slice GPU size 8 -> 0, size 4 -> 1..2, size 2 -> 3..6, size 1 -> 7..14; on a 4-slice GPU (A30, RTX PRO
    6000) size 4 -> 0, size 2 -> 1..2, size 1 -> 3..6. On some boards the tree is applied to the placement with
    the two halves of the memory slices exchanged (`swapped`): both kinds occur on one host and driver
    (NVIDIA/DCGM#138, stackhpc docs/mig.md) and nothing public predicts which a board is. With that bit the rule
    reproduces every public capture with ids but one, the User Guide's `-cgi 9,3g.20gb -C`, whose `-cgi` lines
    and `-lgi` table contradict each other (docs/fidelity-findings.md#gi-ids; tests/backend/sim/test_replay.py).
    """
    slots = max(model.memory_slices // max(size, 1), 1)
    return (slots - 1) + physical_start(model, start, size, swapped) // max(size, 1)


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
    It reproduces the placements of every public capture (docs/fidelity-findings.md#gi-ids), e.g. `-cgi
    19,19,14,9` (13, 11, 3, then Insufficient Resources) and `-cgi 9,19,14,19` (2, 7, 4, 8) on an A100-40GB
    before R525, `-cgi 9,19,19,19` on an H100 PCIe 525.125.06 (2, 7, 8, 9) and, on a board with swapped halves,
    `-cgi 9,15,19` on the H100 NVL 560.35.03 (1, 5, 13).
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

# docs/mig-facts.md#compute-instances [V as mig-parted's model]: CI layouts per GI compute size
# -> {CI compute slices: max count}.
CI_LAYOUTS: dict[int, dict[int, int]] = {
    7: {1: 7, 2: 3, 3: 2, 4: 1, 7: 1},
    4: {1: 4, 2: 2, 4: 1},
    3: {1: 3, 2: 1, 3: 1},
    2: {1: 2, 2: 1},
    1: {1: 1},
}
# docs/mig-facts.md#compute-instances: CI profile id = NVML_COMPUTE_INSTANCE_PROFILE_<n>_SLICE
# (0, 1, 2 [V]; the rest [U]).
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

    Counts come from docs/mig-facts.md#compute-instances. Placements [U]: starts aligned to the CI size rounded
    up to a power of two, which yields exactly those counts (e.g. 3c in a 7g GI at {0,4}, 2c at {0,2,4}). SMs
    [U]: the GI's SMs for the full-size CI, else slices x the SMs of the model's 1g (1-compute, 1-memory-slice)
    profile, which gives the User Guide's 14/28/42 for 1c/2c/3g on A100 (docs/mig-facts.md#compute-instances).
    """
    key = (model.key, model.driver, model.origin, gi_profile)
    if key not in _CI_PROFILES:
        _CI_PROFILES[key] = tuple(_ci_profiles(model, gi_profile))
    return list(_CI_PROFILES[key])


_CI_PROFILES: dict[tuple[Any, ...], tuple[CiProfile, ...]] = {}  # the simulator asks for them thousands of times


def _ci_profiles(model: GpuModel, gi_profile: Profile) -> list[CiProfile]:
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
                id=CI_PROFILE_ID[c],
                slices=c,
                max_count=mx,
                starts=starts,
                name=name,
                sm=sm,
                engines=gi_profile.engines,
                is_default=(c == g),
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# Numbers only the main nvidia-smi table shows
# ---------------------------------------------------------------------------------------------

# Memory an idle GPU instance shows as used in the MIG-devices table, by driver branch and the instance's
# memory slices, as seen in the captures (docs/fidelity-findings.md#text-differences). [U] for branches and
# sizes in between: the newest branch not above the driver applies, and within it the largest size seen not
# above the instance's (else the smallest size seen).
_IDLE_GI_MIB: dict[int, dict[int, int]] = {
    0: {4: 11},  # MIG User Guide -cgi 9,3g.20gb -C (no BAR1 row: before R510)
    510: {1: 0},  # 510.47.03, yokatayama/e-learning (1g.5gb, ESXi)
    525: {1: 6, 4: 19},  # 525.125.06: scaleway H100 PCIe 1g.10gb; Google Cloud H100 SXM5 3g.40gb
    535: {1: 12, 2: 25, 4: 37},  # 535.104.12, H100 SXM5, unresolved README [U]
    560: {1: 13, 2: 13, 4: 38},  # 560.35.03, H100 NVL (AlizeeChen11/mig-and-mps)
    570: {1: 15},  # 570.169, H100 PCIe, unresolved tutorial [U]
    580: {1: 36, 2: 71, 4: 142},  # 580.126.09, A100-SXM4-40GB, unresolved notes [U]
}


def idle_gi_memory_mib(driver: DriverVersion, memory_slices: int) -> int:
    """MiB an idle GPU instance of `memory_slices` shows as used on `driver` [U, see `_IDLE_GI_MIB`]."""
    branch = max(b for b in _IDLE_GI_MIB if b <= driver[0])
    seen = _IDLE_GI_MIB[branch]
    fits = [s for s in seen if s <= memory_slices]
    return seen[max(fits)] if fits else seen[min(seen)]


def bar1_mib(model: GpuModel, memory_slices: int) -> int:
    """BAR1 total of a MIG device: memory slices x the GPU's BAR1 per slice, minus 1 MiB [D: 8191 for a 1-slice
    A100-40GB, 16383/32767/65535 for 1/2/4-slice 80GB-and-larger parts in every capture with a BAR1 row]. The
    per-slice size (8 GiB on 40GB parts, 16 GiB above 64 GiB) is [U] for GPUs without such a capture."""
    total = model.memory_total_mib or model.max_memory_mib()
    per_slice = 16384 if total > 64 * 1024 else 8192
    return memory_slices * per_slice * 8 // model.memory_slices - 1


# Power limit in the main table (Pwr:Usage/Cap), as seen in captures; 400 W elsewhere [U]. Display only.
_POWER_CAP_W = {
    "A100-PCIE-40GB": 250,  # yokatayama/e-learning, 510.47.03
    "A100-SXM4-80GB": 400,  # NVIDIA/DCGM#152, 535.104.05
    "A800-80GB-PCIE": 300,  # Project-HAMi/HAMi#1903, 580.119.02
    "H100-SXM5-80GB": 700,  # Google Cloud docs, 525.125.06
    "H100-PCIE-80GB": 350,  # scaleway/docs-content, 525.125.06
    "H100-NVL": 400,  # AlizeeChen11/mig-and-mps, 560.35.03
    "RTX-PRO-6000-BLACKWELL": 600,  # bigstack-oss/cubecos#312
}


def power_cap_w(key: str) -> int:
    return _POWER_CAP_W.get(key, 400)
