"""The exact solver of bench/exact.py on cases whose optimum is obvious by hand, its per-instance
search against brute force over queue orders, and the per-instance independence it relies on."""

from __future__ import annotations

import itertools
import math
import random

from bench.exact import RunClass, best_order, replay_one, solve_exact
from bench.scenarios import CAT, GIB, HOUR

# --- everything used from migbench (re-point here when its modules move) ---------------------
from migbench.catalog import Placement
from migbench.duration import Demand as Job
from migbench.duration import Demand as Run
from migbench.duration import Slot, instance_capacity
from migbench.duration.replay import replay
from migbench.planner import FleetGpu

A100 = CAT.model("A100-SXM4-80GB")


def fleet(n: int) -> list[FleetGpu]:
    return [FleetGpu(i, A100) for i in range(n)]


def check_replay(res, runs) -> None:  # type: ignore[no-untyped-def]
    """The reported plan, rebuilt from its layouts and queues, replays to the reported makespan."""
    slots = []
    for gpu, lay in res.layouts.items():
        for pl in lay:
            prof = A100.profile(pl.split("@")[0])
            key = f"{gpu}:{pl}"
            slots.append(Slot(key, int(prof.memory_mib), instance_capacity(A100, prof), key))
    jobs = [Job(r.id, r.memory_mib, r.duration_s, r.compute, r.max_runs_per_instance) for r in runs]
    assert sorted(j for q in res.queues.values() for j in q) == sorted(r.id for r in runs)
    played = replay(jobs, slots, res.queues, lend=None)
    assert math.isclose(played.makespan_s, res.makespan_s, rel_tol=1e-9)
    assert math.isclose(res.replay_makespan_s, res.makespan_s, rel_tol=1e-9)
    return played


def test_two_whole_gpu_runs_serialise() -> None:
    # 60 GiB fits only 7g.80gb: one instance on the GPU, cap 1, so 5 h + 5 h.
    runs = [Run(f"big-{i}", 60 * GIB, 5 * HOUR, 1.0, 1) for i in range(2)]
    res = solve_exact(runs, fleet(1), time_limit_s=20)
    assert res.status == "OPTIMAL"
    assert math.isclose(res.makespan_s, 10 * HOUR)
    assert res.layouts == {0: ["7g.80gb@0"]}
    check_replay(res, runs)


def test_seven_small_runs_all_at_once() -> None:
    # Seven runs that may not share (cap 1), each using less than a 1g instance's compute: seven
    # 1g instances run them all at once in 10 h; nothing can beat a run's own duration.
    runs = [Run(f"abl-{i}", 2 * GIB, 10 * HOUR, 0.1, 1) for i in range(7)]
    res = solve_exact(runs, fleet(1), time_limit_s=20)
    assert res.status == "OPTIMAL"
    assert math.isclose(res.makespan_s, 10 * HOUR)
    assert len(res.layouts[0]) == 7 and all(p.startswith("1g.") for p in res.layouts[0])
    played = check_replay(res, runs)
    assert all(played.start_s[r.id] == 0.0 for r in runs)


def test_two_gpus_whole_run_and_queue() -> None:
    # One whole-GPU 18 h run and three 2 GiB runs of 12 h + 6 h + 6 h that may share only in
    # pairs (cap 2): the best is 18 h (whole run alone on one GPU; the others alongside on the
    # second); on one GPU it would be 18 h + 12 h.
    runs = [Run("big", 60 * GIB, 18 * HOUR, 1.0, 1)] + [Run(f"s{i}", 2 * GIB, h * HOUR, 0.1, 2) for i, h in enumerate([12, 6, 6])]
    res = solve_exact(runs, fleet(2), time_limit_s=20)
    assert res.status == "OPTIMAL"
    assert math.isclose(res.makespan_s, 18 * HOUR)
    check_replay(res, runs)
    one = solve_exact(runs, fleet(1), time_limit_s=20)
    assert one.status == "OPTIMAL"
    # all four on one 7g.80gb: the whole run alone (18 h), the small ones 2 at a time (12 h)
    assert math.isclose(one.makespan_s, 30 * HOUR)
    check_replay(one, runs)


