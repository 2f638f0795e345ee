"""What one attempt of a run starts with: argv, environment additions, workdir, and where its files go.

Dry runs and real starts both go through `build_spec`, so `launch --dry-run` prints exactly what a
start would use.

## Files of a run (under the state dir, `<plan dir>/runs/<sweep name>/`)

    <run id>/                    MIGBENCH_RUN_DIR: the run's own directory, kept across attempts
      params.json                the run's parameters
      latest -> attempt-<n>      symlink to the newest attempt
      stdout.log -> latest/stdout.log
      stderr.log -> latest/stderr.log
      attempt-<n>/
        cmd.json                 argv, environment additions, workdir, MIG uuid, timeout (written by the launcher)
        child.json               the child's PID / process group / start time, its waiter's PID / start time (by the shim)
        started                  made by the child when the shim lets it run (absent: it never ran)
        stdout.log, stderr.log   the child's output
        shim.log                 the shim's own messages
        exit.reserve             space set aside for exit.json (so a full disk cannot lose an outcome)
        exit.json                the outcome (written atomically by the shim when the child is gone)
        .wait.pending            space reserved for wait.json (by the shim, before the run starts)
        wait.json                the run's exit status, written atomically by its parent `mb-wait` (launch.waiter)

Every file and directory here is created with the state mode (0600 / 0700 unless configured:
`migbench.fsutil`). An attempt directory whose run started (`started` or `exit.json`) is never
written again: a later start gets the next number.

## Launch-time macros

`${run_id}`, `${run_dir}` and `${attempt}` are left verbatim by the sweep for the launcher. The plan's
argv is already rendered, so a parameter *value* that happens to read `${run_dir}` is
indistinguishable by text alone from a macro the template wrote. The launcher therefore treats an
occurrence as a macro only when it does not overlap any occurrence, in the same argv element or
env value, of the text of one of the run's parameter values that itself holds `${` (in its plain,
shell-quoted or JSON-escaped form): a value is never re-interpreted. The cost, only for a run
whose parameter value holds macro text: a macro the template wrote into an element that also
contains that text stays literal. (The plan keeps no template; recording macro positions in the
plan would lift this.) In `shell: true` commands the substituted text is `shlex.quote`d.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import stat
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migbench.errors import InputError
from migbench.fsutil import make_dirs, require_trusted, reserve_file, state_file_mode, write_json_atomic, write_text_atomic
from migbench.launch.shim import RESERVE_NAME, STARTED_NAME, CmdDoc
from migbench.launch.wandbenv import CONFIG_NAME, config_text, wandb_env
from migbench.names import SAFE_NAME_RE as RUN_ID_RE
from migbench.plan import Plan, PlanRun

_MACRO_RE = re.compile(r"\$\{(run_id|run_dir|attempt)\}")


def check_run_id(run_id: str) -> str:
    """Run ids name directories: refuse anything that is not a plain file name."""
    if not RUN_ID_RE.fullmatch(run_id) or run_id in (".", ".."):
        raise InputError(
            f"run id {run_id!r} cannot name a directory",
            hint="run ids are letters, digits, '.', '_' and '-'; regenerate the plan with `migbench plan`",
        )
    return run_id


def run_dir(state_dir: str | os.PathLike[str], run_id: str) -> Path:
    """`<state dir>/<run id>/` (absolute)."""
    return (Path(state_dir) / check_run_id(run_id)).absolute()


def attempt_dir(state_dir: str | os.PathLike[str], run_id: str, attempt: int) -> Path:
    return run_dir(state_dir, run_id) / f"attempt-{int(attempt)}"


def _value_forms(params: Mapping[str, Any]) -> list[str]:
    """Every text form in which a parameter value may appear inside an argv element or env value."""
    forms: set[str] = set()
    for v in params.values():
        s = str(v)  # sweep.render_value
        if "${" not in s:
            continue  # a value without macro text cannot hide a macro
        forms.update({s, shlex.quote(s), json.dumps(s)[1:-1], json.dumps(s, ensure_ascii=False)[1:-1]})
    return sorted((f for f in forms if f), key=lambda f: (-len(f), f))


def substitute(text: str, values: Mapping[str, str], protected: Iterable[str] = (), *, quote: bool = False) -> str:
    """Replace `${run_id}`, `${run_dir}`, `${attempt}` in `text` with `values`, except where the
    occurrence overlaps one of the `protected` strings (parameter values): those stay literal."""
    if "${" not in text:
        return text
    covered = bytearray(len(text))
    for p in protected:
        i = text.find(p)
        while i >= 0:
            covered[i : i + len(p)] = b"\x01" * len(p)
            i = text.find(p, i + 1)
    out: list[str] = []
    last = 0
    for m in _MACRO_RE.finditer(text):
        if any(covered[m.start() : m.end()]):
            continue
        v = values[m.group(1)]
        out.append(text[last : m.start()])
        out.append(shlex.quote(v) if quote else v)
        last = m.end()
    out.append(text[last:])
    return "".join(out)


@dataclass(frozen=True)
class RunSpec:
    """Everything one attempt starts with. `env` holds only the additions to the launcher's
    environment (sorted by name); `timeout_s` / `stop_grace_s` are seconds."""

    run_id: str
    attempt: int
    instance: str  # plan instance key, e.g. "0:3g.40gb@4"
    mig_uuid: str
    argv: tuple[str, ...]
    env: dict[str, str]
    workdir: str
    run_dir: str
    attempt_dir: str
    shell: bool = False
    timeout_s: float | None = None
    stop_grace_s: float = 30.0
    params: dict[str, Any] = field(default_factory=dict)
    env_passthrough: tuple[str, ...] | None = None  # None: the launcher's whole environment

    @property
    def resume(self) -> bool:
        return self.env.get("MIGBENCH_RESUME") == "1"

    def cmd_doc(self) -> CmdDoc:
        """`cmd.json`: what the shim starts."""
        return {
            "version": 1,
            "run_id": self.run_id,
            "attempt": self.attempt,
            "instance": self.instance,
            "mig_uuid": self.mig_uuid,
            "argv": list(self.argv),
            "shell": self.shell,
            "env": dict(self.env),
            "workdir": self.workdir,
            "timeout_s": self.timeout_s,
            "stop_grace_s": self.stop_grace_s,
            "env_passthrough": None if self.env_passthrough is None else list(self.env_passthrough),
            "state_mode": state_file_mode(),
        }


def build_spec(
    plan: Plan,
    run: PlanRun,
    *,
    instance: str,
    mig_uuid: str,
    attempt: int,
    state_dir: str | os.PathLike[str],
    resume: bool | None = None,
) -> RunSpec:
    """The argv and environment of attempt `attempt` (1-based) of `run` on `instance` (bound to `mig_uuid`).

    The run sees the launcher's environment (only the variables `launch.env_passthrough` names,
    when it is set; the shim filters) plus these additions, later ones winning: the plan's
    `launch.env`, the run's `env`, then
    CUDA_VISIBLE_DEVICES=<MIG uuid> (exactly one device), CUDA_DEVICE_ORDER=PCI_BUS_ID,
    MIGBENCH_RUN_ID, MIGBENCH_RUN_DIR, MIGBENCH_ATTEMPT and, when `resume` (default: from the
    second attempt on; the launcher passes whether an earlier attempt really started its run),
    MIGBENCH_RESUME=1. Under all of them, the W&B variables (`launch.wandbenv`) the user's
    environment, `launch.env` and the run's `env` do not set."""
    rdir = run_dir(state_dir, run.id)
    values = {"run_id": run.id, "run_dir": str(rdir), "attempt": str(int(attempt))}
    protected = _value_forms(run.params)
    argv = tuple(substitute(a, values, protected, quote=run.shell and i == len(run.argv) - 1) for i, a in enumerate(run.argv))
    env: dict[str, str] = {}
    user = {**os.environ, **{str(k): "" for k in (*plan.launch.env, *run.env)}}
    profile = instance.split(":", 1)[-1].split("@", 1)[0]
    env.update(wandb_env(plan.name, run.id, run.group, rdir, profile, user))
    for k, v in plan.launch.env.items():
        env[str(k)] = substitute(str(v), values)
    for k, v in run.env.items():
        env[str(k)] = substitute(str(v), values, protected)
    env.update(
        {
            "CUDA_VISIBLE_DEVICES": mig_uuid,
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "MIGBENCH_RUN_ID": run.id,
            "MIGBENCH_RUN_DIR": str(rdir),
            "MIGBENCH_ATTEMPT": str(int(attempt)),
        }
    )
    if (attempt > 1) if resume is None else resume:
        env["MIGBENCH_RESUME"] = "1"
    else:
        env.pop("MIGBENCH_RESUME", None)
    grace = plan.launch.stop_grace_s
    return RunSpec(
        run_id=run.id,
        attempt=int(attempt),
        instance=instance,
        mig_uuid=mig_uuid,
        argv=argv,
        env=dict(sorted(env.items())),
        workdir=str(_workdir(plan, run)),
        run_dir=str(rdir),
        attempt_dir=str(rdir / f"attempt-{int(attempt)}"),
        shell=run.shell,
        timeout_s=None if run.timeout_s is None else float(run.timeout_s),
        stop_grace_s=float(grace),
        params=dict(run.params),
        env_passthrough=plan.launch.env_passthrough,
    )


