"""launch.db's format: a state dir written before the runs' instance keys were typed reads and
writes back the same text (`tests/data/launch/launch-v1.sql` is the dump of a launch.db written
by that code: three rows of a real launch of examples/toy-sweep.yaml on the simulated host, plus
an OOM-moved run, a run never started and two bench runs, one waiting anywhere)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from migbench.errors import MigbenchError
from migbench.launch.store import ANYWHERE, RUN_COLUMNS, RunRow, Store, read_state
from migbench.types import InstanceRef, Placement

DUMP = Path(__file__).parents[1] / "data" / "launch" / "launch-v1.sql"


def _db(tmp_path: Path) -> Path:
    db = tmp_path / "launch.db"
    conn = sqlite3.connect(db)
    conn.executescript(DUMP.read_text())
    conn.close()
    return db


def _update(db: Path, sql: str, *args: object) -> None:
    """One statement on launch.db, committed (a hand edit of the file)."""
    conn = sqlite3.connect(db)
    try:
        conn.execute(sql, args)
        conn.commit()
    finally:
        conn.close()


def _runs(db: Path) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        cols = ", ".join(c for c in RUN_COLUMNS if c != "updated_at")
        return conn.execute(f"SELECT {cols} FROM runs ORDER BY id").fetchall()
    finally:
        conn.close()


def test_an_old_launch_db_reads_as_typed_rows(tmp_path):
    _db(tmp_path)
    rows = read_state(tmp_path, lambda st: st.runs())
    ref = InstanceRef(0, Placement("3g.40gb", 4))
    assert rows["large-128b52ce48"].home == rows["large-128b52ce48"].queue == rows["large-128b52ce48"].instance == ref
    moved = rows["oom-moved"]
    assert moved.home == InstanceRef.parse("0:1g.10gb@0") and moved.queue == ref and moved.instance == ref
    assert rows["never-started"].instance is None and rows["never-started"].queue == InstanceRef.parse("1:1g.10gb@3")
    assert rows["bench-waiting"].queue is ANYWHERE and rows["bench-waiting"].home is None
    assert rows["bench-oom-unplaceable"].queue is None and rows["bench-oom-unplaceable"].instance == InstanceRef.parse("0:7g.80gb@0")


def test_an_old_launch_db_written_back_keeps_its_text(tmp_path):
    """Rows read and saved again (as a launcher that takes over an old state dir does) store the
    same text in every column: the file's format did not change."""
    db = _db(tmp_path)
    before = _runs(db)
    st = Store.create(db)
    try:
        rows = st.runs()
        with st.transaction():
            st.save_runs(rows.values())
            moved = rows["oom-moved"]
            moved.attempt += 1
            st.begin_attempt(moved)
    finally:
        st.close(checkpoint=True)
    assert _runs(db) == before
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT instance FROM attempts WHERE run_id = 'oom-moved' AND attempt = 3").fetchone() == ("0:3g.40gb@4",)
        assert conn.execute("SELECT queue FROM runs WHERE id = 'bench-waiting'").fetchone() == ("*",)
    finally:
        conn.close()


def test_a_row_saved_new_stores_the_keys_text(tmp_path):
    st = Store.create(tmp_path / "launch.db")
    try:
        with st.transaction():
            st.save_runs([RunRow(id="a", ord=0, home=InstanceRef.parse("1:2g.20gb@4"), queue=ANYWHERE, instance=None)])
        raw = st.conn.execute("SELECT home, queue, instance FROM runs").fetchone()
    finally:
        st.close()
    assert raw == ("1:2g.20gb@4", "*", None)


def test_an_instance_key_that_does_not_parse_is_a_damaged_file(tmp_path):
    """A `runs` row whose instance is not a key reads as a damaged launch.db (status says so and
    how to recover), never a traceback."""
    db = _db(tmp_path)
    _update(db, "UPDATE runs SET queue = 'not an instance' WHERE id = 'never-started'")
    with pytest.raises(MigbenchError, match="is damaged: malformed runs row 'never-started'"):
        read_state(tmp_path, lambda st: st.runs())


