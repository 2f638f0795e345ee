"""A living bench played under the duration model (migbench/forecast/living.py, issue 21): every
run once, no busy instance ever re-cut, legal layouts at every moment, the same events give the
same result."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from migbench.catalog import Catalog
from migbench.duration import Demand
from migbench.forecast.living import LivingError, LivingResult, Submission, fixed_policy, play, recut_bound
from migbench.planner import FleetGpu
from migbench.planner.recut import Decision, GpuNow, Recut, Waiting
from migbench.types import Placement

GIB = 1024
H = 3600.0
A100 = Catalog.load(include_user=False).model("A100-SXM4-80GB")


def fleet(n: int) -> list[FleetGpu]:
    return [FleetGpu(i, A100) for i in range(n)]


def smalls(rng: random.Random, prefix: str, n: int) -> tuple[Demand, ...]:
    return tuple(Demand(f"{prefix}{i:03d}", rng.randint(5, 20) * GIB, rng.choice(range(6, 19, 2)) * H, round(rng.uniform(0.08, 0.16), 2), 3) for i in range(n))


def two_pipelines(seed: int = 3) -> list[Submission]:
    rng = random.Random(seed)
    bigs = tuple(Demand(f"big{i}", 70 * GIB, rng.choice([6, 12, 18]) * H, 1.0, 1) for i in range(3))
    return [Submission(0.0, smalls(rng, "a", 16)), Submission(2 * H, bigs), Submission(8 * H, smalls(rng, "b", 16))]


def audit(res: LivingResult, subs: Sequence[Submission], n_gpus: int) -> None:
    """Replays the event log: each run arrives, starts and finishes once, in that order; no instance
    is destroyed while a run is on it; every GPU's layout is legal after every event."""
    arrived: set[str] = set()
    started: dict[str, tuple[int, Placement]] = {}
    finished: set[str] = set()
    layout: dict[int, set[Placement]] = {g: set() for g in range(n_gpus)}
    on: dict[tuple[int, Placement], set[str]] = {}
    last = 0.0
    for ev in res.log:
        assert ev.time_s >= last
        last = ev.time_s
        if ev.kind == "arrive":
            assert ev.run not in arrived
            arrived.add(ev.run)
            continue
        assert ev.gpu is not None and ev.placement is not None
        key = (ev.gpu, ev.placement)
        if ev.kind == "destroy":
            assert not on.get(key), f"{key} destroyed while running {on.get(key)}"
            layout[ev.gpu].remove(ev.placement)
        elif ev.kind == "create":
            layout[ev.gpu].add(ev.placement)
        elif ev.kind == "start":
            assert ev.run in arrived and ev.run not in started
            assert ev.placement in layout[ev.gpu]
            started[ev.run] = key
            on.setdefault(key, set()).add(ev.run)
        elif ev.kind == "finish":
            assert started[ev.run] == key and ev.run not in finished
            finished.add(ev.run)
            on[key].remove(ev.run)
        assert A100.check(sorted(layout[ev.gpu], key=lambda p: p.start)) == [], (ev, layout[ev.gpu])
    every = {d.id for s in subs for d in s.runs}
    assert arrived == set(started) == finished == every == set(res.runs)
    for rid, rec in res.runs.items():
        assert rec.arrival_s <= rec.start_s < rec.end_s <= res.makespan_s
        assert started[rid] == (rec.gpu, rec.placement)


def test_two_pipelines_every_run_once_no_busy_recut_legal_layouts():
    """The living bench over arrivals: all runs once, the audit holds, big runs on whole GPUs, and
    at least one GPU was re-cut after time 0."""
    subs = two_pipelines()
    res = play(fleet(3), subs)
    audit(res, subs, 3)
    assert res.unrunnable == ()
    assert all(str(res.runs[f"big{i}"].placement) == "7g.80gb@0" for i in range(3))
    assert any(t > 0 for ts in res.recut_times.values() for t in ts)
    assert 0 < res.average() <= 1 and 0 < res.average("slices", while_waiting=True) <= 1


def test_the_same_events_give_the_same_result():
    """Determinism: two plays of the same submissions are identical, layouts and times included."""
    a = play(fleet(3), two_pipelines(5))
    b = play(fleet(3), list(reversed(two_pipelines(5))))
    assert a.runs == b.runs and a.layouts == b.layouts and a.log == b.log and a.usage == b.usage


def test_runs_share_compute_as_the_duration_model_says():
    """Two compute-bound runs on one instance each take twice their duration (rate = capacity / demand)."""
    runs = (Demand("x", 30 * GIB, 1 * H, 1.0, 2), Demand("y", 30 * GIB, 1 * H, 1.0, 2))

    def both_on_7g(now: float, gpus: Sequence[GpuNow], waiting: Sequence[Waiting]) -> Decision:
        from migbench.planner.recut import Start

        if not gpus[0].instances:
            return Decision(tuple(Start(w.demand.id, 0, Placement("7g.80gb", 0)) for w in waiting), (Recut(0, (), (Placement("7g.80gb", 0),)),))
        return Decision()

    res = play(fleet(1), [Submission(0.0, runs)], both_on_7g)
    assert res.runs["x"].end_s == pytest.approx(2 * H) and res.runs["y"].end_s == pytest.approx(2 * H)


