"""The bench's exactly-once campaign: `python bench/faults.py --bench` (a few minutes).

Each trial is a fresh simulated 2 x A100-80GB host and a fresh bench (`$MIGBENCH_BENCH_DIR`). Two
sweeps are handed to it by real `migbench submit` processes: `a` (6 runs of 9 GiB) and `b` (4 runs of
30 GiB, which the bench can only place by re-cutting a GPU). Every run's command logs `<run>
<attempt> start` when it begins and `<run> <attempt> done` when it ends (after a sleep of 0.2 to
0.9 s), with `retries: 0`, so a second `start` line is a second execution. Fault classes, seeded:

- **bench killed**: `a` submitted; at a random moment `b` submitted; at a random moment every
  process of the trial whose command line holds "migbench" (the bench, its shims, a submit in
  flight: what `pkill -9 -f migbench` hits) killed; a random pause (runs finish while nothing of
  migbench lives); in a third of the trials the same again after a resubmission;
- **submit killed**: `a` submitted, then `b`'s submit killed (`kill -9`) at a random moment of
  its life (before it wrote anything, mid-way, or after it handed the sweep over);
- **racing submits, bench killed**: `a` and `b` submitted at once, the bench killed at a random
  moment while they run;
- **a run removed while the bench is down**: as "bench killed", then `a` submitted again
  without its last run (a removed run must not start after that, nor start twice);
- **bench stopped, a run removed**: `migbench stop` while runs work (they are interrupted, to
  resume at the bench's next start), then `a` submitted again without its last run;
- **bench killed, launch.db lost**: as "bench killed", then launch.db deleted, emptied or
  overwritten with garbage before the next start (the runs' states rebuilt from their directories);
- **run removed, bench stopped, db lost**: `a` submitted again without its last run while the bench
  runs it, then `migbench stop`, then launch.db lost: the removed run must not resume, the others do.

After the fault, both sweeps (`a` as last submitted) are submitted again and the bench runs to its
end. Per class: trials, runs, runs executed twice (must be 0), finished runs re-run (0), runs
resumed after `migbench stop` interrupted them (a new attempt, as the README says), runs of
the final sweeps that did not succeed (each explained below the table: a run the kill hit while it
worked is recorded truthfully as killed or unknown, never re-run), removed runs started after their
removal (0), and holes (a final state the ledger contradicts: `succeeded` without a `done`: 0).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.faults_once import ledger_counts, wait_for
from migbench.backend.sim.host import init_host
from migbench.sweep import load_sweep
from tests.support.launchkit import db_query, gone, pkill_migbench  # the caller (bench/faults.py) puts the repo on sys.path

SWEEP = """
version: 1
name: {name}
launch: {{retries: 0, backoff: 0, stop_grace: 5, flapping_max: 1000}}
groups:
  - name: g
    shell: true
    command: echo "$MIGBENCH_RUN_ID $MIGBENCH_ATTEMPT start" >> {ledger}; sleep {{d}}; echo "$MIGBENCH_RUN_ID $MIGBENCH_ATTEMPT done" >> {ledger}
    parameters: {{i: {values}, d: [{d}]}}
    memory: {memory}
    compute: 0.1
    duration: 60s