def test_a_key_of_any_catalogue_profile_reads_and_writes_back_as_it_was(tmp_path):
    """A user catalogue may name a profile outside the usual pattern (`Placement.parse` refuses
    it): its rows read and write back the same text, and a key not in its own form is refused."""
    db = _db(tmp_path)
    _update(db, "UPDATE runs SET home = '12:2g.20gb+lab2@10', queue = '12:2g.20gb+lab2@10' WHERE id = 'never-started'")
    before = _runs(db)
    st = Store.create(db)
    try:
        row = st.runs()["never-started"]
        assert row.home == row.queue == InstanceRef(12, Placement("2g.20gb+lab2", 10))
        with st.transaction():
            st.save_runs([row])
    finally:
        st.close(checkpoint=True)
    assert _runs(db) == before
    _update(db, "UPDATE runs SET queue = '0:3g.40gb@04' WHERE id = 'never-started'")
    with pytest.raises(MigbenchError, match="is damaged: malformed runs row 'never-started'"):
        read_state(tmp_path, lambda st: st.runs())


@pytest.mark.slow
def test_a_key_that_does_not_parse_is_found_when_the_file_is_opened(tmp_path):
    """Bug: a runs row whose key does not parse made `report` and `launch` (resume) an internal error
    (DatabaseError from `Store.runs()` after the file was opened): it is a damaged file when opened,
    so `report` says so and the launcher moves it aside and rebuilds, as the hint promises."""
    from migbench.launch.rebuild import open_store
    from migbench.report.data import read_launch

    db = _db(tmp_path)
    _update(db, "UPDATE runs SET home = 'x:1g.10gb@0' WHERE id = 'never-started'")
    with pytest.raises(MigbenchError, match="is damaged: malformed runs row 'never-started'"):
        read_launch(tmp_path)
    st, note = open_store(tmp_path)
    try:
        assert note is not None and "malformed runs row 'never-started'" in note and "moved it to launch.db.damaged-" in note
        assert st.runs() == {}
    finally:
        st.close()


def test_a_huge_key_that_does_not_parse_is_not_echoed_whole(tmp_path):
    """Bug: a runs row with a 5 MB instance text printed all 5 MB in status's error: the error
    shows its head and its length."""
    db = _db(tmp_path)
    _update(db, "UPDATE runs SET instance = ? WHERE id = 'never-started'", "A" * 1_000_000)
    with pytest.raises(MigbenchError, match=r"malformed runs row 'never-started': 'A+'\.\.\. \(1000000 characters\)") as err:
        read_state(tmp_path, lambda st: st.runs())
    assert len(str(err.value)) < 1000


@pytest.mark.parametrize("profile", ["1g.10gb\x1b[2J", "1g.10gb\x00", "1g 10gb", "1g.10gb\n"])
def test_a_key_whose_profile_holds_a_control_character_is_a_damaged_file(tmp_path, profile):
    """Bug: any profile text was taken as a key's, so a row holding a terminal escape (ESC [ 2 J
    clears the screen) had `status` print it raw to the terminal; a profile is printable text
    without spaces, as every catalogue's is."""
    db = _db(tmp_path)
    _update(db, "UPDATE runs SET instance = ? WHERE id = 'never-started'", f"0:{profile}@0")
    with pytest.raises(MigbenchError, match="is damaged: malformed runs row 'never-started'"):
        read_state(tmp_path, lambda st: st.runs())


def test_a_damaged_launch_db_of_a_bench_points_to_submit(tmp_path):
    """Bug: a bench's damaged launch.db said "the next `migbench launch PLAN` moves it aside", but
    launch of the bench plan is refused (its state was made from the plan before the re-cuts): the
    next submit's bench moves it aside; a sweep's state dir still points to launch."""
    sd = tmp_path / "bench" / "runs" / "bench"
    sd.mkdir(parents=True)
    (tmp_path / "bench" / "bench.plan.yaml").write_text("kind: migbench-plan\n")
    (sd / "launch.db").write_bytes(b"not a database, " * 100)
    with pytest.raises(MigbenchError) as err:
        read_state(sd, lambda st: st.runs())
    assert "`migbench submit SWEEP` (which starts the bench again) moves it aside" in str(err.value.hint)
    (tmp_path / "bench" / "bench.plan.yaml").unlink()
    with pytest.raises(MigbenchError) as err:
        read_state(sd, lambda st: st.runs())
    assert "the next `migbench launch PLAN` moves it aside" in str(err.value.hint)
