"""Helpers for the launcher tests: a simulated host, a toy-trainer sweep planned and applied on it,
and a launcher run as a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from migbench.apply import apply_plan
from migbench.backend.sim.host import init_host
from migbench.plan import Plan
from migbench.planner import FleetSpec, SolveOptions, build_fleet, make_plan
from migbench.state import load_bindings, state_dir_for
from migbench.sweep import load_sweep
from tests.support import REPO
from tests.support.cli import Result, migbench
from tests.support.simhelp import sim_backend
from tests.support.statedir import sd_of

TOY = REPO / "examples" / "toy_trainer.py"
PY = sys.executable
TOY_CMD = f"{PY} {TOY}"


@dataclass
class Rig:
    """One sweep planned and applied on a fresh simulated host, ready to launch."""

    tmp: Path
    sim: Path
    plan_path: Path
    state_dir: Path
    ledger: Path
    env: dict[str, str]
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def plan(self) -> Plan:
        return Plan.load(self.plan_path)

    # -- launchers ---------------------------------------------------------------------------------
    def start(self, *args: str, cli: bool = False, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        """A launcher subprocess in the foreground (its own process group, so tests can signal it)."""
        cmd = [PY, "-m", "migbench", "launch", str(self.plan_path), *args] if cli else [PY, "-m", "migbench.launch", str(self.plan_path), *args]
        env = dict(self.env, **(extra_env or {}))
        log = open(self.tmp / f"launcher-{len(self.procs)}.log", "wb")
        p = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp, start_new_session=True)
        log.close()
        self.procs.append(p)
        return p

    def launch(self, *args: str, timeout: float = 60.0, **kw) -> tuple[int, str]:  # type: ignore[no-untyped-def]
        p = self.start(*args, **kw)
        rc = p.wait(timeout=timeout)
        return rc, self.output(p)

    def output(self, p: subprocess.Popen) -> str:
        i = self.procs.index(p)
        return (self.tmp / f"launcher-{i}.log").read_text(errors="replace")

    def cli(self, *args: str) -> Result:
        """`migbench ARGS` in the plan's directory (where `./runs/` is), in this process."""
        keys = ("MIGBENCH_SIM", "MIGBENCH_POLL_S", "MIGBENCH_MEM_POLL_S", "TOY_LEDGER", "HOME", "MIGBENCH_WIDTH")
        return migbench(*args, cwd=self.plan_path.parent, env={k: self.env[k] for k in keys})

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        # runs whose launcher was killed: their shims live in their own sessions
        for row in self.rows().values():
            pg = row.get("child_pgid")
            if row["state"] not in ("starting", "running") or not pg:
                continue
            try:  # only if that process group is still this run (PIDs are reused)
                if psutil.Process(int(pg)).environ().get("MIGBENCH_RUN_ID") == row["id"]:
                    os.killpg(int(pg), signal.SIGKILL)
            except (psutil.Error, ProcessLookupError, PermissionError):
                pass
        kill_leftovers(self.tmp)

    # -- state -------------------------------------------------------------------------------------
    @property
    def db(self) -> Path:
        return self.state_dir / "launch.db"

    def rows(self) -> dict[str, dict]:
        return db_runs(self.db)

    def attempts(self) -> list[dict]:
        return db_query(self.db, "SELECT * FROM attempts ORDER BY run_id, attempt")

    def launcher_row(self) -> dict:
        rows = db_query(self.db, "SELECT * FROM launcher")
        return rows[0] if rows else {}

    def states(self) -> dict[str, str]:
        return {k: v["state"] for k, v in self.rows().items()}

    def ledger_lines(self) -> list[str]:
        return self.ledger.read_text().splitlines() if self.ledger.exists() else []

    def toy_record(self, run_id: str, attempt: int = 1) -> dict:
        return json.loads((self.state_dir / run_id / f"toy-attempt-{attempt}.json").read_text())

    def bindings(self) -> dict:
        return load_bindings(self.plan) or {}

    def wait_for(self, cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
        wait_until(cond, timeout, lambda: f"{what}; states: {self.states()}")


def as_from_a_terminal() -> None:
    """`preexec_fn` for a command a test interrupts with Ctrl-C: SIGINT and SIGQUIT at their default
    action, as a terminal starts it. A test run started in the background by a non-interactive
    shell (`pytest ... &`) has both ignored, every process it starts inherits that, and Python then
    installs no Ctrl-C handler (such a command rightly ignores Ctrl-C)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def wait_until(cond: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    """Poll `cond` (a launch.db being written may be busy: that is a no) until it holds; after
    `timeout` seconds fail, saying `what()` was awaited and how things stand."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except sqlite3.Error:
            pass
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what()}")


