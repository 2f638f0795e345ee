"""Seeded scenario generator for the planner benchmark.

Every scenario is a fleet and a list of runs with memory, duration, compute share and sharing cap,
drawn from a `random.Random(seed)` so a scenario is the same on every machine. Runs come in groups
(one group = one sweep group: the same model and memory for every run, durations varying with a
parameter), which is how real sweeps look and keeps the number of distinct run classes realistic.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from migbench.catalog import Catalog
from migbench.duration import Demand
from migbench.planner import FleetGpu

CAT = Catalog.load(include_user=False)
GIB = 1024
HOUR = 3600.0


@dataclass
class Scenario:
    name: str
    description: str
    fleet: list[FleetGpu]
    runs: list[Demand]
    time_limit_s: float

    @property
    def fleet_text(self) -> str:
        counts: dict[str, int] = {}
        for g in self.fleet:
            counts[g.model.key] = counts.get(g.model.key, 0) + 1
        return " + ".join(f"{n}x {k}" for k, n in counts.items())


def _fleet(spec: list[tuple[str, int]]) -> list[FleetGpu]:
    out, i = [], 0
    for key, n in spec:
        model = CAT.model(key)
        for _ in range(n):
            out.append(FleetGpu(i, model))
            i += 1
    return out


def seed_workload(seed: int, n_runs: int = 90, gpus: int = 4, whole: int = 6) -> Scenario:
    """The seed team's case: a few-well ablation swarm on A100 80GB, a few GiB each, 6-18 h, each
    using a small share of a GPU, several sharing an instance; plus a handful of whole-GPU runs."""
    rng = random.Random(seed)
    runs = []
    for i in range(n_runs - whole):
        wells = rng.choice([2, 3, 4, 6])
        mem = {2: 2 * GIB, 3: int(2.5 * GIB), 4: 3 * GIB, 6: 4 * GIB}[wells]
        hours = rng.choice([6, 8, 10, 12, 14, 16, 18])
        runs.append(Demand(f"abl-{i:03d}", mem, hours * HOUR, round(rng.uniform(0.08, 0.16), 2), 3))
    for i in range(whole):
        runs.append(Demand(f"full-{i:02d}", rng.choice([60, 64, 70]) * GIB, 18 * HOUR, 1.0, 1))
    return Scenario(
        f"seed {n_runs}x{gpus}",
        f"seed workload: {n_runs - whole} small ablations + {whole} whole-GPU runs",
        _fleet([("A100-SXM4-80GB", gpus)]),
        runs,
        10.0,
    )


MIXED_FLEET = ["A100-SXM4-40GB", "A100-SXM4-80GB", "H100-SXM5-80GB", "H200"]
_MEMS = [1, 2, 3, 4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 64, 69]


def mixed(seed: int, n_runs: int, per_model: int, groups: int, time_limit_s: float, name: str | None = None) -> Scenario:
    """Heterogeneous memory (1-69 GiB) on a mixed fleet of A100 40/80 GB, H100 and H200. Bigger
    models use more compute and share less."""
    rng = random.Random(seed)
    runs = []
    sizes = [n_runs // groups + (1 if g < n_runs % groups else 0) for g in range(groups)]
    k = 0
    for g, size in enumerate(sizes):
        mem_gib = rng.choice(_MEMS)
        cap = 4 if mem_gib <= 8 else (2 if mem_gib <= 24 else 1)
        compute = round(min(1.0, 0.05 + mem_gib / 80 + rng.uniform(0, 0.1)), 2)
        hours = [rng.choice([2, 4, 6, 8, 12, 18]) for _ in range(rng.choice([1, 2, 3]))]
        for j in range(size):
            runs.append(Demand(f"g{g:03d}-{j:04d}", mem_gib * GIB, hours[j % len(hours)] * HOUR, compute, cap))
            k += 1
    fleet = _fleet([(m, per_model) for m in MIXED_FLEET])
    return Scenario(
        name or f"mixed {n_runs}x{len(fleet)}",
        f"mixed sweep: {groups} groups, memory 1-69 GiB, on {len(fleet)} GPUs of 4 models",
        fleet,
        runs,
        time_limit_s,
    )


def all_scenarios(seed: int = 7) -> list[Scenario]:
    return [
        seed_workload(seed, 90, 4, whole=6),
        seed_workload(seed + 1, 60, 4, whole=4),
        seed_workload(seed + 2, 90, 8, whole=6),
        mixed(seed + 3, 120, 2, 16, 10.0, name="mixed 120x8"),
        mixed(seed + 4, 200, 2, 24, 10.0, name="mixed 200x8"),
        mixed(seed + 5, 1000, 16, 60, 10.0),
        mixed(seed + 6, 10000, 128, 200, 60.0),
    ]