def _workdir(plan: Plan, run: PlanRun) -> Path:
    """The run's workdir; a relative one is taken from the plan file's directory."""
    wd = Path(run.workdir).expanduser()
    if not wd.is_absolute():
        base = Path(plan.path).resolve().parent if plan.path else Path.cwd()
        wd = base / wd
    return wd


def _symlink_atomic(target: str, link: Path) -> None:
    """Point `link` at `target` through a uniquely named temporary link and a rename."""
    for _ in range(100):
        tmp = link.with_name(f".{link.name}.{secrets.token_hex(8)}.tmp")
        try:
            os.symlink(target, tmp)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 collisions of 64 random bits
        raise FileExistsError(f"cannot make a temporary link next to {link}")
    try:
        os.replace(tmp, link)
    except OSError:
        os.unlink(tmp)
        raise


STOPPED_NAME = "stop.json"  # in an attempt directory: the launcher signalled its run to stop


def record_stop(adir: Path, sig: int) -> None:
    """Record in the attempt directory, before the launcher signals its run to stop, that it did:
    the run directories are launch.db's second record, and a run a stop interrupted must be rebuilt
    as `interrupted` (resumed), not as a run that failed by itself. Best effort: launch.db records
    it too, and a full disk must not keep the stop from being sent."""
    try:
        write_json_atomic(adir / STOPPED_NAME, {"signal": int(sig), "at": time.time()})
    except OSError:
        pass


