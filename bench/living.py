"""The living-bench benchmark (issue 21): `python bench/living.py` prints one table and writes
bench/living_results.md.

Workloads (seeded, `random.Random(seed)`, so the same on every machine):
- *two pipelines*: 40 small runs at t=0, 4 whole-GPU runs at t=2 h, 40 more small runs at t=8 h, on
  4 and on 8 x A100-SXM4-80GB. Small runs: 5-20 GiB (whole GiB), 6-18 h (even hours), compute
  0.08-0.16, up to 3 per instance (the seed workload's sharing cap, bench/scenarios.py); whole-GPU
  runs: 60/64/70 GiB, 6-18 h, compute 1.0, alone.
- *one batch*: 80 such small runs and 4 whole-GPU 18 h runs, all at t=0, on 4 x A100-SXM4-80GB.

Every row is played by the same event simulation under the same duration model
(`migbench.forecast.living.play`), runs released at their arrival times:
- (a) the living bench: `planner.recut.replan` at every arrival and finish (re-cuts of idle slices);
- (b) one fixed layout planned knowing every run in advance: `planner.solve` on the whole batch,
  played with its planned queues (and idle instances lending themselves), and (b') the same layout
  with greedy dispatch; the better of the two is today's best case;
- (c) a fixed layout planned at t=0 for the first sweep only and never changed, later runs queued on
  it (runs that fit none of its instances never run), and (c') the same, with today's workaround:
  when the host is empty and runs wait that the layout cannot hold, all waiting runs are planned
  again by `planner.solve` and the host re-cut (what a user does by hand with plan + apply);
- (d) the re-cut lower bound (`forecast.living.recut_bound`): no schedule, even one re-cutting for
  free at any moment, ends sooner. The larger of the volume bound (`forecast.living.volume_bound`:
  arrival + best solo time; memory-time and compute-time still to serve after each arrival over the
  fleet's largest layouts; its value in the note) and the time-indexed configuration LP
  (`planner.recutlp`: GPU-time between arrivals split between legal layouts and, per instance,
  the sets of runs that may share it, each run at the duration model's rate there).

Columns: makespan; its excess over (d); compute use = compute served / the fleet's compute, over
the whole span and while some run waited ("swarm large"); slice use while some run waited (compute
slices of instances with a live run); GPUs re-cut after t=0 (count of re-cut events); the note's
seconds are the play's alone (the static planner's time is its --time-limit). A row whose runs do
not all run has no excess over (d).

After the table: (a) against (d) on the same workloads drawn with seeds 1..N (--seeds, default 16;
no static planner there), and against the volume bound alone: one seed's makespan moves in 2 h steps.

Options: --time-limit S (the static planner's, default 30), --only TEXT, --seed N, --seeds N.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from migbench.catalog import Catalog  # noqa: E402
from migbench.duration import Demand  # noqa: E402
from migbench.forecast.living import (  # noqa: E402
    LivingResult,
    Policy,
    Submission,
    fixed_policy,
    play,
    recut_bound,
    volume_bound,
)
from migbench.planner import FleetGpu, SolveOptions, solve  # noqa: E402
from migbench.planner.budget import default_work  # noqa: E402
from migbench.planner.recut import Decision, GpuNow, LiveInstance, Recut, Start, Waiting, fill_in_place  # noqa: E402
from migbench.types import Layout, Objective, Placement  # noqa: E402

HERE = Path(__file__).resolve().parent
GIB = 1024
HOUR = 3600.0
MODEL = Catalog.load(include_user=False).model("A100-SXM4-80GB")
SERIES_STEP_H = 4


@dataclass
class Case:
    name: str
    fleet: list[FleetGpu]
    subs: list[Submission]


def _small(rng: random.Random, prefix: str, n: int) -> tuple[Demand, ...]:
    return tuple(
        Demand(f"{prefix}-{i:03d}", rng.randint(5, 20) * GIB, rng.choice(range(6, 19, 2)) * HOUR, round(rng.uniform(0.08, 0.16), 2), 3) for i in range(n)
    )


def _big(rng: random.Random, n: int, hours: float | None = None) -> tuple[Demand, ...]:
    return tuple(Demand(f"whole-{i:02d}", rng.choice([60, 64, 70]) * GIB, (hours or rng.choice(range(6, 19, 2))) * HOUR, 1.0, 1) for i in range(n))


def two_pipelines(seed: int, gpus: int) -> Case:
    rng = random.Random(seed)
    first = _small(rng, "sup", 40)
    big = _big(rng, 4)
    late = _small(rng, "unsup", 40)
    subs = [Submission(0.0, first, "sup"), Submission(2 * HOUR, big, "whole"), Submission(8 * HOUR, late, "unsup")]
    return Case(f"two pipelines, {gpus} x A100-80GB", [FleetGpu(i, MODEL) for i in range(gpus)], subs)


def one_batch(seed: int) -> Case:
    rng = random.Random(seed)
    runs = _small(rng, "abl", 80) + _big(rng, 4, hours=18)
    return Case("one batch, 4 x A100-80GB", [FleetGpu(i, MODEL) for i in range(4)], [Submission(0.0, runs, "batch")])


def static_plan(runs: Sequence[Demand], fleet: Sequence[FleetGpu], limit: float) -> tuple[dict[int, Layout], dict[tuple[int, Placement], list[str]]]:
    """`planner.solve` (makespan objective): its layouts and its queue per instance. It plans with the
    deterministic budget `limit` gives and the wall clock out of the way (as `bench/run.py --idle`):
    the plan an idle machine makes, whatever the load here."""
    opts = SolveOptions(time_limit_s=20 * limit, work_s=default_work(limit, len(runs)), objective=Objective.MAKESPAN)
    sol = solve(runs, fleet, opts)
    queues: dict[tuple[int, Placement], list[str]] = {}
    for rid, a in sorted(sol.assigned.items(), key=lambda kv: (kv[1].start_s or 0.0, kv[1].wave, kv[0])):
        queues.setdefault((a.gpu, a.placement), []).append(rid)
    return dict(sol.layouts), queues


def replan_when_empty(fleet: Sequence[FleetGpu], limit: float) -> Policy:
    """(c'): greedy dispatch on the layout as it is; when the host is empty and runs wait that none
    of its instances can hold, every waiting run is planned again and the host re-cut to that plan."""
    greedy = fixed_policy()

    def policy(now: float, gpus: Sequence[GpuNow], waiting: Sequence[Waiting]) -> Decision:
        dec = greedy(now, gpus, waiting)
        started = {s.run for s in dec.starts}
        stuck = [w for w in waiting if w.demand.id not in started]
        if not stuck or any(i.busy for g in gpus for i in g.instances) or dec.starts:
            return dec
        layouts, _ = static_plan([w.demand for w in waiting], fleet, limit)
        recuts = tuple(Recut(g.index, g.layout, layouts.get(g.index, ())) for g in gpus if g.layout != layouts.get(g.index, ()))
        starts: list[Start] = []
        for g in gpus:
            after = GpuNow(g.index, g.model, tuple(LiveInstance(p) for p in layouts.get(g.index, ())))
            taken = {s.run for s in starts}
            starts += fill_in_place(after, [w for w in waiting if w.demand.id not in taken])
        return Decision(tuple(starts), recuts)

    return policy


@dataclass
class Row:
    case: str
    method: str
    res: LivingResult | None
    bound: float
    seconds: float
    note: str = ""

    def cells(self) -> list[str]:
        if self.res is None:
            return [self.case, self.method, f"{self.bound / HOUR:.1f} h", "", "", "", "", "", self.note]
        r = self.res
        unrun = f"{len(r.unrunnable)} runs never run" if r.unrunnable else ""
        recuts = sum(len(ts) for ts in r.recut_times.values())
        return [
            self.case,
            self.method,
            f"{r.makespan_s / HOUR:.1f} h",
            "-" if r.unrunnable else f"{100 * (r.makespan_s / self.bound - 1):+.1f} %",
            f"{100 * r.average():.0f} %",
            f"{100 * r.average(while_waiting=True):.0f} %",
            f"{100 * r.average('slices', while_waiting=True):.0f} %",
            str(recuts),
            "; ".join(x for x in (unrun, self.note, f"{self.seconds:.1f} s") if x),
        ]


def measure(case: Case, limit: float) -> list[Row]:
    rows: list[Row] = []
    t0 = time.perf_counter()
    bound = recut_bound(case.fleet, case.subs)
    bound_s = time.perf_counter() - t0
    every = [d for s in case.subs for d in s.runs]

    def timed(method: str, fn, note: str = "") -> None:
        t0 = time.perf_counter()
        res = fn()
        rows.append(Row(case.name, method, res, bound, time.perf_counter() - t0, note))

    timed("(a) living bench, re-cuts", lambda: play(case.fleet, case.subs))
    layouts, queues = static_plan(every, case.fleet, limit)
    timed("(b) fixed, all known, planned queues", lambda: play(case.fleet, case.subs, fixed_policy(queues), initial=layouts))
    timed("(b') fixed, all known, greedy dispatch", lambda: play(case.fleet, case.subs, fixed_policy(), initial=layouts))
    if len(case.subs) > 1:
        first, _ = static_plan(case.subs[0].runs, case.fleet, limit)
        timed("(c) fixed at t=0 for the first sweep", lambda: play(case.fleet, case.subs, fixed_policy(), initial=first))
        timed("(c') (c), re-planned when the host is empty", lambda: play(case.fleet, case.subs, replan_when_empty(case.fleet, limit), initial=first))
    volume = volume_bound(case.fleet, case.subs)
    rows.append(
        Row(case.name, "(d) re-cut lower bound", None, bound, bound_s, f"any schedule, re-cuts free; volume bound {volume / HOUR:.1f} h; {bound_s:.1f} s")
    )
    return rows


HEADER = ["case", "method", "makespan", "vs (d)", "compute use", "compute use, swarm large", "slice use, swarm large", "re-cuts after t=0", "note"]


def table(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def layouts_over_time(case: str, res: LivingResult) -> str:
    """Per GPU, its layouts over time: the re-cut times of the living bench."""
    lines = [f"### {case}: (a)'s layouts over time", ""]
    for gpu, hist in sorted(res.layouts.items()):
        steps = [f"{t / HOUR:.1f} h: {' '.join(map(str, lay)) or '(none)'}" for t, lay in hist]
        lines.append(f"- GPU {gpu}: " + "; ".join(steps))
    series = []
    for t in range(0, int(res.makespan_s // HOUR) + 1, SERIES_STEP_H):
        now = [u for u in res.usage if u.from_s <= t * HOUR]
        if now:
            series.append(f"{t} h {100 * now[-1].compute:.0f} %")
    lines += ["", f"compute use every {SERIES_STEP_H} h: " + ", ".join(series)]
    return "\n".join(lines)


def across_seeds(seeds: int) -> str:
    """(a) against (d) on the same workloads drawn with seeds 1..N: one seed's makespan moves in
    steps of 2 h (every run is a whole number of even hours), so a change to the re-plan step is
    judged on many draws, not on the table's seed alone."""
    lines = [
        f"### (a) against (d) over seeds 1-{seeds}",
        "",
        "| case | (a) mean excess over (d) | best | worst | (a) mean excess over the volume bound alone |",
        "|---|---|---|---|---|",
    ]
    makers = [
        ("two pipelines, 4 x A100-80GB", lambda s: two_pipelines(s, 4)),
        ("two pipelines, 8 x A100-80GB", lambda s: two_pipelines(s, 8)),
        ("one batch, 4 x A100-80GB", one_batch),
    ]
    for name, make in makers:
        ex, vol = [], []
        for seed in range(1, seeds + 1):
            case = make(seed)
            makespan = play(case.fleet, case.subs).makespan_s
            ex.append(100 * (makespan / recut_bound(case.fleet, case.subs) - 1))
            vol.append(100 * (makespan / volume_bound(case.fleet, case.subs) - 1))
        lines.append(f"| {name} | {sum(ex) / len(ex):+.1f} % | {min(ex):+.1f} % | {max(ex):+.1f} % | {sum(vol) / len(vol):+.1f} % |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--time-limit", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--only", default="")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--seeds", type=int, default=16, help="seeds 1..N for the (a)-against-(d) summary (0: none)")
    args = ap.parse_args(argv)
    cases = [two_pipelines(args.seed, 4), two_pipelines(args.seed, 8), one_batch(args.seed)]
    rows: list[Row] = []
    for case in cases:
        if args.only and args.only not in case.name:
            continue
        rows += measure(case, args.time_limit)
        print(table([r for r in rows if r.case == case.name]), flush=True)
    text = table(rows)
    history = [layouts_over_time(r.case, r.res) for r in rows if r.method.startswith("(a)") and r.res is not None]
    if args.seeds > 0 and not args.only:
        summary = across_seeds(args.seeds)
        print(summary, flush=True)
        history.insert(0, summary)
    if not args.no_write and not args.only:
        (HERE / "living_results.md").write_text(
            f"# Living bench (issue 21)\n\n`python bench/living.py --seed {args.seed} --time-limit {args.time_limit:g} --seeds {args.seeds}`"
            " (bench/living.py says what each row is)\n\n" + text + "\n\n" + "\n\n".join(history) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
