"""Generate large mixed sweep files for end-to-end planning benchmarks (`bench/plan_e2e.py`).

`mixed_sweep(n_runs, gpus_per_model, seed)` writes what a big lab's sweep looks like: groups of runs
(one group = one model size: the same memory for every run, durations varying with a parameter),
on a fleet of four GPU models. Seeded: the same arguments give the same file on every machine.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from migbench.duration import Demand
from migbench.planner import FleetGpu

MODELS = ["A100-SXM4-40GB", "A100-SXM4-80GB", "H100-SXM5-80GB", "H200"]
MEMS_GIB = [1, 2, 3, 4, 6, 8, 12, 16, 20, 24, 32]


def mixed_sweep(n_runs: int, gpus_per_model: int, seed: int = 7, durations: bool = True, name: str | None = None) -> str:
    """A sweep of about `n_runs` runs in groups of 50 (one smaller group below 50 runs), each group
    `lr x seed` with its own memory."""
    rng = random.Random(seed)
    per_group = 50
    groups = max(1, n_runs // per_group)
    seeds = max(1, min(n_runs, per_group) // 5)
    lines = [
        "version: 1",
        f"name: {name or f'mixed-{n_runs}'}",
        "fleet:",
        *[f"  - {{gpu: {m}, count: {gpus_per_model}}}" for m in MODELS],
        "groups:",
    ]
    for g in range(groups):
        mem = rng.choice(MEMS_GIB)
        cap = 4 if mem <= 8 else (2 if mem <= 16 else 1)
        compute = round(min(1.0, 0.05 + mem / 80 + rng.uniform(0, 0.1)), 2)
        hours = rng.choice([2, 4, 6, 8, 12, 18])
        lines += [
            f"  - name: g{g:04d}",
            f"    command: python train.py --size {mem} --lr {{lr}} --seed {{seed}}",
            "    parameters:",
            "      lr: [0.1, 0.03, 0.01, 0.003, 0.001]",
            f"      seed: [{', '.join(str(k) for k in range(seeds))}]",
            f"    memory: {mem}GiB",
            f"    compute: {compute}",
            f"    max_runs_per_instance: {cap}",
        ]
        if durations:
            lines.append(f"    duration: {hours}h")
    return "\n".join(lines) + "\n"


def demands_sweep(name: str, runs: Sequence[Demand], fleet: Sequence[FleetGpu]) -> str:
    """A sweep file that expands to these runs (one group per kind of run, `i` numbering them), on
    this fleet: how bench/run.py runs a scenario as a user would, through `migbench plan`."""
    counts: dict[str, int] = {}
    for g in fleet:
        counts[g.model.key] = counts.get(g.model.key, 0) + 1
    kinds: dict[tuple, int] = {}
    for r in runs:
        k = (r.memory_mib, r.duration_s, r.compute, r.max_runs_per_instance, r.profiles)
        kinds[k] = kinds.get(k, 0) + 1
    lines = ["version: 1", f"name: {name}", "fleet:", *[f"  - {{gpu: {m}, count: {n}}}" for m, n in counts.items()], "groups:"]
    for gi, ((mem, dur, comp, cap, profiles), n) in enumerate(kinds.items()):
        lines += [
            f"  - name: k{gi:04d}",
            f"    command: python train.py --kind {gi} --i {{i}}",
            f"    parameters: {{i: 'range(0,{n})'}}",
            f"    memory: {mem}MiB",
            f"    compute: {comp}",
            f"    max_runs_per_instance: {cap}",
        ]
        if dur:
            lines.append(f"    duration: {int(dur)}s")
        if profiles:
            lines.append(f"    profiles: [{', '.join(profiles)}]")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python bench/sweepgen.py RUNS GPUS_PER_MODEL [--no-durations] > sweep.yaml
    import sys

    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    print(mixed_sweep(int(args[0]), int(args[1]), durations="--no-durations" not in sys.argv), end="")
