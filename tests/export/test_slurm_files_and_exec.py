"""`export slurm` files and `migbench exec` without a cluster: the device a task gets (MIG uuid or a
GRES index), the per-attempt records it writes, and its errors."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from migbench.export.tasks import arrays, node_devices
from tests.export.conftest import make_plan
from tests.support.cli import migbench
from tests.support.statedir import sd_at, sd_of


def test_export_writes_node_lines_gres_conf_apply_and_submit_scripts(two_nodes, tmp_path):
    plan, path = two_nodes
    out = tmp_path / "out"
    r = migbench("export", "slurm", str(path), "-o", str(out), "--sbatch-arg=--partition=gpu")
    assert r.returncode == 0, r.stderr
    arrs = arrays(plan)
    for node in plan.nodes():
        conf = (out / "nodes" / f"{node}.conf").read_text()
        gres = ",".join(
            f"gpu:{'nvidia_a100_1g.10gb' if a.profile == '1g.10gb' else 'nvidia_a100_3g.39gb'}:{a.per_node[node]}" for a in arrs if a.per_node.get(node)
        )
        assert f"NodeName={node} Gres={gres}\n" in conf
        assert conf.count("  Type=") == len(node_devices(plan, node))
        script = (out / f"apply-{node}.sh").read_text()
        assert f"apply {path.resolve()} --node {node} --yes" in script and f"check {path.resolve()} --node {node}" in script
    assert "AutoDetect=nvml" in (out / "gres.conf").read_text()
    submit = (out / "submit.sh").read_text()
    assert subprocess.run(["bash", "-n", str(out / "submit.sh")]).returncode == 0
    for a in arrs:
        assert f"submit arrays/{a.name}.sbatch {a.name} 0 {len(a.tasks)} " in submit
        script = (out / "arrays" / f"{a.name}.sbatch").read_text()
        assert subprocess.run(["bash", "-n", str(out / "arrays" / f"{a.name}.sbatch")]).returncode == 0
        assert f"#SBATCH --array=0-{len(a.tasks) - 1}%{a.count}\n" in script and "#SBATCH --partition=gpu\n" in script
    doc = json.loads((out / "export.json").read_text())
    assert sum(x["runs"] for x in doc["arrays"]) == len(plan.runs)


def test_a_plan_without_nodes_exports_only_the_submit_script(tmp_path):
    _, path = make_plan(tmp_path, "version: 1\nname: flat\nfleet: [{gpu: A30, count: 1}]\ncommand: run {x}\nparameters: {x: [1, 2]}\nmemory: 1GiB\n")
    r = migbench("export", "slurm", str(path), "-o", str(tmp_path / "out"))
    assert r.returncode == 0 and "names no nodes" in r.stdout, r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["arrays", "export.json", "submit.sh"]


def exec_(path, *args, **env):  # type: ignore[no-untyped-def]
    base = {
        "CUDA_VISIBLE_DEVICES": "",
        "NVIDIA_VISIBLE_DEVICES": "",
        "SLURM_JOB_GPUS": "",
        "SLURM_STEP_GPUS": "",
        "SLURM_ARRAY_TASK_ID": "",
        "JOB_COMPLETION_INDEX": "",
        "SLURM_JOB_ID": "",
        "SLURMD_NODENAME": "",
    }
    return migbench("exec", str(path), *args, env={**base, **env})


@pytest.mark.slow
def test_exec_runs_a_task_with_the_launchers_records_and_continues_attempts(tmp_path):
    plan, path = make_plan(tmp_path)
    big = next(a for a in arrays(plan) if a.profile == "3g.40gb")
    rid = big.tasks[1].runs[0]
    r = exec_(
        path, "--array", big.name, CUDA_VISIBLE_DEVICES="MIG-aaaa", SLURM_ARRAY_TASK_ID="1", SLURM_JOB_ID="77", SLURM_ARRAY_JOB_ID="70", SLURMD_NODENAME="n1"
    )
    assert r.returncode == 0, r.stderr
    rdir = tmp_path / "runs" / "two" / rid
    a1 = rdir / "attempt-1"
    cmd, ex, eng = (json.loads((a1 / f).read_text()) for f in ("cmd.json", "exit.json", "engine.json"))
    assert cmd["mig_uuid"] == "MIG-aaaa" and cmd["env"]["MIGBENCH_RUN_ID"] == rid and cmd["env"]["MIGBENCH_ATTEMPT"] == "1"
    assert cmd["env"]["MIGBENCH_RUN_DIR"] == str(rdir) and "MIGBENCH_RESUME" not in cmd["env"]
    assert ex["returncode"] == 0 and (rdir / "params.json").exists() and (rdir / "latest").resolve() == a1.resolve()
    assert (eng["engine"], eng["slurm_job_id"], eng["node"], eng["index"], eng["device"]) == ("slurm", "77", "n1", 1, "MIG-aaaa")
    toy = json.loads((rdir / "toy-attempt-1.json").read_text())
    assert toy["env"]["CUDA_VISIBLE_DEVICES"] == "MIG-aaaa"
    # a requeued task continues the run's attempts, as a resumed run
    r = exec_(path, "--array", big.name, "--index", "1", NVIDIA_VISIBLE_DEVICES="MIG-bbbb")
    assert r.returncode == 0, r.stderr
    toy = json.loads((rdir / "toy-attempt-2.json").read_text())
    assert toy["env"]["MIGBENCH_ATTEMPT"] == "2" and toy["env"]["MIGBENCH_RESUME"] == "1" and toy["env"]["CUDA_VISIBLE_DEVICES"] == "MIG-bbbb"


@pytest.mark.slow
def test_exec_resolves_a_gres_index_through_the_nodes_bindings_or_a_device_map(tmp_path):
    plan, path = make_plan(tmp_path)
    node = "n1"
    devs = node_devices(plan, node)
    local = {g.gpu: k for k, g in enumerate(plan.node_gpus(node))}
    bindings = {"version": 1, "plan": plan.name, "instances": {f"{local[i.gpu]}:{i.profile}@{i.start}": {"uuid": f"MIG-{k:04d}"} for k, i in enumerate(devs)}}
    bdir = tmp_path / "runs" / "two" / "nodes" / node
    bdir.mkdir(parents=True)
    (bdir / "bindings.json").write_text(json.dumps(bindings))
    small = next(a for a in arrays(plan) if a.profile == "1g.10gb")
    k = next(n for n, i in enumerate(devs) if i.profile == "1g.10gb")
    r = exec_(path, "--array", small.name, "--index", "0", "--dry-run", SLURM_JOB_GPUS=str(k), CUDA_VISIBLE_DEVICES="0", SLURMD_NODENAME=node)
    assert r.returncode == 0, r.stderr
    assert f"on MIG-{k:04d} ({devs[k].key}, from SLURM_JOB_GPUS={k})" in r.stdout
    assert r.stdout.count("export MIGBENCH_RUN_ID=") == len(small.tasks[0].runs)
    assert not any(tmp_path.joinpath("runs", "two").glob("tiny-*"))  # a dry run writes nothing
    # an index of another type, past the plan's devices, or without bindings
    other = next(n for n, i in enumerate(devs) if i.profile != "1g.10gb")
    r = exec_(path, "--array", small.name, "--index", "0", SLURM_JOB_GPUS=str(other), SLURMD_NODENAME=node)
    assert r.returncode == 1 and f"is a 3g.40gb instance in the plan's GRES order, but array {small.name} asks for 1g.10gb" in r.stderr
    r = exec_(path, "--array", small.name, "--index", "0", CUDA_VISIBLE_DEVICES=str(len(devs)), SLURMD_NODENAME=node)
    assert r.returncode == 1
    assert f"GRES index {len(devs)} (CUDA_VISIBLE_DEVICES) maps to no MIG device on node n1: the plan gives it {len(devs)}" in r.stderr
    r = exec_(path, "--array", small.name, "--index", "0", CUDA_VISIBLE_DEVICES=str(k), SLURMD_NODENAME="n0")
    assert r.returncode == 1 and "has no bound MIG device on node n0" in r.stderr and "--node n0" in r.stderr
    dm = tmp_path / "map.json"
    dm.write_text('["MIG-x", "MIG-y"]')
    r = exec_(path, "--array", small.name, "--index", "0", "--device-map", str(dm), "--dry-run", SLURM_JOB_GPUS="1")
    assert r.returncode == 0 and "on MIG-y" in r.stdout
    r = exec_(path, "--array", small.name, "--index", "0", "--device-map", str(dm), SLURM_JOB_GPUS="2")
    assert r.returncode == 1 and "GRES index 2 (SLURM_JOB_GPUS) maps to no MIG device on node" in r.stderr and "lists 2 (0-1)" in r.stderr
    # a device map that is /dev/zero (or any endless file) is refused at its limit, not read until memory runs out
    r = exec_(path, "--array", small.name, "--index", "0", "--device-map", "/dev/zero", "--dry-run", SLURM_JOB_GPUS="1")
    assert r.returncode == 1 and "/dev/zero" in r.stderr and "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--index", "0"], {}, "no device: neither CUDA_VISIBLE_DEVICES nor SLURM_JOB_GPUS is set"),
        (["--index", "0"], {"CUDA_VISIBLE_DEVICES": "MIG-a,MIG-b"}, "names 2 devices; a task asks for exactly one"),
        ([], {"CUDA_VISIBLE_DEVICES": "MIG-a"}, "no task index"),
        (["--index", "50"], {"CUDA_VISIBLE_DEVICES": "MIG-a"}, "index 50 maps to no run"),
        (["--index", "0", "--sha256", "00" * 32], {"CUDA_VISIBLE_DEVICES": "MIG-a"}, "changed since it was exported"),
    ],
)
def test_exec_refuses_with_the_reason(two_nodes, args, env, message):
    plan, path = two_nodes
    name = arrays(plan)[0].name
    r = exec_(path, "--array", name, *args, **env)
    assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = exec_(path, "--array", "nope", "--index", "0", CUDA_VISIBLE_DEVICES="MIG-a")
    assert r.returncode == 1 and "the plan has no array 'nope'" in r.stderr and name in r.stderr


def test_exec_reads_the_parsed_plan_export_left_only_while_it_matches_the_file(tmp_path):
    """At 10,000 runs every array task spent 5 s parsing the plan's YAML before its runs started.
    `export slurm` leaves the plan parsed beside the launch state; `exec --sha256` reads it when it
    was made from the very bytes of the plan file, and the file otherwise."""
    import hashlib

    from migbench.export.execute import load_task_plan, parsed_plan_path
    from migbench.plan import Plan, parse_document

    plan, path = make_plan(tmp_path)
    r = migbench("export", "slurm", str(path), "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    saved = parsed_plan_path(tmp_path / "runs" / "two", sha)
    doc = json.loads(saved.read_text())
    assert doc["sha256"] == sha and doc["plan"] == parse_document(path.read_text(), str(path))
    # read from the copy: a mark put into it shows; without --sha256 the file is read
    first = doc["plan"]["runs"][0]
    first["params"] = {**first["params"], "from_copy": "yes"}
    saved.write_text(json.dumps(doc))
    assert next(iter(load_task_plan(path, sha, sd_of(plan)).runs)).params.get("from_copy") == "yes"
    assert "from_copy" not in next(iter(load_task_plan(path, None, sd_of(plan)).runs)).params
    # a copy of other bytes, or a damaged one, is passed over for the file
    doc["sha256"] = "0" * 64
    saved.write_text(json.dumps(doc))
    assert "from_copy" not in next(iter(load_task_plan(path, sha, sd_of(plan)).runs)).params
    saved.write_text("{ not json")
    assert [r.params for r in load_task_plan(path, sha, sd_of(plan)).runs] == [r.params for r in Plan.load(path).runs]
    small = next(a for a in arrays(plan) if a.tasks)
    r = exec_(path, "--array", small.name, "--index", "0", "--sha256", sha, "--dry-run", "--device-map", str(_device_map(tmp_path)), SLURM_JOB_GPUS="0")
    assert r.returncode == 0, r.stderr
    # the plan file changed after the export: refused, whatever the copy says
    path.write_text(path.read_text() + "\n")
    r = exec_(path, "--array", small.name, "--index", "0", "--sha256", sha, "--dry-run")
    assert r.returncode == 1 and "changed since it was exported" in r.stderr


def _device_map(tmp_path):  # type: ignore[no-untyped-def]
    dm = tmp_path / "map.json"
    dm.write_text(json.dumps([f"MIG-{k}" for k in range(32)]))
    return dm


def test_an_export_whose_state_dir_cannot_be_written_still_exports_and_says_so(tmp_path):
    """The parsed copy is a help to the tasks, not part of the export: a state dir that cannot be
    made (here, below a file) leaves the export whole, with a note; exec then reads the file."""
    import hashlib

    from migbench.export import slurm

    plan, path = make_plan(tmp_path)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    exp = slurm.write(plan, tmp_path / "out", sha256=sha, type_map={}, state_dir=sd_at(blocker / "state"))
    assert (tmp_path / "out" / "submit.sh").is_file()
    assert any("could not leave the parsed plan" in n and "each array task will parse" in n for n in exp.notes), exp.notes


FAKE_SBATCH = """#!/usr/bin/env bash
# stands in for sbatch: records its arguments, refuses the script named by $FAIL_ON like Slurm refuses an array
# past MaxArraySize, else answers a new job id
echo "$*" >> "$SBATCH_LOG"
for last; do :; done
if [ -n "${FAIL_ON:-}" ] && [ "$(basename "$last")" = "$FAIL_ON" ]; then
  echo "sbatch: error: Batch job submission failed: Invalid job array specification" >&2
  exit 1
