"""`export slurm` against a real local Slurm (tests/support/slurm.py): a 40-run sweep of a 2-node plan
runs every run exactly once within the plan's counts, the refused cases say why, and scancel shows
in `status`.

Skipped unless Slurm is installed (.ci/install-slurm) and we are root; MIGBENCH_REQUIRE_SLURM=1
turns the skips into failures. Every wait polls Slurm's state (squeue), never a fixed sleep.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from migbench.export.tasks import arrays
from migbench.plan import Plan
from tests.support import REPO
from tests.support.cli import migbench
from tests.support.slurm import Cluster, local_slurm, slurm_available

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TOY = f"{sys.executable} {REPO / 'examples' / 'toy_trainer.py'}"


def sweep(name: str, nodes: list[str], groups: str) -> str:
    fleet = "".join(f"  - {{node: {n}, gpu: A100-SXM4-80GB, count: 1}}\n" for n in nodes)
    return f"version: 1\nname: {name}\nfleet:\n{fleet}launch: {{retries: 0}}\ngroups:\n{groups}"


def group(name: str, runs: int, memory: str, profile: str, steps: str = "--steps 1 --step-seconds 0.2", share: int = 1) -> str:
    return (
        f"  - name: {name}\n    command: {TOY} {steps} --seed {{seed}}\n    parameters: {{seed: 'range(0,{runs})'}}\n"
        f"    memory: {memory}\n    profiles: [{profile}]\n    max_runs_per_instance: {share}\n"
    )


FORTY = group("tiny", 32, "4GiB", "1g.10gb", share=2) + group("mid", 4, "15GiB", "2g.20gb") + group("big", 4, "30GiB", "3g.40gb")


def plan_and_export(tmp_path: Path, text: str, *args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    (tmp_path / "s.yaml").write_text(text)
    r = migbench("plan", "s.yaml", "-o", "p.yaml", "--no-runs", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = migbench("export", "slurm", "p.yaml", "-o", "out", *args, cwd=tmp_path, env=env)
    return r, Plan.load(tmp_path / "p.yaml")


def shaped_like(tmp_path: Path) -> dict[str, dict[str, int]]:
    """{node: {GRES type: count}} as the export declares it (what the admin puts in slurm.conf)."""
    doc = json.loads((tmp_path / "out" / "export.json").read_text())
    node_gres: dict[str, dict[str, int]] = {}
    for a in doc["arrays"]:
        for n, c in a["per_node"].items():
            node_gres.setdefault(n, {})[a["gres_type"]] = c
    return node_gres


def cluster_or_skip(workdir: Path, **kw):  # type: ignore[no-untyped-def]
    ok, why = slurm_available()
    if not ok:
        import os

        if os.environ.get("MIGBENCH_REQUIRE_SLURM") == "1":
            pytest.fail(f"Slurm required but unavailable: {why}", pytrace=False)
        pytest.skip(f"local Slurm unavailable: {why}")
    return local_slurm(None, workdir=workdir, **kw)


def submit(c: Cluster, tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["bash", str(tmp_path / "out" / "submit.sh")], env=dict(c.env, **extra), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def queue_empty(c: Cluster) -> bool:
    return not c.run(["squeue", "-h", "-o", "%i"]).stdout.strip()


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = best = 0
    for _, d in events:
        running += d
        best = max(best, running)
    return best


def test_a_40_run_sweep_of_a_2_node_plan_runs_each_run_once_within_the_plans_counts(tmp_path):
    r, plan = plan_and_export(tmp_path, sweep("forty", ["n0", "n1"], FORTY))
    assert r.returncode == 0, r.stderr
    arrs = {a.name: a for a in arrays(plan)}
    assert len(plan.runs) == 40 and len([a for a in arrs.values() if a.tasks]) == 3
    assert any(len(t.runs) > 1 for a in arrs.values() for t in a.tasks)  # co-located runs are one job
    ledger = tmp_path / "ledger.txt"
    with cluster_or_skip(tmp_path / "cluster", node_gres=shaped_like(tmp_path), mig_uuids=True) as c:
        r = migbench("export", "slurm", "p.yaml", "-o", "out", "--check", cwd=tmp_path, env={"SLURM_CONF": c.env["SLURM_CONF"]})
        assert r.returncode == 0 and "checked against the cluster" in r.stdout, r.stdout + r.stderr
        submit(c, tmp_path, TOY_LEDGER=str(ledger))
        c.wait_for(lambda: queue_empty(c), timeout=240, interval=0.5, what="the sweep's jobs to finish")
        states = c.run(["squeue", "-h", "-r", "-t", "all", "-o", "%T"]).stdout.split()
        assert states and set(states) == {"COMPLETED"}, states
        status = migbench("status", "p.yaml", "--json", cwd=tmp_path, env={"SLURM_CONF": c.env["SLURM_CONF"]})
        mig = {d.uuid: d for devs in c.mig_devices.values() for d in devs}
    assert c.stray_killed == []
    done = ledger.read_text().split("\n")
    assert sorted(line.split()[0] for line in done if line) == sorted(r.id for r in plan.runs)  # each run exactly once
    doc = json.loads(status.stdout)["runs"]
    assert doc["engine"] == "slurm" and doc["counts"] == {"succeeded": 40}, doc["counts"]

    gres_of = {a["name"]: a["gres_type"] for a in json.loads((tmp_path / "out" / "export.json").read_text())["arrays"]}
    sd = tmp_path / "runs" / "forty"
    jobs: dict[str, list] = {}
    for name, a in arrs.items():
        for t in a.tasks:
            seen = set()
            for rid in t.runs:
                attempts = sorted(p.name for p in (sd / rid).glob("attempt-*"))
                assert attempts == ["attempt-1"], (rid, attempts)
                adir = sd / rid / "attempt-1"
                eng = json.loads((adir / "engine.json").read_text())
                ex = json.loads((adir / "exit.json").read_text())
                child = json.loads((adir / "child.json").read_text())
                cmd = json.loads((adir / "cmd.json").read_text())
                toy = json.loads((sd / rid / "toy-attempt-1.json").read_text())
                assert ex["returncode"] == 0 and cmd["env"]["MIGBENCH_RUN_ID"] == rid
                # the run saw the device its GRES gave it: a MIG device of the array's type on its node
                dev = mig[eng["device"]]
                assert toy["env"]["CUDA_VISIBLE_DEVICES"] == eng["device"] == cmd["mig_uuid"]
                assert dev.type == gres_of[name] and dev.node == eng["node"]
                assert toy["env"]["MIGBENCH_ATTEMPT"] == "1" and "MIGBENCH_RESUME" not in toy["env"]
                assert (eng["array"], eng["index"], eng["slurm_array_task_id"]) == (name, t.index, str(t.index))
                seen.add((eng["slurm_job_id"], eng["device"]))
                jobs.setdefault(eng["slurm_job_id"], []).append((name, eng["device"], child["started_at"], ex["ended_at"]))
            assert len(seen) == 1, seen  # a task's co-located runs ran in one job on one device
    for name, a in arrs.items():
        spans = [(min(s for *_, s, _ in runs), max(e for *_, e in runs)) for runs in jobs.values() if runs[0][0] == name]
        assert len(spans) == len(a.tasks)
        if spans:
            assert max_overlap(spans) <= a.count, (name, a.count)
    by_device: dict[str, list[tuple[float, float]]] = {}
    for runs in jobs.values():
        by_device.setdefault(runs[0][1], []).append((min(r[2] for r in runs), max(r[3] for r in runs)))
    assert all(max_overlap(spans) == 1 for spans in by_device.values())  # one job per MIG device at a time


def test_refused_cases_say_what_is_wrong(tmp_path):
    # a plan whose fleet names no nodes, with --check
    (tmp_path / "a").mkdir()
    flat = "version: 1\nname: flat\nfleet: [{gpu: A100-SXM4-80GB, count: 1}]\ngroups:\n" + group("small", 2, "4GiB", "1g.10gb")
    r, _ = plan_and_export(tmp_path / "a", flat, "--check")
    assert r.returncode == 1 and "names no nodes" in r.stderr and "node:" in r.stderr, r.stderr

    b = tmp_path / "b"
    b.mkdir()
    r, plan = plan_and_export(b, sweep("refused", ["n0"], group("small", 2, "4GiB", "1g.10gb") + group("big", 1, "30GiB", "3g.40gb")))
    assert r.returncode == 0, r.stderr
    small = next(a for a in arrays(plan) if a.profile == "1g.10gb")
    n_devices = sum(a.count for a in arrays(plan))
    # the node declares more GPUs than the plan gives it (listed first), one 1g.10gb and no 3g type
    with cluster_or_skip(tmp_path / "cluster", node_gres={"n0": {"other": n_devices + 1, "nvidia_a100_1g.10gb": 1}}) as c:
        env = {"SLURM_CONF": c.env["SLURM_CONF"]}
        r = migbench("export", "slurm", "p.yaml", "-o", "out", "--check", cwd=b, env=env)
        assert r.returncode == 1, r.stdout
        assert "node n0 lacks a GRES type for 3g.40gb" in r.stderr and "expected nvidia_a100_3g.39gb" in r.stderr
        assert f"node n0 has 1 x gpu:nvidia_a100_1g.10gb, the plan needs {small.count}" in r.stderr
        r = migbench("export", "slurm", "p.yaml", "-o", "out", "--check", "--type-map", "3g.40gb=a100_3g.40gb", cwd=b, env=env)
        assert r.returncode == 1 and "node n0 lacks gpu:a100_3g.40gb (--type-map for 3g.40gb)" in r.stderr

        mb = f"{sys.executable} -m migbench"
        bad_index = c.submit(
            f"#!/bin/bash\nexec {mb} exec {b / 'p.yaml'} --array {small.name} --index 99\n",
            "--gres=gpu:nvidia_a100_1g.10gb:1",
            "--output",
            str(b / "bad-index.out"),
            cwd=b,
        )
        no_device = c.submit(
            f"#!/bin/bash\nexec {mb} exec {b / 'p.yaml'} --array {small.name} --index 0\n",
            "--gres=gpu:nvidia_a100_1g.10gb:1",
            "--output",
            str(b / "no-device.out"),
            cwd=b,
        )
        assert c.wait_job(bad_index) == {str(bad_index): "FAILED"}
        assert c.wait_job(no_device) == {str(no_device): "FAILED"}
    out = (b / "bad-index.out").read_text()
    assert f"Error: index 99 maps to no run: array {small.name} has {len(small.tasks)} task(s)" in out, out
    out = (b / "no-device.out").read_text()
    assert f"Error: GRES index {n_devices + 1} (SLURM_JOB_GPUS) maps to no MIG device on node n0: the plan gives it {n_devices}" in out, out
    assert not (b / "runs").exists() or not any((b / "runs").rglob("attempt-*"))  # nothing started


def test_scancel_of_a_running_sweep_shows_in_status(tmp_path):
    text = sweep("cancel", ["n0"], group("long", 1, "4GiB", "1g.10gb", steps="--steps 600 --step-seconds 0.1"))
    r, plan = plan_and_export(tmp_path, text)
    assert r.returncode == 0, r.stderr
    rid = plan.runs[0].id
    with cluster_or_skip(tmp_path / "cluster", node_gres=shaped_like(tmp_path), mig_uuids=True) as c:
        env = {"SLURM_CONF": c.env["SLURM_CONF"]}
        submit(c, tmp_path)
        child = tmp_path / "runs" / "cancel" / rid / "attempt-1" / "child.json"
        c.wait_for(lambda: child.exists(), timeout=60, what="the run to start")
        running = json.loads(migbench("status", "p.yaml", "--json", cwd=tmp_path, env=env).stdout)["runs"]
        assert [(x["id"], x["state"], x["slurm_state"]) for x in running["runs"]] == [(rid, "running", "RUNNING")]
        r = migbench("stop", "p.yaml", cwd=tmp_path, env=env)
        assert r.returncode == 0 and "scancel" in r.stdout, r.stderr
        c.wait_for(lambda: queue_empty(c), timeout=60, what="the job to end")
        doc = json.loads(migbench("status", "p.yaml", "--json", cwd=tmp_path, env=env).stdout)["runs"]
        text_view = migbench("status", "p.yaml", cwd=tmp_path, env=env).stdout
    assert [(x["id"], x["state"], x["slurm_state"]) for x in doc["runs"]] == [(rid, "cancelled", "CANCELLED")]
    assert doc["counts"] == {"cancelled": 1} and "cancelled" in text_view


RECORDER = """#!/usr/bin/env bash
# stands in for migbench in the array scripts: records which task of which array part ran; the first task of
# each part runs the real `migbench exec` as well
echo "$4 $6 $SLURM_ARRAY_TASK_ID $SLURM_ARRAY_JOB_ID" >> "$LEDGER"
if [ "$SLURM_ARRAY_TASK_ID" = 0 ]; then exec $REAL_MIGBENCH "$@"; fi
"""


def wide_sweep(n: int) -> str:
    return sweep(
        "wide", ["n0", "n0"], f"  - name: t\n    command: true {{seed}}\n    parameters: {{seed: 'range(0,{n})'}}\n    memory: 4GiB\n    profiles: [1g.10gb]\n"
    )


def test_an_array_past_slurms_default_max_array_size_is_planned_in_parts(tmp_path):
    """Issue 22 item 1: an array past MaxArraySize (default 1001) failed at sbatch, and set -e dropped the arrays after it.

    1,005 tasks of one type on a cluster left at Slurm's default: `export --check` reads MaxArraySize 1001 from the
    cluster and submits 2 arrays. Running them is the next test's, on a cluster whose MaxArraySize is small."""
    r, plan = plan_and_export(tmp_path, wide_sweep(1005))
    assert r.returncode == 0, r.stderr
    (a,) = [x for x in arrays(plan) if x.tasks]
    assert len(a.tasks) == 1005
    with cluster_or_skip(tmp_path / "cluster", node_gres=shaped_like(tmp_path), mig_uuids=True) as c:
        assert "MaxArraySize" not in c.conf.read_text()  # Slurm's default applies
        r = migbench("export", "slurm", "p.yaml", "-o", "out", "--check", cwd=tmp_path, env={"SLURM_CONF": c.env["SLURM_CONF"]})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "MaxArraySize 1001 (the cluster's, from scontrol show config)" in r.stdout and "2 job arrays" in r.stdout
    parts = sorted((tmp_path / "out" / "arrays").glob("*.sbatch"))
    assert [re.search(r"--array=(\S+)%", p.read_text())[1] for p in parts] == ["0-1000", "0-3"]  # type: ignore[index]


