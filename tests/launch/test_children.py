"""Children: the live attempts' processes, reaped and adopted into `Ending`s (small real processes,
no shim, no plan)."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

import migbench.launch.children as children_module
from migbench.launch.children import Active, Children
from migbench.launch.shim import STARTED_NAME

PY = sys.executable


def _adir(tmp: Path, name: str, *files: str) -> Path:
    d = tmp / name / "attempt-1"
    d.mkdir(parents=True)
    for f in files:
        (d / f).write_text("{}")
    return d


def _ended(code: str) -> subprocess.Popen:
    p = subprocess.Popen([PY, "-c", code])
    p.wait(timeout=30)
    return p


def test_reap_reports_each_ended_attempt_once_and_keeps_the_live_ones(tmp_path):
    ch = Children(lambda text: None, 0.1)
    live = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"])
    try:
        ok = Active("ok", 1, "i", _adir(tmp_path, "ok"), 0, None, popen=_ended("pass"))
        killed = Active("killed", 1, "i", _adir(tmp_path, "killed", "cmd.json"), 0, None, popen=_ended("import os; os.kill(os.getpid(), 9)"))
        adopted = Active("adopted", 1, "i", _adir(tmp_path, "adopted"), 0, None)  # its shim (PID 0) is gone
        (adopted.adir / "exit.json").write_text(json.dumps({"returncode": 3, "exit_code": 3, "ended_at": 1.0}))
        running = Active("running", 1, "i", _adir(tmp_path, "running"), live.pid, None, popen=live)  # type: ignore[arg-type]
        for a in (ok, killed, adopted, running):
            ch.active[a.run_id] = a
        ends = {e.a.run_id: e for e in ch.reap()}
        assert set(ends) == {"ok", "killed", "adopted"} and list(ch.active) == ["running"]
        assert ends["ok"].kind == "exit" and ends["ok"].res is not None and ends["ok"].res.returncode == 0 and ends["ok"].rc == 0
        assert ends["killed"].kind == "lost" and ends["killed"].why == "the shim was killed (SIGKILL) before the run started"
        assert ends["adopted"].kind == "exit" and ends["adopted"].res is not None and ends["adopted"].res.returncode == 3
        assert list(ch.reap()) == []
    finally:
        live.kill()
        live.wait()


def test_a_shim_that_died_after_its_run_started_leaves_an_unknown_outcome(tmp_path):
    ch = Children(lambda text: None, 0.1)
    a = Active("r", 1, "i", _adir(tmp_path, "r", "cmd.json", STARTED_NAME), 0, None, popen=_ended("raise SystemExit(1)"))
    ch.active["r"] = a
    (end,) = ch.reap()
    assert end.kind == "unknown" and "its shim ended (code 1)" in end.why


def test_adopt_sorts_what_an_earlier_launcher_left(tmp_path):
    said: list[str] = []
    ch = Children(said.append, 0.1)
    me = (os.getpid(), psutil.Process().create_time())
    alive = ch.adopt("alive", 1, "i", _adir(tmp_path, "alive", "cmd.json"), me, starting=False, stopping=False)
    done = _adir(tmp_path, "done", "cmd.json")
    (done / "exit.json").write_text(json.dumps({"returncode": 1, "exit_code": 1, "ended_at": 1.0}))
    taken = ch.adopt("done", 1, "i", done, (None, None), starting=False, stopping=True)
    lost = ch.adopt("lost", 1, "i", _adir(tmp_path, "lost", "cmd.json"), (None, None), starting=True, stopping=False)
    unknown = ch.adopt("unknown", 1, "i", _adir(tmp_path, "unknown", "cmd.json", STARTED_NAME), (None, None), starting=False, stopping=False)
    vanished = ch.adopt("vanished", 1, "i", tmp_path / "nowhere" / "attempt-1", (None, None), starting=False, stopping=False)
    assert alive.kind == "adopted" and list(ch.active) == ["alive"] and ch.active["alive"].shim_pid == os.getpid()
    assert taken.kind == "exit" and taken.res is not None and taken.res.returncode == 1 and taken.a.stop_signaled
    assert lost.kind == "lost" and unknown.kind == "unknown" and vanished.kind == "unknown" and "deleted" in vanished.why


def test_the_run_process_is_told_once_and_its_memory_attributed(tmp_path):
    seen: list[str] = []
    ch = Children(lambda text: None, 0.1, on_child=lambda a: seen.append(a.run_id))
    adir = _adir(tmp_path, "r")
    (adir / "child.json").write_text(json.dumps({"pid": os.getpid(), "pgid": os.getpgid(0)}))
    a = Active("r", 1, "i", adir, 0, None)
    ch.active["r"] = a
    other = Active("s", 1, "i", _adir(tmp_path, "s"), 0, None)  # no process known: nothing is its own
    ch.active["s"] = other
    used = ch.usage({"MIG-r": [(os.getpid(), 700), (999999999, 5)], "MIG-s": [(999999999, 5)]}, {"r": "MIG-r", "s": "MIG-s"}.get)
    assert used == {"r": 700} and seen == ["r"] and (a.child_pid, a.child_pgid) == (os.getpid(), os.getpgid(0))
    ch.mark_shared("i")
    assert a.shared and other.shared


def test_an_orphan_is_signalled_through_its_process_group(tmp_path):
    ch = Children(lambda text: None, 0.1)
    p = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        a = Active("r", 1, "i", _adir(tmp_path, "r"), 0, None, child_pid=p.pid, child_pgid=p.pid, orphan=True)
        ch.active["r"] = a
        ch.signal_all(signal.SIGTERM)
        assert p.wait(timeout=30) == -signal.SIGTERM and a.stop_signaled
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_process_supervision_never_reads_the_plan():
    """Issue 23 item 3: the process part owns the live attempts and needs nothing of the plan."""
    tree = ast.parse(Path(children_module.__file__).read_text())
    names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in names if m and (m == "migbench.plan" or m.startswith("migbench.launch.admission"))}
