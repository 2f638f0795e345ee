"""The event player: one instance played alone equals the fleet's replay to the last bit, and list
scheduling starts what fits, in priority order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migbench.duration import Demand, Slot
from migbench.duration.replay import list_schedule, play_queue, replay

job_st = st.tuples(
    st.sampled_from([1024, 2560, 4096, 9000, 20000]),
    st.sampled_from([1800.0, 3600.0, 5400.0, 7200.0, 36000.0]),
    st.sampled_from([0.05, 0.1, 0.3, 1.0]),
    st.sampled_from([1, 2, 3, 4]),
)
slot_st = st.tuples(st.sampled_from([10240, 20480, 40960]), st.sampled_from([1 / 7, 2 / 7, 3 / 7, 1.0]))


@settings(max_examples=200, deadline=None)
@given(
    queues=st.lists(st.lists(job_st, min_size=0, max_size=7), min_size=1, max_size=4),
    slots=st.lists(slot_st, min_size=4, max_size=4),
    interference=st.sampled_from([0.0, 0.1]),
)
@pytest.mark.slow
def test_one_instance_played_alone_equals_the_fleet_replay_exactly(queues, slots, interference):
    sl = [Slot(f"s{i}", mem, cap, f"s{i}") for i, (mem, cap) in enumerate(slots[: len(queues)])]
    jobs, q = [], {}
    for i, (s, spec) in enumerate(zip(sl, queues)):
        mine = [Demand(f"j{i}-{k}", min(m, s.memory_mib), d, u, c) for k, (m, d, u, c) in enumerate(spec)]
        jobs += mine
        q[s.key] = [j.id for j in mine]
    res = replay(jobs, sl, q, interference=interference)
    by_id = {j.id: j for j in jobs}
    for s in sl:
        starts, ends = play_queue([by_id[r] for r in q[s.key]], s, interference)
        assert starts == [res.start_s[r] for r in q[s.key]]
        assert ends == [res.end_s[r] for r in q[s.key]]


def test_list_schedule_skips_runs_that_do_not_fit_and_starts_later_ones_that_do():
    """Blocks of alike runs are skipped whole; a smaller run further down the list still starts."""
    slot = Slot("s", 10240, 1.0, "t")
    jobs = [
        Demand("a", 8000, 3600.0, 0.1, 4),
        Demand("b", 8000, 3600.0, 0.1, 4),
        Demand("c", 8000, 3600.0, 0.1, 4),
        Demand("d", 2000, 7200.0, 0.1, 4),
        Demand("e", 1000, 3600.0, 0.1, 1),
    ]
    res = list_schedule(jobs, [slot], lambda j, s: True)
    assert res.start_s["a"] == 0.0 and res.start_s["d"] == 0.0
    assert res.start_s["b"] == 3600.0 and res.start_s["c"] == 7200.0
    assert res.order["s"] == ["a", "d", "b", "c", "e"]
