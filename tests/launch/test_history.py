"""The read side of a launch's memory history (`migbench.launch.history`)."""

from __future__ import annotations

import json

import pytest

from migbench.errors import MigbenchError
from migbench.launch.history import read_history
from migbench.launch.store import AttemptEnd, RunRow, Store, db_path
from migbench.types import InstanceRef


def _store(sd, rows, attempts):  # type: ignore[no-untyped-def]
    st = Store.create(db_path(sd))
    with st.transaction():
        st.set_meta("sweep", "s")
        st.save_runs(rows)
        for row, outcome, peak, err in attempts:
            st.begin_attempt(row)
            st.end_attempt(AttemptEnd(row.id, row.attempt, (row.start_at or 0) + 5, outcome, 0, None, peak, err))
    st.close()


def test_peaks_instances_and_the_oom_floor(tmp_path):
    sd = tmp_path / "runs" / "s"
    sd.mkdir(parents=True)
    (sd / "bindings.json").write_text(json.dumps({"instances": {"0:1g.10gb@0": {"uuid": "MIG-a", "memory_mib": 9728}}}))
    a1 = RunRow(id="g-1", ord=0, grp="g", attempt=1, instance=InstanceRef.parse("0:1g.10gb@0"), memory_mib=4096, need_mib=9729, start_at=100.0)
    a2 = RunRow(
        id="g-1",
        ord=0,
        grp="g",
        attempt=2,
        instance=InstanceRef.parse("0:3g.40gb@4"),
        memory_mib=4096,
        need_mib=9729,
        start_at=200.0,
        instance_mib=40192,
        state="succeeded",
    )
    b1 = RunRow(
        id="g-2", ord=1, grp="g", attempt=1, instance=InstanceRef.parse("0:1g.10gb@0"), memory_mib=4096, need_mib=4096, start_at=150.0, state="succeeded"
    )
    _store(
        sd,
        [a2, b1],
        [(a1, "oom", 3000, "out of memory on 0:1g.10gb@0 (9728 MiB instance, peak 3000 MiB)"), (b1, "succeeded", 3500, None), (a2, "succeeded", 12000, None)],
    )
    h = read_history(sd)
    assert h is not None and h.sweep == "s"
    got = {(a.run_id, a.attempt): (a.outcome, a.peak_mib, a.instance_mib, a.group) for a in h.attempts}
    assert got == {
        ("g-1", 1): ("oom", 3000, 9728, "g"),  # from bindings.json
        ("g-2", 1): ("succeeded", 3500, 9728, "g"),
        ("g-1", 2): ("succeeded", 12000, 40192, "g"),  # not bound: the run's row, its latest attempt
    }
    assert h.oom_floor_mib == {"g-1": 9729}  # the launcher's raised need, above the peak it saw
    assert sorted(a.run_id for a in h.succeeded_peaks()) == ["g-1", "g-2"]
    assert read_history(db_path(sd)) == h  # the database itself names it too


def test_no_history_is_none_and_a_broken_one_is_a_clear_error(tmp_path):
    assert read_history(tmp_path) is None
    db_path(tmp_path).write_bytes(b"not a database at all" * 100)
    with pytest.raises(MigbenchError) as info:
        read_history(tmp_path)
    assert "cannot read the launch history" in info.value.message and "launch.db" in info.value.message