fi
n=$(wc -l < "$SBATCH_LOG")
echo "$((100 + n))"
"""


def test_arrays_past_max_array_size_go_in_parts_and_a_failed_sbatch_leaves_a_resumable_submission(two_nodes, tmp_path):
    """Issue 22 item 1: an array past MaxArraySize failed at sbatch and, with set -e, the other arrays were not submitted."""
    plan, path = two_nodes
    out = tmp_path / "out"
    r = migbench("export", "slurm", str(path), "-o", str(out), "--max-array-size", "2", "--state-dir", str(tmp_path / "state"))
    assert r.returncode == 0, r.stderr
    assert "MaxArraySize 2 (--max-array-size)" in r.stdout
    covered: dict[str, list[int]] = {}
    for a in arrays(plan):
        scripts = sorted((out / "arrays").glob(f"{a.name}.part*.sbatch"))
        assert len(scripts) == (len(a.tasks) + 1) // 2 > 1
        for s in scripts:
            text = s.read_text()
            span = re.search(r"#SBATCH --array=0-(\d+)%(\d+)\n", text)
            offset = re.search(r"--index-offset (\d+) ", text)
            assert span and offset and int(span[1]) < 2 and int(span[2]) == a.count, text
            covered.setdefault(a.name, []).extend(int(offset[1]) + k for k in range(int(span[1]) + 1))
        assert sorted(covered[a.name]) == list(range(len(a.tasks)))
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "sbatch").write_text(FAKE_SBATCH)
    (bin_ / "sbatch").chmod(0o755)
    log = tmp_path / "sbatch.log"
    env = dict(os.environ, PATH=f"{bin_}:{os.environ['PATH']}", SBATCH_LOG=str(log))
    tiny = next(a for a in arrays(plan) if a.profile == "1g.10gb")
    failing = f"{tiny.name}.part2.sbatch"
    r = subprocess.run(["bash", str(out / "submit.sh"), "--partition=gpu"], env=dict(env, FAIL_ON=failing), capture_output=True, text=True)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"sbatch arrays/{failing} failed" in r.stderr and "Invalid job array specification" in r.stderr
    assert "run submit.sh again: it submits only what is missing" in r.stderr
    jobs = tmp_path / "state" / "slurm" / "jobs.tsv"
    went_in = [line.split("\t") for line in jobs.read_text().splitlines() if not line.startswith("#")]
    assert [row[5] for row in went_in] == [f"arrays/{tiny.name}.part1.sbatch"]
    assert f"arrays/{tiny.name}.part1.sbatch" in r.stderr  # what went in is said
    r = subprocess.run(["bash", str(out / "submit.sh"), "--partition=gpu"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    calls = log.read_text().splitlines()
    rows = [line.split("\t") for line in jobs.read_text().splitlines() if not line.startswith("#")]
    n_scripts = len(list((out / "arrays").glob("*.sbatch")))
    assert len(rows) == n_scripts and len(calls) == n_scripts + 1  # the first part was not submitted twice
    assert sum(1 for c in calls if c.endswith(f"{tiny.name}.part1.sbatch")) == 1
    job = {row[5]: row[1] for row in rows}
    part2 = next(c for c in calls[1:] if c.endswith(failing))
    assert f"--dependency=afterany:{job[f'arrays/{tiny.name}.part1.sbatch']}" in part2 and "--partition=gpu" in part2
    # status maps each task onto its part's job
    from migbench.export.slurmctl import submitted

    subs, _ = submitted(tmp_path / "state")
    keys = [next(s.key(t.index) for s in subs if s.array == tiny.name and s.key(t.index)) for t in tiny.tasks]
    assert keys[2] == f"{job[f'arrays/{tiny.name}.part2.sbatch']}_0" and len(set(keys)) == len(tiny.tasks)


def test_exec_adds_the_parts_index_offset(two_nodes):
    """Issue 22 item 1: a part of an array cut for MaxArraySize runs the tasks after the earlier parts'."""
    plan, path = two_nodes
    tiny = next(a for a in arrays(plan) if a.profile == "1g.10gb")
    r = exec_(path, "--array", tiny.name, "--index-offset", "2", "--dry-run", SLURM_ARRAY_TASK_ID="1", CUDA_VISIBLE_DEVICES="MIG-x")
    assert r.returncode == 0, r.stderr
    assert f"{tiny.name} task 3 " in r.stdout and all(f"# {rid} attempt" in r.stdout for rid in tiny.tasks[3].runs)


