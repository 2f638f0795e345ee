"""The simulated host: rules from docs/mig-facts.md, GI numbering and placement inferred from the real captures,
persistence, locking, process pruning and fault injection."""

from __future__ import annotations

import json
import multiprocessing
import re
import subprocess
import sys

import pytest

from migbench.backend.sim import host as H
from migbench.backend.sim.host import SimError, SimHost, init_host, load_host
from migbench.errors import MigbenchError

UUID_RE = re.compile(r"^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MIG_RE = re.compile(r"^MIG-[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def _kill(p: subprocess.Popen) -> None:
    p.kill()
    p.wait()


def create_seq(h: SimHost, profiles: list[int], gpu: int = 0) -> list[object]:
    out: list[object] = []
    for pid in profiles:
        try:
            gi = h.create_gpu_instance(gpu, pid)
            out.append((gi.id, gi.start))
        except SimError as exc:
            out.append(exc.reason)
            break
    return out


# -- init ---------------------------------------------------------------------------------------------


def test_init_defaults_identity_and_determinism(tmp_path):
    h = init_host(tmp_path / "a", "A100-SXM4-40GB", 4)
    st = h.read()
    assert st.driver == "525.125.06"  # newest catalogue observation is the bare R525 branch
    assert st.product_name == "NVIDIA A100-SXM4-40GB"
    assert all(UUID_RE.match(g.uuid) for g in st.gpus)
    assert len({g.uuid for g in st.gpus}) == 4
    assert [g.bus_id for g in st.gpus] == ["00000000:07:00.0", "00000000:0F:00.0", "00000000:47:00.0", "00000000:4E:00.0"]
    assert not any(g.mig_current or g.mig_pending for g in st.gpus)
    again = init_host(tmp_path / "b", "A100-SXM4-40GB", 4).read()
    assert [g.uuid for g in again.gpus] == [g.uuid for g in st.gpus]
    other = init_host(tmp_path / "c", "A100-SXM4-40GB", 4, seed=7).read()
    assert other.gpus[0].uuid != st.gpus[0].uuid
    vm = init_host(tmp_path / "d", "A100-SXM4-40GB", 2, vm=True).read()
    assert [g.bus_id for g in vm.gpus] == ["00000000:00:03.0", "00000000:00:04.0"]


def test_init_driver_rules(tmp_path):
    assert init_host(tmp_path / "h", "H100-NVL", 1).read().driver == "560.35.03"
    # the newest driver of a verified observation (570.169 comes from a paste of unresolved provenance)
    assert init_host(tmp_path / "p", "H100-PCIE-80GB", 1).read().driver == "525.125.06"
    assert init_host(tmp_path / "b", "A100-SXM4-40GB", 1, driver="R535").read().driver == "535.216.01"
    old = init_host(tmp_path / "o", "A100-SXM4-40GB", 1, driver="450.80.02").read()
    assert old.product_name == "A100-SXM4-40GB"  # no "NVIDIA " prefix on old drivers
    with pytest.raises(MigbenchError, match="needs driver 525.85.12"):
        init_host(tmp_path / "x", "H100-SXM5-80GB", 1, driver="520.61.05")
    with pytest.raises(MigbenchError, match="does not know the memory of GH200-96GB"):
        init_host(tmp_path / "y", "GH200-96GB", 1)
    with pytest.raises(MigbenchError, match="unknown GPU model"):
        init_host(tmp_path / "z", "Z999", 1)


def test_missing_host_is_driver_not_loaded(tmp_path):
    with pytest.raises(SimError) as exc:
        SimHost(tmp_path / "nothing").read()
    assert exc.value.code == H.DRIVER_NOT_LOADED


# -- GPU instance ids and driver-chosen placement (the captures) ---------------------------------------


def test_cgi_19_19_14_9_fails_like_the_user_guide(tmp_path):
    h = init_host(tmp_path, "A100-SXM4-40GB", 1, driver="510.47.03", mig=True)
    assert create_seq(h, [19, 19, 14, 9]) == [(13, 6), (11, 4), (3, 0), "Insufficient Resources"]


def test_cgi_9_19_14_19_matches_the_lgi_capture(tmp_path):
    h = init_host(tmp_path, "A100-SXM4-40GB", 1, driver="510.47.03", mig=True)
    assert create_seq(h, [9, 19, 14, 19]) == [(2, 4), (7, 0), (4, 2), (8, 1)]


def test_h100_pcie_scaleway_sequence(tmp_path):
    h = init_host(tmp_path, "H100-PCIE-80GB", 1, driver="525.125.06", mig=True)
    assert create_seq(h, [9, 19, 19, 19]) == [(2, 4), (7, 0), (8, 1), (9, 2)]


def test_a30_ids(tmp_path):
    h = init_host(tmp_path, "A30", 1, driver="470.42.01", mig=True)
    assert create_seq(h, [14, 14, 14, 14]) == [(3, 0), (4, 1), (5, 2), (6, 3)]
    h = init_host(tmp_path, "A30", 1, driver="470.42.01", mig=True)
    assert h.create_gpu_instance(0, 5, start=2).id == 2
    assert h.create_gpu_instance(0, 5, start=0).id == 1
    h = init_host(tmp_path, "A30", 1, driver="470.42.01", mig=True)
    assert h.create_gpu_instance(0, 0).id == 0


def test_gpu_instance_id_formula():
    m = H.resolve_model("A100-SXM4-40GB", "525.125.06")
    assert [H.gpu_instance_id(m, s, 1) for s in range(7)] == [7, 8, 9, 10, 11, 12, 13]
    assert [H.gpu_instance_id(m, s, 2) for s in (0, 2, 4, 6)] == [3, 4, 5, 6]
    assert [H.gpu_instance_id(m, s, 4) for s in (0, 4)] == [1, 2]
    assert H.gpu_instance_id(m, 0, 8) == 0


# -- GPU instance rules ------------------------------------------------------------------------------


def test_explicit_placement_and_errors(tmp_path):
    h = init_host(tmp_path, "A100-SXM4-40GB", 1, mig=True)
    gi = h.create_gpu_instance(0, 9, start=0)
    assert (gi.id, gi.start, gi.size) == (1, 0, 4)
    with pytest.raises(SimError) as e:
        h.create_gpu_instance(0, 9, start=2)  # not a legal start of 3g
    assert e.value.code == H.INVALID_ARGUMENT
    with pytest.raises(SimError) as e:
        h.create_gpu_instance(0, 9, start=4, size=2)  # wrong size for the profile
    assert e.value.code == H.INVALID_ARGUMENT
    with pytest.raises(SimError) as e:
        h.create_gpu_instance(0, 14, start=2)  # overlaps 3g@0
    assert e.value.code == H.INSUFFICIENT_RESOURCES
    with pytest.raises(SimError) as e:
        h.create_gpu_instance(0, 42)
    assert e.value.code == H.INVALID_ARGUMENT
    with pytest.raises(SimError) as e:
        h.create_gpu_instance(0, 5)  # 4g only at 0: occupied
    assert e.value.code == H.INSUFFICIENT_RESOURCES


def test_gpu_instance_needs_mig_enabled(tmp_path):
    h = init_host(tmp_path, "A100-SXM4-40GB", 1, mig=False)
    with pytest.raises(SimError) as e:
        h.create_gpu_instance(0, 19)
    assert e.value.code == H.NOT_SUPPORTED


def test_one_media_extension_and_maximums(tmp_path):
    h = init_host(tmp_path, "A100-SXM4-40GB", 1, mig=True)
    h.create_gpu_instance(0, 20, start=0)
    with pytest.raises(SimError) as e:
        h.create_gpu_instance(0, 20, start=1)
    assert e.value.code == H.INSUFFICIENT_RESOURCES
    for _ in range(6):
        h.create_gpu_instance(0, 19)
    with pytest.raises(SimError) as e:  # 7 compute slices used
        h.create_gpu_instance(0, 19)
    assert e.value.code == H.INSUFFICIENT_RESOURCES


def test_driver_rule_4g_plus_3g_before_r510(tmp_path):
    old = init_host(tmp_path / "o", "A100-SXM4-40GB", 1, driver="460.73.01", mig=True)
    old.create_gpu_instance(0, 5, start=0)
    with pytest.raises(SimError) as e:
        old.create_gpu_instance(0, 9, start=4)
    assert e.value.code == H.INSUFFICIENT_RESOURCES
    new = init_host(tmp_path / "n", "A100-SXM4-40GB", 1, driver="510.47.03", mig=True)
    new.create_gpu_instance(0, 5, start=0)
    assert new.create_gpu_instance(0, 9, start=4).id == 2


def test_remaining_capacity(tmp_path):
    h = init_host(tmp_path, "A100-SXM4-40GB", 1, mig=True)
    st = h.read()
    m = st.model
    assert st.remaining_capacity(0, m.profile("1g.5gb")) == 7
    assert st.remaining_capacity(0, m.profile("3g.20gb")) == 2
    h.create_gpu_instance(0, 19)  # lands at 6
    st = h.read()
    assert st.remaining_capacity(0, m.profile("3g.20gb")) == 1
    assert st.remaining_capacity(0, m.profile("7g.40gb")) == 0


# -- compute instances --------------------------------------------------------------------------------


def test_compute_instances_profiles_and_placement(tmp_path):
    h = init_host(tmp_path, "A100-SXM4-40GB", 1, mig=True)
    gi = h.create_gpu_instance(0, 9, start=0)
    cis = [h.create_compute_instance(0, gi.id, 0) for _ in range(3)]
    assert [(c.id, c.start, c.size) for c in cis] == [(0, 0, 1), (1, 1, 1), (2, 2, 1)]
    with pytest.raises(SimError) as e:
        h.create_compute_instance(0, gi.id, 0)
    assert e.value.code == H.INSUFFICIENT_RESOURCES
    gi2 = h.create_gpu_instance(0, 9, start=4)
    two = h.create_compute_instance(0, gi2.id, 1)
    one = h.create_compute_instance(0, gi2.id, 0)
    assert (two.start, two.size, one.start) == (0, 2, 2)
    with pytest.raises(SimError) as e:  # full 3c overlaps
        h.create_compute_instance(0, gi2.id, 2)
    assert e.value.code == H.INSUFFICIENT_RESOURCES


def test_default_ci_and_unsupported_ci_profile(tmp_path):
    h = init_host(tmp_path, "A100-SXM4-40GB", 1, mig=True)
    gi = h.create_gpu_instance(0, 5)  # 4g
    with pytest.raises(SimError) as e:
        h.create_compute_instance(0, gi.id, 2)  # 3c is not offered in a 4g GI (docs/mig-facts.md#compute-instances)
    assert e.value.code == H.NOT_SUPPORTED
    ci = h.create_compute_instance(0, gi.id)
    assert (ci.profile_id, ci.size) == (3, 4)


def test_ci_profile_table_matches_facts_c():
    m = H.resolve_model("A100-SXM4-40GB", "525.125.06")
    cps = H.ci_profiles(m, m.profile("3g.20gb"))
    assert [(c.name, c.id, c.max_count, c.sm, c.is_default) for c in cps] == [
        ("1c.3g.20gb", 0, 3, 14, False),
        ("2c.3g.20gb", 1, 1, 28, False),
        ("3g.20gb", 2, 1, 42, True),
    ]
    seven = {c.slices: (c.max_count, c.starts) for c in H.ci_profiles(m, m.profile("7g.40gb"))}
    assert seven == {1: (7, (0, 1, 2, 3, 4, 5, 6)), 2: (3, (0, 2, 4)), 3: (2, (0, 4)), 4: (1, (0,)), 7: (1, (0,))}


def test_mig_devices_order_and_uuids(tmp_path):
    h = init_host(tmp_path, "A100-SXM4-40GB", 1, mig=True)
    a = h.create_gpu_instance(0, 19)  # id 13
    b = h.create_gpu_instance(0, 9)  # 3g@4 is blocked by 1g@6: 3g@0, id 1
    h.create_compute_instance(0, a.id)
    h.create_compute_instance(0, b.id)
    devs = h.read().mig_devices(0)
    assert [(d.index, d.gi_id, d.ci_id, d.name) for d in devs] == [(0, 1, 0, "3g.20gb"), (1, 13, 0, "1g.5gb")]
    assert all(MIG_RE.match(d.uuid) for d in devs)
    first = devs[0].uuid
    h.destroy_compute_instance(0, b.id, 0)
    h.create_compute_instance(0, b.id)
    assert h.read().mig_devices(0)[0].uuid != first  # a new UUID per creation


def test_pre_r470_mig_uuid_form(tmp_path):
    h = init_host(tmp_path, "A100-SXM4-40GB", 1, driver="460.73.01", mig=True)
    gi = h.create_gpu_instance(0, 9)
    ci = h.create_compute_instance(0, gi.id, 0)
    assert ci.uuid == f"MIG-{h.read().gpus[0].uuid}/{gi.id}/0"


def test_destroy_rules(tmp_path):
    h = init_host(tmp_path, "A100-SXM4-40GB", 1, mig=True)
    gi = h.create_gpu_instance(0, 14)
    h.create_compute_instance(0, gi.id)
    with pytest.raises(SimError) as e:
        h.destroy_gpu_instance(0, gi.id)
    assert e.value.code == H.IN_USE
    h.destroy_compute_instance(0, gi.id, 0)
    h.destroy_gpu_instance(0, gi.id)
    with pytest.raises(SimError) as e:
        h.destroy_gpu_instance(0, gi.id)
    assert e.value.code == H.NOT_FOUND


# -- MIG mode, reset, reboot ---------------------------------------------------------------------------


def test_ampere_mode_change_immediate_on_idle_bare_metal(tmp_path):
    h = init_host(tmp_path, "A100-SXM4-40GB", 1)
    assert h.set_mig_mode(0, True) == H.SUCCESS
    g = h.read().gpus[0]
    assert (g.mig_current, g.mig_pending) == (True, True)


def test_ampere_mode_pending_while_a_client_holds_the_gpu(tmp_path):
    h = init_host(tmp_path, "A100-SXM4-40GB", 1, clients=["nvidia-persistenced"])
    assert h.set_mig_mode(0, True) == H.IN_USE
    g = h.read().gpus[0]
    assert (g.mig_current, g.mig_pending) == (False, True)
    with pytest.raises(SimError) as e:
        h.reset([0])
    assert e.value.code == H.IN_USE
    h.remove_client("nvidia-persistenced")
    h.reset([0])
    g = h.read().gpus[0]
    assert (g.mig_current, g.mig_pending) == (True, True)


def test_ampere_vm_mode_pending_until_reboot(tmp_path):
    h = init_host(tmp_path, "A100-SXM4-40GB", 1, vm=True)
    assert h.set_mig_mode(0, True) == H.NOT_SUPPORTED
    with pytest.raises(SimError) as e:
        h.reset([0])
    assert e.value.code == H.NOT_SUPPORTED
    h.reboot()
    g = h.read().gpus[0]
    assert (g.mig_current, g.mig_pending) == (True, True)
    h.create_gpu_instance(0, 0)
    h.reboot()  # instances vanish, Ampere keeps MIG on
    g = h.read().gpus[0]
    assert g.mig_current and not g.gpu_instances


def test_hopper_mode_change_and_reboot(tmp_path, sleeper):
    h = init_host(tmp_path, "H100-SXM5-80GB", 1, clients=["dcgm"])
    assert h.set_mig_mode(0, True) == H.SUCCESS  # no reset needed; clients do not matter
    assert h.read().gpus[0].mig_current
    gi = h.create_gpu_instance(0, 0)
    h.create_compute_instance(0, gi.id)
    h.reboot()
    g = h.read().gpus[0]
    assert (g.mig_current, g.mig_pending, g.gpu_instances) == (False, False, [])
    p = sleeper()
    h.attach("0", p.pid, 1024)
    assert h.set_mig_mode(0, True) == H.IN_USE
    g = h.read().gpus[0]
    assert (g.mig_current, g.mig_pending) == (False, False)


def test_disable_with_gpu_instances_is_refused(tmp_path):
    h = init_host(tmp_path, "A100-SXM4-40GB", 1, mig=True)
    h.create_gpu_instance(0, 19)
    with pytest.raises(SimError) as e:
        h.set_mig_mode(0, False)
    assert e.value.code == H.IN_USE


def test_reset_destroys_instances(tmp_path):
    h = init_host(tmp_path, "A100-SXM4-40GB", 2, mig=True)
    gi = h.create_gpu_instance(1, 9)
    h.create_compute_instance(1, gi.id)
    h.reset([1])
    st = h.read()
    assert st.gpus[1].gpu_instances == [] and st.gpus[1].mig_current


def test_unprivileged_caller(tmp_path):
    h = init_host(tmp_path, "A100-SXM4-40GB", 1, mig=True, privileged=False)
    for call in (lambda: h.create_gpu_instance(0, 19), lambda: h.set_mig_mode(0, False), lambda: h.reset([0]), lambda: h.destroy_gpu_instance(0, 7)):
        with pytest.raises(SimError) as e:
            call()
        assert e.value.code == H.NO_PERMISSION
    h.set_privileged(True)
    assert h.create_gpu_instance(0, 19).id == 13


# -- processes ---------------------------------------------------------------------------------------


def test_attach_blocks_destroy_until_the_process_dies(tmp_path, sleeper):
    h = init_host(tmp_path, "A100-SXM4-40GB", 1, mig=True)
    gi = h.create_gpu_instance(0, 9)
    ci = h.create_compute_instance(0, gi.id)
    p = sleeper()
    proc = h.attach(ci.uuid, p.pid, 2048, "train.py")
    assert (proc.gpu, proc.gi, proc.ci, proc.used_memory_mib) == (0, gi.id, 0, 2048)
    with pytest.raises(SimError) as e:
        h.destroy_compute_instance(0, gi.id, 0)
    assert e.value.code == H.IN_USE
    with pytest.raises(SimError) as e:
        h.reset([0])
    assert e.value.code == H.IN_USE
    _kill(p)
    assert h.read().processes == []  # pruned on load
    h.destroy_compute_instance(0, gi.id, 0)


def test_attach_out_of_memory_and_shared_gi_memory(tmp_path, sleeper):
    h = init_host(tmp_path, "A100-SXM4-40GB", 1, mig=True)
    gi = h.create_gpu_instance(0, 9, start=0)  # 19968 MiB on R525
    a = h.create_compute_instance(0, gi.id, 0)
    b = h.create_compute_instance(0, gi.id, 0)
    h.attach(a.uuid, sleeper().pid, 15000)
    with pytest.raises(SimError) as e:
        h.attach(b.uuid, sleeper().pid, 5000)  # the two CIs share the GI's memory
    assert e.value.code == H.MEMORY
    h.attach(b.uuid, sleeper().pid, 4968)
    assert h.read().used_memory_mib(0, gi.id) == 19968


def test_attach_rules(tmp_path, sleeper):
    h = init_host(tmp_path, "A100-SXM4-40GB", 2, mig=False)
    p = sleeper()
    h.attach(h.read().gpus[1].uuid, p.pid, 1000)
    assert h.read().processes[0].gpu == 1
    with pytest.raises(SimError) as e:
        h.attach("0", 2**22 + 12345, 10)  # no such process
    assert e.value.code == H.NOT_FOUND
    assert h.detach(p.pid) == 1
    assert h.read().processes == []
    h2 = init_host(tmp_path / "m", "A100-SXM4-40GB", 1, mig=True)
    with pytest.raises(SimError) as e:
        h2.attach("0", p.pid, 10)  # a MIG-mode GPU is only reachable through MIG devices
    assert e.value.code == H.INVALID_ARGUMENT


def test_pid_reuse_is_not_mistaken_for_the_attached_process(tmp_path, sleeper):
    h = init_host(tmp_path, "A100-SXM4-40GB", 1, mig=True)
    gi = h.create_gpu_instance(0, 19)
    ci = h.create_compute_instance(0, gi.id)
    p = sleeper()
    h.attach(ci.uuid, p.pid, 100)
    doc = json.loads(h.path.read_text())
    doc["processes"][0]["create_time"] -= 1000  # same pid, different process start: a reused pid
    h.path.write_text(json.dumps(doc))
    assert h.read().processes == []


# -- fault injection, persistence, concurrency ----------------------------------------------------------


def test_fault_injection_fires_on_the_nth_call_and_is_consumed(tmp_path):
    h = init_host(tmp_path, "A100-SXM4-40GB", 1, mig=True)
    h.inject_fault("create_gpu_instance", 2, "INSUFFICIENT_RESOURCES")
    h.create_gpu_instance(0, 19)
    with pytest.raises(SimError) as e:
        h.create_gpu_instance(0, 19)
    assert e.value.code == H.INSUFFICIENT_RESOURCES
    assert h.read().faults == []
    assert h.create_gpu_instance(0, 19).id == 11
    h.inject_fault("*", 1, 19)
    with pytest.raises(SimError) as e:
        h.set_mig_mode(0, True)
    assert e.value.code == H.IN_USE
    with pytest.raises(MigbenchError):
        h.inject_fault("frobnicate", 1, 19)


def test_state_file_is_json_and_atomic(tmp_path):
    h = init_host(tmp_path, "A30", 1, mig=True)
    h.create_gpu_instance(0, 0)
    doc = json.loads((tmp_path / "host.json").read_text())
    assert doc["model_key"] == "A30" and doc["gpus"][0]["gpu_instances"][0]["id"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["host.json", "host.lock"]
    assert load_host(tmp_path).gpus[0].gpu_instances[0].profile_id == 0


def _worker(args: tuple[str, int]) -> int:
    d, profile = args
    return SimHost(d).create_gpu_instance(0, profile).id


def test_concurrent_processes_do_not_lose_updates(tmp_path):
    init_host(tmp_path, "A100-SXM4-40GB", 1, mig=True)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(7) as pool:
        ids = pool.map(_worker, [(str(tmp_path), 19)] * 7)
    assert sorted(ids) == list(range(7, 14))
    assert len(load_host(tmp_path).gpus[0].gpu_instances) == 7


def test_other_processes_see_changes(tmp_path):
    h = init_host(tmp_path, "A100-SXM4-40GB", 1, mig=True)
    code = f"from migbench.backend.sim.host import SimHost; print(SimHost({str(tmp_path)!r}).create_gpu_instance(0, 0).id)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "0"
    assert h.read().gpus[0].gpu_instances[0].profile_id == 0


# -- the `migbench sim` sub-app ----------------------------------------------------------------------------


def test_sim_cli_commands(tmp_path, monkeypatch, sleeper):
    from typer.testing import CliRunner

    from migbench.cli.sim import sim_app

    runner = CliRunner()
    state = tmp_path / "host"
    monkeypatch.setenv("MIGBENCH_SIM", str(state))

    def run(*args: str):
        return runner.invoke(sim_app, list(args))

    r = run("init", str(state), "--gpu", "A100-SXM4-40GB", "--count", "2", "--mig", "on", "--client", "dcgm")
    assert r.exit_code == 0 and "2 x NVIDIA A100-SXM4-40GB" in r.output
    r = run("nvidia-smi", "mig", "-i", "0", "-cgi", "9", "-C")
    assert r.exit_code == 0 and r.output.startswith("Successfully created GPU instance ID  2 on GPU  0")
    r = run("nvidia-smi", "mig", "-lci", "-gi", "5")
    assert r.exit_code == 6 and r.output.strip() == "No compute instances found: Not Found"
    uuid = load_host(state).mig_devices(0)[0].uuid
    p = sleeper()
    r = run("attach", uuid, "--pid", str(p.pid), "--memory", "2GiB", "--name", "train.py")
    assert r.exit_code == 0 and load_host(state).processes[0].used_memory_mib == 2048
    r = run("attach", uuid, "--pid", str(p.pid), "--memory", "lots")
    assert r.exit_code != 0 and "--memory" in str(r.exception)
    r = run("attach", uuid, "--pid", str(p.pid), "--memory", "64GiB")
    assert isinstance(r.exception, SimError) and r.exception.code == H.MEMORY
    r = run("show", "--json")
    doc = json.loads(r.output)
    assert doc["mig_devices"][0]["uuid"] == uuid and doc["processes"][0]["name"] == "train.py"
    r = run("show")
    assert r.exit_code == 0 and "train.py" in r.output and "dcgm" in r.output
    assert run("detach", "--pid", str(p.pid)).exit_code == 0
    assert isinstance(run("detach", "--pid", str(p.pid)).exception, MigbenchError)
    assert run("client", "remove", "dcgm", "--gpu", "1").exit_code == 0
    assert load_host(state).gpus[0].clients == ["dcgm"] and load_host(state).gpus[1].clients == []
    assert run("fault", "--op", "destroy_compute_instance", "--nth", "1", "--code", "IN_USE").exit_code == 0
    r = run("nvidia-smi", "mig", "-dci")
    assert r.exit_code == 255 and "In use by another client" in r.output
    assert run("set", "--unprivileged").exit_code == 0
    r = run("nvidia-smi", "mig", "-lgi")
    assert r.exit_code == 4 and "Insufficient Permissions" in r.output
    assert run("set", "--privileged").exit_code == 0
    assert run("reboot").exit_code == 0
    assert load_host(state).gpus[0].gpu_instances == [] and load_host(state).gpus[0].mig_current
    r = run("init", str(tmp_path / "b"), "--gpu", "GH200-96GB")
    assert isinstance(r.exception, MigbenchError) and "GH200-96GB" in r.exception.message
    monkeypatch.delenv("MIGBENCH_SIM")
    r = run("reboot")
    assert isinstance(r.exception, MigbenchError) and "MIGBENCH_SIM" in (r.exception.hint or "")


@pytest.mark.parametrize(
    "edit, said",
    [
        (lambda g: g["gpu_instances"][0].__setitem__("id", "x"), "GpuInstance.id is 'x', not int"),
        (lambda g: g.__setitem__("mig_current", "yes"), "SimGpu.mig_current is 'yes', not bool"),
        (lambda g: g.__setitem__("clients", [{"pid": 1}]), "SimGpu.clients is not a list of strings"),
        (lambda g: g["gpu_instances"][0]["compute_instances"][0].__setitem__("start", None), "ComputeInstance.start is None, not int"),
    ],
)
def test_a_hand_edited_host_state_of_the_wrong_types_is_said_at_load(tmp_path, edit, said):
    """Regression: a host.json edited to `"id": "x"` (or a mode "yes", a client that is not a
    string) loaded, and check, apply, status and doctor ended in 'internal error (TypeError ...)'
    where the value was first used."""
    init_host(tmp_path, "A100-SXM4-40GB", 1, mig=True)
    h = SimHost(tmp_path)
    gi = h.create_gpu_instance(0, 9)
    h.create_compute_instance(0, gi.id)
    doc = json.loads((tmp_path / "host.json").read_text())
    edit(doc["gpus"][0])
    (tmp_path / "host.json").write_text(json.dumps(doc))
    with pytest.raises(MigbenchError) as ei:
        load_host(tmp_path)
    assert "is not a valid simulated host state" in ei.value.message and said in ei.value.message


def _two_gis(g: dict) -> None:
    """A second 3g.20gb (A100-40GB: id 9, starts 0 and 4) placed at start 2: over both halves."""
    other = json.loads(json.dumps(g["gpu_instances"][0]))
    other.update(id=g["gpu_instances"][0]["id"] + 1, start=2)
    g["gpu_instances"].append(other)


@pytest.mark.parametrize(
    "edit, said",
    [
        (_two_gis, "is at memory slices 2+4; 3g.20gb takes 4 slices at start 0, 4"),
        (lambda g: g["gpu_instances"][0].__setitem__("profile_id", 77), "has profile id 77, which A100-SXM4-40GB does not have"),
        (
            lambda g: g["gpu_instances"].append({**json.loads(json.dumps(g["gpu_instances"][0])), "start": 0}),
            "two GPU instances with id",
        ),
        (
            lambda g: g["gpu_instances"][0]["compute_instances"].append({**g["gpu_instances"][0]["compute_instances"][0], "id": 5}),
            "compute instances 0 and 5 overlap at compute slice 0",
        ),
        (lambda g: g["gpu_instances"][0]["compute_instances"][0].__setitem__("size", 4), "outside the 3 of 3g.20gb"),
        (lambda g: g.__setitem__("index", 3), "GPU 3 is listed at position 0"),
    ],
)
def test_a_hand_edited_host_no_driver_could_be_in_is_said_at_load(tmp_path, edit, said):
    """Regression: a host.json edited to hold two GPU instances over the same memory slices (or a
    profile the model lacks, a placement it does not have, compute instances over each other)
    loaded, and the simulated driver then answered as no real one can."""
    init_host(tmp_path, "A100-SXM4-40GB", 1, mig=True)
    h = SimHost(tmp_path)
    gi = h.create_gpu_instance(0, 9)
    h.create_compute_instance(0, gi.id)
    doc = json.loads((tmp_path / "host.json").read_text())
    assert doc["gpus"][0]["gpu_instances"][0]["start"] == 4  # the driver's first free placement
    edit(doc["gpus"][0])
    (tmp_path / "host.json").write_text(json.dumps(doc))
    with pytest.raises(MigbenchError) as ei:
        load_host(tmp_path)
    assert "is not a valid simulated host state" in ei.value.message and said in ei.value.message, ei.value.message


def test_a_named_pipe_in_place_of_host_json_is_an_error_not_a_hang(tmp_path):
    """Guards: a FIFO at the simulated host's host.json made every command that reads the host
    (`migbench sim show`, plan, apply, status) wait forever in open() for a writer."""
    import os

    from tests.support.fifo import Unblock

    init_host(tmp_path, "A100-SXM4-80GB", 1, mig=True)
    (tmp_path / "host.json").unlink()
    os.mkfifo(tmp_path / "host.json", 0o600)
    with Unblock(tmp_path / "host.json"), pytest.raises(MigbenchError, match=r"host\.json: it is a named pipe \(FIFO\), not a regular file"):
        SimHost(tmp_path).read()
