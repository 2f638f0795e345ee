"""The run's own parent: a tiny process that waits for the run and records how it ended.

The shim forks the waiter, the waiter forks the run (so the run is the waiter's child) and then
execs a few lines of Python run by `python -I -S -c` (`SOURCE`) whose command line reads
`mb-wait -I -S -c <source> <run id> <pid> <dir fd> <pipe fd> <start ticks>` and whose process name
(PR_SET_NAME) is `mb-wait`: neither holds the word "migbench", so `pkill -f migbench` (or a kill of
every migbench process) leaves it, and the run, alone. It
ignores SIGHUP/SIGINT/SIGTERM, needs no module outside the interpreter's built-in ones, and:

1. observes the run's exit with `waitid(P_PID, pid, WEXITED | WNOWAIT)` (the run stays a zombie, so
   its PID, and its process group, cannot be reused meanwhile);
2. writes `wait.json` into the attempt directory (opened as a directory fd, so every name is taken
   relative to it and never followed through a symlink): into `.wait.pending`, space the shim
   reserved before the run started (a full disk cannot stop it), fsync, rename, fsync the
   directory -- atomic and durable; without the reserve, through a new temp file and a rename;
3. writes the same record to the shim through a pipe (where it first wrote the run's PID and start
   time, once it runs as `mb-wait`: the shim lets the run start only after that line) (so the shim learns it even when the
   directory was deleted meanwhile);
4. kills what is left of the run's process group and reaps the run.

So the outcome of a run exists without the shim and without the launcher: a launcher that starts
after both died (`kill -9`, an OOM kill, `pkill -9 -f migbench`) takes it from `wait.json`, and
adopts a run still working by its PID and start time (`alive`). Only when the waiter itself dies
before its run (a `kill -9` aimed at it) and no launcher is the run's subreaper, or the directory is
deleted while nothing of migbench runs, is the outcome unknown.

This module also holds the identity check used for shims, waiters and runs: a PID plus the process's
start time in clock ticks since boot (field 22 of `/proc/PID/stat`), which a reused PID never repeats.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
from pathlib import Path
from typing import Any

WAIT_NAME = "wait.json"
WAIT_PENDING = ".wait.pending"
WAITER_ARGV0 = "mb-wait"

SOURCE = r"""
import os, signal, sys, time
def rec(pid, info):
    code = sig = None
    if info is not None:
        if info.si_code == os.CLD_EXITED:
            code = info.si_status
        else:
            sig = info.si_status
    j = lambda v: "null" if v is None else str(int(v))
    return ('{"version": 1, "pid": %d, "exit_code": %s, "signal": %s, "ended_at": %r, "recorded_by": "waiter"}\n'
            % (pid, j(code), j(sig), time.time())).encode()
def put(d, data):
    try:
        fd = os.open(".wait.pending", os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=d)
        tmp = ".wait.pending"
    except OSError:
        tmp = ".wait.%d.tmp" % os.getpid()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=d)
    try:
        size = os.fstat(fd).st_size
        os.pwrite(fd, data + b" " * max(0, size - len(data)), 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, "wait.json", src_dir_fd=d, dst_dir_fd=d)
    os.fsync(d)
def main():
    pid, d, out = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    os.write(out, b"%d %s\n" % (pid, sys.argv[5].encode()))  # to the shim: the run's PID and start time
    try:  # the process name too (what ps, top and a plain pkill show)
        import ctypes
        ctypes.CDLL(None).prctl(15, b"mb-wait", 0, 0, 0)
    except Exception:
        pass
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:
        info = None
    data = rec(pid, info)
    ok = 1
    try:
        put(d, data)
        ok = 0
    except OSError:
        pass
    try:
        os.write(out, data)
    except OSError:
        pass
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    return ok
sys.exit(main())
"""


def exec_waiter(run_id: str, pid: int, dir_fd: int, out_fd: int) -> None:
    """In the forked waiter (the run's parent): become `mb-wait`. Never returns. Once it runs as
    `mb-wait` it writes "<pid> <start ticks>" to `out_fd` (so whoever reads that line knows that
    nothing matching "migbench" is the run's parent any more), and at the end its record."""
    for s in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)  # ignored dispositions survive exec
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    os.set_inheritable(dir_fd, True)
    os.set_inheritable(out_fd, True)
    label = run_id if "migbench" not in run_id.lower() else "run"
    exe = os.path.realpath(sys.executable)
    ticks = str(start_ticks(pid) or 0)
    os.execv(exe, [WAITER_ARGV0, "-I", "-S", "-c", SOURCE, label, str(pid), str(dir_fd), str(out_fd), ticks])


def parse_record(data: bytes | str | None) -> dict[str, Any] | None:
    """A waiter's record (from `wait.json` or its pipe), or None when there is none."""
    if not data:
        return None
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("pid"), int):
        return None
    if doc.get("exit_code") is None and doc.get("signal") is None:
        return None
    return doc


def read_record(adir: Path) -> dict[str, Any] | None:
    """The waiter's record in `adir/wait.json`, or None (also where something other than a regular
    file is there: a named pipe is never waited on)."""
    try:
        fd = os.open(adir / WAIT_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return parse_record(os.read(fd, 1 << 16))
    except OSError:
        return None
    finally:
        os.close(fd)


def wait_status(doc: dict[str, Any]) -> int:
    """The wait status (as `os.waitpid` gives it) a waiter's record stands for."""
    if doc.get("signal") is not None:
        return int(doc["signal"]) & 0x7F
    return (int(doc.get("exit_code") or 0) & 0xFF) << 8


def start_ticks(pid: int | None) -> int | None:
    """The start time of process `pid` in clock ticks since boot (None when there is none)."""
    if not pid:
        return None
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:  # the command name (field 2) may hold spaces and parentheses: split after its last ')'
        return int(data[data.rindex(b")") + 2 :].split()[19])
    except (ValueError, IndexError):
        return None


def alive(pid: int | None, ticks: int | None) -> bool:
    """True when process `pid` exists, is not a zombie, and (when `ticks` is given) started at
    `ticks`: the same process, not a later one that got its PID."""
    if not pid:
        return False
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            data = f.read()
        rest = data[data.rindex(b")") + 2 :].split()
    except (OSError, ValueError):
        return False
    if not rest or rest[0] in (b"Z", b"X"):
        return False
    try:
        return ticks is None or int(rest[19]) == int(ticks)
    except (ValueError, IndexError):
        return False
