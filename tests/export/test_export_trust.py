"""Issue 19 item 11: an export into another user's directory followed her planted `nodes` symlink,
and she could replace `apply-<node>.sh` afterwards, which the README tells the admin to run as root.
The export directory must pass the state directory's ownership rule, and a symbolic link inside it
is never followed; each refusal says why."""

from __future__ import annotations

import os

import pytest

from tests.support.cli import migbench

OTHER = 12345


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
@pytest.mark.parametrize("engine", ["slurm", "k8s"])
def test_an_export_into_a_directory_another_user_owns_is_refused(two_nodes, tmp_path, engine):
    """Guards issue 19 item 11: root exported into eve's directory, where she could swap the scripts."""
    _, path = two_nodes
    out = tmp_path / "eve-out"
    out.mkdir()
    os.chown(out, OTHER, OTHER)
    r = migbench("export", engine, str(path), "-o", str(out))
    assert r.returncode == 1 and "refusing" in r.stderr and "owned by uid 12345" in r.stderr and "export directory" in r.stderr, r.stderr
    assert list(out.iterdir()) == []


def test_an_export_below_a_world_writable_directory_is_refused(two_nodes, tmp_path):
    """Guards issue 19 item 11: anyone could rename the export away and put hers in its place."""
    _, path = two_nodes
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    r = migbench("export", "slurm", str(path), "-o", str(shared / "out"))
    assert r.returncode == 1 and "writable by every user" in r.stderr, r.stderr
    assert not (shared / "out").exists()


def test_a_planted_nodes_symlink_is_never_followed(two_nodes, tmp_path):
    """Guards issue 19 item 11: `nodes -> elsewhere` made the export write node files where the link pointed."""
    _, path = two_nodes
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "nodes").symlink_to(elsewhere)
    r = migbench("export", "slurm", str(path), "-o", str(out))
    assert r.returncode == 1 and "symbolic link" in r.stderr and "nodes" in r.stderr, r.stderr
    assert list(elsewhere.iterdir()) == []
    assert not list(out.glob("apply-*.sh")), "nothing half-done"


def test_a_planted_script_symlink_is_replaced_not_written_through(two_nodes, tmp_path):
    """Guards issue 19 items 10-11: an `apply-<node>.sh` link planted in the export directory is refused, its target untouched."""
    plan, path = two_nodes
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (out / f"apply-{plan.nodes()[0]}.sh").symlink_to(victim)
    r = migbench("export", "slurm", str(path), "-o", str(out))
    assert r.returncode == 1 and "symbolic link" in r.stderr, r.stderr
    assert victim.read_text() == "precious\n"
    assert [p.name for p in out.iterdir()] == [f"apply-{plan.nodes()[0]}.sh"], "nothing half-done"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_an_export_whose_state_directory_another_user_could_change_is_refused(two_nodes, tmp_path):
    """Guards: `export slurm` wrote the parsed plan into the plan's state directory, and pointed the
    tasks' logs (#SBATCH --output) and submit.sh's record of the jobs (written through `>`, which
    follows a link) there, without checking who could change it: below a directory another user
    made, she could link those names wherever she liked."""
    import shutil

    _, path = two_nodes
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # as /tmp: sticky, every user may create files there
    shutil.copy(path, shared / "p.yaml")
    eve = shared / "runs"
    eve.mkdir()
    os.chown(eve, OTHER, OTHER)  # she made runs/ before the export
    r = migbench("export", "slurm", str(shared / "p.yaml"), "-o", str(tmp_path / "out"))
    assert r.returncode == 1 and "as the state directory" in r.stderr and f"the directory {eve} is owned by uid 12345" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists() and list(eve.iterdir()) == [], "nothing written"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_stop_never_cancels_jobs_named_in_a_state_directory_another_user_could_change(two_nodes, tmp_path):
    """Guards: `migbench stop PLAN` of an exported sweep ran scancel on the job ids in the state
    directory's slurm/jobs.tsv without checking who could change that directory: another user who
    made it picked which jobs root cancelled (the launcher's stop refuses such a directory)."""
    import hashlib
    import shutil

    plan, path = two_nodes
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # as /tmp: sticky, every user may create files there
    shutil.copy(path, shared / "p.yaml")
    sha = hashlib.sha256((shared / "p.yaml").read_bytes()).hexdigest()
    jobs = shared / "runs" / plan.name / "slurm" / "jobs.tsv"
    jobs.parent.mkdir(parents=True)
    jobs.write_text(f"# plan\t{sha}\t2026-01-01T00:00:00Z\narr\t4242\t1\tt\t0\tarrays/x.sbatch\n")
    for p in (shared / "runs", jobs.parent.parent, jobs.parent, jobs):
        os.chown(p, OTHER, OTHER)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "scancel").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scancel").chmod(0o755)
    r = migbench("stop", str(shared / "p.yaml"), env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert r.returncode == 1 and "as the state directory" in r.stderr and "owned by uid 12345" in r.stderr, r.stdout + r.stderr
    assert not calls.exists(), calls.read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_exec_reads_nothing_in_a_state_directory_another_user_could_change(two_nodes, tmp_path):
    """Guards: `migbench exec` read the state directory's bindings (which MIG device a GRES index is)
    and parsed plan copy before anything checked who could change that directory: another user who
    made it chose the device root's task ran on (`--dry-run` printed her uuid), and only the write
    of the attempt refused it."""
    import json
    import shutil

    from migbench.export.tasks import arrays, node_devices

    plan, path = two_nodes
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # as /tmp: sticky, every user may create files there
    shutil.copy(path, shared / "p.yaml")
    devs = node_devices(plan, "n1")
    local = {g.gpu: k for k, g in enumerate(plan.node_gpus("n1"))}
    bindings = {"version": 1, "plan": plan.name, "instances": {f"{local[i.gpu]}:{i.profile}@{i.start}": {"uuid": "MIG-eve"} for i in devs}}
    bdir = shared / "runs" / plan.name / "nodes" / "n1"
    bdir.mkdir(parents=True)
    (bdir / "bindings.json").write_text(json.dumps(bindings))
    for p in (shared / "runs", bdir.parent.parent, bdir.parent, bdir, bdir / "bindings.json"):
        os.chown(p, OTHER, OTHER)
    small = next(a for a in arrays(plan) if a.profile == "1g.10gb")
    k = next(n for n, i in enumerate(devs) if i.profile == "1g.10gb")
    for extra in (["--dry-run"], []):
        env = {"SLURM_JOB_GPUS": str(k), "SLURMD_NODENAME": "n1", "CUDA_VISIBLE_DEVICES": "", "NVIDIA_VISIBLE_DEVICES": "", "SLURM_STEP_GPUS": ""}
        r = migbench("exec", str(shared / "p.yaml"), "--array", small.name, "--index", "0", *extra, env=env)
        out = r.stdout + r.stderr
        assert r.returncode == 1 and f"refusing {shared / 'runs' / plan.name} as the state directory" in r.stderr, (extra, out)
        assert "owned by uid 12345" in r.stderr and "MIG-eve" not in out and "Traceback" not in out, (extra, out)
