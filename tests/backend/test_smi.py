"""Parsers of real nvidia-smi output (every sample in tests/data/samples), argv builders, and the round trip
simulator output -> parser -> simulator state."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from migbench.backend import smi
from migbench.backend.sim import smi_cli
from migbench.backend.sim.host import SimHost, init_host
from migbench.catalog import min_mib_printing_as
from tests.support import DATA

SAMPLES = DATA / "samples"


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


# -- argv builders ------------------------------------------------------------------------------------------


def test_argv_builders():
    assert smi.create_gpu_instances_argv(0, [9, 19]) == ["nvidia-smi", "mig", "-i", "0", "-cgi", "9,19", "-C"]
    assert smi.create_gpu_instances_argv(1, ["3g.20gb", (9, 4)], default_ci=False) == ["nvidia-smi", "mig", "-i", "1", "-cgi", "3g.20gb,9:4"]
    with pytest.raises(ValueError):
        smi.create_gpu_instances_argv(0, [])
    assert smi.create_ci_argv(0, 2) == ["nvidia-smi", "mig", "-i", "0", "-gi", "2", "-cci"]
    assert smi.create_ci_argv(0, 2, [0, 0]) == ["nvidia-smi", "mig", "-i", "0", "-gi", "2", "-cci", "0,0"]
    assert smi.destroy_ci_argv(0, 2, 0) == ["nvidia-smi", "mig", "-i", "0", "-gi", "2", "-ci", "0", "-dci"]
    assert smi.destroy_ci_argv() == ["nvidia-smi", "mig", "-dci"]
    assert smi.destroy_gi_argv(0, 2) == ["nvidia-smi", "mig", "-i", "0", "-gi", "2", "-dgi"]
    assert smi.set_mig_mode_argv(0, True) == ["nvidia-smi", "-i", "0", "-mig", "1"]
    assert smi.set_mig_mode_argv([0, 1], False) == ["nvidia-smi", "-i", "0,1", "-mig", "0"]
    assert smi.gpu_reset_argv(3) == ["nvidia-smi", "--gpu-reset", "-i", "3"]
    assert smi.gpu_reset_argv() == ["nvidia-smi", "--gpu-reset"]
    assert smi.query_gpu_argv(["index", "uuid"], noheader=True, nounits=True) == ["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader,nounits"]
    assert smi.list_gpus_argv() == ["nvidia-smi", "-L"]
    assert smi.list_gpu_instances_argv(0) == ["nvidia-smi", "mig", "-i", "0", "-lgi"]
    assert smi.list_compute_instances_argv(0, 2) == ["nvidia-smi", "mig", "-i", "0", "-gi", "2", "-lci"]
    assert smi.list_gpu_instance_profiles_argv() == ["nvidia-smi", "mig", "-lgip"]
    assert smi.list_gpu_instance_placements_argv(0) == ["nvidia-smi", "mig", "-i", "0", "-lgipp"]
    assert smi.list_compute_instance_profiles_argv(0, 1) == ["nvidia-smi", "mig", "-i", "0", "-gi", "1", "-lcip"]


# -- parsers on real captures ------------------------------------------------------------------------------


def test_parse_L_r470():
    lst = smi.parse_L(sample("a100-40gb_L_r470-8gpu_1.txt"))
    assert len(lst.gpus) == 8 and len(lst.mig_devices) == 26
    assert lst.gpus[0] == smi.SmiGpu(0, "A100-SXM4-40GB", "GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77")
    assert [d.profile for d in lst.devices_of(6)] == ["1c.7g.40gb", "2c.7g.40gb", "3c.7g.40gb"]
    assert lst.devices_of(7)[2] == smi.SmiMigDevice(7, "1g.5gb", 2, "MIG-83e71a6c-f0c3-5dfc-8577-6e8b17885e1f")
    assert lst.mig_devices[0].legacy_ids is None


def test_parse_L_r570_and_pre_r470():
    lst = smi.parse_L(sample("h100-80gb_L_r570-ci_1.txt"))
    assert lst.gpus[0].name == "NVIDIA H100 80GB HBM3"
    assert [(d.profile, d.device) for d in lst.mig_devices] == [("1c.3g.40gb", 0), ("1c.3g.40gb", 1), ("1c.3g.40gb", 2), ("1g.10gb", 3), ("1g.10gb", 4)]
    old = smi.parse_L(sample("a100-40gb_L_oldstyle-pre-r470_1.txt"))  # lines behind "# "
    assert old.gpus[0].uuid == "GPU-2fa5cf01-9520-1bc1-995b-cc0c6d9bca7c"
    assert [(d.device, d.legacy_ids) for d in old.mig_devices] == [(0, (1, 0)), (1, (2, 0))]


def test_parse_lgi_captures():
    rows = smi.parse_lgi(sample("a100-40gb_cgi-insufficient-resources_1.txt"))
    assert rows == [
        smi.LgiRow(0, "1g.5gb", 19, 7, 0, 1),
        smi.LgiRow(0, "1g.5gb", 19, 8, 1, 1),
        smi.LgiRow(0, "2g.10gb", 14, 4, 2, 2),
        smi.LgiRow(0, "3g.20gb", 9, 2, 4, 4),
    ]
    a30 = smi.parse_lgi(sample("a30_lgip-lgipp-lgi_1.txt"))
    assert [(r.name, r.instance_id, r.start) for r in a30] == [("1g.6gb", 3, 0), ("1g.6gb", 4, 1), ("1g.6gb", 5, 2), ("1g.6gb", 6, 3)]
    assert [r.instance_id for r in smi.parse_lgi(sample("a100-40gb_cgi-C-lgi_1.txt"))] == [1, 2]
    h100 = smi.parse_lgi(sample("h100-pcie_lgipp-lgi_1.txt"))
    assert [(r.profile_id, r.instance_id, r.start, r.size) for r in h100] == [(19, 7, 0, 1), (19, 8, 1, 1), (19, 9, 2, 1), (9, 2, 4, 4)]
    assert smi.parse_lgi("No GPU instances found: Not Found\n") == []


def test_parse_lci_both_layouts():
    rows = smi.parse_lci(sample("a100-40gb_lci_1.txt"))
    # two openpbs comment rows (old layout without placement, newer with), then the modern table
    assert rows[0] == smi.LciRow(0, 7, "1g.5gb", 0, 0, None, None)
    assert rows[1] == smi.LciRow(0, 7, "1g.5gb", 0, 0, 0, 1)
    assert rows[2:] == [
        smi.LciRow(0, 9, "1g.5gb", 0, 0, 0, 1),
        smi.LciRow(0, 3, "1c.2g.10gb", 0, 0, 0, 1),
        smi.LciRow(0, 3, "1c.2g.10gb", 0, 1, 1, 1),
        smi.LciRow(0, 2, "4g.20gb", 3, 0, 0, 4),
    ]


def test_parse_query_csv():
    text = sample("h100-pcie_query-gpu-mig-mode_1.txt")
    assert smi.parse_query_csv(text.split("\n", 2)[2]) == [{"pci.bus_id": "00000000:01:00.0", "mig.mode.current": "Enabled"}]
    assert smi.parse_query_csv("0, [N/A]\n1, 40960\n", ["index", "memory.total"]) == [
        {"index": "0", "memory.total": None},
        {"index": "1", "memory.total": "40960"},
    ]
    assert smi.parse_query_csv("memory.total [MiB]\n95830 MiB\n") == [{"memory.total": "95830 MiB"}]
    with pytest.raises(ValueError):
        smi.parse_query_csv("a, b\n1\n")


def test_parse_create_lines_captures():
    text = sample("a100-40gb_cgi-insufficient-resources_1.txt")
    first = text.split("$ sudo nvidia-smi mig -cgi 9,19,14,19")[0]
    res = smi.parse_create_lines(first)
    assert res.gpu_instances == (13, 11, 3)
    assert res.gpu_instance_lines[2] == smi.CreatedGpuInstance(0, 3, "2g.10gb", 14)
    assert res.failures[0].profile == "9" and res.failures[0].reason == "Insufficient Resources"
    assert res.summary_reason == "Insufficient Resources" and not res.ok
    res = smi.parse_create_lines(sample("a100-40gb_cgi-C-lgi_1.txt"))
    assert (res.gpu_instances, res.compute_instances, res.ok) == ((2, 1), (0, 0), True)
    assert res.compute_instance_lines[1] == smi.CreatedComputeInstance(0, 1, 0, "3g.20gb", 2)


def test_parse_destroy_lines_captures():
    res = smi.parse_destroy_lines(sample("err_dci-in-use_h100_1.txt"))  # lower-cased by its reporter
    assert res.failures[0].gpu_instance_id == 3 and res.failures[0].compute_instance_id == 0
    assert res.failures[0].reason == "in use by another client" and res.summary_reason == "in use by another client"
    res = smi.parse_destroy_lines(sample("h100-pcie_dci-dgi-mig0_1.txt"))
    assert res.compute_instances == ((0, 7, 0), (0, 8, 0), (0, 9, 0), (0, 2, 0))
    assert res.gpu_instances == ((0, 7), (0, 8), (0, 9), (0, 2)) and res.ok
    res = smi.parse_destroy_lines(sample("unknown-gpu_dgi-in-use_1.txt"))
    assert (res.failures[0].gpu_instance_id, res.summary_reason) == (1, "In use by another client")
    assert smi.parse_destroy_lines("No GPU instances found: Not Found").not_found


def test_parse_mig_mode_and_reset_captures():
    vm = sample("a100-40gb_mig-enable-pending-vm_1.txt")
    assert smi.parse_mig_mode_lines(vm) == [smi.ModeChange("00000000:00:03.0", True, False, True, "Not Supported")]
    assert smi.parse_reset_lines(vm).failed == (("00000000:00:03.0", "Not Supported"),)
    dgx = smi.parse_mig_mode_lines(sample("err_mig-enable-pending_in-use_dgx_1.txt"))
    assert dgx == [
        smi.ModeChange("00000000:07:00.0", True, False, True, "In use by another client"),
        smi.ModeChange("00000000:07:00.0", True, True, False, None),
    ]
    assert smi.parse_mig_mode_output("Disabled MIG Mode for GPU 00000000:01:00.0\nAll done.").applied
    refused = smi.parse_mig_mode_output("Unable to enable MIG Mode for GPU 00000000:07:00.0: In use by another client")
    assert (refused.applied, refused.pending, refused.reason) == (False, False, "In use by another client")
    ok = smi.parse_reset_lines(sample("unknown-gpu_gpu-reset_1.txt"))
    assert ok.reset == ("00000000:8B:00.0", "00000000:8C:00.0")
    assert ok.failed == (("00000000:18:00.0", "In use by another client"),)
    busy = smi.parse_reset_lines(sample("index_reset-in-use.txt"))
    assert busy.failed == (
        ("00000000:00:04.0", "In use by another client"),
        ("00000000:8B:00.0", "In use by another client"),
        ("00000000:8C:00.0", "In use by another client"),
    )


def test_output_has_failure():
    assert smi.output_has_failure(sample("a100-40gb_cgi-insufficient-resources_1.txt"))
    assert smi.output_has_failure(sample("err_dci-in-use_h100_1.txt"))
    assert smi.output_has_failure(sample("index_reset-in-use.txt"))
    assert smi.output_has_failure("No GPU instances found: Not Found")
    assert not smi.output_has_failure(sample("a100-40gb_cgi-C-lgi_1.txt"))
    assert not smi.output_has_failure(sample("h100-pcie_dci-dgi-mig0_1.txt"))


def test_catalog_lgip_lgipp_parsers_on_every_capture():
    for name, gpus_profiles in (("a100-40gb_lgip_1.txt", 6), ("a30_lgip-lgipp-lgi_1.txt", 4), ("h100-nvl_lgip-lgipp_1.txt", 7)):
        rows = smi.parse_lgip(sample(name))[0]
        assert len(rows) == gpus_profiles, name
    assert smi.parse_lgipp(sample("a100-40gb_lgipp_1.txt"))[0][0] == ((0,), 8)
    assert smi.parse_lgipp(sample("h100-pcie_lgipp-lgi_1.txt"))[0][15] == ((0, 2, 4, 6), 2)
    assert smi.parse_lgipp(sample("a30_lgip-lgipp-lgi_1.txt"))[0][5] == ((0, 2), 2)


# -- round trip: the simulator's own output ----------------------------------------------------------------


def _smi(monkeypatch, state: Path, *args: str) -> str:
    buf = io.StringIO()
    smi_cli.main(list(args), stdout=buf, state_dir=state)
    return buf.getvalue()


@pytest.mark.parametrize("model,driver", [("A100-SXM4-40GB", "525.125.06"), ("A30", "470.42.01"), ("H100-NVL", "560.35.03"), ("A100-SXM4-40GB", "460.73.01")])
def test_round_trip(tmp_path, monkeypatch, model, driver):
    init_host(tmp_path, model, 2, driver=driver, mig=True)
    host = SimHost(tmp_path)
    big = max(host.read().model.plain_profiles(), key=lambda p: (p.compute_slices, p.memory_slices))
    small = min(host.read().model.plain_profiles(), key=lambda p: (p.compute_slices, p.memory_slices))
    created = smi.parse_create_lines(_smi(monkeypatch, tmp_path, "mig", "-i", "1", "-cgi", f"{small.id},{small.id}", "-C"))
    assert created.ok and len(created.gpu_instances) == 2 and len(created.compute_instances) == 2
    st = host.read()
    assert sorted(created.gpu_instances) == sorted(gi.id for gi in st.gpus[1].gpu_instances)
    lgi = smi.parse_lgi(_smi(monkeypatch, tmp_path, "mig", "-lgi"))
    assert sorted((r.gpu, r.instance_id, r.profile_id, r.start, r.size) for r in lgi) == sorted(
        (g.index, gi.id, gi.profile_id, gi.start, gi.size) for g in st.gpus for gi in g.gpu_instances
    )
    lci = smi.parse_lci(_smi(monkeypatch, tmp_path, "mig", "-lci"))
    assert sorted((r.gpu_instance_id, r.instance_id) for r in lci) == sorted((gi.id, ci.id) for gi in st.gpus[1].gpu_instances for ci in gi.compute_instances)
    listed = smi.parse_L(_smi(monkeypatch, tmp_path, "-L"))
    assert [g.uuid for g in listed.gpus] == [g.uuid for g in st.gpus]
    assert [(d.gpu, d.device, d.uuid, d.profile) for d in listed.mig_devices] == [(d.gpu, d.index, d.uuid, d.name) for d in st.all_mig_devices()]
    q = smi.parse_query_csv(_smi(monkeypatch, tmp_path, "--query-gpu=index,uuid,pci.bus_id,mig.mode.current,mig.mode.pending", "--format=csv"))
    assert [(r["uuid"], r["pci.bus_id"], r["mig.mode.current"]) for r in q] == [(g.uuid, g.bus_id, "Enabled") for g in st.gpus]
    lgip = smi.parse_lgip(_smi(monkeypatch, tmp_path, "mig", "-lgip"))
    lgipp = smi.parse_lgipp(_smi(monkeypatch, tmp_path, "mig", "-lgipp"))
    for p in st.model.profiles:
        row = next(r for r in lgip[0] if r.id == p.id)
        assert (row.name, row.max_count, row.engines.sm) == (p.name, p.max_count, p.engines.sm)
        assert row.memory_mib == min_mib_printing_as(f"{p.memory_mib / 1024:.2f}")
        assert abs(row.memory_mib - p.memory_mib) <= 11  # the GiB column keeps 0.01 GiB (10.24 MiB)
        assert lgipp[1][p.id] == (p.starts, p.memory_slices)
    free = {r.id: r for r in lgip[1]}
    assert free[big.id].max_count >= 1
    dci = smi.parse_destroy_lines(_smi(monkeypatch, tmp_path, "mig", "-i", "1", "-dci"))
    dgi = smi.parse_destroy_lines(_smi(monkeypatch, tmp_path, "mig", "-i", "1", "-dgi"))
    assert dci.ok and dgi.ok and len(dci.compute_instances) == 2 and len(dgi.gpu_instances) == 2
    assert host.read().gpus[1].gpu_instances == []


def test_round_trip_failures_and_modes(tmp_path, monkeypatch):
    init_host(tmp_path, "A100-SXM4-40GB", 1, driver="510.47.03", clients=["dcgm"])
    out = _smi(monkeypatch, tmp_path, "-mig", "1")
    (change,) = smi.parse_mig_mode_lines(out)
    assert (change.pending, change.reason, change.bus_id) == (True, "In use by another client", "00000000:07:00.0")
    res = smi.parse_reset_lines(_smi(monkeypatch, tmp_path, "-r"))
    assert res.failed == (("00000000:07:00.0", "In use by another client"),)
    SimHost(tmp_path).remove_client("dcgm")
    assert smi.parse_reset_lines(_smi(monkeypatch, tmp_path, "-r")).reset == ("00000000:07:00.0",)
    res = smi.parse_create_lines(_smi(monkeypatch, tmp_path, "mig", "-cgi", "19,19,14,9"))
    assert res.gpu_instances == (13, 11, 3) and res.failures[0].reason == "Insufficient Resources"


# -- the public captures of newer drivers and Blackwell (issue 14) ------------------------------------------

PUBLIC = SAMPLES / "public"


def test_parsers_read_the_newer_layouts():
    """81-column -lgip (GB200 production, RTX PRO 6000, R580 A100), 59-column -lgi, R580/R570 -L and -cgi lines."""
    gb200 = smi.parse_lgip((PUBLIC / "gb200_lgip_2.txt").read_text())[0]
    g22, g45 = min_mib_printing_as("22.00"), min_mib_printing_as("45.50")
    assert [(r.name, r.id, r.memory_mib, r.engines.sm) for r in gb200] == [
        ("1g.23gb", 19, g22, 18),
        ("1g.23gb+me", 20, g22, 18),
        ("1g.47gb", 15, g45, 32),
        ("2g.47gb", 14, g45, 38),
    ]
    assert gb200[-1].engines.ce is None  # the paste stops inside this row
    rtx = smi.parse_lgip((PUBLIC / "rtx-pro-6000_lgip_4.txt").read_text())[3]
    assert [(r.name, r.id, r.max_count) for r in rtx][-1] == ("4g.96gb", 0, 1)
    assert rtx[-1].memory_mib == min_mib_printing_as("93.38") <= 95616
    text = (PUBLIC / "a100-40gb_lgip-cgi-lgi-r580_1.txt").read_text()
    assert [(r.name, r.instance_id, r.start, r.size) for r in smi.parse_lgi(text)] == [("1g.5gb", 9, 6, 1), ("2g.10gb", 3, 4, 2), ("4g.20gb", 2, 0, 4)]
    assert smi.parse_create_lines(text).gpu_instances == (1, 3, 9)
    seven = (PUBLIC / "h100-pcie_cgi-lgi-L_2.txt").read_text()
    assert smi.parse_create_lines(seven).gpu_instances == (9, 7, 8, 11, 12, 13, 14)
    assert [d.device for d in smi.parse_L(seven).mig_devices] == list(range(7))


def test_driver_versions_keep_their_written_form():
    """Guards issue 14 item 5: catalogue JSON printed driver 510.47.03 as 510.47.3; two-part versions exist."""
    from migbench.catalog import driver_str, parse_driver

    assert ".".join(map(str, parse_driver("510.47.03"))) == "510.47.03"
    assert driver_str(parse_driver("570.169")) == "570.169"
    assert parse_driver("570.169") > parse_driver("570.133.20") and parse_driver("510.47.03") == (510, 47, 3)
    assert driver_str((450, 80, 2)) == "450.80.02"


def test_the_simulated_nvidia_smi_never_imports_migbench_from_the_working_directory(tmp_path: Path):
    """Guards: apply ran the simulated nvidia-smi as `python -m migbench.backend.select` in the
    caller's working directory, which Python puts first on the path: a `migbench/` package another
    user left in a shared directory such as /tmp ran as the caller (root under sudo) at each command."""
    import os
    import subprocess

    from migbench.backend.select import SIM_ENV, sim_smi_command

    init_host(tmp_path / "sim", "A100-SXM4-80GB", 1, mig=True)
    shared = tmp_path / "shared"
    (shared / "migbench").mkdir(parents=True)
    marker = tmp_path / "planted-code-ran"
    (shared / "migbench" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    env = dict(os.environ, **{SIM_ENV: str(tmp_path / "sim")})
    p = subprocess.run([*sim_smi_command(), "-L"], cwd=shared, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "GPU 0: NVIDIA A100-SXM4-80GB" in p.stdout, p.stdout + p.stderr
    assert not marker.exists()
