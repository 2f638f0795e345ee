"""Journal: the runs' rows in memory and their writes to launch.db (a full disk, a deleted
database) on a real sqlite store."""

from __future__ import annotations

from contextlib import ExitStack

from migbench.launch.journal import Journal
from migbench.launch.keeper import Keeper, Trouble
from migbench.launch.store import RunRow, Store
from migbench.types import InstanceRef
from tests.support.launchparts import journal


def test_a_flush_writes_rows_attempt_ends_and_the_launcher_row_together(tmp_path):
    with ExitStack() as stack:
        j = journal(tmp_path, stack)
        row = RunRow(id="a", ord=0, state="running", attempt=1, instance=InstanceRef.parse("0:1g.10gb@0"), start_at=1.0)
        j.rows["a"] = row
        assert j.keeper.write(lambda st: st.begin_attempt(row)) is None
        row.state, row.end_at, row.exit_code = "succeeded", 2.0, 0
        j.end(row, "succeeded", None)
        j.update(heartbeat_at=3.0)
        assert j.pending and j.dirty == {"a"}
        j.flush()
        assert not j.pending
        assert j.store.runs()["a"].state == "succeeded" and j.store.attempts("a")[0]["outcome"] == "succeeded"
        assert j.store.launcher().heartbeat_at == 3.0  # type: ignore[union-attr]


class _FullOnce(Keeper):
    full = True

    def write(self, fn):  # type: ignore[no-untyped-def]
        if self.full:
            return Trouble(True, "no space left on the device to write launch.db")
        return super().write(fn)


def test_a_full_disk_halts_new_starts_and_keeps_the_changes_for_the_next_flush(tmp_path):
    said: list[str] = []
    with ExitStack() as stack:
        keeper = _FullOnce(tmp_path / "state")
        keeper.open(stack)
        j = Journal(keeper, said.append)
        j.rows["a"] = RunRow(id="a", ord=0, state="queued")
        j.mark("a")
        j.flush()
        j.flush()
        assert j.halted and j.halted.startswith("no space left") and len(said) == 1  # said once
        assert j.pending and j.launcher_updates["stop_reason"] == j.halted
        keeper.full = False
        j.flush()
        assert not j.pending and j.store.runs()["a"].state == "queued"


def test_a_deleted_database_is_recreated_from_memory(tmp_path):
    said: list[str] = []
    restated: list[str | None] = []

    def restate(st: Store, halted: str | None) -> None:
        st.set_meta("sweep", "t")
        restated.append(halted)

    with ExitStack() as stack:
        j = journal(tmp_path, stack, said)
        j.restate = restate
        j.rows = {
            "a": RunRow(id="a", ord=0, state="succeeded", attempt=1, instance=InstanceRef.parse("0:1g.10gb@0")),
            "b": RunRow(id="b", ord=1, state="queued"),
        }
        j.keeper.db.unlink()
        j.mark("b")
        j.flush()
        assert j.halted and "deleted or replaced" in j.halted and restated == [j.halted]
        assert "re-created" in said[-1] and not j.pending
        assert {k: r.state for k, r in j.store.runs().items()} == {"a": "succeeded", "b": "queued"}
        assert j.store.meta("sweep") == "t" and len(j.store.attempts("a")) == 1
