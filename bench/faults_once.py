"""The exactly-once campaign of issue 19 (items 1-4): `python bench/faults.py --once` (a few minutes).

One simulated A100-80GB with a 3-run sweep planned and applied once; each trial is a fresh launch
state (`--state-dir`) with its own ledger. Every run's command logs `<run> <attempt> start` when it
begins and `<run> <attempt> done` when it ends (after a sleep of 0.2, 0.5 or 0.9 s), with `retries:
0`, so any second start is a second execution. Fault classes, seeded:

- **adopted-shim kill**: `kill -9` of the launcher at a random moment, a new launcher adopts the
  runs, then `kill -9` of a random adopted shim at a random moment;
- **launcher + shims together**: every process of the launch whose command line holds "migbench"
  (what `pkill -9 -f migbench` hits) killed at a random moment, a random pause (runs finish while
  nothing of migbench lives), a new launcher; in a third of the trials a second such kill;
- **final-moment shim kill**: each shim stops itself after its run ended, before `exit.json`
  (MIGBENCH_SHIM_TEST_PAUSE=after-exit), and is killed there;
- **state dir deleted after finish**: the launcher stopped (SIGSTOP), the runs finish, the state
  directory deleted, the launcher continued; then bindings restored and a new launch;
- **+ a running run's waiter killed**: as "together", and the waiter (`mb-wait`) of a run still at
  work killed too: the one case where an outcome is lost by design; such runs must end `unknown`
  (counted in "expected"), never re-run.

After each trial a last plain launch runs to the end. Per class: trials, runs executed twice (a
second `start` line: must be 0), finished runs re-run (a `start` after a `done`: 0), outcomes lost
or unknown (a run's final state not `succeeded`; each explained, next to how many the fault made
unknown by design, and of runs the kill itself hit in the instant between their start gate and
their exec, while their process still bore the shim's command line: recorded truthfully as killed,
exit 137), holes (a final state that the ledger contradicts: `succeeded` without a `done`, or a run
neither done, unknown, nor killed that way: 0).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.support.launchkit import Rig, gone, make_rig, pkill_migbench  # the caller (bench/faults.py) puts the repo on sys.path

SWEEP = """
version: 1
name: once
launch: {retries: 0, backoff: 0, stop_grace: 5, flapping_max: 1000}
groups:
  - name: o
    shell: true
    command: echo "$MIGBENCH_RUN_ID $MIGBENCH_ATTEMPT start" >> "$TOY_LEDGER"; sleep {d}; echo "$MIGBENCH_RUN_ID $MIGBENCH_ATTEMPT done" >> "$TOY_LEDGER"
    parameters: {d: [0.2, 0.5, 0.9]}
    memory: 9GiB
    compute: 0.1
