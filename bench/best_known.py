"""The best plans known for the bench's scenarios, found by the bench's own long search, kept in
bench/best_known/ so `bench/run.py` can report each plan's makespan / best known.

    python bench/best_known.py [--only NAME] [--work W] [--quick]

For every scenario of bench/scenarios.py (with --quick, those under 10,000 runs), migbench's
planner runs with a deterministic work budget of W reference seconds (default 120; the default
`--time-limit 10` gives 5 less the command's own share) and a wall limit far above it, so the
result is the same on any machine. The plan is checked independently of the planner (`check`:
every run once, on an instance whose memory holds it, the instance a legal placement of its GPU's
layout, layouts without overlapping slices) and replayed with the launcher's queue policy
(`forecast.simulate`), and written to bench/best_known/<scenario>.json when it is shorter than the
one kept there (a kept plan is never replaced by a longer one). Each file records the budget and the
migbench version that found it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scenarios import Scenario, all_scenarios  # noqa: E402
from migbench import __version__  # noqa: E402
from migbench.duration import DurationModel, instance_capacity  # noqa: E402
from migbench.forecast.simulate import ReplayInstance, replay_instances  # noqa: E402
from migbench.planner import SolveOptions, solve  # noqa: E402
from migbench.types import InstanceRef, Placement  # noqa: E402

HERE = Path(__file__).resolve().parent
DIR = HERE / "best_known"


def slug(name: str) -> str:
    return name.replace(" ", "-")


def path_of(sc: Scenario) -> Path:
    return DIR / f"{slug(sc.name)}.json"


def check(sc: Scenario, doc: dict[str, Any]) -> list[str]:
    """What is wrong with a stored plan for `sc` (empty when it is a valid fixed-layout plan)."""
    problems: list[str] = []
    runs = {r.id: r for r in sc.runs}
    gpus = {g.index: g for g in sc.fleet}
    inst: dict[str, tuple[int, Placement]] = {}
    for g, lay in doc["layouts"].items():
        gpu = gpus.get(int(g))
        if gpu is None:
            problems.append(f"GPU {g} is not in the fleet")
            continue
        mem: set[int] = set()
        comp = 0
        for text in lay:
            pl = Placement.parse(text)
            p = gpu.model.profile(pl.profile)
            if pl.start not in p.starts:
                problems.append(f"GPU {g}: {text} is not a legal placement")
            span = set(range(pl.start, pl.start + p.memory_slices))
            if span & mem:
                problems.append(f"GPU {g}: {text} overlaps another instance's memory slices")
            mem |= span
            comp += p.compute_slices
            inst[str(InstanceRef(int(g), pl))] = (int(g), pl)
        if comp > gpu.model.compute_slices:
            problems.append(f"GPU {g}: {comp} compute slices, more than the GPU's {gpu.model.compute_slices}")
    seen: dict[str, str] = {}
    for key, queue in doc["queues"].items():
        if key not in inst:
            problems.append(f"queue of {key}, which no layout has")
            continue
        g, pl = inst[key]
        p = gpus[g].model.profile(pl.profile)
        for rid in queue:
            r = runs.get(rid)
            if r is None:
                problems.append(f"{rid} is not a run of the scenario")
            elif rid in seen:
                problems.append(f"{rid} is queued twice")
            elif r.memory_mib > (p.memory_mib or 0):
                problems.append(f"{rid} needs {r.memory_mib} MiB; {key} has {p.memory_mib}")
            seen[rid] = key
    missing = set(runs) - set(seen)
    if missing:
        problems.append(f"{len(missing)} run(s) in no queue, e.g. {sorted(missing)[0]}")
    return problems


def replayed(sc: Scenario, doc: dict[str, Any]) -> float:
    """The stored plan played with the launcher's queue policy (what `migbench simulate` does)."""
    gpus = {g.index: g for g in sc.fleet}
    instances = []
    for g, lay in doc["layouts"].items():
        model = gpus[int(g)].model
        for text in lay:
            pl = Placement.parse(text)
            p = model.profile(pl.profile)
            instances.append(ReplayInstance(InstanceRef(int(g), pl), int(p.memory_mib or 0), instance_capacity(model, p), p.compute_slices))
    rep = replay_instances(
        "best known",
        instances,
        {InstanceRef.parse(k): v for k, v in doc["queues"].items()},
        sc.runs,
        DurationModel(),
        total_slices=sum(g.model.compute_slices for g in sc.fleet),
        gpus=len(sc.fleet),
        planned_start={k: float(v) for k, v in doc.get("starts", {}).items()} or None,
    )
    return rep.makespan_s


def load(sc: Scenario, p: Path | None = None) -> dict[str, Any] | None:
    """The kept plan of `sc` (in bench/best_known/, or at `p`), checked and replayed (its
    `makespan_s` is the replay's), or None."""
    p = path_of(sc) if p is None else p
    if not p.exists():
        return None
    doc = json.loads(p.read_text())
    problems = check(sc, doc)
    if problems:
        raise SystemExit(f"{p}: not a valid plan for {sc.name}: " + "; ".join(problems[:5]))
    doc["makespan_s"] = replayed(sc, doc)
    return doc


def search(sc: Scenario, work_s: float) -> dict[str, Any]:
    """migbench's planner with a long deterministic budget; the plan as a document."""
    t0 = time.perf_counter()
    sol = solve(sc.runs, sc.fleet, SolveOptions(time_limit_s=max(600.0, 20 * work_s), work_s=work_s, objective="makespan"))
    queues: dict[str, list[str]] = {}
    for rid, a in sorted(sol.assigned.items(), key=lambda kv: (kv[1].wave, kv[1].start_s or 0.0, kv[0])):
        queues.setdefault(str(InstanceRef(a.gpu, a.placement)), []).append(rid)
    return {
        "scenario": sc.name,
        "layouts": {str(g): [str(p) for p in lay] for g, lay in sorted(sol.layouts.items())},
        "queues": queues,
        "starts": {rid: round(a.start_s or 0.0, 3) for rid, a in sorted(sol.assigned.items())},
        "bound_s": round(sol.bound, 3),
        "found_by": f"bench/best_known.py --work {work_s:g} (migbench {__version__}, {time.perf_counter() - t0:.0f} s wall)",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="scenarios whose name contains this")
    ap.add_argument("--work", type=float, default=120.0, help="deterministic work budget, reference seconds (default 120)")
    ap.add_argument("--quick", action="store_true", help="skip the 10,000-run scenario")
    args = ap.parse_args()
    DIR.mkdir(exist_ok=True)
    for sc in all_scenarios():
        if (args.only and args.only not in sc.name) or (args.quick and len(sc.runs) >= 10000):
            continue
        kept = load(sc)
        doc = search(sc, args.work)
        problems = check(sc, doc)
        if problems:
            raise SystemExit(f"{sc.name}: the search gave an invalid plan: " + "; ".join(problems[:5]))
        ms = replayed(sc, doc)
        old = kept["makespan_s"] if kept else None
        keep = old is None or ms < old - 1e-6
        print(
            f"{sc.name}: found {ms / 3600:.3f} h (bound {doc['bound_s'] / 3600:.3f} h); kept "
            f"{'-' if old is None else f'{old / 3600:.3f} h'} -> {'replaced' if keep and old is not None else 'written' if keep else 'unchanged'}",
            flush=True,
        )
        if keep:
            doc["makespan_s"] = round(ms, 3)
            path_of(sc).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
