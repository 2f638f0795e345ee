"""The local Slurm test cluster (tests/support/slurm.py) is real: GRES limit, refuse and cancel.

Skipped unless Slurm is installed (.ci/install-slurm) and we are root; MIGBENCH_REQUIRE_SLURM=1
turns the skips into failures. Every wait polls Slurm's state (squeue), never a fixed sleep.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support import pid_alive
from tests.support import slurm as slurm_support
from tests.support.slurm import (
    Cluster,
    SlurmUnavailable,
    local_slurm,
    slurm_available,
    slurm_fixture,
    slurm_or_skip,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

GRES = {"1g.10gb": 4, "3g.40gb": 1}
NOT_AVAILABLE = "Requested node configuration is not available"


@pytest.fixture
def slurm(tmp_path: Path):
    yield from slurm_or_skip(tmp_path / "cluster", GRES)


made_slurm = slurm_fixture(GRES)  # the same, from the factory


# each array task appends one line: index job start end CUDA_VISIBLE_DEVICES SLURM_JOB_GPUS node
TASK_SCRIPT = """#!/bin/bash
start=$(date +%s.%N)
sleep {seconds}
end=$(date +%s.%N)
echo "$SLURM_ARRAY_TASK_ID $SLURM_JOB_ID $start $end ${{CUDA_VISIBLE_DEVICES:-unset}} \
${{SLURM_JOB_GPUS:-unset}} $SLURMD_NODENAME" >> {out}/task-$SLURM_ARRAY_TASK_ID
"""


def run_array(cluster: Cluster, out: Path, n: int, gres: str, seconds: float = 1.0) -> list[dict]:
    """Submit an n-task array asking for `gres`; wait for it; return one record per task."""
    out.mkdir()
    job = cluster.submit(TASK_SCRIPT.format(seconds=seconds, out=out), f"--array=0-{n - 1}", f"--gres={gres}", "--output", str(out / "slurm-%A_%a.out"))
    states = cluster.wait_job(job, count=n, timeout=30 + 4 * n * seconds)
    assert states == {f"{job}_{i}": "COMPLETED" for i in range(n)}
    records = []
    for i in range(n):
        lines = (out / f"task-{i}").read_text().splitlines()
        assert len(lines) == 1, f"task {i} ran {len(lines)} times: {lines}"
        idx, job_id, start, end, cvd, gpus, node = lines[0].split()
        assert int(idx) == i
        records.append({"idx": i, "job": job_id, "start": float(start), "end": float(end), "cvd": cvd, "gpus": gpus, "node": node})
    return records


def max_overlap(records: list[dict]) -> int:
    """Most intervals [start, end) running at one instant (an end before a start at a tie)."""
    events = sorted([(r["start"], 1) for r in records] + [(r["end"], -1) for r in records])
    running = best = 0
    for _, delta in events:
        running += delta
        best = max(best, running)
    return best


def overlapping_pairs(records: list[dict]):
    for i, a in enumerate(records):
        for b in records[i + 1 :]:
            if a["start"] < b["end"] and b["start"] < a["end"]:
                yield a, b


def test_array_never_runs_more_tasks_than_gres(slurm: Cluster, tmp_path: Path):
    recs = run_array(slurm, tmp_path / "tasks", 10, "gpu:1g.10gb:1")
    # the node advertises 32 CPUs: only the 4 1g.10gb GRES can hold the array at 4 at once
    assert 2 <= max_overlap(recs) <= 4, recs
    for r in recs:  # a batch job sees its GPU as an index, in both variables
        assert r["cvd"].isdigit() and r["cvd"] == r["gpus"], r
    # gres.conf lists the four 1g.10gb devices first (indexes 0-3), the 3g.40gb one is index 4
    assert {r["cvd"] for r in recs} <= {"0", "1", "2", "3"}
    for a, b in overlapping_pairs(recs):  # tasks running together hold different devices
        assert a["cvd"] != b["cvd"], (a, b)


def test_a_type_or_count_the_node_lacks_is_refused(made_slurm: Cluster):
    slurm = made_slurm
    for gres in ("gpu:7g.80gb:1", "gpu:1g.10gb:5", "gpu:3g.40gb:2"):
        proc = slurm.run(["sbatch", f"--gres={gres}", "--wrap", "true"], check=False)
        assert proc.returncode != 0 and NOT_AVAILABLE in proc.stderr, (gres, proc.stderr)
    # nothing waits for it: 22.05 keeps each refused submission as a FAILED record
    assert slurm.run(["squeue", "-h", "-o", "%i %T"]).stdout.strip() == ""
    assert slurm.run(["squeue", "-h", "-t", "all", "-o", "%T %r"]).stdout.split("\n")[:3] == ["FAILED BadConstraints"] * 3
    # the same request within what the node has is accepted and runs
    job = slurm.submit("#!/bin/bash\ntrue\n", "--gres=gpu:3g.40gb:1", "--output", "/dev/null")
    assert slurm.wait_job(job) == {str(job): "COMPLETED"}


def test_scancel_of_a_running_job_shows_cancelled(slurm: Cluster, tmp_path: Path):
    pidfile = tmp_path / "job.pid"
    job = slurm.submit(f"#!/bin/bash\necho $$ > {pidfile}\nexec sleep 300\n", "--gres=gpu:3g.40gb:1", "--output", "/dev/null")
    slurm.wait_job(job, states={"RUNNING"})
    pid = slurm.wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), what="the job to write its pid")
    assert slurm.node_info()["GresUsed"].count("gpu:3g.40gb:1(IDX:") == 1

    slurm.run(["scancel", str(job)])
    assert slurm.wait_job(job, states={"CANCELLED"}) == {str(job): "CANCELLED"}
    assert slurm.job_info(job)["JobState"] == "CANCELLED"
    assert "JobState=CANCELLED" in slurm.run(["scontrol", "show", "job", str(job)]).stdout
    slurm.wait_for(lambda: not pid_alive(int(pid)), what=f"job process {pid} to end")
    slurm.wait_for(lambda: "gpu:3g.40gb:0" in slurm.node_info()["GresUsed"], what=lambda: f"the GRES to be free: {slurm.node_info()['GresUsed']}")


def test_mig_devices_as_nvml_reports_them_give_mig_uuids(tmp_path: Path):
    """mig_uuids=True: the node's GPUs look like AutoDetect=nvml's MIG devices; jobs get UUIDs."""
    ok, why = slurm_available()
    if not ok:
        pytest.skip(why)
    with local_slurm(GRES, workdir=tmp_path / "cluster", mig_uuids=True) as c:
        assert c.run(["sinfo", "-h", "-o", "%G"]).stdout.split() == ["gpu:1g.10gb:4(S:0-31),gpu:3g.40gb:1(S:0-31)"]
        assert [(d.detected, d.gpu, len(d.files)) for d in c.mig_devices["mig0"]] == [("nvidia_a100_1g.10gb", 0, 3)] * 4 + [
            ("nvidia_a100_3g.40gb", 0, 3)
        ]  # one GPU: 4 + 3 slices
        # the type as slurm.conf spells it; the detected name is not a type slurmctld knows
        proc = c.run(["sbatch", "--gres=gpu:nvidia_a100_1g.10gb:1", "--wrap", "true"], check=False)
        assert proc.returncode != 0 and NOT_AVAILABLE in proc.stderr
        recs = run_array(c, tmp_path / "tasks", 6, "gpu:1g.10gb:1")
        big = c.submit("#!/bin/bash\necho $CUDA_VISIBLE_DEVICES > big.txt\n", "--gres=gpu:3g.40gb:1", "--output", "/dev/null", cwd=tmp_path)
        assert c.wait_job(big) == {str(big): "COMPLETED"}
        big_uuid = (tmp_path / "big.txt").read_text().strip()
        assert c.mig_by_uuid(big_uuid).type == "3g.40gb"
    assert 2 <= max_overlap(recs) <= 4
    for r in recs:  # one MIG device, by UUID, of the requested type; SLURM_JOB_GPUS an index
        assert r["cvd"].startswith("MIG-") and c.mig_by_uuid(r["cvd"]).type == "1g.10gb", r
        assert r["gpus"].isdigit()
    for a, b in overlapping_pairs(recs):
        assert a["cvd"] != b["cvd"], (a, b)


def test_two_nodes_on_one_machine(tmp_path: Path):
    ok, why = slurm_available()
    if not ok:
        pytest.skip(why)
    with local_slurm({"1g.10gb": 2}, nodes=["n0", "n1"], workdir=tmp_path / "cluster") as c:
        assert c.run(["sinfo", "-h", "-N", "-o", "%N %T %G"]).stdout.split("\n")[:2] == ["n0 idle gpu:1g.10gb:2", "n1 idle gpu:1g.10gb:2"]
        recs = run_array(c, tmp_path / "tasks", 8, "gpu:1g.10gb:1")
    assert {r["node"] for r in recs} == {"n0", "n1"}
    assert 2 <= max_overlap(recs) <= 4
    for node in ("n0", "n1"):
        assert max_overlap([r for r in recs if r["node"] == node]) <= 2
    for a, b in overlapping_pairs(recs):
        assert (a["node"], a["cvd"]) != (b["node"], b["cvd"]), (a, b)


def test_exit_stops_everything_even_on_error(tmp_path: Path):
    ok, why = slurm_available()
    if not ok:
        pytest.skip(why)
    pidfile = tmp_path / "job.pid"
    with pytest.raises(RuntimeError, match="boom"):
        with local_slurm(GRES, workdir=tmp_path / "cluster") as c:
            job = c.submit(f"#!/bin/bash\necho $$ > {pidfile}\nexec sleep 300\n", "--gres=gpu:1g.10gb:1", "--output", "/dev/null")
            c.wait_job(job, states={"RUNNING"})
            c.wait_for(lambda: pidfile.exists() and pidfile.read_text().strip())
            # slurmstepd and the job (not only the daemons) carry the marker
            assert set(slurm_support._find_marked(c.marker)) - set(c.pids.values())
            raise RuntimeError("boom")
    for name, pid in c.pids.items():
        assert not pid_alive(pid), f"{name} ({pid}) still running"
    assert not pid_alive(int(pidfile.read_text()))
    assert slurm_support._find_marked(c.marker) == []
    assert c.stray_killed == []  # the jobs ended by scancel, not by the final sweep


def test_skips_with_reason_or_fails_when_required(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "slurmd" else f"/usr/bin/{name}")
    assert slurm_available() == (False, "Slurm not installed (missing slurmd; see .ci/install-slurm)")
    with pytest.raises(SlurmUnavailable):
        with local_slurm(GRES, workdir=tmp_path):
            pass
    monkeypatch.delenv(slurm_support.REQUIRE_VAR, raising=False)
    with pytest.raises(pytest.skip.Exception, match="missing slurmd"):
        next(slurm_or_skip(tmp_path, GRES))
    monkeypatch.setenv(slurm_support.REQUIRE_VAR, "1")
    with pytest.raises(pytest.fail.Exception, match="missing slurmd"):
        next(slurm_or_skip(tmp_path, GRES))
    assert os.listdir(tmp_path) == []  # nothing written before the checks
