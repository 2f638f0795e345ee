"""The fleet: which GPUs a plan is for. `--fleet MODEL:COUNT[,...]` and `fleet:` entries resolve to
catalogue models (or the live NVML table of the same model, which wins)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from migbench.catalog import Catalog, GpuModel, default_catalog
from migbench.errors import UsageError
from migbench.sweep.schema import MAX_FLEET_GPUS


@dataclass(frozen=True)
class FleetGpu:
    """One GPU of the fleet: its index in the plan, its model and, in a fleet of several machines,
    its node (the GPU's index on that node is its position among the node's GPUs)."""

    index: int
    model: GpuModel
    node: str | None = None


@dataclass(frozen=True)
class FleetSpec:
    model: str
    count: int
    driver: str | None = None
    node: str | None = None


def parse_fleet_option(text: str) -> list[FleetSpec]:
    """`A100-SXM4-80GB:4,H100-SXM5-80GB:2` (count defaults to 1; `@driver` optional)."""
    out = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        m = re.fullmatch(r"([^:@]+?)(?::(\d+))?(?:@([0-9.]+))?", part)
        if not m:
            raise UsageError(
                f"--fleet: cannot read {part!r}",
                hint="write MODEL:COUNT[,MODEL:COUNT...], e.g. --fleet A100-SXM4-80GB:4",
            )
        count = int(m.group(2) or 1)
        if count < 1:
            raise UsageError(f"--fleet: count must be at least 1 in {part!r}")
        out.append(FleetSpec(m.group(1).strip(), count, m.group(3)))
    if not out:
        raise UsageError("--fleet is empty", hint="e.g. --fleet A100-SXM4-80GB:4")
    check_fleet_size(sum(s.count for s in out), "--fleet")
    return out


def check_fleet_size(total: int, where: str) -> None:
    """Refuse a fleet past `MAX_FLEET_GPUS` before building it (a typo must not hang the CLI)."""
    if total > MAX_FLEET_GPUS:
        raise UsageError(
            f"{where}: {total} GPUs; a fleet has at most {MAX_FLEET_GPUS}",
            hint="plan a bigger cluster in parts (one plan per group of nodes)",
        )


def build_fleet(
    specs: Sequence[FleetSpec],
    catalog: Catalog | None = None,
    live: dict[str, GpuModel] | None = None,
) -> list[FleetGpu]:
    """Resolve model names to catalogue models (or live NVML tables of the same model)."""
    cat = catalog or default_catalog()
    check_fleet_size(sum(s.count for s in specs), "the fleet")
    fleet: list[FleetGpu] = []
    idx = 0
    for spec in specs:
        key = cat.find_key(spec.model)
        if key is None:
            raise UsageError(
                f"unknown GPU model {spec.model!r}",
                hint="known models: " + ", ".join(cat.keys()) + " (see `migbench catalog`)",
            )
        model = (live or {}).get(key) or cat.model(key, spec.driver)
        for _ in range(spec.count):
            fleet.append(FleetGpu(idx, model, spec.node))
            idx += 1
    return fleet