def test_a_policy_that_re_cuts_a_busy_instance_is_stopped():
    """The simulation refuses a decision that destroys an instance with a live run."""
    calls = []

    def rogue(now: float, gpus: Sequence[GpuNow], waiting: Sequence[Waiting]) -> Decision:
        from migbench.planner.recut import Start

        calls.append(now)
        if not gpus[0].instances:
            return Decision((Start("x", 0, Placement("7g.80gb", 0)),), (Recut(0, (), (Placement("7g.80gb", 0),)),))
        return Decision((), (Recut(0, (Placement("7g.80gb", 0),), (Placement("3g.40gb", 0),)),))

    runs = (Demand("x", 30 * GIB, 4 * H, 0.5, 1), Demand("y", 8 * GIB, 1 * H, 0.1, 1))
    with pytest.raises(LivingError, match="destroy 7g.80gb@0, which runs"):
        play(fleet(1), [Submission(0.0, runs[:1]), Submission(1 * H, runs[1:])], rogue)


def test_a_run_that_fits_nowhere_is_reported_not_waited_for():
    """A run larger than any instance ends the play as unrunnable instead of hanging it."""
    runs = (Demand("huge", 200 * GIB, 1 * H, 1.0, 1), Demand("ok", 8 * GIB, 1 * H, 0.1, 1))
    res = play(fleet(1), [Submission(0.0, runs)])
    assert res.unrunnable == ("huge",)
    assert set(res.runs) == {"ok"}


def test_a_fixed_layout_follows_its_queues_and_passes_over_runs_not_arrived():
    """The fixed-layout comparison: each instance starts its arrived runs in queue order; a run not
    submitted yet does not hold its queue up, and no re-cut ever happens."""
    lay = {0: (Placement("3g.40gb", 0), Placement("3g.40gb", 4))}
    a = Demand("a", 30 * GIB, 2 * H, 0.2, 1)
    b = Demand("b", 30 * GIB, 1 * H, 0.2, 1)
    late = Demand("late", 30 * GIB, 1 * H, 0.2, 1)
    queues = {(0, Placement("3g.40gb", 0)): ["late", "a"], (0, Placement("3g.40gb", 4)): ["b"]}
    subs = [Submission(0.0, (a, b)), Submission(0.5 * H, (late,))]
    res = play(fleet(1), subs, fixed_policy(queues), initial=lay)
    assert res.runs["a"].start_s == 0.0 and res.runs["b"].start_s == 0.0
    assert res.runs["late"].start_s == pytest.approx(1 * H)  # lent the idle 3g.40gb@4 when b ends
    assert str(res.runs["late"].placement) == "3g.40gb@4"
    assert res.recut_times == {0: []}
    audit(res, subs, 1)


def test_the_recut_bound_is_below_every_schedule_and_above_each_arrival_plus_duration():
    """The bound no schedule beats: under the living bench's makespan and a fixed layout's, and at
    least the last arrival plus its run's solo time."""
    subs = two_pipelines()
    bound = recut_bound(fleet(3), subs)
    assert bound >= 8 * H + max(d.work_s for d in subs[2].runs)
    assert bound <= play(fleet(3), subs).makespan_s
    lay = {i: (Placement("7g.80gb", 0),) for i in range(3)}
    assert bound <= play(fleet(3), subs, fixed_policy(), initial=lay).makespan_s
    # one compute-bound run per GPU, all at once: the compute bound is exact
    runs = tuple(Demand(f"c{i}", 70 * GIB, 1 * H, 1.0, 1) for i in range(6))
    assert recut_bound(fleet(3), [Submission(0.0, runs)]) == pytest.approx(2 * H)


def _optimum_whole_gpu(runs: Sequence[tuple[float, float]], gpus: int) -> float:
    """The least makespan of whole-GPU runs (arrival, hours) on identical GPUs, by exhaustive
    search: every order, each run onto the GPU free first (an optimal schedule's runs, taken in the
    order they start there, are placed no later this way, so some order reaches the optimum)."""
    from itertools import permutations

    best = float("inf")
    for order in permutations(range(len(runs))):
        free = [0.0] * gpus
        end = 0.0
        for j in order:
            r, p = runs[j]
            k = min(range(gpus), key=lambda i: free[i])
            free[k] = max(free[k], r) + p
            end = max(end, free[k])
        best = min(best, end)
    return best


def test_the_recut_bound_counts_what_runs_arrived_before_still_have_to_do():
    """The tighter bound: at a later arrival, the runs already there still hold memory until their
    best solo time is over. Two GPUs, a 10 h whole-GPU run at 0 h and two at 8 h: the best schedule
    ends at 20 h; the bound of runs arriving from 8 h alone says 18 h, counting the first run's 2 h
    left says 19 h."""
    whole = [Submission(0.0, (Demand("w0", 70 * GIB, 10 * H, 1.0, 1),)), Submission(8 * H, tuple(Demand(f"w{i}", 70 * GIB, 10 * H, 1.0, 1) for i in (1, 2)))]
    assert _optimum_whole_gpu([(0.0, 10.0), (8.0, 10.0), (8.0, 10.0)], 2) == pytest.approx(20.0)
    assert recut_bound(fleet(2), whole) == pytest.approx(19 * H)


def test_the_recut_bound_is_below_the_optimum_an_exhaustive_search_finds():
    """On small cases with whole-GPU runs arriving over time (where the optimum is an exhaustive
    search's), the bound never exceeds the optimum, and it is exact on some of them."""
    rng = random.Random(21)
    exact = 0
    for case in range(40):
        gpus = rng.choice([1, 2, 3])
        runs = [(float(rng.choice([0, 0, 2, 4, 8])), float(rng.choice([2, 4, 6, 10, 18]))) for _ in range(rng.randint(2, 6))]
        subs = [Submission(r * H, (Demand(f"c{case}r{j}", 70 * GIB, p * H, 1.0, 1),)) for j, (r, p) in enumerate(runs)]
        opt = _optimum_whole_gpu(runs, gpus)
        bound = recut_bound(fleet(gpus), subs) / H
        assert bound <= opt + 1e-6, (gpus, runs, bound, opt)
        exact += bound >= opt - 1e-6
    assert exact >= 10
