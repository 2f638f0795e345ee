"""`migbench sim init DIR --from CAPTURE`: a simulated host rebuilt from a real host's nvidia-smi text
(the real captures in tests/data/samples/, docs/captures.md), and `apply --dry-run` against it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from migbench.backend.sim.captured import host_from_capture
from migbench.backend.sim.host import SimHost, init_host
from migbench.backend.sim.smi_cli import main as smi_main
from migbench.errors import InputError
from tests.support.captures import a100_pcie_40gb, h100_pcie, section
from tests.support.cli import migbench


def smi(state: Path, *argv: str) -> str:
    out = io.StringIO()
    smi_main(list(argv), stdout=out, stderr=out, state_dir=state)
    return out.getvalue()


SWEEP = """\
version: 1
name: ci
groups:
  - name: a
    command: python train.py --seed {seed}
    parameters: {seed: [0, 1, 2]}
    memory: 4GiB
  - name: b
    command: python train.py --big
    memory: 18GiB
"""


def test_an_h100_pcie_from_its_captures(tmp_path):
    """scaleway's H100 PCIe after `-cgi 9,19,19,19 -C`: -L, -lgi and -lgipp only."""
    cap = h100_pcie(tmp_path / "cap")
    host, notes = host_from_capture(cap, tmp_path / "sim", driver="525.125.06")
    st = host.read()
    assert st.model_key == "H100-PCIE-80GB" and st.driver == "525.125.06" and st.model_spec is None
    # the simulated nvidia-smi prints what the real one printed
    assert smi(host.dir, "-L") == (cap / "nvidia-smi-L.txt").read_text()
    assert smi(host.dir, "mig", "-lgi") == (cap / "mig-lgi.txt").read_text()
    assert {g.id: (st.gi_profile(g).name, g.start) for g in st.gpus[0].gpu_instances} == {
        2: ("3g.40gb", 4),
        7: ("1g.10gb", 0),
        8: ("1g.10gb", 1),
        9: ("1g.10gb", 2),
    }
    text = " ".join(notes)
    assert "no -lgip/-lgipp" in text and "no -q" in text and "no -lci" in text


def test_an_a100_pcie_from_its_captures(tmp_path):
    """yokatayama's A100-PCIE-40GB (510.47.03): its -lgip table with the driver's memory, GPU
    instances 11, 12, 6, 1 and compute instances of 1 slice in the 2g and 3g instances."""
    cap = a100_pcie_40gb(tmp_path / "cap")
    host, notes = host_from_capture(cap, tmp_path / "sim", driver="510.47.03")
    st = host.read()
    # its -lgip/-lgipp do not describe a whole GPU (the paste is cut), so the catalogue's table for
    # that driver stands in, and the note says so (4.75 GiB as printed, 4864 MiB exactly)
    assert st.model_spec is None and st.model.profile("1g.5gb").memory_mib == 4864
    assert any("could not be read" in n and "built-in catalogue" in n for n in notes)
    assert st.model.memory_total_mib == 40960 and st.model.rules  # kept from the catalogue: the tables do not show them
    assert smi(host.dir, "mig", "-lgi") == (cap / "mig-lgi.txt").read_text()
    assert smi(host.dir, "mig", "-lgip") == (cap / "mig-lgip.txt").read_text()
    lci = smi(host.dir, "mig", "-lci")
    assert lci.startswith((cap / "mig-lci.txt").read_text().rstrip("\n"))  # the capture stops before the last border
    assert [(d.gi_id, d.ci_id, d.name) for d in st.all_mig_devices()] == [(1, 0, "1c.3g.20gb"), (6, 0, "1c.2g.10gb"), (11, 0, "1g.5gb"), (12, 0, "1g.5gb")]
    assert st.gpus[0].uuid == "GPU-14ac2834-0d81-0508-69eb-e25264c08d21"
    assert any("-L lists 1 MIG device(s)" in n for n in notes)  # -L was taken before the other CIs existed