def test_more_tasks_than_the_clusters_max_array_size_are_submitted_in_parts_and_each_task_runs_once(tmp_path):
    """Issue 22 item 1, run for real: 12 tasks on a cluster whose MaxArraySize is 5 (read from scontrol) go in 3 arrays
    (0-4, 5-9, 10-11), and each task runs once. The array scripts run a recorder instead of `migbench exec`, except for
    each part's first task, which runs the real one; `migbench exec --index-offset` itself is tested in
    test_slurm_files_and_exec.py."""
    n = 12
    r, plan = plan_and_export(tmp_path, wide_sweep(n))
    assert r.returncode == 0, r.stderr
    (a,) = [x for x in arrays(plan) if x.tasks]
    assert len(a.tasks) == n
    ledger, rec = tmp_path / "ledger.txt", tmp_path / "recorder.sh"
    rec.write_text(RECORDER)
    rec.chmod(0o755)
    with cluster_or_skip(tmp_path / "cluster", node_gres=shaped_like(tmp_path), mig_uuids=True, max_array_size=5) as c:
        r = migbench("export", "slurm", "p.yaml", "-o", "out", "--check", cwd=tmp_path, env={"SLURM_CONF": c.env["SLURM_CONF"]})
        assert r.returncode == 0, r.stdout + r.stderr
        assert "MaxArraySize 5 (the cluster's, from scontrol show config)" in r.stdout and "3 job arrays" in r.stdout
        submit(c, tmp_path, MIGBENCH=str(rec), LEDGER=str(ledger), REAL_MIGBENCH=f"{sys.executable} -m migbench")
        c.wait_for(lambda: queue_empty(c), timeout=300, interval=0.5, what="the sweep's jobs to finish")
        states = c.run(["squeue", "-h", "-r", "-t", "all", "-o", "%T"]).stdout.split()
    assert len(states) == n and set(states) == {"COMPLETED"}, sorted(set(states))
    rows = [line.split() for line in ledger.read_text().splitlines() if line]
    assert {row[0] for row in rows} == {a.name}
    indices = sorted(int(off) + int(k) for _, off, k, _ in rows)
    assert indices == list(range(n))  # every task exactly once
    assert len({job for *_, job in rows}) == 3
    sd = tmp_path / "runs" / "wide"
    for first in (0, 5, 10):  # each part's first task ran for real: its run, on a MIG device of the type
        (rid,) = a.tasks[first].runs
        eng = json.loads((sd / rid / "attempt-1" / "engine.json").read_text())
        assert json.loads((sd / rid / "attempt-1" / "exit.json").read_text())["returncode"] == 0
        assert eng["index"] == first and eng["slurm_array_task_id"] == "0"


