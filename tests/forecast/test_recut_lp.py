"""The re-cut bound's configuration LP (migbench/planner/recutlp.py): never above a schedule the
living bench plays, never below the volume bound, exact where the optimum is known by hand."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migbench.catalog import Catalog
from migbench.duration import Demand
from migbench.forecast.living import Submission, play, recut_bound, volume_bound
from migbench.planner import FleetGpu
from migbench.planner.recutlp import recut_lp_bound, run_classes

GIB = 1024
H = 3600.0
A100 = Catalog.load(include_user=False).model("A100-SXM4-80GB")


def fleet(n: int) -> list[FleetGpu]:
    return [FleetGpu(i, A100) for i in range(n)]


def test_runs_that_cannot_share_pay_their_whole_instance():
    """Four 25 GiB runs that may not share, 10 h each, little compute, on one A100-80GB: each needs a
    40 GiB instance, a GPU holds two, so the best schedule runs two pairs back to back: 20 h. The
    volume bound sees 4 x 40 GiB x 10 h over 79 GiB: under 20 h; the LP sees the two instances."""
    runs = tuple(Demand(f"r{i}", 25 * GIB, 10 * H, 0.1, 1) for i in range(4))
    subs = [Submission(0.0, runs)]
    assert volume_bound(fleet(1), subs) < 19.9 * H
    assert recut_bound(fleet(1), subs) == pytest.approx(20 * H, rel=1e-5)
    assert play(fleet(1), subs).makespan_s == pytest.approx(20 * H)


def test_five_no_share_runs_take_three_rounds_of_pairs_and_arrivals_count():
    """Five 25 GiB no-share runs at 0 h, 10 h each, one GPU: two at a time, the fifth alone, 30 h
    for any schedule that does not pause runs; the LP (runs may pause and move) proves 25 h of
    instance pairs, the volume bound 24.8 h. Two at 0 h and two at 15 h: 25 h, the last arrival
    plus its run."""
    runs = tuple(Demand(f"a{i}", 25 * GIB, 10 * H, 0.1, 1) for i in range(5))
    assert volume_bound(fleet(1), [Submission(0.0, runs)]) < 24.9 * H
    assert recut_bound(fleet(1), [Submission(0.0, runs)]) == pytest.approx(25 * H, rel=1e-5)
    assert play(fleet(1), [Submission(0.0, runs)]).makespan_s == pytest.approx(30 * H)
    split = [Submission(0.0, runs[:2]), Submission(15 * H, runs[2:4])]
    assert recut_bound(fleet(1), split) == pytest.approx(25 * H, rel=1e-5)


def test_classes_group_identical_runs():
    d = Demand("x", 10 * GIB, 2 * H, 0.5, 2)
    classes = run_classes([(0.0, d), (0.0, Demand("y", 10 * GIB, 2 * H, 0.5, 2)), (1.0, d)])
    assert [(c.arrival_s, c.n) for c in classes] == [(0.0, 2), (1.0, 1)]


def test_no_runs_or_none_that_fit_prove_nothing():
    assert recut_lp_bound(fleet(1), []) is None
    assert recut_lp_bound(fleet(1), [(0.0, Demand("huge", 200 * GIB, H, 1.0, 1))]) is None


def test_the_bound_is_deterministic():
    runs = tuple(Demand(f"r{i}", (5 + 3 * i) * GIB, (2 + i) * H, 0.1 + 0.05 * i, 3) for i in range(6))
    subs = [Submission(0.0, runs[:3]), Submission(2 * H, runs[3:])]
    assert recut_bound(fleet(1), subs) == recut_bound(fleet(1), subs)


_run = st.tuples(
    st.sampled_from([5, 12, 25, 40, 70]),  # GiB
    st.integers(1, 6),  # hours
    st.sampled_from([0.1, 0.3, 0.6, 1.0]),  # compute
    st.integers(1, 3),  # sharing cap
)
_sub = st.tuples(st.sampled_from([0, 1, 3]), st.lists(_run, min_size=1, max_size=4))


@pytest.mark.slow
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(gpus=st.integers(1, 2), subs=st.lists(_sub, min_size=1, max_size=3))
def test_the_bound_is_never_above_a_played_schedule_nor_below_the_volume_bound(gpus, subs):
    """Small generated workloads: the bound is at most the makespan the living bench plays (a
    bound above a real schedule is a bug) and at least the volume bound."""
    submissions = [
        Submission(at * H, tuple(Demand(f"s{k}r{j}", m * GIB, h * H, u, cap) for j, (m, h, u, cap) in enumerate(runs))) for k, (at, runs) in enumerate(subs)
    ]
    bound = recut_bound(fleet(gpus), submissions)
    assert bound >= volume_bound(fleet(gpus), submissions)
    res = play(fleet(gpus), submissions)
    assert not res.unrunnable
    assert bound <= res.makespan_s * (1 + 1e-9), (bound / H, res.makespan_s / H)


def test_pricing_cut_short_proves_no_more_than_the_full_lp(monkeypatch):
    """With almost no pricing effort the LP proves nothing (None) or less than with all of it, and
    the re-cut bound falls back to the volume bound."""
    import migbench.planner.recutlp as recutlp

    runs = tuple(Demand(f"r{i}", (5 + 3 * i) * GIB, (2 + i) * H, 0.1 + 0.05 * i, 3) for i in range(8))
    pairs = [(0.0 if i < 4 else 2 * H, d) for i, d in enumerate(runs)]
    full = recut_lp_bound(fleet(1), pairs)
    assert full is not None
    monkeypatch.setattr(recutlp, "TOTAL_NODES", 3)
    cut = recut_lp_bound(fleet(1), pairs)
    assert cut is None or cut <= full
    subs = [Submission(0.0, runs[:4]), Submission(2 * H, runs[4:])]
    assert recut_bound(fleet(1), subs) >= volume_bound(fleet(1), subs)
