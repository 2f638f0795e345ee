"""The per-run wrapper: `python -m migbench.launch.shim ATTEMPT_DIR [RESULT_FD]`.

The launcher starts one shim per attempt, in a new session, so the shim (and its run) outlives a
launcher that dies; a restarted launcher adopts it by PID and start time. The shim:

1. reads `ATTEMPT_DIR/cmd.json` (only when no other user could have written it: `read_cmd`; argv, environment additions, workdir, MIG uuid, timeout, the
   state files' mode, the environment allow-list);
2. forks the waiter (`launch.waiter`), which forks the child into its own process group (stdin
   from /dev/null, stdout/stderr appended to `ATTEMPT_DIR/stdout.log` / `stderr.log`, cwd =
   workdir, env = its own environment (only the variables `env_passthrough` names, when set, and
   MIGBENCH_SIM under the simulator) plus the additions; the argv is exec'd directly, a shell only
   when the plan's argv is `/bin/sh -c ...`) and then becomes `mb-wait`, the child's parent, which
   records the child's exit status in `wait.json` whatever happens to the shim and the launcher;
3. under the simulated driver, attaches the child's PID to the run's MIG device
   with 0 MiB *before* the child execs (so the program's own, larger attach is never overwritten),
   making the run visible in NVML process lists and blocking the instance's destruction;
4. writes `child.json` (the child's PID, process group and start time, the waiter's PID and start
   time), lets the child start (which then marks `started`: an attempt without it never ran its
   command), forwards SIGTERM/SIGINT to the child's process group, enforces `timeout_s` (SIGTERM,
   then SIGKILL after `stop_grace_s`);
5. when the waiter has ended (observed with `waitid(..., WNOWAIT)`, reaped only after the outcome
   is written), takes the child's status from the waiter's record, classifies the outcome (exit
   code, or 128 + signal number; OOM when stderr shows a CUDA out-of-memory message), writes
   `exit.json` atomically (into the space the launcher reserved, `exit.reserve`, when the disk is
   full) and the same document to RESULT_FD (the launcher's pipe, which holds it even when the
   attempt directory is gone), then exits with the same code.

If the shim is killed, the waiter and the run live on: the launcher (its child subreaper, or a later
launcher that adopts the run by PID and start time) takes the outcome from `wait.json` and writes
`exit.json` with the same `exit_record`.

It imports little (`migbench.backend.select` for the simulated attach), to start fast.
"""

from __future__ import annotations

import fnmatch
import json
import os
import signal
import stat
import sys
import time
from pathlib import Path
from typing import Any, TypedDict

from migbench.backend.select import attach_run
from migbench.fsutil import configure_state_mode, create_private, reserve_file, trusted_uids, untrusted_reason, write_json_atomic
from migbench.launch.waiter import WAIT_NAME, WAIT_PENDING, exec_waiter, parse_record, read_record, start_ticks, wait_status
from migbench.names import printable

OOM_MARKERS = ("CUDA out of memory", "torch.OutOfMemoryError", "CUDA error: out of memory", "OutOfMemoryError")
"""stderr text that makes a failed run an OOM (torch's messages; `OutOfMemoryError` covers JAX/TF too)."""

STARTED_NAME = "started"
"""Made by the run's process once the shim lets it start (past the gate, just before exec): an attempt
without it never ran its command, whatever happened to its shim."""
PENDING_NAME = ".started.pending"

RESERVE_NAME = "exit.reserve"
"""Space the launcher sets aside in each attempt directory for `exit.json` (`fsutil.reserve_file`)."""

OOM_SCAN_BYTES = 4 << 20
"""How much of the end of stderr.log is scanned for OOM messages (bytes)."""


class CmdDoc(TypedDict):
    """`cmd.json`, what the shim starts (`RunSpec.cmd_doc` writes it; `read_cmd` reads it back, and
    reads each field defensively: a file of another version may lack one)."""

    version: int
    run_id: str
    attempt: int
    instance: str
    mig_uuid: str
    argv: list[str]
    shell: bool
    env: dict[str, str]
    workdir: str
    timeout_s: float | None
    stop_grace_s: float
    env_passthrough: list[str] | None
    state_mode: int


