"""The re-plan step of a living bench (migbench/planner/recut.py, issue 21)."""

from __future__ import annotations

from migbench.catalog import Catalog
from migbench.duration import Demand
from migbench.planner.recut import (
    GpuNow,
    LiveInstance,
    LiveRun,
    Waiting,
    is_big,
    replan,
)
from migbench.types import Placement

GIB = 1024
H = 3600.0
A100 = Catalog.load(include_user=False).model("A100-SXM4-80GB")


def small(i: int, gib: int = 8, hours: float = 10, compute: float = 0.12) -> Demand:
    return Demand(f"s{i:02d}", gib * GIB, hours * H, compute, 3)


def big(i: int) -> Demand:
    return Demand(f"big{i}", 70 * GIB, 18 * H, 1.0, 1)


def pl(text: str) -> Placement:
    return Placement.parse(text)


def busy_gpu(index: int, busy: dict[str, list[tuple[Demand, float]]], idle: tuple[str, ...] = ()) -> GpuNow:
    """A GPU whose `busy` instances run the given (run, expected end) pairs and `idle` ones nothing."""
    insts = [LiveInstance(pl(p), tuple(LiveRun(d, 0.0, end) for d, end in runs)) for p, runs in busy.items()]
    insts += [LiveInstance(pl(p)) for p in idle]
    return GpuNow(index, A100, tuple(sorted(insts, key=lambda i: (i.placement.start, i.placement.profile))))


def layout_after(g: GpuNow, dec) -> set[Placement]:
    lay = set(g.layout)
    for rc in dec.recuts:
        if rc.gpu == g.index:
            lay -= set(rc.destroy)
            lay |= set(rc.create)
    return lay


def test_idle_fleet_is_cut_and_filled_legally_and_deterministically():
    """An empty host with a swarm waiting: every GPU cut to a legal layout, runs started within it."""
    gpus = [GpuNow(i, A100) for i in range(2)]
    waiting = [Waiting(small(i, gib=5 + i % 12), 0.0) for i in range(30)]
    dec = replan(0.0, gpus, waiting)
    assert dec == replan(0.0, list(reversed(gpus)), list(reversed(waiting)))
    assert {rc.gpu for rc in dec.recuts} == {0, 1}
    for g in gpus:
        lay = layout_after(g, dec)
        assert A100.check(sorted(lay, key=lambda p: p.start)) == []
        assert all(s.placement in lay for s in dec.starts if s.gpu == g.index)
    ids = [s.run for s in dec.starts]
    assert len(ids) == len(set(ids)) >= 10
    assert dec.draining == ()


def test_a_busy_instance_is_never_re_cut():
    """Only idle slices are re-cut: the busy 3g.40gb@0 stays where it is, with its run."""
    alone = Demand("solo", 8 * GIB, 5 * H, 0.12, 1)
    g = busy_gpu(0, {"3g.40gb@0": [(alone, 5 * H)]}, idle=("3g.40gb@4",))
    waiting = [Waiting(small(i, gib=5, compute=0.15), 0.0) for i in range(6)]
    dec = replan(0.0, [g], waiting)
    for rc in dec.recuts:
        assert pl("3g.40gb@0") not in rc.destroy
    lay = layout_after(g, dec)
    assert pl("3g.40gb@0") in lay
    assert A100.check(sorted(lay, key=lambda p: p.start)) == []
    assert dec.recuts, "three 1g.10gb slices serve 0.15-compute runs better than one 3g.40gb holding two"


def test_big_run_drains_the_gpu_that_frees_first_and_small_runs_are_steered_off_it():
    """A whole-GPU run waits for the GPU that drains first; no small run that would outlast the
    drain starts there, one that ends before it may backfill."""
    alone = Demand("solo", 8 * GIB, 12 * H, 0.12, 1)  # shares with nobody: GPU 0 has no room
    g0 = busy_gpu(0, {"3g.40gb@0": [(alone, 12 * H)], "3g.40gb@4": [(alone, 12 * H)]})
    g1 = busy_gpu(1, {"3g.40gb@0": [(small(91), 4 * H)]}, idle=("3g.40gb@4",))
    waiting = [Waiting(big(0), 0.0), Waiting(small(1, hours=10), 0.0), Waiting(small(2, hours=2), 0.0)]
    dec = replan(0.0, [g0, g1], waiting)
    assert dec.draining == (1,)
    started = {s.run: s.gpu for s in dec.starts}
    assert "s01" not in started  # 10 h > the 4 h until GPU 1 drains, and GPU 0 is full
    assert started.get("s02") == 1  # 2 h: ends before the drain, backfills
    assert "big0" not in started
    assert all(rc.gpu != 1 for rc in dec.recuts)