def test_a_state_directory_with_a_space_gets_the_batch_output_files(tmp_path):
    """Guards: `#SBATCH --output=<state dir>/slurm/...` was written unquoted, and sbatch ends an
    #SBATCH option at a space: under a directory named "my runs" sbatch refused the script
    ("Invalid directive found in batch script: runs/..."). A `"` and a `%` in the path too: sbatch
    takes the quoted value with `\"` and `%%` as those characters."""
    where = tmp_path / 'my "runs" 100%'
    where.mkdir()
    r, plan = plan_and_export(where, sweep("spaced", ["n0"], group("one", 1, "4GiB", "1g.10gb")))
    assert r.returncode == 0, r.stderr
    (a,) = [x for x in arrays(plan) if x.tasks]
    with cluster_or_skip(tmp_path / "cluster", node_gres=shaped_like(where), mig_uuids=True) as c:
        submit(c, where, MIGBENCH="echo task ran:")  # the script's command stands in for migbench: it prints and ends
        c.wait_for(lambda: queue_empty(c), timeout=60, interval=0.2, what="the job to end")
    outs = list((where / "runs" / "spaced" / "slurm").glob(f"{a.name}-*_0.out"))
    assert len(outs) == 1 and "task ran: exec" in outs[0].read_text(), sorted(p.name for p in where.rglob("*"))
    assert not (tmp_path / "my").exists() and not (where / "runs" / "spaced" / "slurm" / "out").exists()