"""

COUNTS = ("trials", "runs", "runs executed twice", "finished runs re-run", "resumed after a stop", "did not succeed", "removed, started after", "holes")


class Trial:
    """One fresh host and bench."""

    def __init__(self, base: Path, n: int, rng: random.Random):
        self.n, self.rng = n, rng
        self.dir = base / f"t{n}"
        self.sim = self.dir / "sim"
        self.dir.mkdir(parents=True)
        init_host(self.sim, "A100-SXM4-80GB", 2, mig=True)
        (self.dir / "home").mkdir()
        self.ledger = self.dir / "ledger.txt"
        self.bench = self.dir / "bench"
        self.env = {
            **os.environ,
            "MIGBENCH_SIM": str(self.sim),
            "MIGBENCH_POLL_S": "0.05",
            "MIGBENCH_MEM_POLL_S": "0.1",
            "HOME": str(self.dir / "home"),
            "MIGBENCH_BENCH_DIR": str(self.bench),
            "NO_COLOR": "1",
        }
        self.procs: list[subprocess.Popen] = []
        self.removed: set[str] = set()  # bench run ids taken out of their sweep
        self.stopped = False  # `migbench stop` interrupted the runs at work
        self.durations = {k: round(rng.uniform(0.2, 0.9), 2) for k in "ab"}
        self.sweeps = {"a": self.write("a", list(range(6)), "9GiB"), "b": self.write("b", list(range(4)), "30GiB")}

    def write(self, name: str, values: list[int], memory: str) -> Path:
        f = self.dir / f"{name}.yaml"
        f.write_text(SWEEP.format(name=name, ledger=self.ledger, values=values, d=self.durations[name], memory=memory))
        return f

    def submit(self, name: str) -> subprocess.Popen:
        p = subprocess.Popen(
            [sys.executable, "-m", "migbench", "submit", str(self.sweeps[name])],
            cwd=self.dir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(p)
        return p

    def submitted(self, name: str) -> str:
        p = self.submit(name)
        out, _ = p.communicate(timeout=120)
        return out.decode(errors="replace")

    @property
    def db(self) -> Path:
        return self.bench / "runs" / "bench" / "launch.db"

    def rows(self) -> dict[str, dict]:
        try:
            return {r["id"]: r for r in db_query(self.db, "SELECT * FROM runs")}
        except sqlite3.Error:
            return {}

    def launcher(self) -> dict:
        try:
            rows = db_query(self.db, "SELECT * FROM launcher")
        except sqlite3.Error:
            return {}
        return rows[0] if rows else {}

    def lines(self) -> list[list[str]]:
        try:
            return [ln.split() for ln in self.ledger.read_text().splitlines() if ln.strip()]
        except FileNotFoundError:
            return []

    def pkill(self) -> int:
        """`pkill -9 -f migbench`, limited to this trial's host (MIGBENCH_SIM)."""
        return len(pkill_migbench(self.sim, self.procs))

    def to_the_end(self) -> str:
        """Both sweeps submitted again (nothing new but what a fault lost), then the bench run to its
        end; the submits' output."""
        out = self.submitted("a") + self.submitted("b")
        if not wait_for(lambda: self.launcher().get("state") == "exited" and not _alive(self.launcher().get("pid")), 180):
            out += f"\n(the bench did not finish: {Counter(r['state'] for r in self.rows().values())})"
        return out

    def cleanup(self) -> None:
        self.pkill()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _alive(pid: object) -> bool:
    return bool(pid) and not gone(int(str(pid)))


def _working(t: Trial, k: int = 1) -> bool:
    return sum(1 for ln in t.lines() if ln[-1] == "start") >= k


def bench_killed(t: Trial, rng: random.Random) -> None:
    t.submitted("a")
    time.sleep(rng.uniform(0.0, 1.0))
    t.submit("b")
    time.sleep(rng.uniform(0.0, 2.0))
    t.pkill()
    time.sleep(rng.uniform(0.0, 1.0))
    if rng.random() < 1 / 3:
        t.submit("a")
        time.sleep(rng.uniform(0.2, 1.5))
        t.pkill()


def submit_killed(t: Trial, rng: random.Random) -> None:
    t.submitted("a")
    wait_for(lambda: _working(t), 90)
    p = t.submit("b")
    time.sleep(rng.uniform(0.0, 1.2))
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()


def racing(t: Trial, rng: random.Random) -> None:
    pa, pb = t.submit("a"), t.submit("b")
    time.sleep(rng.uniform(0.5, 2.5))
    t.pkill()
    for p in (pa, pb):
        p.wait()


def _ids(sweep: Path) -> set[str]:
    s = load_sweep(sweep)
    return {f"{s.name}.{r.id}" for r in s.runs}


def removed_while_down(t: Trial, rng: random.Random) -> None:
    bench_killed(t, rng)
    before = _ids(t.sweeps["a"])
    t.sweeps["a"] = t.write("a", list(range(5)), "9GiB")  # the run with i=5 is gone from the sweep
    t.removed = before - _ids(t.sweeps["a"])
    assert len(t.removed) == 1, t.removed


def stopped_then_removed(t: Trial, rng: random.Random) -> None:
    """`migbench stop` while runs work (they are interrupted, to resume at the next start), then
    `a` handed over again without its last run: that run, interrupted or never started, must not
    start again."""
    t.submitted("a")
    wait_for(lambda: _working(t, rng.randint(1, 4)), 90)
    t.stopped = True
    subprocess.run(
        [sys.executable, "-m", "migbench", "stop", str(t.bench / "bench.plan.yaml"), "--wait"], cwd=t.dir, env=t.env, capture_output=True, timeout=120
    )
    before = _ids(t.sweeps["a"])
    t.sweeps["a"] = t.write("a", list(range(5)), "9GiB")
    t.removed = before - _ids(t.sweeps["a"])


def _lose_db(t: Trial, rng: random.Random) -> None:
    """launch.db deleted, emptied or overwritten with garbage while no bench runs: the next bench
    rebuilds the runs' states from their directories."""
    how = rng.choice(["deleted", "empty", "garbage"])
    if how == "deleted":
        t.db.unlink(missing_ok=True)
    else:
        t.db.write_bytes(b"" if how == "empty" else bytes(rng.randrange(256) for _ in range(8192)))


def killed_db_lost(t: Trial, rng: random.Random) -> None:
    """As "bench killed", then launch.db lost before the next start."""
    bench_killed(t, rng)
    _lose_db(t, rng)


