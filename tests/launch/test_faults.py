"""The launcher when things break under it: a killed shim, a lost or damaged launch.db, a full disk
(a real tmpfs, and ENOSPC injected at fsutil's write boundary), a state directory deleted mid-run,
and files where the launcher expects its log and lock. Each run's work happens exactly once."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from migbench import fsutil
from migbench.launch.options import LaunchOptions
from migbench.launch.supervisor import launch
from tests.support.statedir import sd_of

pytestmark = pytest.mark.slow  # real launchers, shims and runs: seconds each

QUICK = """
version: 1
name: quick
launch: {retries: 0, backoff: 0, stop_grace: 5, flapping_max: 50}
groups:
  - name: q
    command: {toy} --steps 2 --step-seconds 0.05 --memory 1GiB --i {i}
    parameters: {i: [0, 1, 2]}
    memory: 9GiB
    compute: 0.1
"""


def _done(r) -> Counter:  # type: ignore[no-untyped-def]
    return Counter(line.split()[0] for line in r.ledger_lines())


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


def test_a_killed_shim_leaves_its_run_to_the_launcher_and_the_run_happens_once(rig):
    """Guards: kill -9 of a run's shim started attempt 2 while the orphaned run kept working: two
    executions of one run, and once its instance given to the next run."""
    r = rig(QUICK.replace("--steps 2 --step-seconds 0.05", "--steps 8 --step-seconds 0.25"))
    p = r.start()

    def working() -> str | None:
        for rid, row in r.rows().items():
            if row["state"] == "running" and row["shim_pid"] and (r.state_dir / rid / "attempt-1" / "started").exists():
                return rid
        return None

    r.wait_for(lambda: working() is not None, what="a run at work")
    rid = working()
    assert rid is not None
    os.kill(r.rows()[rid]["shim_pid"], signal.SIGKILL)
    assert p.wait(timeout=60) == 0, r.output(p)
    assert "its run goes on under the launcher" in r.output(p)
    rows = r.rows()
    assert {v["state"] for v in rows.values()} == {"succeeded"}
    assert _done(r) == Counter({k: 1 for k in rows}) and rows[rid]["attempt"] == 1
    exit_doc = json.loads((r.state_dir / rid / "attempt-1" / "exit.json").read_text())
    assert exit_doc["returncode"] == 0 and exit_doc["recorded_by"] == "launcher"


def test_a_lost_or_damaged_launch_db_never_reruns_finished_runs(rig):
    """Guards: an empty or deleted launch.db re-ran every finished run and overwrote attempt-1's
    cmd.json and exit.json; `status` on it was a traceback (no such table / malformed) with a hint
    about permissions; state files were world-readable (0644), cmd.json holding the sweep's env."""
    r = rig(QUICK)
    rc, out = r.launch()
    assert rc == 0, out
    rid = next(iter(r.rows()))
    adir = r.state_dir / rid / "attempt-1"
    assert _mode(adir / "cmd.json") == _mode(adir / "exit.json") == _mode(r.db) == _mode(r.state_dir / "bindings.json") == 0o600
    assert _mode(adir) == _mode(adir.parent) == _mode(r.state_dir) == 0o700
    kept = {p: p.stat().st_mtime_ns for p in r.state_dir.rglob("attempt-1/*.json")}
    first = _done(r)

    def damage(how: str) -> None:
        for extra in ("-wal", "-shm"):
            Path(str(r.db) + extra).unlink(missing_ok=True)
        if how == "empty":
            r.db.write_bytes(b"")
        elif how == "garbage":
            data = bytearray(r.db.read_bytes())
            data[len(data) // 2 : len(data) // 2 + 1024] = os.urandom(1024)
            data[100:200] = b"\xff" * 100
            r.db.write_bytes(bytes(data))
        else:
            r.db.unlink()

    for how, says in (("empty", "is empty"), ("garbage", "is damaged"), ("deleted", None)):
        damage(how)
        if says:
            st = r.cli("status", str(r.plan_path))
            assert st.returncode == 1 and says in st.stderr and "Traceback" not in st.stderr + st.stdout, st.stderr
            assert "rebuilds the runs' states from their directories" in st.stderr
        rc, out = r.launch()
        assert rc == 0 and "Traceback" not in out, out
        assert "rebuilt 3 run(s) from their directories" in out, out
        assert _done(r) == first, how
        assert {p: p.stat().st_mtime_ns for p in kept} == kept, how
    assert list(r.state_dir.glob("launch.db.damaged-*")), "the damaged file is kept aside"
    assert all(a["attempt"] == 1 for a in r.attempts())


LATE = """  - name: late
    command: {toy} --steps 1 --step-seconds 0.05 --i {i}
    parameters: {i: [0, 1, 2, 3, 4, 5, 6, 7]}
    memory: 9GiB
    compute: 0.1
"""


def test_enospc_at_the_write_boundary_stops_new_starts_and_keeps_the_others(rig, monkeypatch):
    """Guards: ENOSPC in _start -> prepare_attempt -> write_json_atomic was a launcher traceback."""
    r = rig(QUICK + LATE)
    real = fsutil._write_fd

    def full_for_late_runs(fd: int, data: bytes) -> None:  # a disk that is full by the time `late` runs start
        grows = os.lseek(fd, 0, os.SEEK_CUR) + len(data) > os.fstat(fd).st_size
        if grows and "/late-" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    monkeypatch.setattr(fsutil, "_write_fd", full_for_late_runs)
    for k in ("MIGBENCH_POLL_S", "MIGBENCH_MEM_POLL_S", "TOY_LEDGER", "HOME"):
        monkeypatch.setenv(k, r.env[k])
    res = launch(r.plan, LaunchOptions(sd_of(r.plan), poll_s=0.05, mem_poll_s=0.5), out=open(r.tmp / "inproc.log", "w"))
    said = (r.tmp / "inproc.log").read_text()
    assert res.exit_code == 1 and "no space left on the device" in said and "stopped starting runs" in said, said
    states = r.states()
    assert all(s == "succeeded" for k, s in states.items() if k.startswith("q-")), states
    late = [s for k, s in states.items() if k.startswith("late-")]
    assert late and "succeeded" not in late and not any((r.state_dir / k / "attempt-1" / "started").exists() for k in states if k.startswith("late-"))


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs (a real file system that fills up), unmounted afterwards."""
    where = tmp_path / "small"
    where.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({p.stderr.strip() or 'mount failed'}): the full-disk test needs root")
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_really_full_disk_stops_new_starts_keeps_outcomes_and_nothing_runs_twice(rig, small_tmpfs):
    """Guards: a full disk crashed the launcher, and after space was freed 2 runs whose shims could
    not write exit.json ran again."""
    sweep = QUICK.replace(
        "command: {toy} --steps 2 --step-seconds 0.05 --memory 1GiB --i {i}",
        'shell: true\n    command: sleep 1.5; echo "$MIGBENCH_RUN_ID 1 done" >> "$TOY_LEDGER"  # {i}',
    )
    r = rig(sweep.replace("[0, 1, 2]", "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]"))
    sd = small_tmpfs / "state"
    sd.mkdir()
    shutil.copy(r.state_dir / "bindings.json", sd / "bindings.json")
    p = r.start("--state-dir", str(sd))
    r.state_dir = sd
    busy = len({run.instance_key for run in r.plan.placed_runs()})
    assert len(r.plan.placed_runs()) > busy
    r.wait_for(lambda: sum((sd / k / "attempt-1" / "started").exists() for k in r.rows()) == busy, what="every instance at work")
    filler = small_tmpfs / "filler"
    try:  # fill what is left (the launch may have filled it already)
        with open(filler, "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    rc = p.wait(timeout=60)
    out = r.output(p)
    assert rc == 1 and "no space left" in out and "Traceback" not in out, out
    started = [k for k in r.rows() if (sd / k / "attempt-1" / "started").exists()]
    assert len(started) >= busy
    assert all((sd / k / "attempt-1" / "exit.json").exists() for k in started), "every started run's outcome is kept"
    filler.unlink(missing_ok=True)
    rc, out = r.launch("--state-dir", str(sd))
    assert rc == 0 and "Traceback" not in out, out
    assert _done(r) == Counter({k: 1 for k in r.rows()})


def test_a_state_dir_deleted_mid_run_is_noticed_said_and_rewritten(rig):
    """Guards: with its state dir deleted, the launcher wrote to the unlinked database, exited 0, and
    `status` then said "no launch yet"."""
    r = rig(QUICK.replace("--steps 2 --step-seconds 0.05", "--steps 6 --step-seconds 0.25").replace("[0, 1, 2]", "[0, 1, 2, 3, 4, 5, 6, 7, 8]"))
    p = r.start()
    r.wait_for(lambda: any((r.state_dir / k / "attempt-1" / "started").exists() for k in r.rows()), what="a run at work")
    shutil.rmtree(r.state_dir)
    rc = p.wait(timeout=60)
    out = r.output(p)
    assert rc == 1 and "deleted or replaced while the launcher ran" in out and "re-created" in out, out
    st = r.cli("status", str(r.plan_path), "--json")
    assert st.returncode == 0, st.stderr
    doc = json.loads(st.stdout)["runs"]
    assert doc is not None and doc["counts"]["succeeded"] >= 1 and "deleted" in (doc["launcher"]["stop_reason"] or ""), out + str(doc)


def test_a_directory_where_the_log_or_the_lock_goes_is_a_clear_error(rig):
    """Guards: `launch --detach` opening launcher.log, and PidLock on a lock path that is a directory,
    were tracebacks (IsADirectoryError)."""
    r = rig(QUICK)
    (r.state_dir / "launcher.log").mkdir()
    res = r.cli("launch", str(r.plan_path), "--detach")
    assert res.returncode == 1 and "cannot write the launcher's log" in res.stderr and "Traceback" not in res.stderr, res.stderr
    (r.state_dir / "launcher.log").rmdir()
    (r.state_dir / "launcher.lock").mkdir()
    rc, out = r.launch()
    assert rc == 1 and "launcher.lock" in out and "is a directory" in out and "Traceback" not in out, out
