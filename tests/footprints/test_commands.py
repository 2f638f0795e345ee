"""`migbench profile`, `plan --footprints`, `estimate` and `estimate --accuracy` as a user runs them."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from migbench.backend.sim import fake_nvml
from migbench.backend.sim.host import init_host
from migbench.footprints import Footprints
from tests.footprints.test_file import m as measurement
from tests.support.cli import migbench
from tests.support.launchkit import TOY_CMD

SWEEP = """
version: 1
name: acc
fleet: [{gpu: A100-SXM4-80GB, count: 1}]
groups:
  - name: lm
    command: python train.py --batch {batch} --lr {lr}
    parameters: {batch: [4, 8, 16, 32], lr: [0.1]}
    memory: {measured: true, fallback: {by: batch, table: {4: 8GiB, 8: 8GiB, 16: 8GiB, 32: 8GiB}}, by: [batch]}
  - name: est
    command: python train.py --seed {seed}
    parameters: {seed: [0, 1]}
    memory: {estimate: {params: 124M, precision: bf16-mixed, optimizer: adamw, batch_size: 8, seq_len: 1024, hidden: 768,
                        layers: 12, heads: 12, vocab: 50257}}
"""


@pytest.fixture
def sweep_dir(tmp_path):  # type: ignore[no-untyped-def]
    (tmp_path / "acc.yaml").write_text(textwrap.dedent(SWEEP))
    (tmp_path / "train.py").write_text("")  # the script the groups name, so `plan` has nothing to warn about
    from migbench.sweep import load_sweep

    sw = load_sweep(tmp_path / "acc.yaml")
    peaks = {4: 1500, 8: 2500, 16: 4500, 32: 8500}  # 500 + 250 x batch
    ms = [measurement(r.id, peaks[r.params["batch"]], group="lm", params=r.params) for r in sw.runs if r.group == "lm" and r.params["batch"] != 32]
    est = [r for r in sw.runs if r.group == "est"]
    ms.append(measurement(est[0].id, 4000, group="est", params=est[0].params))
    Footprints("acc", "", ms).save(tmp_path / "acc.footprints.yaml")
    return tmp_path


def test_estimate_shows_where_each_runs_memory_came_from(sweep_dir):
    r = migbench("estimate", "acc.yaml", "--json", cwd=sweep_dir)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    src = {(x["group"], x["params"].get("batch")): (x["source"], x["memory_mib"]) for x in doc["runs"]}
    assert src[("lm", 4)] == ("profile", 1650)  # the default footprints file, for a `memory: measured` group
    assert src[("lm", 32)][0] == "fit" and abs(src[("lm", 32)][1] - 8500 * 1.1) < 30  # predicted: 500 + 250 x batch
    assert {src[("est", None)][0]} == {"estimate"}  # a declared group keeps its estimate unless --footprints is given
    assert any("footprints from" in n for n in doc["notes"]) and any("group lm: peak ≈" in n for n in doc["notes"])
    r = migbench("estimate", "acc.yaml", cwd=sweep_dir)
    assert r.returncode == 0 and "profile" in r.stdout and "fit" in r.stdout and "note: group lm" in r.stdout


def test_estimate_accuracy_per_group_and_the_runs_sized_wrongly(sweep_dir):
    r = migbench("estimate", "acc.yaml", "--accuracy", "--json", "--footprints", "acc.footprints.yaml", cwd=sweep_dir)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    g = {x["group"]: x for x in doc["groups"]}
    assert g["lm"]["measured"] == 3 and g["lm"]["runs"] == 4
    dec = g["lm"]["errors"]["declared"]
    assert dec["n"] == 3 and dec["worst"] == pytest.approx(8192 / 1500 - 1, rel=1e-3)
    assert g["lm"]["errors"]["fit"]["n"] == 3 and abs(g["lm"]["errors"]["fit"]["worst"]) < 0.01  # linear: leave-one-out is exact
    assert set(g["est"]["errors"]) >= {"declared", "analytic"}
    bigger = {(m["group"], m["verdict"], m["declared_instance"], m["needed_instance"]) for m in doc["missized"]}
    assert ("lm", "bigger", "1g.10gb", "1g.10gb") not in bigger
    r = migbench("estimate", "acc.yaml", "--accuracy", "--footprints", "acc.footprints.yaml", cwd=sweep_dir)
    assert r.returncode == 0 and "memory accuracy per group" in r.stdout


def test_estimate_accuracy_flags_a_declared_memory_that_picks_a_bigger_instance(tmp_path):
    (tmp_path / "s.yaml").write_text(
        textwrap.dedent("""
        version: 1
        name: s
        fleet: [{gpu: A100-SXM4-80GB, count: 1}]
        command: python train.py --seed {seed}
        parameters: {seed: [0, 1]}
        memory: 30GiB
        """)
    )
    from migbench.sweep import load_sweep

    sw = load_sweep(tmp_path / "s.yaml")
    Footprints(
        "s", "", [measurement(sw.runs[0].id, 6000, group="s", params=sw.runs[0].params), measurement(sw.runs[1].id, 50000, group="s", params=sw.runs[1].params)]
    ).save(tmp_path / "f.yaml")
    r = migbench("estimate", "s.yaml", "--accuracy", "--json", "--footprints", "f.yaml", cwd=tmp_path)
    doc = json.loads(r.stdout)
    got = {m["run_id"]: (m["verdict"], m["declared_instance"], m["needed_instance"]) for m in doc["missized"]}
    assert got[sw.runs[0].id] == ("bigger", "3g.40gb", "1g.10gb")
    assert got[sw.runs[1].id] == ("too small", "3g.40gb", "7g.80gb")


def test_plan_with_a_corrupt_or_missing_footprints_file_is_a_clear_error(sweep_dir):
    (sweep_dir / "bad.yaml").write_text("kind: migbench-footprints\nversion: 1\nsweep: acc\nmeasurements:\n  - {run: x}\n")
    r = migbench("plan", "acc.yaml", "--footprints", "bad.yaml", "-o", "p.yaml", cwd=sweep_dir)
    assert r.returncode == 1 and r.stderr.startswith("Error: bad.yaml: ") and "measurements[0].peak_mib" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    r = migbench("plan", "acc.yaml", "--footprints", "none.yaml", "-o", "p.yaml", cwd=sweep_dir)
    assert r.returncode == 1 and "does not exist" in r.stderr


def test_plan_records_and_shows_where_memory_came_from(sweep_dir):
    r = migbench("plan", "acc.yaml", "-o", "p.yaml", cwd=sweep_dir, env={"MIGBENCH_WIDTH": "200"})
    assert r.returncode == 0, r.stderr
    assert "memory from" in r.stdout and "memory of 6 run(s): 3 profile" in r.stdout
    from migbench.plan import Plan

    plan = Plan.load(sweep_dir / "p.yaml")
    assert sorted({x.memory_source for x in plan.runs}) == ["estimate", "fit", "profile"]


@pytest.mark.slow
def test_profile_command_writes_footprints_and_refuses_seconds_with_steps(tmp_path):
    sim = tmp_path / "sim"
    init_host(sim, "A100-SXM4-40GB", 1, mig=True)
    (tmp_path / "one.yaml").write_text(
        textwrap.dedent(f"""
        version: 1
        name: one
        command: {TOY_CMD} --steps 40 --step-seconds 0.05 --memory 1500MiB
        memory: 2GiB
        """)
    )
    env = {"MIGBENCH_SIM": str(sim)}
    try:
        r = migbench("profile", "one.yaml", "--seconds", "5", "--steps", "2", cwd=tmp_path, env=env)
        assert r.returncode == 2 and "not both" in r.stderr
        r = migbench("profile", "one.yaml", "--steps", "2", "-o", "fp.yaml", cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stderr + r.stdout
        assert "[1/1]" in r.stdout and "peak 1500 MiB" in r.stdout and "footprints written to fp.yaml" in r.stdout
        assert "created a probe layout" in r.stdout and "finished" in r.stdout
        r = migbench("sim", "nvidia-smi", "-L", cwd=tmp_path, env=env)
        assert "MIG" not in r.stdout  # the probe layout is gone
        (tmp_path / "other.yaml").write_text((tmp_path / "one.yaml").read_text().replace("name: one", "name: other"))
        r = migbench("profile", "other.yaml", "-o", "fp.yaml", cwd=tmp_path, env=env)
        assert r.returncode == 2 and "holds the footprints of sweep 'one'" in r.stderr
    finally:
        fake_nvml.uninstall()


def test_plan_warns_when_footprints_come_from_another_sweep_or_gpu_model(sweep_dir):
    fp = sweep_dir / "acc.footprints.yaml"
    fp.write_text(fp.read_text().replace("sweep: acc", "sweep: elsewhere"))
    r = migbench(
        "plan", "acc.yaml", "--fleet", "A100-SXM4-40GB:1", "--footprints", str(fp), "-o", "p.yaml", "--no-runs", cwd=sweep_dir, env={"MIGBENCH_WIDTH": "300"}
    )
    assert r.returncode == 0, r.stderr
    assert "was measured for sweep 'elsewhere', not 'acc'" in r.stdout
    assert "4 measurement(s) were taken on A100-SXM4-80GB, this plan is for A100-SXM4-40GB" in r.stdout
    from migbench.plan import Plan

    assert any("taken on A100-SXM4-80GB" in w for w in Plan.load(sweep_dir / "p.yaml").warnings)  # kept with the plan


def test_the_measured_example_plans_on_its_fallback_before_any_measurement(tmp_path):
    from tests.support import REPO

    r = migbench("plan", str(REPO / "examples" / "measured-sweep.yaml"), "-o", str(tmp_path / "p.yaml"), "--json", "--no-history", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert {x["memory_source"] for x in doc["runs"]} == {"explicit"} and {x["memory_mib"] for x in doc["runs"]} == {24576}


def test_report_shows_the_footprints_peaks(sweep_dir):
    """The report (issue 13) reads measured peaks from a footprints file where no launch has any."""
    assert migbench("plan", "acc.yaml", "-o", "p.yaml", "--no-history", cwd=sweep_dir).returncode == 0
    r = migbench("report", "p.yaml", "--no-grain", "-o", "r.html", "--footprints", "acc.footprints.yaml", cwd=sweep_dir)
    assert r.returncode == 0, r.stderr
    html = (sweep_dir / "r.html").read_text()
    from migbench.footprints import load_footprints

    fp = load_footprints(sweep_dir / "acc.footprints.yaml")
    assert len(fp.peaks()) == 4
    for rid in fp.peaks():
        assert f"{rid}: measured peak" in html


def _shared_one(tmp_path: Path) -> tuple[Path, Path]:
    """A simulated A100-40GB host and `shared/` (sticky and world-writable, as /tmp) holding the
    one-run sweep `one.yaml`."""
    sim = tmp_path / "sim"
    init_host(sim, "A100-SXM4-40GB", 1, mig=True)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "one.yaml").write_text(f"version: 1\nname: one\ncommand: {TOY_CMD} --steps 2 --step-seconds 0.05 --memory 1500MiB\nmemory: 2GiB\n")
    return sim, shared


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="chown to another uid needs root")
@pytest.mark.parametrize("speed", [False, True])
def test_profile_never_merges_or_waits_on_a_footprints_file_another_user_put_beside_the_sweep(tmp_path, speed):
    """Guards: `profile` (and `profile --speed`) read the footprints file beside the sweep, found by
    its name, as any file: in a shared sticky directory another user's planted one was merged into
    the file profile wrote, which then was the user's own and sized the next plan (`plan` refuses
    hers), and a named pipe there hung the command; a link there was refused only after probing."""
    import os

    from tests.support.fifo import Unblock

    sim, shared = _shared_one(tmp_path)
    fp = shared / "one.footprints.yaml"
    Footprints("one", "", [measurement("one-x", 99999, group="one", params={})]).save(fp)
    os.chown(fp, 12345, 12345)
    env = {"MIGBENCH_SIM": str(sim)}
    extra = ["--speed"] if speed else ["--steps", "2"]
    try:
        r = migbench("profile", "one.yaml", *extra, cwd=shared, env=env)
        out = r.stdout + r.stderr
        assert r.returncode == 1 and f"refusing the footprints file {fp}: it is owned by uid 12345" in r.stderr, out
        assert "probe layout" not in out and "Traceback" not in out and "99999" in fp.read_text(), out
        fp.unlink()
        os.mkfifo(fp, 0o600)
        with Unblock(fp, data=b"kind: migbench-footprints\n"):
            r = migbench("profile", "one.yaml", *extra, cwd=shared, env=env)
        out = r.stdout + r.stderr
        assert r.returncode == 1 and "it is a named pipe (FIFO), not a regular file" in r.stderr and "probe layout" not in out, out
        fp.unlink()
        (shared / "elsewhere").write_text("")
        fp.symlink_to(shared / "elsewhere")
        r = migbench("profile", "one.yaml", *extra, cwd=shared, env=env)
        out = r.stdout + r.stderr
        assert r.returncode == 1 and "symbolic link" in r.stderr and "probe layout" not in out and "Traceback" not in out, out
    finally:
        fake_nvml.uninstall()


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="chown to another uid needs root")
@pytest.mark.parametrize("speed", [False, True])
def test_profile_refuses_a_probe_directory_another_user_could_change_before_it_cuts_the_gpus(tmp_path, speed):
    """Guards: `profile` checked who could change its probes' directory (<sweep dir>/runs/<name>.profile/)
    only when the first probe started: with another user's runs/ beside a sweep in a shared
    directory, it cut the GPUs into a probe layout, then refused, then put them back."""
    import os

    sim, shared = _shared_one(tmp_path)
    (shared / "runs").mkdir()
    os.chown(shared / "runs", 12345, 12345)
    try:
        r = migbench("profile", "one.yaml", *(["--speed"] if speed else ["--steps", "2"]), cwd=shared, env={"MIGBENCH_SIM": str(sim)})
    finally:
        fake_nvml.uninstall()
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "as the state directory" in r.stderr and "owned by uid 12345" in r.stderr, out
    assert "probe layout" not in out and "Traceback" not in out and list((shared / "runs").iterdir()) == [], out


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_signal_while_profile_probes_stops_the_probes_and_removes_the_probe_layout(tmp_path, sig):
    """Guards: SIGTERM (or a lost terminal's SIGHUP) killed `profile` at once: the probe layout it
    created ("removed at the end") stayed on the GPU, its probe went on running past its limit, and
    no footprints were written. Each now ends it as Ctrl-C does."""
    import os
    import signal
    import subprocess

    from migbench.backend.sim.host import SimHost
    from tests.support.launchkit import PY, as_from_a_terminal, gone, wait_until

    sim = tmp_path / "sim"
    init_host(sim, "A100-SXM4-40GB", 1, mig=True)
    (tmp_path / "one.yaml").write_text(f"version: 1\nname: one\ncommand: {TOY_CMD} --steps 4000 --step-seconds 0.05 --memory 1500MiB\nmemory: 2GiB\n")
    env = {**os.environ, "MIGBENCH_SIM": str(sim)}
    p = subprocess.Popen(
        [PY, "-m", "migbench", "profile", "one.yaml", "--seconds", "150"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=as_from_a_terminal,  # Ctrl-C reaches it as from a terminal, however the test run was started
    )
    try:
        started = tmp_path / "runs" / "one.profile"
        wait_until(lambda: any(started.glob("*/attempt-1/child.json")), 60, lambda: "the probe to start")
        child = json.loads(next(started.glob("*/attempt-1/child.json")).read_text())
        assert SimHost(sim).read().gpus[0].gpu_instances, "the probe layout is there"
        p.send_signal(getattr(signal, sig))
        out = p.communicate(timeout=60)[0].decode()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130 and "interrupted" in out and "footprints written to" in out, (p.returncode, out)
    assert SimHost(sim).read().gpus[0].gpu_instances == [], out
    wait_until(lambda: gone(int(child["pid"])), 30, lambda: f"the probe {child} to end")
