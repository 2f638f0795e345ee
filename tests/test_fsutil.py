"""migbench.fsutil: private state files, atomic writes that never follow a planted name, full disks,
and lock files that cannot be turned against their owner."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from migbench import fsutil
from migbench.fsutil import make_dirs, parse_state_mode, reserve_file, write_json_atomic
from migbench.pidlock import LockProblem, PidLock
from migbench.state import configure_modes
from tests.support.faults import full_disk


@pytest.fixture(autouse=True)
def default_mode(monkeypatch):
    monkeypatch.delenv("MIGBENCH_STATE_MODE", raising=False)
    fsutil.configure_state_mode(None)
    yield
    fsutil.configure_state_mode(None)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_state_files_are_private_by_default_and_a_team_mode_is_honoured(tmp_path, monkeypatch):
    """Guards: state files were 0644 (cmd.json holds the sweep's env values, maybe tokens)."""
    d = make_dirs(tmp_path / "runs" / "sweep" / "run-1")
    write_json_atomic(d / "cmd.json", {"env": {"TOKEN": "secret"}})
    assert mode(d / "cmd.json") == 0o600
    assert mode(d) == mode(d.parent) == mode(d.parent.parent) == 0o700
    monkeypatch.setenv("MIGBENCH_STATE_MODE", "0640")
    assert configure_modes(None) == 0o640
    write_json_atomic(d / "team.json", {})
    assert mode(d / "team.json") == 0o640 and mode(make_dirs(tmp_path / "t" / "u")) == 0o750


@pytest.mark.parametrize("bad", ["0666", "0777", "0400", "abc", "8", True, [1], 0o1777])
def test_state_modes_that_would_expose_or_lock_out_are_refused(bad):
    with pytest.raises(ValueError):
        parse_state_mode(bad)


def test_atomic_write_never_follows_a_planted_temp_name(tmp_path):
    """Guards: temp files had predictable names (`.<name>.<pid>.tmp`) and were opened through symlinks."""
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    for name in (f".bindings.json.{os.getpid()}.tmp", "bindings.json.tmp"):
        (tmp_path / name).symlink_to(victim)
    write_json_atomic(tmp_path / "bindings.json", {"ok": 1})
    assert victim.read_text() == "keep me"
    assert json.loads((tmp_path / "bindings.json").read_text()) == {"ok": 1}
    assert not (tmp_path / "bindings.json").is_symlink()


def test_a_full_disk_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "bindings.json"
    write_json_atomic(target, {"old": True})
    full_disk(monkeypatch)
    with pytest.raises(OSError) as ei:
        write_json_atomic(target, {"new": True})
    assert ei.value.errno == errno.ENOSPC
    assert json.loads(target.read_text()) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bindings.json"]


def test_a_reserved_record_is_written_even_on_a_full_disk(tmp_path, monkeypatch):
    """Guards: shims that could not write exit.json on a full disk had their runs started again."""
    reserve_file(tmp_path / "exit.reserve")
    full_disk(monkeypatch)
    doc = {"returncode": 0, "run_id": "r"}
    write_json_atomic(tmp_path / "exit.json", doc, reserve=tmp_path / "exit.reserve")
    assert json.loads((tmp_path / "exit.json").read_text()) == doc
    assert not (tmp_path / "exit.reserve").exists()
    with pytest.raises(OSError):  # the reserve is spent: the next record has no room
        write_json_atomic(tmp_path / "again.json", doc, reserve=tmp_path / "exit.reserve")


def test_a_symlink_at_a_lock_path_is_refused_and_its_target_untouched(tmp_path):
    """Guards: lock files followed symlinks and were truncated (root's apply truncated the target)."""
    victim = tmp_path / "passwd"
    victim.write_text("root:x:0:0\n")
    lock = tmp_path / "apply.lock"
    lock.symlink_to(victim)
    for shared in (False, True):
        with pytest.raises(LockProblem) as ei:
            PidLock(lock, shared=shared).acquire()
        assert "symbolic link" in ei.value.message
    assert victim.read_text() == "root:x:0:0\n"


def test_lock_paths_that_are_not_plain_files_of_ours_are_clear_errors(tmp_path):
    """Guards: an OS error on a lock file (IsADirectoryError from PidLock) was a traceback."""
    (tmp_path / "dir.lock").mkdir()
    os.mkfifo(tmp_path / "fifo.lock")
    (tmp_path / "one").write_text("")
    os.link(tmp_path / "one", tmp_path / "linked.lock")
    expect = {"dir.lock": "directory", "fifo.lock": "not a regular file", "linked.lock": "hard links"}
    for name, why in expect.items():
        with pytest.raises(LockProblem) as ei:
            with PidLock(tmp_path / name):
                pass
        assert why in ei.value.message, name
        assert ei.value.hint


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_a_lock_file_owned_by_another_user_is_refused(tmp_path):
    lock = tmp_path / "apply.lock"
    lock.write_text("")
    os.chown(lock, 4242, 4242)
    for shared in (False, True):
        with pytest.raises(LockProblem) as ei:
            PidLock(lock, shared=shared).acquire()
        assert "owned by uid 4242" in ei.value.message


def test_shared_holders_exclude_an_exclusive_one_and_are_named(tmp_path):
    lock = tmp_path / "host.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys; from migbench.pidlock import PidLock; l = PidLock({str(lock)!r}, shared=True); "
            "l.acquire(); print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert not PidLock(lock).acquire()  # exclusive: busy
        other = PidLock(lock, shared=True)
        assert other.acquire()  # shared with shared: fine
        other.release()
        assert (holder.pid, False) in PidLock(lock).holders()
        assert not PidLock(lock).is_held()  # nobody holds it exclusively
    finally:
        holder.communicate("")
    ex = PidLock(lock, note={"checkpoint": "/x/checkpoint.json"})
    with ex:
        assert PidLock(lock).content() == {"pid": os.getpid(), "checkpoint": "/x/checkpoint.json"}
    assert PidLock(lock).content() is None  # released cleanly: nothing left behind


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_an_export_directory_another_user_makes_between_the_check_and_its_creation_is_refused(tmp_path, monkeypatch):
    """Guards: an export directory was checked, then created where missing: in a shared sticky
    directory, another user who made a part of it in between had the scripts (which an admin runs
    as root) written inside her directory."""
    from migbench import fsutil
    from migbench.errors import MigbenchError

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    real = os.makedirs

    def racing(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not (shared / "out").exists():
            (shared / "out").mkdir()  # she wins the race
            os.chown(shared / "out", 12345, 12345)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(fsutil.os, "makedirs", racing)
    with pytest.raises(MigbenchError, match=r"the directory .*/out is owned by uid 12345"):
        fsutil.output_dir(shared / "out" / "x", "export directory", ("nodes",))


@pytest.mark.parametrize("what", ["plan file", None])
def test_a_write_that_fails_names_the_file_asked_for_not_its_temp_file(tmp_path, monkeypatch, what):
    """Guards: `plan -o` (or `report`) into a read-only file system said 'cannot write the plan file:
    <dir>/.s.plan.yaml.x1y2z3.tmp: read-only file system': the temp file beside it, a name the user
    never gave. The error names the file asked for."""
    import errno
    import tempfile

    from migbench import fsutil
    from migbench.errors import MigbenchError

    def read_only(prefix, suffix, dir):  # type: ignore[no-untyped-def]  # mkstemp names it absolute
        raise OSError(errno.EROFS, "Read-only file system", os.path.join(os.path.abspath(dir), f"{prefix}x1y2z3{suffix}"))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    monkeypatch.chdir(tmp_path)
    out = Path("s.plan.yaml")  # as `plan -o s.plan.yaml` names it
    with pytest.raises((MigbenchError, OSError)) as ei:
        fsutil.write_text_atomic(out, "x\n", what)
    said = ei.value.message if isinstance(ei.value, MigbenchError) else str(ei.value)
    assert ".tmp" not in said and str(out) in said and "read-only" in said.lower(), said
