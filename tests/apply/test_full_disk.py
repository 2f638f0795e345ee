"""apply on a full disk: the GPUs were changed, then the bindings could not be written. The error
says what the GPUs are and how to finish; the checkpoint stays `applying`, so `check` (with or
without `--state-dir`) reports the unfinished apply instead of saying all is fine."""

from __future__ import annotations

import errno
import os

import pytest

from migbench import fsutil
from migbench.apply import verify
from migbench.backend.sim.host import init_host
from migbench.catalog import Placement
from migbench.state import read_checkpoint
from tests.apply.test_reconcile import make_plan
from tests.support.cli import migbench
from tests.support.simhelp import sim_backend

MODEL = "A100-SXM4-40GB"
TARGET = {0: (Placement("3g.20gb", 0), Placement("3g.20gb", 4))}


def _bindings_disk_full(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The file system fills up between the checkpoint and the bindings: every write of
    `bindings.json` (its temp file) fails with ENOSPC."""
    real = fsutil._write_fd

    def write(fd: int, data: bytes) -> None:
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".bindings.json."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    monkeypatch.setattr(fsutil, "_write_fd", write)


@pytest.fixture
def host(tmp_path, monkeypatch):
    state = tmp_path / "host"
    init_host(state, MODEL, 1, mig=True)
    monkeypatch.setenv("MIGBENCH_SIM", str(state))
    yield state
    from migbench.backend.sim import fake_nvml

    fake_nvml.uninstall()


def test_a_full_disk_after_the_gpus_changed_is_said_and_check_reports_it(host, tmp_path, monkeypatch):
    """Guards: GPUs re-cut, then bindings.json hit ENOSPC: the user saw only "no space left on
    device", the checkpoint stayed `applying`, and `check` (which had no --state-dir) said the host
    matched."""
    plan = make_plan(MODEL, TARGET, tmp_path)
    plan.save(tmp_path / "plan.yaml")
    sd = tmp_path / "elsewhere"
    _bindings_disk_full(monkeypatch)
    res = migbench("apply", plan.path, "--state-dir", str(sd), "--yes", keep_sim=True)
    assert res.returncode == 1, res.stdout + res.stderr
    err = res.stderr
    assert "GPU(s) 0 are configured as" in err and f"cannot write {sd / 'bindings.json'}: no space left on device" in err, err
    assert "NOT recorded" in err and "'applying'" in err and "Traceback" not in err
    assert f"--finish --state-dir {sd}" in err and f"--rollback --state-dir {sd}" in err
    assert not verify(plan, sim_backend(host).reader.read(), [0])  # the GPUs are as the plan wants, as said
    assert read_checkpoint(sd / "checkpoint.json")["status"] == "applying"
    assert not (sd / "bindings.json").exists()
    for extra in (["--state-dir", str(sd)], []):  # `check` reports it, with --state-dir and without
        chk = migbench("check", plan.path, *extra, keep_sim=True)
        assert chk.returncode == 1 and "did not finish" in chk.stdout and "as the plan wants" in chk.stdout, chk.stdout
        assert f"--state-dir {sd} --finish" in chk.stdout
    launch = migbench("launch", plan.path, "--state-dir", str(sd), keep_sim=True)
    assert launch.returncode == 1 and "not applied" in launch.stderr
    monkeypatch.undo()  # space freed
    monkeypatch.setenv("MIGBENCH_SIM", str(host))
    fin = migbench("apply", plan.path, "--state-dir", str(sd), "--finish", keep_sim=True)
    assert fin.returncode == 0, fin.stdout + fin.stderr
    assert (sd / "bindings.json").exists() and read_checkpoint(sd / "checkpoint.json")["status"] == "applied"
    assert migbench("check", plan.path, "--state-dir", str(sd), keep_sim=True).returncode == 0
    assert migbench("check", plan.path, keep_sim=True).returncode == 0


def test_a_full_disk_before_any_change_changes_nothing(host, tmp_path, monkeypatch):
    """A plan the GPUs already match, on a full disk: no GPU changed, said so, exit 1, no traceback."""
    plan = make_plan(MODEL, TARGET, tmp_path)
    plan.save(tmp_path / "plan.yaml")
    assert migbench("apply", plan.path, "--yes", keep_sim=True).returncode == 0
    (tmp_path / "runs" / "t" / "bindings.json").unlink()
    _bindings_disk_full(monkeypatch)
    res = migbench("apply", plan.path, keep_sim=True)
    assert res.returncode == 1 and "no GPU was changed" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert migbench("check", plan.path, keep_sim=True).returncode == 0