def attempt_stopped(adir: Path) -> bool:
    """Whether the launcher recorded that it signalled the run of the attempt in `adir` to stop."""
    try:
        return stat.S_ISREG(os.lstat(adir / STOPPED_NAME).st_mode)
    except OSError:
        return False


def attempt_started(adir: Path) -> bool:
    """Whether the attempt in `adir` ran its command (its process passed the shim's gate), or has
    an outcome."""
    return (adir / STARTED_NAME).exists() or (adir / "exit.json").exists()


def prepare_attempt(spec: RunSpec) -> None:
    """Create the attempt directory with `cmd.json` and the space reserved for `exit.json`, the
    run's `params.json`, and point `latest` (and the run dir's `stdout.log` / `stderr.log`) at it.
    An attempt directory that never started its run (a launcher died before its shim forked) is
    reused; one that did is refused (FileExistsError), so a recorded attempt is never overwritten.
    Raises OSError (ENOSPC on a full disk) before any process exists."""
    rdir = Path(spec.run_dir)
    adir = Path(spec.attempt_dir)
    require_trusted(rdir.parent, "state directory")  # what the shim runs must be ours alone (fsutil.untrusted_reason)
    make_dirs(adir)
    require_trusted(rdir.parent, "state directory")  # again: another user may have made a part of it in between
    if attempt_started(adir):
        raise FileExistsError(f"{adir} holds an attempt that ran; the launcher's state is behind its run directories")
    params = rdir / "params.json"
    if not params.exists():
        write_json_atomic(params, {"run_id": spec.run_id, "params": spec.params})
    if not (rdir / CONFIG_NAME).exists():  # what WANDB_CONFIG_PATHS names (launch/wandbenv.py)
        write_text_atomic(rdir / CONFIG_NAME, config_text(spec.params), mode=state_file_mode())
    reserve = adir / RESERVE_NAME
    if not reserve.exists():
        reserve_file(reserve)
    write_json_atomic(adir / "cmd.json", spec.cmd_doc(), mode=state_file_mode() & ~0o022)  # only its owner may change what runs
    _symlink_atomic(adir.name, rdir / "latest")
    for name in ("stdout.log", "stderr.log"):
        link = rdir / name
        if not link.is_symlink():
            _symlink_atomic(f"latest/{name}", link)


@dataclass
class Outcome:
    """What `exit.json` says of one attempt (written by the shim)."""

    returncode: int | None
    exit_code: int | None
    signal: int | None
    oom: bool
    oom_line: str | None
    timed_out: bool
    exec_error: str | None
    ended_at: float


def outcome_of(doc: Mapping[str, Any] | None) -> Outcome | None:
    """The outcome in an `exit.json` document, or None when there is none yet (or it is not one)."""
    if doc is None or "returncode" not in doc:
        return None
    try:
        return Outcome(
            returncode=int(doc["returncode"]),
            exit_code=None if doc.get("exit_code") is None else int(doc["exit_code"]),
            signal=None if doc.get("signal") is None else int(doc["signal"]),
            oom=bool(doc.get("oom")),
            oom_line=None if doc.get("oom_line") is None else str(doc["oom_line"]),
            timed_out=bool(doc.get("timed_out")),
            exec_error=None if doc.get("exec_error") is None else str(doc["exec_error"]),
            ended_at=float(doc.get("ended_at") or time.time()),
        )
    except (TypeError, ValueError, OverflowError):
        return None