def test_an_sbatch_arg_whose_value_holds_a_space_reaches_sbatch_whole(tmp_path):
    """Guards: `--sbatch-arg=--comment=x y` was written as `#SBATCH --comment=x y`, and sbatch refused
    the script at submit time ("Invalid directive found in batch script: y"). The value is now
    quoted for sbatch: the job takes the comment whole, quote and all; a value the user quoted
    already and an option with its value as two words are written as given."""
    r, plan = plan_and_export(
        tmp_path,
        sweep("c", ["n0"], group("one", 1, "4GiB", "1g.10gb")),
        '--sbatch-arg=--comment=x "y" z',
        "--sbatch-arg=--hold",
        '--sbatch-arg=--job-name="a b"',
    )
    assert r.returncode == 0, r.stderr
    script = next((tmp_path / "out" / "arrays").glob("*.sbatch")).read_text()
    assert '#SBATCH --comment="x \\"y\\" z"' in script and '#SBATCH --job-name="a b"' in script, script
    with cluster_or_skip(tmp_path / "cluster", node_gres=shaped_like(tmp_path), mig_uuids=True) as c:
        submit(c, tmp_path, MIGBENCH="echo task ran:")  # held: it waits, so its fields can be read
        shown = c.run(["scontrol", "show", "job", "-o"]).stdout
        for job in {line.split()[0].split("=")[1] for line in shown.splitlines() if line.startswith("JobId=")}:
            c.run(["scancel", job], check=False)
    assert 'Comment=x "y" z ' in shown and "JobName=a b " in shown, shown