def test_a_drained_gpu_is_cut_whole_for_the_big_run():
    """Once the draining GPU is idle, it becomes a 7g.80gb and the big run starts there."""
    g0 = busy_gpu(0, {"3g.40gb@0": [(small(90), 12 * H)]}, idle=("3g.40gb@4",))
    g1 = busy_gpu(1, {}, idle=("3g.40gb@0", "3g.40gb@4"))
    dec = replan(4 * H, [g0, g1], [Waiting(big(0), 0.0), Waiting(small(1), 0.0)])
    assert is_big(big(0), A100)
    assert dec.draining == (1,)
    assert [(s.run, s.gpu, str(s.placement)) for s in dec.starts if s.run == "big0"] == [("big0", 1, "7g.80gb@0")]
    assert layout_after(g1, dec) == {pl("7g.80gb@0")}


def test_after_the_big_run_the_gpu_is_re_cut_for_the_small_runs():
    """An idle 7g.80gb with only small runs waiting is re-cut into small instances, not used for
    one run at a time."""
    g = busy_gpu(0, {}, idle=("7g.80gb@0",))
    dec = replan(18 * H, [g], [Waiting(small(i, gib=6), 0.0) for i in range(10)])
    lay = layout_after(g, dec)
    assert pl("7g.80gb@0") not in lay and len(lay) >= 3
    assert len(dec.starts) >= 6


def test_big_runs_hold_at_most_half_the_fleet():
    """Four big runs on an idle 4-GPU host: two GPUs take them, two keep the swarm."""
    gpus = [GpuNow(i, A100) for i in range(4)]
    waiting = [Waiting(big(i), 0.0) for i in range(4)] + [Waiting(small(i), 0.0) for i in range(20)]
    dec = replan(0.0, gpus, waiting)
    bigs = sorted(s.gpu for s in dec.starts if s.run.startswith("big"))
    assert bigs == [0, 1]
    assert {s.gpu for s in dec.starts if s.run.startswith("s")} == {2, 3}


def test_runs_are_not_piled_onto_an_instance_whose_compute_they_would_oversubscribe():
    """Guards the 14 h run that took 32 h: three runs sharing a 1g.20gb (0.14 of a GPU) at 0.12
    compute each slowed all three to 0.4 of their speed; a run joins others only while their
    compute fits the instance."""
    g = busy_gpu(0, {}, idle=("1g.20gb@0",))
    waiting = [Waiting(small(i, gib=5, compute=0.12), 0.0) for i in range(3)]
    dec = replan(0.0, [g], waiting)
    per_instance: dict[Placement, int] = {}
    for s in dec.starts:
        per_instance[s.placement] = per_instance.get(s.placement, 0) + 1
    assert per_instance and max(per_instance.values()) == 1


def test_the_longest_waiting_run_starts_first_whatever_its_arrival():
    """Guards the two-pipelines bench's tail (58 h, 2 h of it from arrival-first order): with room for
    one run, an 18 h run that arrived later starts before a 6 h run that arrived first."""
    g = busy_gpu(0, {"3g.40gb@0": [(small(90, gib=30), 10 * H)]}, idle=("3g.40gb@4",))
    early = Demand("early", 30 * GIB, 6 * H, 0.3, 1)
    late = Demand("late", 30 * GIB, 18 * H, 0.3, 1)
    dec = replan(8 * H, [g], [Waiting(early, 0.0), Waiting(late, 8 * H)])
    assert [(s.run, str(s.placement)) for s in dec.starts] == [("late", "3g.40gb@4")]


def test_a_whole_gpu_instance_another_launch_holds_does_not_keep_the_big_run_off_the_free_gpu():
    """Regression: an instance another launch holds counted as the bench's own big run, so on a
    2-GPU host with a held 7g.80gb on GPU 1 (half the fleet "hosting" already) the plain decision
    (the only one past the look-ahead's budget) never drained GPU 0 for a big run: it waited for as
    long as the other launch held its instance."""
    from migbench.planner.recut import HELD_END_S, RecutSettings

    mib = A100.profile("7g.80gb").memory_mib
    held = LiveInstance(pl("7g.80gb@0"), (LiveRun(Demand("held:1:7g.80gb@0", mib, None, 1.0), 0.0, HELD_END_S),))
    gpus = [GpuNow(0, A100), GpuNow(1, A100, (held,))]
    dec = replan(0.0, gpus, [Waiting(big(0), 0.0), Waiting(small(1), 0.0)], RecutSettings(lookahead=False))
    assert dec.draining == (0,), dec
    assert [(s.run, s.gpu, str(s.placement)) for s in dec.starts if s.run == "big0"] == [("big0", 0, "7g.80gb@0")]
    # a GPU with a held 3g.40gb never drains: it takes no draining place (two allowed, two big runs)
    held3 = LiveInstance(pl("3g.40gb@0"), (LiveRun(Demand("held:1:3g.40gb@0", 20 * GIB, None, 0.4), 0.0, HELD_END_S),))
    g0 = busy_gpu(0, {"3g.40gb@0": [(small(90), 12 * H)]}, idle=("3g.40gb@4",))
    g1 = GpuNow(1, A100, (held3, LiveInstance(pl("3g.40gb@4"))))
    dec = replan(0.0, [g0, g1], [Waiting(big(0), 0.0), Waiting(big(1), 0.0)], RecutSettings(lookahead=False, max_draining=2))
    assert dec.draining == (0,), dec
