"""Careless inputs of issue 22 item 10 get a clear error, not a silent guess."""

from __future__ import annotations

import pytest

from tests.support.cli import migbench

HEAD = "version: 1\nname: q\nfleet: [{gpu: A100-SXM4-80GB, count: 1}]\ncommand: run {x}\nparameters: {x: [1]}\nmemory: 1GiB\n"


@pytest.mark.parametrize("line", ["duration: 8", "timeout: 8", "duration: 1.5"])
def test_a_unitless_run_duration_is_refused_like_a_unitless_memory(tmp_path, line):
    """Issue 22 item 10: `duration: 8` was silently 8 seconds while a bare `memory: 10` is refused."""
    (tmp_path / "s.yaml").write_text(HEAD + line + "\n")
    r = migbench("plan", "s.yaml", "-o", "p.yaml", cwd=tmp_path)
    assert r.returncode == 1 and not (tmp_path / "p.yaml").exists()
    key = line.split(":")[0]
    assert f"s.yaml:7: {key}: bad duration: {line.split(': ')[1]} has no unit" in r.stderr, r.stderr
    assert "8h" in r.stderr and "seconds or hours" in r.stderr


def test_a_lower_case_gpu_family_suggests_its_models(tmp_path):
    """Issue 22 item 10: `gpu: a100` suggested "did you mean 'H200'?"."""
    (tmp_path / "s.yaml").write_text(HEAD.replace("A100-SXM4-80GB", "a100"))
    r = migbench("plan", "s.yaml", "-o", "p.yaml", cwd=tmp_path)
    assert r.returncode == 1
    assert "did you mean 'A100-PCIE-40GB' or 'A100-PCIE-80GB' or 'A100-SXM4-40GB' or 'A100-SXM4-80GB'?" in r.stderr, r.stderr
    assert "'H200'?" not in r.stderr


def test_sim_init_over_an_existing_host_needs_force(tmp_path):
    """Issue 22 item 10: `sim init` over an existing simulated host wiped it with exit 0."""
    sim = tmp_path / "sim"
    assert migbench("sim", "init", str(sim), "--gpu", "A30", "--mig", "on").returncode == 0
    before = (sim / "host.json").read_text()
    r = migbench("sim", "init", str(sim), "--gpu", "A100-SXM4-80GB")
    assert r.returncode == 1 and "already holds a simulated host" in r.stderr and "--force" in r.stderr, r.stderr
    assert (sim / "host.json").read_text() == before
    r = migbench("sim", "init", str(sim), "--gpu", "A100-SXM4-80GB", "--force")
    assert r.returncode == 0 and "A100" in (sim / "host.json").read_text()
