"""`migbench doctor`: what stands in the way of apply, each with its fix, read-only — tested on the
simulated host (pending mode, clients, unprivileged caller, instances in use), without a driver, and
the real host's device-holder scan on a made-up /proc."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pynvml
import pytest

from migbench.backend.doctor import _proc_holders
from migbench.backend.sim import fake_nvml
from migbench.backend.sim.host import SimHost, init_host
from tests.support.cli import migbench


def doctor(sim: Path | None, *args: str):  # type: ignore[no-untyped-def]
    env = {"MIGBENCH_SIM": str(sim)} if sim is not None else {}
    r = migbench("doctor", *args, env=env)
    assert "Traceback" not in r.stderr
    return r


def findings(sim: Path) -> list[dict]:
    r = doctor(sim, "--json")
    return json.loads(r.stdout)["findings"]


def test_a_ready_host_has_nothing_in_the_way(tmp_path):
    sim = tmp_path / "sim"
    init_host(sim, "A100-SXM4-80GB", 2, mig=True)
    before = (sim / "host.json").read_bytes()
    r = doctor(sim)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "nothing in the way of `migbench apply`" in r.stdout
    assert "[ok] GPU 1 (NVIDIA A100-SXM4-80GB): MIG enabled" in r.stdout
    assert (sim / "host.json").read_bytes() == before  # read-only


def test_a_pending_mode_change_in_a_vm_fails_with_its_fix(tmp_path):
    sim = tmp_path / "sim"
    init_host(sim, "A100-SXM4-80GB", 1, mig=False, vm=True)
    SimHost(sim).set_mig_mode(0, True)  # a VM cannot reset the GPU: the change stays pending
    r = doctor(sim)
    assert r.returncode == 1, r.stdout
    assert "[fail] GPU 0 (NVIDIA A100-SXM4-80GB): a MIG mode change is pending (now disabled, enabled after the next GPU reset)" in r.stdout
    assert "fix: reboot the VM" in r.stdout
    assert "VM passthrough" in r.stdout


def test_clients_and_instances_in_use(tmp_path, sleeper):
    sim = tmp_path / "sim"
    init_host(sim, "A100-SXM4-80GB", 2, mig=True, clients=["nvidia-persistenced"])
    h = SimHost(sim)
    h.add_client("dcgm", [1])
    gi = h.create_gpu_instance(0, 9, 4)
    ci = h.create_compute_instance(0, gi.id)
    p = sleeper()
    h.attach(ci.uuid, p.pid, 1024)
    f = findings(sim)
    warns = [x for x in f if x["level"] == "warn"]
    held = {x["gpu"]: x["what"] for x in warns if "is held by" in x["what"]}
    assert "nvidia-persistenced" in held[0] and "dcgm" in held[1] and "nvidia-persistenced" in held[1]
    in_use = [x for x in warns if "in use by PID" in x["what"]]
    assert len(in_use) == 1 and f"PID {p.pid}" in in_use[0]["what"] and "3g.40gb@4" in in_use[0]["what"]
    assert "apply will not destroy it" in in_use[0]["what"] and in_use[0]["fix"]
    assert all(x["fix"] for x in warns)
    assert doctor(sim).returncode == 0  # warnings only: nothing blocks a plan that keeps those instances


def test_an_unprivileged_caller(tmp_path):
    """Without root NVML refuses to list GPU instances: the driver is there, the user may not read."""
    sim = tmp_path / "sim"
    init_host(sim, "A100-SXM4-80GB", 1, mig=True, privileged=False)
    r = doctor(sim)
    assert r.returncode == 1
    f = findings(sim)
    assert any(x["level"] == "fail" and "may not read the MIG configuration" in x["what"] and "--privileged" in x["fix"] for x in f)
    assert any(x["level"] == "warn" and "is not root" in x["what"] for x in f)
    assert not any("no NVIDIA driver" in x["what"] for x in f)


def test_mig_disabled_with_processes_on_the_gpu(tmp_path, sleeper):
    sim = tmp_path / "sim"
    init_host(sim, "A100-SXM4-80GB", 1, mig=False)
    p = sleeper()
    SimHost(sim).attach("0", p.pid, 100)
    f = findings(sim)
    assert any("MIG mode is disabled" in x["what"] and "enables it" in x["fix"] for x in f)
    assert any(f"compute processes run on it (PID {p.pid})" in x["what"] for x in f)


def test_no_driver_is_a_failure_with_the_fix():
    while isinstance(pynvml.nvmlLib, fake_nvml.FakeNvmlLibrary):
        fake_nvml.uninstall()
    r = doctor(None)
    if "no NVIDIA driver answers" not in r.stdout:
        pytest.skip("this machine has an NVIDIA driver")
    assert r.returncode == 1
    assert "fix: install the NVIDIA datacenter driver" in r.stdout and "migbench sim init" in r.stdout


def test_device_holders_are_read_from_proc(tmp_path):
    """On a real host, who holds /dev/nvidiaN is read from /proc/<pid>/fd (made up here)."""
    proc = tmp_path / "proc"
    for pid, name, targets in (
        (101, "nvidia-persiste", ["/dev/nvidia0", "/dev/nvidiactl"]),
        (202, "nv-hostengine", ["/dev/nvidia1", "/dev/nvidia0"]),
        (303, "bash", ["/dev/pts/0"]),
        (os.getpid(), "me", ["/dev/nvidia0"]),
    ):
        fd = proc / str(pid) / "fd"
        fd.mkdir(parents=True)
        (proc / str(pid) / "comm").write_text(name + "\n")
        for n, t in enumerate(targets):
            (fd / str(n)).symlink_to(t)
    (proc / "self").mkdir()
    assert _proc_holders(proc) == {
        0: ["nv-hostengine (PID 202)", "nvidia-persiste (PID 101)"],
        1: ["nv-hostengine (PID 202)"],
    }