"""


COUNTS = (
    "trials",
    "runs",
    "runs executed twice",
    "finished runs re-run",
    "outcomes lost or unknown",
    "expected unknown",
    "killed by the fault before their command began",
    "holes",
)
"""What each fault class counts (the table's columns, less its time)."""


def wait_for(cond: Callable[[], bool], timeout: float = 60.0) -> bool:
    """Poll `cond` until it holds (True) or `timeout` passes (False); an exception in it counts as not yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return True
        except Exception:  # noqa: BLE001 - a database being written, a process going away
            pass
        time.sleep(0.01)
    return False


class Trial:
    """One fresh launch state of the shared rig."""

    def __init__(self, r: Rig, base: Path, n: int, bindings: bytes):
        self.r, self.n = r, n
        self.sd = base / f"t{n}"
        self.sd.mkdir(parents=True)
        (self.sd / "bindings.json").write_bytes(bindings)
        self.bindings = bindings
        self.ledger = base / f"t{n}.ledger"
        self.expected_unknown = 0  # runs whose waiter was killed while they worked
        r.state_dir, r.ledger = self.sd, self.ledger

    def start(self, **env: str) -> Any:
        return self.r.start("--state-dir", str(self.sd), extra_env={"TOY_LEDGER": str(self.ledger), **env})

    def rows(self) -> dict[str, dict]:
        try:
            return self.r.rows()
        except sqlite3.Error:  # being created
            return {}

    def lines(self) -> list[list[str]]:
        return [ln.split() for ln in self.r.ledger_lines()]

    def pkill(self) -> int:
        """`pkill -9 -f migbench`, limited to this campaign's host (MIGBENCH_SIM)."""
        return len(pkill_migbench(self.r.sim, self.r.procs))

    def finish(self) -> str:
        """A last plain launch to the end; its output."""
        p = self.start()
        p.wait(timeout=120)
        return self.r.output(p)


def ledger_counts(lines: list[list[str]]) -> tuple[Counter, Counter, set[str]]:
    """From a campaign's ledger (`<run> <attempt> start|done` lines): each run's starts, its dones,
    and the runs started again after a done."""
    starts: Counter = Counter()
    dones: Counter = Counter()
    rerun_after_done = set()
    for rid, _att, what in lines:
        if what == "start":
            starts[rid] += 1
            if dones[rid]:
                rerun_after_done.add(rid)
        else:
            dones[rid] += 1
    return starts, dones, rerun_after_done


def judge(t: Trial, tally: Counter, notes: list[str]) -> None:
    rows = t.rows()
    starts, dones, rerun_after_done = ledger_counts(t.lines())
    tally["trials"] += 1
    tally["expected unknown"] += t.expected_unknown
    tally["runs"] += len(rows)
    tally["runs executed twice"] += sum(1 for k in rows if starts[k] > 1)
    tally["finished runs re-run"] += len(rerun_after_done)
    for k, row in rows.items():
        if row["state"] != "succeeded":
            tally["outcomes lost or unknown"] += 1
            notes.append(f"trial {t.n} {k}: {row['state']}: {row['last_error']}")
        # The kill hit the run's own process between the start gate and its exec, while it still bore its
        # parent's command line (python -m migbench.launch.shim ...): a truthful outcome (killed), not a hole.
        killed_at_start = row["state"] == "failed" and row["exit_code"] == 137 and not starts[k]
        tally["killed by the fault before their command began"] += killed_at_start
        if (row["state"] == "succeeded" and not dones[k]) or (not dones[k] and row["state"] != "unknown" and not killed_at_start):
            tally["holes"] += 1
            notes.append(f"trial {t.n} {k}: hole: state {row['state']}, {starts[k]} start(s), {dones[k]} done")


def _at_work(t: Trial, k: int = 1) -> bool:
    rows = t.rows()
    return sum(1 for rid, v in rows.items() if v["state"] == "running" and (t.sd / rid / f"attempt-{v['attempt']}" / "started").exists()) >= k


def adopted_shim_kill(t: Trial, rng: random.Random) -> None:
    p1 = t.start()
    wait_for(lambda: _at_work(t))
    time.sleep(rng.uniform(0.0, 0.3))
    os.kill(p1.pid, signal.SIGKILL)
    p1.wait()
    p2 = t.start()
    wait_for(lambda: "resuming:" in t.r.output(p2) or p2.poll() is not None)
    time.sleep(rng.uniform(0.0, 0.4))
    live = [v for v in t.rows().values() if v["state"] == "running" and v["shim_pid"]]
    if live:
        try:
            os.kill(int(rng.choice(live)["shim_pid"]), signal.SIGKILL)
        except ProcessLookupError:
            pass
    p2.wait(timeout=120)


def together(t: Trial, rng: random.Random) -> None:
    t.start()
    wait_for(lambda: bool(t.rows()))
    time.sleep(rng.uniform(0.0, 1.0))
    t.pkill()
    time.sleep(rng.uniform(0.0, 1.0))
    if rng.random() < 1 / 3:
        t.start()
        time.sleep(rng.uniform(0.2, 0.8))
        t.pkill()
    p = t.start()
    p.wait(timeout=120)


def waiter_too(t: Trial, rng: random.Random) -> None:
    """The one case that loses an outcome: besides the launcher and the shims, the waiter of a run
    still at work is killed; the run then ends with nothing to record it. Expected: `unknown`."""
    t.start()
    wait_for(lambda: _at_work(t))
    time.sleep(rng.uniform(0.0, 0.2))
    t.pkill()
    live = []
    for rid, v in t.rows().items():
        try:
            child = json.loads((t.sd / rid / f"attempt-{v['attempt']}" / "child.json").read_text())
        except (OSError, ValueError):
            continue
        if not gone(int(child["pid"])) and not gone(int(child["waiter_pid"])):
            live.append(child)
    if live:
        child = rng.choice(live)
        os.kill(int(child["waiter_pid"]), signal.SIGKILL)
        if not gone(int(child["pid"])):
            t.expected_unknown += 1
    p = t.start()
    p.wait(timeout=120)


def final_moment(t: Trial, rng: random.Random) -> None:
    p = t.start(MIGBENCH_SHIM_TEST_PAUSE="after-exit")
    killed: set[int] = set()
    deadline = time.monotonic() + 60
    while p.poll() is None and time.monotonic() < deadline:
        for v in t.rows().values():
            pid = v["shim_pid"]
            if not pid or pid in killed:
                continue
            try:
                if psutil.Process(pid).status() == psutil.STATUS_STOPPED:
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
            except psutil.Error:
                continue
        time.sleep(0.01)
    p.wait(timeout=60)


def deleted_after_finish(t: Trial, rng: random.Random) -> None:
    p = t.start()
    wait_for(lambda: _at_work(t, 1))  # the launcher cannot have ended while a run works
    os.kill(p.pid, signal.SIGSTOP)
    shims = [int(v["shim_pid"]) for v in t.rows().values() if v["shim_pid"]]
    try:
        wait_for(lambda: all(gone(pid) for pid in shims))
        time.sleep(rng.uniform(0.0, 0.2))
        shutil.rmtree(t.sd)
    finally:
        os.kill(p.pid, signal.SIGCONT)
    p.wait(timeout=120)
    t.sd.mkdir(exist_ok=True)
    (t.sd / "bindings.json").write_bytes(t.bindings)  # as `migbench apply` again would


CLASSES: dict[str, Callable[[Trial, random.Random], None]] = {
    "adopted-shim kill": adopted_shim_kill,
    "launcher + shims killed together": together,
    "final-moment shim kill": final_moment,
    "state dir deleted after finish": deleted_after_finish,
    "+ a running run's waiter killed": waiter_too,
}


def run_once(base: Path, trials: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    out: dict[str, Any] = {}
    with pytest.MonkeyPatch.context() as mp:
        d = base / "once"
        d.mkdir()
        r = make_rig(d, mp, SWEEP)
        bindings = (r.state_dir / "bindings.json").read_bytes()
        n = 0
        try:
            for name, fault in CLASSES.items():
                t0 = time.monotonic()
                tally: Counter = Counter()
                notes: list[str] = []
                for _ in range(trials):
                    n += 1
                    t = Trial(r, d, n, bindings)
                    fault(t, rng)
                    t.finish()
                    judge(t, tally, notes)
                out[name] = {
                    **{k: tally[k] for k in COUNTS},
                    "seconds": round(time.monotonic() - t0),
                    "notes": notes[:10],
                }
        finally:
            try:
                r.cleanup()
            except sqlite3.Error:
                pass
    return out


def print_table(res: dict[str, Any]) -> None:
    cols = (*COUNTS, "seconds")
    print(
        f"{'fault class':34}"
        + "".join(f"{c:>13}" for c in ("trials", "runs", "twice", "re-run", "lost/unknown", "(unknown exp.)", "(killed@start)", "holes", "s"))
    )
    for name, v in res.items():
        print(f"{name:34}" + "".join(f"{v[c]:>13}" for c in cols))
    for name, v in res.items():
        for note in v["notes"]:
            print(f"  {name}: {note[:200]}")


def main(trials: int = 20, seed: int = 19, keep: bool = False) -> None:
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="mb-once-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None))
    t0 = time.monotonic()
    try:
        res = run_once(base, trials, seed)
    finally:
        if keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print_table(res)
    print(f"wall time {time.monotonic() - t0:.0f} s")