def test_each_array_gets_an_editable_script_with_a_time_from_its_durations(tmp_path):
    """Issue 22 item 3: no --time was derived from `duration`, so a partition's default limit could kill a long run."""
    text = (
        "version: 1\nname: timed\nfleet: [{node: n0, gpu: A100-SXM4-80GB, count: 1}]\ngroups:\n"
        "  - {name: long, command: 'run {x}', parameters: {x: [1]}, memory: 30GiB, profiles: [3g.40gb], duration: 2h}\n"
        "  - {name: free, command: 'run {x}', parameters: {x: [1]}, memory: 4GiB, profiles: [1g.10gb]}\n"
        "  - {name: capped, command: 'run {x}', parameters: {x: [1]}, memory: 15GiB, profiles: [2g.20gb], timeout: 1h}\n"
    )
    plan, path = make_plan(tmp_path, text)
    r = migbench("export", "slurm", str(path), "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    by_profile = {a.profile: (tmp_path / "out" / "arrays" / f"{a.name}.sbatch").read_text() for a in arrays(plan) if a.tasks}
    # no `compute`: the run needs its memory-sized instance's share (3g.40gb, its only profile), so 2 h
    # there (issue 20 item 1); x 1.25 + 10 min = 2 h 40 min
    assert "#SBATCH --time=0-02:40:00\n" in by_profile["3g.40gb"]
    assert "#SBATCH --time" not in by_profile["1g.10gb"] and "no --time" in r.stdout
    # no duration, a 1 h timeout: 1 h + the 30 s stop grace, x 1.25 + 10 min = 1 h 25.6 min, rounded up
    assert "#SBATCH --time=0-01:26:00\n" in by_profile["2g.20gb"]
    r = migbench("export", "slurm", str(path), "-o", str(tmp_path / "out2"), "--sbatch-arg=--time=1:00:00")
    assert r.returncode == 0, r.stderr
    script = next((tmp_path / "out2" / "arrays").glob("*3g-40gb.sbatch")).read_text()
    assert script.count("--time") == 2 and "#SBATCH --time=1:00:00\n" in script  # the comment and the user's


def _fake_clients(tmp_path, sacct: str | None):  # type: ignore[no-untyped-def]
    """squeue that cannot reach slurmctld (as when it is down), and sacct printing `sacct` (None: failing too)."""
    bin_ = tmp_path / "bin"
    bin_.mkdir(exist_ok=True)
    (bin_ / "squeue").write_text("#!/bin/sh\necho 'slurm_load_jobs error: Unable to contact slurm controller (connect failure)' >&2\nexit 1\n")
    body = f"cat <<'OUT'\n{sacct}\nOUT\n" if sacct is not None else "echo 'sacct: error: Problem talking to the database' >&2\nexit 1\n"
    (bin_ / "sacct").write_text("#!/bin/sh\n" + body)
    for f in bin_.iterdir():
        f.chmod(0o755)
    return {"PATH": f"{bin_}:{os.environ['PATH']}"}


@pytest.mark.slow
def test_logs_and_status_of_runs_an_engine_ran_without_a_live_slurmctld(tmp_path):
    """Issue 22 item 2: `logs RUN PLAN` failed for runs executed through Slurm ("no launch.db"), and `status` needed a live slurmctld."""
    plan, path = make_plan(tmp_path)
    r = migbench("export", "slurm", str(path), "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    big = next(a for a in arrays(plan) if a.profile == "3g.40gb")
    rid = big.tasks[0].runs[0]
    r = exec_(
        path,
        "--array",
        big.name,
        "--index",
        "0",
        CUDA_VISIBLE_DEVICES="MIG-aaaa",
        SLURM_JOB_ID="71",
        SLURM_ARRAY_JOB_ID="70",
        SLURM_ARRAY_TASK_ID="0",
        SLURMD_NODENAME="n0",
    )
    assert r.returncode == 0, r.stderr
    sd = tmp_path / "runs" / "two"
    assert not (sd / "launch.db").exists()
    r = migbench("logs", rid, str(path))
    assert r.returncode == 0, r.stderr
    assert r.stdout == (sd / rid / "attempt-1" / "stdout.log").read_text() and r.stdout.strip()
    r = migbench("logs", rid, str(path), "--stderr", "-f")  # the attempt has ended: -f returns
    assert r.returncode == 0, r.stderr
    other = big.tasks[1].runs[0]
    r = migbench("logs", other, str(path))
    assert r.returncode == 1 and f"run {other} has not started" in r.stderr
    # what submit.sh records, then slurmctld goes away
    (sd / "slurm").mkdir(parents=True, exist_ok=True)
    (sd / "slurm" / "jobs.tsv").write_text(f"# plan\tx\tnow\n{big.name}\t70\t{len(big.tasks)}\tnvidia_a100_3g.39gb\t0\tarrays/{big.name}.sbatch\n")
    r = migbench("status", str(path), "--json", env=_fake_clients(tmp_path, None))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)["runs"]
    states = {x["id"]: x["state"] for x in doc["runs"] if x["array"] == big.name}
    assert states[rid] == "succeeded" and states[other] == "unknown", states
    assert "neither squeue nor sacct answered" in doc["notes"][0]
    r = migbench("status", str(path), "--json", env=_fake_clients(tmp_path, "70_0|COMPLETED|n0|None\n70_1|CANCELLED by 0|n1|None"))
    doc = json.loads(r.stdout)["runs"]
    rows = {x["id"]: x for x in doc["runs"] if x["array"] == big.name}
    assert (rows[rid]["state"], rows[rid]["slurm_state"]) == ("succeeded", "COMPLETED") and rows[other]["state"] == "cancelled"
    assert "job states from sacct" in doc["notes"][0]
    r = migbench("status", str(path), env=_fake_clients(tmp_path, None))
    assert r.returncode == 0 and "states from the run directories only" in r.stdout, r.stdout + r.stderr


def test_tables_piped_at_80_columns_never_cut_an_id(tmp_path):
    """Issue 22 item 4: `export slurm | cat`, `export k8s` and Slurm-mode `status` cut GRES types, array names and devices with "…" at 80 columns."""
    plan, path = make_plan(tmp_path)
    narrow = {"MIGBENCH_WIDTH": "80"}
    r = migbench("export", "slurm", str(path), "-o", str(tmp_path / "out"), env=narrow)
    assert r.returncode == 0 and "…" not in r.stdout, r.stdout
    for a in arrays(plan):
        assert a.name in r.stdout and ("nvidia_a100_1g.10gb" if a.profile == "1g.10gb" else "nvidia_a100_3g.39gb") in r.stdout
    r = migbench("export", "k8s", str(path), "-o", str(tmp_path / "k8s"), env=narrow)
    assert r.returncode == 0 and "…" not in r.stdout, r.stdout
    assert all(f"nvidia.com/mig-{a.profile}" in r.stdout for a in arrays(plan))
    sd = tmp_path / "runs" / "two"
    big = next(a for a in arrays(plan) if a.profile == "3g.40gb")
    (sd / "slurm").mkdir(parents=True)
    (sd / "slurm" / "jobs.tsv").write_text(f"# plan\tx\tnow\n{big.name}\t123456789\t{len(big.tasks)}\tnvidia_a100_3g.39gb\t0\tarrays/x\n")
    r = migbench("status", str(path), env={**narrow, **_fake_clients(tmp_path, "123456789_0|RUNNING|node-with-a-long-name-01|None")})
    assert r.returncode == 0 and "…" not in r.stdout, r.stdout
    assert "123456789_0" in r.stdout and "node-with-a-long-name-01" in r.stdout and big.tasks[0].runs[0] in r.stdout


def test_a_line_break_in_a_path_or_an_sbatch_arg_is_refused_before_any_script_is_written(two_nodes, tmp_path):
    """Regression: a plan below a directory named "d<newline>touch X #" was exported with
    `#SBATCH --output=<state dir>/...` cut at the line break, so the batch script ran `touch X`
    as a command; `--sbatch-arg` with a line break did the same. Both are refused, nothing written."""
    import shutil

    _plan, path = two_nodes
    odd = tmp_path / "d\ntouch owned #"
    odd.mkdir()
    shutil.copy(path, odd / "p.yaml")
    r = migbench("export", "slurm", str(odd / "p.yaml"), "-o", str(tmp_path / "out1"))
    assert r.returncode == 1 and "holds a line break" in r.stderr and "internal error" not in r.stderr, r.stderr
    r = migbench("export", "slurm", str(path), "-o", str(tmp_path / "out2"), "--sbatch-arg=--comment=x\ntouch owned")
    assert r.returncode == 2 and "--sbatch-arg" in r.stderr and "line break" in r.stderr, r.stderr
    assert not (tmp_path / "out1").exists() and not (tmp_path / "out2").exists()
    r = migbench("export", "slurm", str(path), "-o", str(tmp_path / "out3"), "--sbatch-arg=--comment=x y")
    assert r.returncode == 0, r.stderr


def test_export_and_report_in_a_directory_whose_name_is_not_utf8_name_it_byte_for_byte(tmp_path):
    """Guards: `export slurm` and `report` under a directory whose name is not UTF-8 (byte 0xff)
    ended in "internal error (UnicodeEncodeError)": the scripts and the page embed the path, and
    the writer encoded it strictly."""
    where = tmp_path / os.fsdecode(b"bad\xff")
    _, path = make_plan(where, "version: 1\nname: flat\nfleet: [{gpu: A30, count: 1}]\ncommand: run {x}\nparameters: {x: [1, 2]}\nmemory: 1GiB\n")
    r = migbench("export", "slurm", str(path), "-o", str(where / "out"))
    assert r.returncode == 0 and "internal error" not in r.stderr, r.stdout + r.stderr
    raw = os.fsencode(where)
    script = next((where / "out" / "arrays").glob("*.sbatch")).read_bytes()
    assert b'exec "${MB[@]}" exec \'' + raw + b"/p.yaml'" in script, script  # the directory's own bytes
    assert subprocess.run(["bash", "-n", str(where / "out" / "submit.sh")]).returncode == 0
    r = migbench("report", str(path), "-o", str(where / "r.html"))
    assert r.returncode == 0 and "report written to" in r.stdout and "internal error" not in r.stderr, r.stdout + r.stderr
    assert b"no launch state in " + raw + b"/runs/flat" in (where / "r.html").read_bytes()


def test_a_file_read_back_as_utf8_that_would_name_a_non_utf8_directory_is_a_clear_error(tmp_path):
    """Guards: the same text written to a file that must be UTF-8 (a plan, a CI recipe) was an
    internal error; it is an `Error:` naming the line, and nothing is written."""
    from migbench.errors import MigbenchError
    from migbench.fsutil import write_text_atomic

    text = "kind: x\nfile: " + os.fsdecode(b"/tmp/bad\xff/s.yaml") + "\n"
    with pytest.raises(MigbenchError, match=r"line 2 would hold a name that is not UTF-8 \(file: /tmp/bad\\xff/s\.yaml\)") as err:
        write_text_atomic(tmp_path / "p.yaml", text, "plan file")
    assert "rename" in str(err.value.hint) and not (tmp_path / "p.yaml").exists()
    write_text_atomic(tmp_path / "p.sh", text, raw_names=True)
    assert (tmp_path / "p.sh").read_bytes() == b"kind: x\nfile: /tmp/bad\xff/s.yaml\n"


def test_the_state_directory_in_sbatch_output_is_quoted_and_a_backslash_refused(two_nodes, tmp_path):
    """Guards: `#SBATCH --output=<state dir>/...` was unquoted, and sbatch cuts an option at a space
    (tests/export/test_slurm_cluster.py runs such a script on a real cluster). A backslash would
    turn off sbatch's filename patterns (%A_%a): refused, nothing written."""
    import shutil

    _plan, path = two_nodes
    spaced = tmp_path / 'my "runs" 100%'
    spaced.mkdir()
    shutil.copy(path, spaced / "p.yaml")
    r = migbench("export", "slurm", str(spaced / "p.yaml"), "-o", str(tmp_path / "out1"))
    assert r.returncode == 0, r.stderr
    sd = str(spaced / "runs" / "two")
    for script in (tmp_path / "out1" / "arrays").glob("*.sbatch"):
        line = next(x for x in script.read_text().splitlines() if x.startswith("#SBATCH --output="))
        want = '"' + sd.replace("%", "%%").replace('"', '\\"') + f"/slurm/{script.stem}-%A_%a.out" + '"'
        assert line == "#SBATCH --output=" + want, line
    odd = tmp_path / "back\\slash"
    odd.mkdir()
    shutil.copy(path, odd / "p.yaml")
    r = migbench("export", "slurm", str(odd / "p.yaml"), "-o", str(tmp_path / "out2"))
    assert r.returncode == 1 and "backslash" in r.stderr and "internal error" not in r.stderr, r.stderr
    assert not (tmp_path / "out2").exists()


def test_the_scripts_run_a_migbench_installed_below_a_directory_whose_name_has_a_space(two_nodes, tmp_path, monkeypatch):
    """Guards: the scripts ran `$MIGBENCH apply ...` and `exec $MIGBENCH exec ...` with MIGBENCH set to
    the quoted path of this install, which the shell split at its space: an install below
    "/home/u/My Projects/" ran `/home/u/My` (command not found) on every node and task. $MIGBENCH
    set by the user is still split into words (`MIGBENCH="python3 -m migbench"`)."""
    import shlex

    import migbench.export.slurm as slurm

    plan, path = two_nodes
    fake = tmp_path / "my tools" / "migbench"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nprintf "%s|" "$@" >> "$LEDGER"\necho >> "$LEDGER"\n')
    fake.chmod(0o755)
    monkeypatch.setattr(slurm, "migbench_command", lambda: shlex.quote(str(fake)))
    out = tmp_path / "out"
    r = migbench("export", "slurm", str(path), "-o", str(out))
    assert r.returncode == 0, r.stderr
    ledger = tmp_path / "ledger"
    env = {k: v for k, v in os.environ.items() if k != "MIGBENCH"}
    node = plan.nodes()[0]
    script = next((out / "arrays").glob("*.sbatch"))
    for s in (out / f"apply-{node}.sh", script):
        res = subprocess.run(["bash", str(s)], env={**env, "LEDGER": str(ledger)}, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
    lines = ledger.read_text().splitlines()
    assert lines[0] == f"apply|{path.resolve()}|--node|{node}|--yes|" and lines[1].startswith("check|") and lines[2].startswith("exec|"), lines
    plain = tmp_path / "fake-migbench"
    plain.write_text(fake.read_text())
    res = subprocess.run(["bash", str(script)], env={**env, "MIGBENCH": f"sh {plain} --also", "LEDGER": str(ledger)}, capture_output=True, text=True)
    assert res.returncode == 0 and ledger.read_text().splitlines()[3].startswith("--also|exec|"), res.stderr  # the user's $MIGBENCH, split
