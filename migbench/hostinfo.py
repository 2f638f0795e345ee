"""What the host's NVML says, for planning: the live fleet and live profile tables.

Used by `plan`: whenever NVML (real, or the simulated driver under MIGBENCH_SIM) is reachable, its
profile table replaces the built-in catalogue for the models it has, so a driver's real memory
sizes and placements win. When no NVIDIA driver is present this quietly returns nothing.
"""

from __future__ import annotations

from functools import cache

from migbench.backend import read_host_if_available
from migbench.backend.base import HostState
from migbench.catalog import GpuModel
from migbench.solver import FleetGpu


@cache
def _host() -> HostState | None:
    return read_host_if_available()


def live_models() -> dict[str, GpuModel]:
    host = _host()
    if host is None:
        return {}
    return {g.model.key: g.model for g in host.gpus if g.model is not None}


def host_fleet() -> list[FleetGpu]:
    host = _host()
    if host is None:
        return []
    return [FleetGpu(g.index, g.model) for g in host.gpus if g.model is not None]


def clear() -> None:
    _host.cache_clear()
