"""The duration model, in one place: how long runs take on MIG instances and who may share one.

`migbench plan` optimises under it, `migbench simulate` and the benchmark replay plans under it
(`migbench.duration.replay`), and the launcher's queue follows its sharing rule.

A run's `duration` is its wall time when it runs alone and gets all the compute it can use.
`compute` (u, 0 < u <= 1) is the fraction of a whole GPU's compute it can keep busy. An instance
offers `capacity` = its SM count / the full-GPU profile's SM count (`compute_basis: sm`, the
default) or its compute slices / the GPU's compute slices (`compute_basis: slices`). The runs on one
instance share its compute like processor sharing: while the set S runs there, every run in S
progresses at

    rate(S) = min(1, capacity / sum(u_j for j in S)) / (1 + interference * (|S| - 1))

of its full speed, so a run alone on an instance that covers its demand takes exactly `duration`, a
compute-bound run (u = 1) on a 3/7 instance takes 7/3 as long, and runs that each use little compute
share an instance without slowing each other until their demands add up past its capacity.
`interference` (default 0) adds a per-co-runner slowdown for memory-bandwidth contention.
Runs without a duration take one time unit (used for wave ordering only).

Sharing rule: a run may join an instance when the memory of every run there, its own included, fits
the instance's memory, and no run there (nor itself) would exceed its `max_runs_per_instance`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any


class ComputeBasis(str, Enum):
    """How an instance's share of the GPU's compute is measured (see `migbench.duration`)."""

    SM = "sm"
    SLICES = "slices"

    def __str__(self) -> str:
        return self.value


if TYPE_CHECKING:
    from migbench.catalog.model import GpuModel, Profile


@dataclass(frozen=True)
class DurationModel:
    """A sweep's tuning of the model: `interference` is the fractional slowdown per extra run sharing
    an instance; `compute_basis` counts an instance's compute share in SMs or in compute slices."""

    interference: float = 0.0
    compute_basis: ComputeBasis = ComputeBasis.SM

    def to_dict(self) -> dict[str, Any]:
        return {"interference": self.interference, "compute_basis": str(self.compute_basis)}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any] | None) -> DurationModel:
        """From a plan file's `duration_model:` (missing keys take the defaults). Raises ValueError."""
        doc = doc or {}
        interference = float(doc.get("interference", 0.0) or 0.0)
        if interference < 0:
            raise ValueError(f"interference must be >= 0, not {interference}")
        return cls(interference, ComputeBasis(str(doc.get("compute_basis", "sm") or "sm")))


@dataclass(frozen=True)
class Demand:
    """What the duration model needs of a run (not a run shape of its own: `sweep.Run` and
    `plan.PlanRun` each give one with `.demand()`). `duration_s` None = unknown (one time unit)."""

    id: str
    memory_mib: int
    duration_s: float | None = None
    compute: float = 1.0
    max_runs_per_instance: int = 1
    profiles: tuple[str, ...] | None = None

    @property
    def cap(self) -> int:
        """How many runs, itself included, may share its instance."""
        return self.max_runs_per_instance

    @property
    def work_s(self) -> float:
        """Seconds of full-speed work (1.0 when the duration is unknown)."""
        return float(self.duration_s) if self.duration_s else 1.0


@dataclass(frozen=True)
class Slot:
    """One MIG instance as the duration model sees it. Instances with the same `type_key` are
    interchangeable for scheduling."""

    key: str
    memory_mib: int
    capacity: float  # fraction of a whole GPU's compute
    type_key: str = ""


def instance_capacity(model: GpuModel, profile: Profile, basis: ComputeBasis | str = ComputeBasis.SM) -> float:
    """An instance's share of the GPU's compute: SMs / the full profile's SMs (or slices / total)."""
    if ComputeBasis(basis) is ComputeBasis.SM:
        # The full-GPU profile's SMs; when the catalogue does not know them (B200, GB200, GH200 list SMs
        # for their small profiles only), the largest known SM count is not the whole GPU: use slices.
        whole = max(model.profiles, key=lambda p: (p.compute_slices, p.memory_slices))
        full = whole.engines.sm or 0
        if profile.engines.sm and full:
            return profile.engines.sm / full
    return profile.compute_slices / model.compute_slices


def rate(demands: Iterable[Demand], capacity: float, interference: float) -> float:
    """Progress rate (share of full speed) of every run in a set running on one instance."""
    ds = list(demands)
    if not ds:
        return 1.0
    total = sum(d.compute for d in ds)
    share = min(1.0, capacity / total) if total > 0 else 1.0
    return share / (1.0 + interference * (len(ds) - 1))


def solo_time(d: Demand, capacity: float) -> float:
    """Wall time of a run alone on an instance of this capacity."""
    return d.work_s * max(1.0, d.compute / capacity)


def fits_alongside(d: Demand, running: Sequence[Demand], slot: Slot) -> bool:
    """The sharing rule: the memory of all fits and no run's sharing cap is exceeded."""
    if d.memory_mib + sum(j.memory_mib for j in running) > slot.memory_mib:
        return False
    n = len(running) + 1
    if n > d.cap:
        return False
    return all(n <= j.cap for j in running)
