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
        child.json               the child's PID / process group (written by the shim when it forks)
        stdout.log, stderr.log   the child's output
        shim.log                 the shim's own messages
        exit.json                the outcome (written atomically by the shim when the child is gone)

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
import shlex
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migbench.errors import InputError
from migbench.fsutil import write_json_atomic  # noqa: F401  (re-exported for the launcher)
from migbench.plan import Plan, PlanRun

RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_MACRO_RE = re.compile(r"\$\{(run_id|run_dir|attempt)\}")

def check_run_id(run_id: str) -> str:
    """Run ids name directories: refuse anything that is not a plain file name."""
    if not RUN_ID_RE.fullmatch(run_id) or run_id in (".", ".."):
        raise InputError(
            f"run id {run_id!r} cannot name a directory",
            hint="run ids are letters, digits, '.', '_' and '-'; regenerate the plan with `migbench plan`",
        )
    return run_id


def run_dir(state_dir: Path, run_id: str) -> Path:
    """`<state dir>/<run id>/` (absolute)."""
    return (Path(state_dir) / check_run_id(run_id)).absolute()


def attempt_dir(state_dir: Path, run_id: str, attempt: int) -> Path:
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

    @property
    def resume(self) -> bool:
        return self.attempt > 1

    def cmd_doc(self) -> dict[str, Any]:
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
        }


def build_spec(
    plan: Plan,
    run: PlanRun,
    *,
    instance: str,
    mig_uuid: str,
    attempt: int,
    state_dir: Path,
) -> RunSpec:
    """The argv and environment of attempt `attempt` (1-based) of `run` on `instance` (bound to `mig_uuid`).

    Environment additions, later ones winning: the plan's `launch.env`, the run's `env`, then
    CUDA_VISIBLE_DEVICES=<MIG uuid> (exactly one device), CUDA_DEVICE_ORDER=PCI_BUS_ID,
    MIGBENCH_RUN_ID, MIGBENCH_RUN_DIR, MIGBENCH_ATTEMPT and, from the second attempt on,
    MIGBENCH_RESUME=1."""
    rdir = run_dir(state_dir, run.id)
    values = {"run_id": run.id, "run_dir": str(rdir), "attempt": str(int(attempt))}
    protected = _value_forms(run.params)
    argv = tuple(substitute(a, values, protected, quote=run.shell and i == len(run.argv) - 1) for i, a in enumerate(run.argv))
    env: dict[str, str] = {}
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
    if attempt > 1:
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
    )


def _workdir(plan: Plan, run: PlanRun) -> Path:
    """The run's workdir; a relative one is taken from the plan file's directory."""
    wd = Path(run.workdir).expanduser()
    if not wd.is_absolute():
        base = Path(plan.path).resolve().parent if plan.path else Path.cwd()
        wd = base / wd
    return wd


def _symlink_atomic(target: str, link: Path) -> None:
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    os.symlink(target, tmp)
    os.replace(tmp, link)


def prepare_attempt(spec: RunSpec) -> None:
    """Create the attempt directory with `cmd.json`, the run's `params.json`, and point `latest`
    (and the run dir's `stdout.log` / `stderr.log`) at it."""
    rdir = Path(spec.run_dir)
    adir = Path(spec.attempt_dir)
    adir.mkdir(parents=True, exist_ok=True)
    params = rdir / "params.json"
    if not params.exists():
        write_json_atomic(params, {"run_id": spec.run_id, "params": spec.params})
    write_json_atomic(adir / "cmd.json", spec.cmd_doc())
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


def outcome_of(doc: dict[str, Any] | None) -> Outcome | None:
    """The outcome in an `exit.json` document, or None when there is none yet."""
    if doc is None or "returncode" not in doc:
        return None
    return Outcome(
        returncode=int(doc["returncode"]),
        exit_code=doc.get("exit_code"),
        signal=doc.get("signal"),
        oom=bool(doc.get("oom")),
        oom_line=doc.get("oom_line"),
        timed_out=bool(doc.get("timed_out")),
        exec_error=doc.get("exec_error"),
        ended_at=float(doc.get("ended_at") or time.time()),
    )