class ExitDoc(TypedDict):
    """`exit.json`, how an attempt ended (`exit_record`; `spec.outcome_of` reads it back).
    `returncode` is the exit code, or 128 + the signal."""

    version: int
    run_id: str | None
    attempt: int | None
    returncode: int
    exit_code: int | None
    signal: int | None
    oom: bool
    oom_line: str | None
    timed_out: bool
    forwarded_signals: list[int]
    exec_error: str | None
    child_pid: int
    started_at: float
    ended_at: float
    recorded_by: str


def find_oom(path: Path, limit: int = OOM_SCAN_BYTES) -> str | None:
    """The last stderr line that names a CUDA out-of-memory error, or None."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            data = f.read()
    except OSError:
        return None
    text = data.decode("utf-8", errors="replace")
    found = None
    for line in text.splitlines():
        if any(m in line for m in OOM_MARKERS):
            found = line.strip()[:500]
    return found


def _log(adir: Path, msg: str) -> None:
    """Append to `ADIR/shim.log`: never through a link, into a FIFO or device, or into a file of another user
    (the shim may be root's, logging why it refused a directory another user planted)."""
    try:
        fd = os.open(adir / "shim.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    except OSError:
        return
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_uid in trusted_uids() and st.st_nlink == 1:
            os.write(fd, f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {msg}\n".encode("utf-8", "replace"))
    except OSError:
        pass
    finally:
        os.close(fd)


def start_failure(exc: BaseException, where: str, program: str, workdir: str) -> tuple[str, int]:
    """Why a run could not start, in words (an OSError's reason, never a bytes repr of the path
    execvpe tried last), and the exit code a shell gives it: 126 found but not executable, 127 not
    found. The launcher does not retry either: the next attempt would fail the same way."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
    reason = reason[:1].lower() + reason[1:]
    program, workdir = printable(program), printable(workdir)  # the launcher and status show this message
    if where == "workdir":
        return f"migbench: cannot enter the workdir {workdir}: {reason}", 127
    if where == "program" and isinstance(exc, FileNotFoundError):
        found = "command not found on PATH" if "/" not in program else "no such file"
        return f"migbench: cannot start {program} in {workdir}: {found}", 127
    code = 126 if isinstance(exc, PermissionError) else 127
    return f"migbench: cannot start {program} in {workdir}: {reason}", code


def mark_started(adir: Path) -> None:
    """In the child, past the gate: record that the run starts (a rename, so a full disk cannot stop it)."""
    try:
        os.rename(adir / PENDING_NAME, adir / STARTED_NAME)
    except OSError:
        try:
            os.close(os.open(adir / STARTED_NAME, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
        except OSError:
            pass


def child_env(cmd: dict[str, Any], environ: dict[str, str]) -> dict[str, str]:
    """The run's environment: `environ` (filtered by `env_passthrough` when the plan sets it)
    plus the additions in `cmd.json`."""
    allow = cmd.get("env_passthrough")
    if allow is None:
        env = dict(environ)
    else:
        patterns = [str(p) for p in allow] + ["MIGBENCH_SIM"]  # the simulated GPU stays visible
        env = {k: v for k, v in environ.items() if any(fnmatch.fnmatchcase(k, p) for p in patterns)}
    env.update({str(k): str(v) for k, v in (cmd.get("env") or {}).items()})
    return env


def exit_record(
    adir: Path,
    cmd: dict[str, Any],
    pid: int,
    status: int,
    started_at: float,
    *,
    timed_out: bool = False,
    forwarded: list[int] | None = None,
    exec_error: str | None = None,
    recorded_by: str = "shim",
    ended_at: float | None = None,
) -> ExitDoc:
    """The `exit.json` document of the child's wait status: return code (exit code, or 128 +
    signal), OOM (from the end of stderr.log), timeout, forwarded signals."""
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    returncode = 128 + sig if sig is not None else int(code or 0)
    oom_line = find_oom(adir / "stderr.log") if returncode != 0 else None
    return {
        "version": 1,
        "run_id": cmd.get("run_id"),
        "attempt": cmd.get("attempt"),
        "returncode": returncode,
        "exit_code": code,
        "signal": sig,
        "oom": oom_line is not None,
        "oom_line": oom_line,
        "timed_out": timed_out,
        "forwarded_signals": list(forwarded or []),
        "exec_error": (exec_error or "")[:1000] or None,
        "child_pid": pid,
        "started_at": started_at,
        "ended_at": time.time() if ended_at is None else ended_at,
        "recorded_by": recorded_by,
    }


def record_exit(adir: Path, cmd: dict[str, Any], pid: int, status: int, started_at: float, **kw: Any) -> int:
    """Classify the child's wait status and write `exit.json` (into the reserved space when the
    disk is full). Returns the run's return code (exit code, or 128 + signal)."""
    doc = exit_record(adir, cmd, pid, status, started_at, **kw)
    write_json_atomic(adir / "exit.json", doc, reserve=adir / RESERVE_NAME)
    return int(doc["returncode"])


def _read_all(fd: int) -> bytes:
    """What is in a pipe now (non-blocking)."""
    os.set_blocking(fd, False)
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk


def _read_line(fd: int) -> bytes:
    """One line from a pipe (blocking), without its newline; what came before EOF when there is none."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            break
        data += chunk
    return data.rstrip(b"\n")


NOT_STARTED_RC = 123
"""The shim's exit code when its run never started because the waiter died before the start gate
opened (killed by `pkill -f migbench` while it still carried the shim's command line, say): the
launcher re-queues the run without counting an attempt."""


class NotStarted(RuntimeError):
    """The run was never let through the start gate."""


def _test_pause(moment: str, adir: Path | None = None) -> None:
    """For tests of the final moments: MIGBENCH_SHIM_TEST_PAUSE=<moment> (or `<moment>@attempt-N`,
    that attempt only) makes the process stop itself (SIGSTOP) there, so a test can kill it at
    exactly that point. Moments: `after-exit` (the shim: the run has ended and its waiter recorded
    it; exit.json is not written yet), `waiter-before-exec` (the waiter: the run is forked and held
    at the gate; the waiter is not `mb-wait` yet)."""
    want = os.environ.get("MIGBENCH_SHIM_TEST_PAUSE")
    if want == moment or (adir is not None and want == f"{moment}@{adir.name}"):
        os.kill(os.getpid(), signal.SIGSTOP)


def _run_child(adir: Path, argv: list[str], env: dict[str, str], workdir: str, fds: dict[str, int]) -> None:
    """In the run's process (the waiter's child): its own process group, its files, the gate, exec."""
    where = "setup"
    try:
        os.setpgid(0, 0)
        for name in ("gate_w", "exec_r", "pid_r", "pid_w", "dir"):
            try:
                os.close(fds[name])
            except OSError:
                pass  # the waiter closed it before forking
        os.dup2(fds["null"], 0)
        os.dup2(fds["out"], 1)
        os.dup2(fds["err"], 2)
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGPIPE, signal.SIGALRM, signal.SIGXFSZ, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        if os.read(fds["gate_r"], 1) != b"x":
            os._exit(126)  # the shim went away before letting the run start
        mark_started(adir)
        where = "workdir"
        os.chdir(workdir)
        where = "program"
        os.execvpe(argv[0], argv, env)
    except BaseException as exc:  # noqa: BLE001 - report any failure to start, then leave
        msg, rc = start_failure(exc, where, argv[0], workdir)
        try:
            os.write(fds["exec_w"], msg.encode("utf-8", "replace"))
            os.write(2, (msg + "\n").encode("utf-8", "replace"))
        finally:
            os._exit(rc)


def _fork_waiter(adir: Path, run_id: str, argv: list[str], env: dict[str, str], workdir: str, fds: dict[str, int]) -> int:
    """Fork the waiter, which forks the run and execs `mb-wait` (`launch.waiter`); as `mb-wait` it
    sends the run's PID and start time as the first line on `pid_w`. Returns the waiter's PID."""
    wpid = os.fork()
    if wpid != 0:
        return wpid
    try:  # the waiter
        os.close(fds["pid_r"])
        os.close(fds["gate_w"])
        pid = os.fork()
        if pid == 0:
            _run_child(adir, argv, env, workdir, fds)
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass  # the child did it already (or has exited)
        for name in ("gate_r", "exec_w", "out", "err", "null"):
            os.close(fds[name])
        _test_pause("waiter-before-exec", adir)
        exec_waiter(run_id, pid, fds["dir"], fds["pid_w"])
    finally:
        os._exit(125)


CMD_LIMIT = 16 << 20
"""The most bytes of `cmd.json` the shim reads."""


def read_cmd(adir: Path) -> dict[str, Any]:
    """`ADIR/cmd.json`, trusted only when no user but root and this one could have put it there: the
    attempt directory and every directory above it pass `fsutil.untrusted_reason`, the directory is
    opened without following a link and the file relative to it (O_NOFOLLOW), and the file is a
    regular file of ours (or root's) that no other user can write. Raises PermissionError otherwise."""
    why = untrusted_reason(adir, group_ok=True)  # the launcher checked the group with the configured mode
    if why is not None:
        raise PermissionError(f"refusing to run {adir}/cmd.json: {why}")
    dfd = os.open(adir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fd = os.open("cmd.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
    finally:
        os.close(dfd)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid not in trusted_uids() or st.st_mode & 0o022:
            raise PermissionError(f"refusing to run {adir}/cmd.json: not a regular file that only its owner (root or uid {os.geteuid()}) can write")
        return dict(json.loads(f.read(CMD_LIMIT)))


def _open_files(adir: Path) -> dict[str, int]:
    """The attempt's files and pipes for the waiter and the shim: the run's logs, /dev/null, the
    attempt directory, and the gate, exec and PID pipes (each `_r`/`_w`)."""
    fds = {
        "out": create_private(adir / "stdout.log"),
        "err": create_private(adir / "stderr.log"),
        "null": os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC),
        "dir": os.open(adir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC),
    }
    os.close(create_private(adir / PENDING_NAME, os.O_WRONLY))  # the child renames it: no new inode needed then
    try:
        reserve_file(adir / WAIT_PENDING)  # the waiter's record is written into it (a full disk cannot stop it)
    except OSError as exc:
        _log(adir, f"cannot reserve space for {WAIT_NAME}: {exc}")
    fds["gate_r"], fds["gate_w"] = os.pipe()
    fds["exec_r"], fds["exec_w"] = os.pipe()  # close-on-exec: EOF tells the shim the exec happened
    fds["pid_r"], fds["pid_w"] = os.pipe()  # the waiter: the run's PID, then its record
    return fds


def _handle_signals(adir: Path, pid: int, timeout_s: Any, grace_s: float) -> dict[str, Any]:
    """The shim's signal handlers: SIGTERM and SIGINT forwarded to the run's process group, the
    timeout's SIGALRM (SIGTERM, then SIGKILL after the grace), SIGHUP ignored. Returns the state
    the handlers keep: timed_out, stage, forwarded."""
    state: dict[str, Any] = {"timed_out": False, "stage": 0, "forwarded": []}

    def forward(signum: int, _frame: Any) -> None:
        state["forwarded"].append(signum)
        try:
            os.killpg(pid, signum)
        except OSError:
            pass

    def on_alarm(_signum: int, _frame: Any) -> None:
        state["timed_out"] = True
        state["stage"] += 1
        sig = signal.SIGTERM if state["stage"] == 1 else signal.SIGKILL
        _log(adir, f"timeout after {timeout_s} s: sending {sig.name} to process group {pid}")
        try:
            os.killpg(pid, sig)
        except OSError:
            pass
        if state["stage"] == 1:
            signal.setitimer(signal.ITIMER_REAL, max(grace_s, 0.01))

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return state


def _read_until_eof(fd: int) -> bytes:
    """Everything up to EOF on `fd` (blocking: the writer closes it)."""
    data = b""
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            return data
        data += chunk


def _write_exit(adir: Path, doc: ExitDoc, result_fd: int | None) -> None:
    """The attempt's exit.json, and the launcher's copy on `result_fd` (it holds even when the
    attempt directory is gone); a failure is logged, never raised."""
    try:
        write_json_atomic(adir / "exit.json", doc, reserve=adir / RESERVE_NAME)
    except OSError as exc:
        _log(adir, f"cannot write exit.json: {exc}")
    if result_fd is not None:
        try:
            os.write(result_fd, (json.dumps(doc) + "\n").encode())
        except OSError:
            pass


def run(adir: Path, result_fd: int | None = None) -> int:
    """Start, supervise and record one attempt. Returns the exit code (0-255)."""
    cmd = read_cmd(adir)
    configure_state_mode(cmd.get("state_mode"))
    argv = [str(a) for a in cmd["argv"]]
    env = child_env(cmd, dict(os.environ))
    workdir = str(cmd.get("workdir") or ".")
    timeout_s = cmd.get("timeout_s")
    grace_s = float(cmd.get("stop_grace_s") or 0.0)
    started_at = time.time()

    fds = _open_files(adir)
    wpid = _fork_waiter(adir, str(cmd.get("run_id") or "run"), argv, env, workdir, fds)
    # the shim
    for name in ("gate_r", "exec_w", "pid_w", "out", "err", "null", "dir"):
        os.close(fds[name])
    gate_w, exec_r, pid_r = fds["gate_w"], fds["exec_r"], fds["pid_r"]
    first = _read_line(pid_r).split()
    if len(first) != 2:
        os.close(gate_w)  # the run never starts
        os.waitpid(wpid, 0)
        raise NotStarted("the waiter process died before starting the run")
    pid, ticks = int(first[0]), int(first[1]) or None
    write_json_atomic(
        adir / "child.json",
        {
            "pid": pid,
            "pgid": pid,
            "start_ticks": ticks,
            "waiter_pid": wpid,
            "waiter_ticks": start_ticks(wpid),
            "shim_pid": os.getpid(),
            "started_at": started_at,
        },
    )
    problem = attach_run(str(cmd.get("mig_uuid") or ""), pid, Path(argv[0]).name or "run")
    if problem:
        _log(adir, problem)

    state = _handle_signals(adir, pid, timeout_s, grace_s)
    os.write(gate_w, b"x")
    os.close(gate_w)
    exec_error = _read_until_eof(exec_r)
    os.close(exec_r)
    if timeout_s:
        signal.setitimer(signal.ITIMER_REAL, float(timeout_s))
    signal.pthread_sigmask(signal.SIG_SETMASK, set())

    os.waitid(os.P_PID, wpid, os.WEXITED | os.WNOWAIT)  # observed, not reaped: its status stays for a subreaper
    signal.setitimer(signal.ITIMER_REAL, 0)
    record = parse_record(_read_all(pid_r)) or read_record(adir)
    os.close(pid_r)
    if record is None:  # the waiter died before its run: the launcher (the run's subreaper now) takes it over
        _log(adir, f"the waiter (PID {wpid}) ended without recording the run (PID {pid}); the launcher takes the run over")
        os.waitpid(wpid, 0)
        return 125
    _test_pause("after-exit")
    doc = exit_record(
        adir,
        cmd,
        pid,
        wait_status(record),
        started_at,
        timed_out=bool(state["timed_out"]),
        forwarded=state["forwarded"],
        exec_error=exec_error.decode("utf-8", "replace") or None,
        ended_at=float(record.get("ended_at") or time.time()),
    )
    _write_exit(adir, doc, result_fd)
    os.waitpid(wpid, 0)
    return int(doc["returncode"]) & 0xFF


def main(argv: list[str] | None = None) -> int:
    # Hold SIGTERM/SIGINT until the handlers that forward them to the child are in place.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2) or (len(args) == 2 and not args[1].isdigit()):
        print("usage: python -m migbench.launch.shim ATTEMPT_DIR [RESULT_FD]", file=sys.stderr)
        return 2
    adir = Path(args[0])
    result_fd = int(args[1]) if len(args) == 2 else None
    if result_fd is not None:
        try:
            os.set_inheritable(result_fd, False)  # neither the waiter nor the run keeps it
        except OSError:
            result_fd = None
    try:
        return run(adir, result_fd)
    except NotStarted as exc:
        _log(adir, f"the run never started: {exc}")
        return NOT_STARTED_RC
    except Exception as exc:  # noqa: BLE001 - the launcher reads shim.log when exit.json is missing
        _log(adir, f"shim failed: {type(exc).__name__}: {exc}")
        return 125


if __name__ == "__main__":
    sys.exit(main())