def test_instance_search_matches_brute_force() -> None:
    # The per-instance search against every distinct queue order played by engine.replay.
    rng = random.Random(7)
    for _ in range(60):
        n = rng.randint(2, 4)
        classes = [
            RunClass(
                rng.choice([2, 4, 8, 16, 30]) * 1024,
                rng.choice([1, 2, 3, 5, 8]) * HOUR,
                rng.choice([0.05, 0.1, 0.2, 0.4, 0.8, 1.0]),
                rng.choice([1, 2, 3, 4]),
                None,
            )
            for _ in range(n)
        ]
        mem = rng.choice([9728, 19968, 40192, 80896])
        cap = rng.choice([1 / 7, 2 / 7, 3 / 7, 4 / 7, 1.0])
        intf = rng.choice([0.0, 0.0, 0.1])
        counts = {i: rng.choice([1, 1, 2]) for i in range(n) if classes[i].memory_mib <= mem}
        if not counts:
            continue
        seq = [ci for ci, k in counts.items() for _ in range(k)]
        brute = min(replay_one([classes[ci].job(f"r{i}") for i, ci in enumerate(perm)], mem, cap, intf) for perm in set(itertools.permutations(seq)))
        val, order = best_order(counts, classes, mem, cap, intf)
        assert sorted(order) == sorted(seq)
        played = replay_one([classes[ci].job(f"r{i}") for i, ci in enumerate(order)], mem, cap, intf)
        assert math.isclose(played, brute, rel_tol=1e-9, abs_tol=1e-6)
        assert math.isclose(val, brute, rel_tol=1e-9, abs_tol=1e-6)


def test_replay_without_lending_plays_instances_independently() -> None:
    # The configuration model's premise: without lending, a plan's replay is each instance's own
    # replay, so the makespan is the largest single-instance finish.
    rng = random.Random(3)
    for _ in range(20):
        slots = [Slot(f"s{k}", rng.choice([9728, 19968, 40192]), rng.choice([1 / 7, 2 / 7, 3 / 7]), f"s{k}") for k in range(rng.randint(2, 4))]
        jobs, queues = [], {s.key: [] for s in slots}
        for i in range(rng.randint(4, 10)):
            s = rng.choice(slots)
            j = Job(f"j{i}", rng.choice([1024, 2048, 4096]), rng.choice([1, 2, 5]) * HOUR, rng.choice([0.05, 0.1, 0.2]), rng.choice([1, 2, 3]))
            jobs.append(j)
            queues[s.key].append(j.id)
        whole = replay(jobs, slots, queues, lend=None)
        by_id = {j.id: j for j in jobs}
        for s in slots:
            alone = replay([by_id[x] for x in queues[s.key]], [s], {s.key: queues[s.key]}, lend=None)
            for x in queues[s.key]:
                assert whole.end_s[x] == alone.end_s[x]
                assert whole.start_s[x] == alone.start_s[x]


def test_fixed_layouts_only_queues() -> None:
    # Seven cap-1 runs of 10 h on two 3g.40gb instances: four rounds on one of them, 40 h.
    runs = [Run(f"abl-{i}", 2 * GIB, 10 * HOUR, 0.1, 1) for i in range(7)]
    lay = {0: [Placement("3g.40gb", 0), Placement("3g.40gb", 4)]}
    res = solve_exact(runs, fleet(1), time_limit_s=20, fixed_layouts=lay)
    assert res.status == "OPTIMAL"
    assert math.isclose(res.makespan_s, 40 * HOUR)
    assert res.layouts == {0: ["3g.40gb@0", "3g.40gb@4"]}
    check_replay(res, runs)