def test_apply_dry_run_says_what_apply_would_do_to_that_box(tmp_path):
    """CI's use: plan for the captured host and dry-run apply against it; nothing changes."""
    sim = tmp_path / "sim"
    r = migbench("sim", "init", str(sim), "--from", str(h100_pcie(tmp_path / "cap")), "--driver", "525.125.06")
    assert r.returncode == 0, r.stderr
    assert "1 x NVIDIA H100 PCIe (H100-PCIE-80GB)" in r.stdout and "4 GPU instance(s)" in r.stdout
    assert f"export MIGBENCH_SIM={sim}" in r.stdout
    (tmp_path / "ci.yaml").write_text(SWEEP)
    env = {"MIGBENCH_SIM": str(sim)}
    r = migbench("plan", "ci.yaml", "-o", "ci.plan.yaml", "--no-runs", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    before = (sim / "host.json").read_bytes()
    r = migbench("apply", "ci.plan.yaml", "--dry-run", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"# dry run on simulated host {sim}: these commands would run"
    # the captured instances (3g.40gb@4 is GPU instance 2; 1g.10gb@0, @1, @2 are 7, 8, 9): those the plan
    # has are kept, the others go
    from migbench.plan import Plan

    planned = {str(i.placement) for i in Plan.load(tmp_path / "ci.plan.yaml").instances}
    for gid, pl in ((2, "3g.40gb@4"), (7, "1g.10gb@0"), (8, "1g.10gb@1"), (9, "1g.10gb@2")):
        gone = f"nvidia-smi mig -i 0 -gi {gid} -dgi" in lines
        assert gone == (pl not in planned), (pl, planned)
    assert planned != {"3g.40gb@4", "1g.10gb@0", "1g.10gb@1", "1g.10gb@2"}  # the dry run has something to say
    assert (sim / "host.json").read_bytes() == before


def test_doctor_capture_then_sim_init_from_gives_the_same_host(tmp_path, sleeper):
    """The round trip: a host's capture rebuilds it (mode, instances and their ids, uuids, clients,
    the exact profile table), and a plan made on either is byte-identical."""
    src = tmp_path / "bench"
    init_host(src, "A100-SXM4-80GB", 2, mig=True, clients=["nvidia-persistenced"])
    h = SimHost(src)
    for gpu, profile, start in ((0, 9, 4), (0, 19, 0), (1, 14, 2)):
        gi = h.create_gpu_instance(gpu, profile, start)
        h.create_compute_instance(gpu, gi.id)
    h.set_mig_mode(1, True)
    cap = tmp_path / "cap"
    r = migbench("doctor", "--capture", str(cap), env={"MIGBENCH_SIM": str(src)})
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in cap.iterdir()) == sorted(
        ["nvidia-smi-q.txt", "nvidia-smi-L.txt", "mig-lgi.txt", "mig-lci.txt", "mig-lgip.txt", "mig-lgipp.txt", "nvml.json", "capture.json"]
    )
    assert json.loads((cap / "capture.json").read_text())["commands"][0]["argv"] == ["nvidia-smi", "-q"]
    copy = tmp_path / "copy"
    r = migbench("sim", "init", str(copy), "--from", str(cap))
    assert r.returncode == 0, r.stderr
    assert "note:" not in r.stdout  # a complete capture leaves nothing to assume
    a, b = SimHost(src).read(), SimHost(copy).read()
    assert b.driver == a.driver and [g.uuid for g in b.gpus] == [g.uuid for g in a.gpus]
    assert [g.bus_id for g in b.gpus] == [g.bus_id for g in a.gpus]
    assert [(g.mig_current, g.mig_pending, g.clients) for g in b.gpus] == [(g.mig_current, g.mig_pending, g.clients) for g in a.gpus]
    assert [(d.gpu, d.gi_id, d.ci_id, d.uuid, d.name) for d in b.all_mig_devices()] == [(d.gpu, d.gi_id, d.ci_id, d.uuid, d.name) for d in a.all_mig_devices()]
    for argv in (["-L"], ["mig", "-lgi"], ["mig", "-lci"], ["mig", "-lgip"], ["mig", "-lgipp"]):
        assert smi(copy, *argv) == smi(src, *argv), argv
    (tmp_path / "ci.yaml").write_text(SWEEP)
    for sim, out in ((src, "bench.plan.yaml"), (copy, "ci.plan.yaml")):
        r = migbench("plan", "ci.yaml", "-o", out, "--json", cwd=tmp_path, env={"MIGBENCH_SIM": str(sim)})
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "bench.plan.yaml").read_bytes() == (tmp_path / "ci.plan.yaml").read_bytes()


def test_captures_that_contradict_themselves_are_refused(tmp_path):
    cap = h100_pcie(tmp_path / "cap")
    lgi = (cap / "mig-lgi.txt").read_text()
    (cap / "mig-lgi.txt").write_text(lgi.replace("4:4", "5:4"))
    r = migbench("sim", "init", str(tmp_path / "sim"), "--from", str(cap), "--driver", "525.125.06")
    assert r.returncode == 1 and "mig-lgi.txt" in r.stderr and "is not a placement" in r.stderr
    r = migbench("sim", "init", str(tmp_path / "sim"), "--from", str(tmp_path / "nowhere"))
    assert r.returncode == 1 and "is not a capture directory" in r.stderr and "doctor --capture" in r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    r = migbench("sim", "init", str(tmp_path / "sim"), "--from", str(empty))
    assert r.returncode == 1 and "holds no capture" in r.stderr
    r = migbench("sim", "init", str(tmp_path / "sim"), "--from", str(cap), "--gpu", "A100-SXM4-80GB")
    assert r.returncode == 2 and "drop --gpu" in r.stderr
    r = migbench("sim", "init", str(tmp_path / "sim"))
    assert r.returncode == 2 and "--gpu" in r.stderr


@pytest.mark.parametrize(
    "sample, args, first",
    [
        ("public/h100-pcie_cgi-C-lgi-L_1.txt", "-L", "GPU 0: NVIDIA H100 PCIe (UUID: GPU-7cd6d4d6-9fa8-13be-3c42-09a1b2280a02)"),
        ("a30_lgip-lgipp-lgi_1.txt", "mig -lgipp", "GPU  0 Profile ID 14 Placements: {0,1,2,3}:1"),
    ],
)
def test_sections_of_the_samples(sample, args, first):
    assert section(sample, args).splitlines()[0] == first


def test_a_capture_file_too_large_to_be_one_is_refused_before_it_is_read(tmp_path):
    """Regression: `sim init --from DIR` read each capture file whole, whatever its size (a 20 GiB
    log dropped in the directory under a capture's name took the memory)."""
    cap = h100_pcie(tmp_path / "cap")
    with open(cap / "mig-lgi.txt", "r+b") as f:
        f.truncate(17 * 2**20)  # sparse: no disk is used
    with pytest.raises(InputError) as ei:
        host_from_capture(cap, tmp_path / "sim", driver="525.125.06")
    assert "mig-lgi.txt is too large for a capture file" in ei.value.message, ei.value.message
    assert not (tmp_path / "sim").exists()
