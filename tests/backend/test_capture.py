"""`migbench doctor --capture DIR` (read-only listings of a host) and the `nvidia-smi -q` parser."""

from __future__ import annotations

import json

import pynvml

from migbench.backend.sim import fake_nvml
from migbench.backend.sim.host import init_host
from migbench.backend.smi import parse_q
from tests.support import DATA
from tests.support.cli import migbench


def test_parse_q_reads_a_real_excerpt_and_the_whole_text():
    """k8s-device-plugin#343's `nvidia-smi -a` excerpt (no GPU header) and the simulator's full -q."""
    q = parse_q((DATA / "samples" / "a100-40gb_q-mig-mode_1.txt").read_text())
    assert q.driver is None and len(q.gpus) == 1
    assert (q.gpus[0].mig_current, q.gpus[0].mig_pending) == (False, False)
    text = """
==============NVSMI LOG==============

Timestamp                                 : Mon Jan  1 00:00:00 2024
Driver Version                            : 535.216.01
CUDA Version                              : 12.2

Attached GPUs                             : 2
GPU 00000000:07:00.0
    Product Name                          : NVIDIA A100-SXM4-80GB
    MIG Mode
        Current                           : Enabled
        Pending                           : Disabled
    Accounting Mode                       : Disabled
    GPU UUID                              : GPU-aaaaaaaa-0000-0000-0000-000000000000

GPU 00000000:0F:00.0
    Product Name                          : NVIDIA A100-SXM4-80GB
    MIG Mode
        Current                           : Disabled
        Pending                           : Enabled
    GPU UUID                              : GPU-bbbbbbbb-0000-0000-0000-000000000000
"""
    q = parse_q(text)
    assert q.driver == "535.216.01"
    assert [(g.bus_id, g.product_name, g.uuid, g.mig_current, g.mig_pending) for g in q.gpus] == [
        ("00000000:07:00.0", "NVIDIA A100-SXM4-80GB", "GPU-aaaaaaaa-0000-0000-0000-000000000000", True, False),
        ("00000000:0F:00.0", "NVIDIA A100-SXM4-80GB", "GPU-bbbbbbbb-0000-0000-0000-000000000000", False, True),
    ]


def test_a_capture_is_read_only_and_says_what_a_non_root_user_cannot_list(tmp_path):
    sim = tmp_path / "sim"
    init_host(sim, "A100-SXM4-80GB", 1, mig=True, privileged=False)
    before = (sim / "host.json").read_bytes()
    r = migbench("doctor", "--capture", str(tmp_path / "cap"), env={"MIGBENCH_SIM": str(sim)})
    assert r.returncode == 0, r.stderr
    assert (sim / "host.json").read_bytes() == before
    assert "nvidia-smi mig -lgi exited" in r.stdout and "sudo migbench doctor --capture" in r.stdout
    assert "Insufficient Permissions" in (tmp_path / "cap" / "mig-lgi.txt").read_text()
    manifest = json.loads((tmp_path / "cap" / "capture.json").read_text())
    assert {c["file"]: c["exit_status"] for c in manifest["commands"]}["nvidia-smi-L.txt"] == 0
    assert manifest["simulated"] is True
    assert "NVML could not be read" in r.stdout  # unprivileged: NVML refuses the instance list too


def test_capturing_without_a_driver_is_an_error_and_a_file_is_not_a_directory(tmp_path):
    while isinstance(pynvml.nvmlLib, fake_nvml.FakeNvmlLibrary):
        fake_nvml.uninstall()
    f = tmp_path / "file"
    f.write_text("x")
    r = migbench("doctor", "--capture", str(f))
    assert r.returncode == 1 and "is not a directory" in r.stderr
    r = migbench("doctor", "--capture", str(tmp_path / "cap"), env={"PATH": str(tmp_path)})
    assert r.returncode == 1 and "nvidia-smi is not on this host's PATH" in r.stderr and "Traceback" not in r.stderr
