"""Which runs `migbench profile` measures: one per distinct memory configuration, or a sample.

A run's configuration is its group and the parameters that change its footprint (`by:` of
`memory: measured`; without it, all of its parameters, so only repeats share one). Each
configuration is probed once, with its first run. `--sample K` keeps K configurations per group,
spread over the group: ordered by declared memory and then by their numeric parameters, the
first, the last and evenly spaced ones between (with K = 1, the largest), so that a fit over them
covers the group's range.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from migbench.errors import UsageError
from migbench.footprints.resolve import config_key
from migbench.sweep import Run, Sweep


@dataclass(frozen=True)
class ProbeTarget:
    """One run to probe: its configuration, the memory it declares (0: unknown) and how many runs of
    the sweep it stands for."""

    run: Run
    key: str
    need_mib: int
    covers: int


def probe_targets(sweep: Sweep, *, sample: int | None = None, groups: Sequence[str] | None = None) -> list[ProbeTarget]:
    """The runs to probe, in sweep order."""
    known = [g.name for g in sweep.groups]
    if groups:
        bad = [g for g in groups if g not in known]
        if bad:
            raise UsageError(f"--groups: no group {', '.join(map(repr, bad))} in sweep {sweep.name}", hint="groups are: " + ", ".join(known))
    if sample is not None and sample < 1:
        raise UsageError("--sample must be at least 1")
    by_group = {g.name: g for g in sweep.groups}
    out: list[ProbeTarget] = []
    for g in sweep.groups:
        if groups and g.name not in groups:
            continue
        configs: dict[str, list[Run]] = {}
        for r in sweep.runs:
            if r.group == g.name:
                configs.setdefault(config_key(by_group[g.name], r), []).append(r)
        chosen = list(configs)
        if sample is not None and len(chosen) > sample:
            chosen = _spread(chosen, configs, sample)
        for key in chosen:
            runs = configs[key]
            out.append(ProbeTarget(runs[0], key, max(0, runs[0].memory_mib), len(runs)))
    order = {r.id: i for i, r in enumerate(sweep.runs)}
    return sorted(out, key=lambda t: order[t.run.id])


def _spread(keys: list[str], configs: dict[str, list[Run]], k: int) -> list[str]:
    def sort_key(key: str) -> tuple[Any, ...]:
        r = configs[key][0]
        nums = tuple(float(v) for _, v in sorted(r.params.items()) if isinstance(v, (int, float)) and not isinstance(v, bool))
        return (r.memory_mib, nums, key)

    ordered = sorted(keys, key=sort_key)
    if k == 1:
        return [ordered[-1]]
    n = len(ordered)
    idx = sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})
    return [ordered[i] for i in idx]
