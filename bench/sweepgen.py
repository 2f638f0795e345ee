"""Generate large mixed sweep files for end-to-end planning benchmarks (`bench/plan_e2e.py`).

`mixed_sweep(n_runs, gpus_per_model, seed)` writes what a big lab's sweep looks like: groups of runs
(one group = one model size: the same memory for every run, durations varying with a parameter),
on a fleet of four GPU models. Seeded: the same arguments give the same file on every machine.
"""

from __future__ import annotations

import random

MODELS = ["A100-SXM4-40GB", "A100-SXM4-80GB", "H100-SXM5-80GB", "H200"]
MEMS_GIB = [1, 2, 3, 4, 6, 8, 12, 16, 20, 24, 32]


def mixed_sweep(n_runs: int, gpus_per_model: int, seed: int = 7, durations: bool = True, name: str | None = None) -> str:
    """A sweep of about `n_runs` runs in groups of 50, each group `lr x seed` with its own memory."""
    rng = random.Random(seed)
    per_group = 50
    groups = max(1, n_runs // per_group)
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
            "      seed: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]",
            f"    memory: {mem}GiB",
            f"    compute: {compute}",
            f"    max_runs_per_instance: {cap}",
        ]
        if durations:
            lines.append(f"    duration: {hours}h")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python bench/sweepgen.py RUNS GPUS_PER_MODEL [--no-durations] > sweep.yaml
    import sys

    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    print(mixed_sweep(int(args[0]), int(args[1]), durations="--no-durations" not in sys.argv), end="")