def removed_stopped_db_lost(t: Trial, rng: random.Random) -> None:
    """`a`'s last run taken out of its sweep while the bench runs `a` (it may be at work: it is left
    to end, never started again), then `migbench stop` (runs at work interrupted, to resume), then
    launch.db lost before the next start: the run directories alone must say which runs resume.
    `a`'s runs take 2 to 4 s here, so that the stop finds runs at work."""
    t.durations["a"] = round(rng.uniform(2.0, 4.0), 2)
    t.sweeps["a"] = t.write("a", list(range(6)), "9GiB")
    t.submitted("a")
    wait_for(lambda: _working(t, rng.randint(1, 6)), 90)
    before = _ids(t.sweeps["a"])
    t.sweeps["a"] = t.write("a", list(range(5)), "9GiB")
    t.removed = before - _ids(t.sweeps["a"])
    t.submitted("a")
    t.stopped = True
    subprocess.run(
        [sys.executable, "-m", "migbench", "stop", str(t.bench / "bench.plan.yaml"), "--wait"], cwd=t.dir, env=t.env, capture_output=True, timeout=120
    )
    _lose_db(t, rng)


CLASSES: dict[str, Callable[[Trial, random.Random], None]] = {
    "bench killed": bench_killed,
    "submit killed": submit_killed,
    "racing submits, bench killed": racing,
    "a run removed while the bench is down": removed_while_down,
    "bench stopped, a run removed": stopped_then_removed,
    "bench killed, launch.db lost": killed_db_lost,
    "run removed, bench stopped, db lost": removed_stopped_db_lost,
}


def judge(t: Trial, out: str, tally: Counter, notes: list[str]) -> None:
    rows = t.rows()
    starts, dones, rerun_after_done = ledger_counts(t.lines())
    tally["trials"] += 1
    tally["runs"] += len(rows)
    # a run `migbench stop` interrupted resumes at the bench's next start (a new attempt, by design);
    # anywhere else a second start is a second execution
    per_attempt = Counter((rid, att) for rid, att, what in t.lines() if what == "start")
    twice = {k for (k, _), c in per_attempt.items() if c > 1} | (set() if t.stopped else {k for k in starts if starts[k] > 1})
    tally["runs executed twice"] += len(twice)
    tally["resumed after a stop"] += sum(1 for k in starts if starts[k] > 1 and k not in twice) if t.stopped else 0
    tally["finished runs re-run"] += len(rerun_after_done)
    removed = t.removed
    for k, row in rows.items():
        if k in removed:
            continue
        if row["state"] != "succeeded":
            tally["did not succeed"] += 1
            notes.append(f"trial {t.n} {k}: {row['state']}: {row.get('last_error')}")
        if row["state"] == "succeeded" and not dones[k]:
            tally["holes"] += 1
            notes.append(f"trial {t.n} {k}: hole: succeeded, {starts[k]} start(s), no done")
    for k in removed:
        # a removed run may have started before its removal (it then ends as it ends), never twice
        # and never after: a run that had not started is cancelled
        if starts[k] > 1 or (rows.get(k, {}).get("state") in ("pending", "queued")):
            tally["removed, started after"] += 1
            notes.append(f"trial {t.n} {k}: removed run: state {rows.get(k, {}).get('state')}, {starts[k]} start(s)")
    if "did not finish" in out:
        notes.append(f"trial {t.n}: {out.strip().splitlines()[-1]}")


def run_bench(base: Path, trials: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    out: dict[str, Any] = {}
    n = 0
    for name, fault in CLASSES.items():
        t0 = time.monotonic()
        tally: Counter = Counter()
        notes: list[str] = []
        for _ in range(trials):
            n += 1
            t = Trial(base, n, rng)
            try:
                fault(t, rng)
                text = t.to_the_end()
                judge(t, text, tally, notes)
            finally:
                t.cleanup()
        out[name] = {**{k: tally[k] for k in COUNTS}, "seconds": round(time.monotonic() - t0), "notes": notes[:10]}
    return out


def print_table(res: dict[str, Any]) -> None:
    cols = (*COUNTS, "seconds")
    print(f"{'fault class':40}" + "".join(f"{c:>15}" for c in ("trials", "runs", "twice", "re-run", "resumed", "not succeeded", "removed, run", "holes", "s")))
    for name, v in res.items():
        print(f"{name:40}" + "".join(f"{v[c]:>15}" for c in cols))
    for name, v in res.items():
        for note in v["notes"]:
            print(f"  {name}: {note[:200]}")


def main(trials: int = 8, seed: int = 23, keep: bool = False) -> dict[str, Any]:
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="bench-faults-"))  # no "migbench" in the path: pkill -f must not match runs
    try:
        res = run_bench(base, trials, seed)
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
    print_table(res)
    return res