def gone(pid: int) -> bool:
    """The process `pid` has ended (a zombie not yet reaped counts as ended)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def pkill_migbench(sim: Path, procs: Sequence[subprocess.Popen] = (), timeout: float = 60.0) -> list[int]:
    """`pkill -9 -f migbench`, limited to the processes whose MIGBENCH_SIM is `sim` (one test's or one
    trial's host): every process whose command line holds "migbench", but not this one or its
    parents. Reaps those of `procs` it killed and waits until every killed one is gone; their PIDs."""
    me = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    killed = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.pid in me or "migbench" not in " ".join(p.info["cmdline"] or []):
                continue
            if p.environ().get("MIGBENCH_SIM") != str(sim):
                continue
            os.kill(p.pid, signal.SIGKILL)
            killed.append(p.pid)
        except (psutil.Error, ProcessLookupError):
            continue
    for p in procs:
        if p.pid in killed:
            p.wait()
    wait_until(lambda: all(gone(pid) for pid in killed), timeout, lambda: "the killed processes gone")
    return killed


def kill_leftovers(root: Path) -> None:
    """Kill every process a test left behind under `root`: launchers it detached (`run --detach`,
    `submit`) and their shims, waiters and runs, found by their command line, working directory or
    `MIGBENCH_RUN_DIR` naming a path below `root` (a failed assertion skips a test's own clean-up)."""
    mark = str(root)

    def below(text: str) -> bool:
        return text == mark or f"{mark}/" in text

    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        if proc.pid == os.getpid():
            continue
        try:
            where = [*(proc.info["cmdline"] or []), proc.info["cwd"] or "", proc.environ().get("MIGBENCH_RUN_DIR") or ""]
            if any(below(w) for w in where):
                proc.kill()
        except (psutil.Error, PermissionError):
            pass


def db_query(db: Path, sql: str) -> list[dict]:
    """Rows of a query on a launch.db, read-only (a launcher may be writing it)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute(sql)]
    finally:
        con.close()


def db_runs(db: Path) -> dict[str, dict]:
    """A launch.db's runs by id, in start order ({} before the launch made it)."""
    return {r["id"]: r for r in db_query(db, "SELECT * FROM runs ORDER BY ord")} if db.exists() else {}


def make_rig(tmp: Path, monkeypatch, sweep_yaml: str, *, model: str = "A100-SXM4-80GB", gpus: int = 1) -> Rig:  # type: ignore[no-untyped-def]
    """Write `sweep_yaml` (with `{toy}` standing for the toy trainer command), plan it for `gpus` x
    `model`, create the simulated host and apply the plan to it."""
    sim = tmp / "sim"
    init_host(sim, model, gpus, mig=True)
    monkeypatch.setenv("MIGBENCH_SIM", str(sim))
    home = tmp / "home"
    home.mkdir()
    work = tmp / "work"
    work.mkdir()
    sweep_file = work / "sweep.yaml"
    sweep_file.write_text(sweep_yaml.replace("{toy}", TOY_CMD))
    sweep = load_sweep(sweep_file)
    plan = make_plan(sweep, build_fleet([FleetSpec(model, gpus)]), SolveOptions(time_limit_s=5.0))
    plan_path = work / f"{sweep.name}.plan.yaml"
    plan.save(plan_path)
    plan = Plan.load(plan_path)
    apply_plan(plan, sim_backend(sim), confirm=None, state_dir=sd_of(plan))
    ledger = tmp / "ledger.txt"
    env = dict(os.environ)
    env.update(
        MIGBENCH_SIM=str(sim),
        MIGBENCH_POLL_S="0.05",
        MIGBENCH_MEM_POLL_S="0.1",
        TOY_LEDGER=str(ledger),
        HOME=str(home),
        MIGBENCH_WIDTH="200",
    )
    env.pop("MIGBENCH_LAUNCH_CRASH_AT", None)
    return Rig(tmp, sim, plan_path, state_dir_for(plan), ledger, env)


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and directory under `root` with its size and mtime (ns)."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_size if p.is_file() else -1, st.st_mtime_ns)
    return out
