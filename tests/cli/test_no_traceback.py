""" "Never a traceback": each input that once traced back (issue 10, item 1) is now an `Error:` with
what is wrong, exit 1 or 2, and nothing half-written; and an unexpected exception is an internal
error without a traceback (MIGBENCH_DEBUG=1 shows it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.support import DATA
from tests.support.cli import Result, migbench
from tests.support.fsfault import refusals, tree

SWEEP = """version: 1
name: tiny
fleet: [{gpu: A100-SXM4-80GB, count: 1}]
command: python3 -c pass --lr {lr}
parameters: {lr: [0.1, 0.2]}
memory: 4GiB
"""
SAMPLES = DATA / "samples"
LGIP, LGIPP = SAMPLES / "a100-40gb_lgip_1.txt", SAMPLES / "a100-40gb_lgipp_1.txt"


def refused(r: Result, *fragments: str, code: int = 1) -> None:
    """Exit `code`, `Error:` first on stderr, each fragment said, no traceback, no internal error."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith("Error: "), r.stderr
    assert "Traceback" not in r.stderr + r.stdout and "internal error" not in r.stderr, r.stderr
    for f in fragments:
        assert f in r.stderr, (f, r.stderr)


@pytest.fixture
def planned(tmp_path: Path) -> Path:
    """A good sweep and its plan in tmp_path; returns the plan file."""
    (tmp_path / "tiny.yaml").write_text(SWEEP)
    r = migbench("plan", "tiny.yaml", "-o", "tiny.plan.yaml", "--no-runs", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    return tmp_path / "tiny.plan.yaml"


@pytest.fixture
def sim(tmp_path: Path) -> dict[str, str]:
    """A simulated 1 x A100 80GB host with MIG on; the environment that selects it."""
    r = migbench("sim", "init", str(tmp_path / "sim"), "--gpu", "A100-SXM4-80GB", "--count", "1", "--mig", "on")
    assert r.returncode == 0, r.stderr
    return {"MIGBENCH_SIM": str(tmp_path / "sim")}


PLAN_COMMANDS = [["apply"], ["apply", "--dry-run"], ["launch"], ["launch", "--dry-run"], ["check"], ["simulate"], ["status"], ["stop"]]


@pytest.mark.parametrize("cmd", PLAN_COMMANDS, ids=" ".join)
def test_a_plan_path_that_is_a_directory_is_an_error(tmp_path: Path, cmd: list[str]) -> None:
    """Regression: a plan path that is a directory traced back (IsADirectoryError) in every command."""
    (tmp_path / "d").mkdir()
    refused(migbench(*cmd, "d", cwd=tmp_path), "d is a directory, not a plan file")


@pytest.mark.parametrize("cmd", PLAN_COMMANDS, ids=" ".join)
def test_a_plan_that_is_not_utf8_is_an_error(tmp_path: Path, cmd: list[str]) -> None:
    """Regression: a plan file that is not UTF-8 traced back (UnicodeDecodeError) in every command."""
    (tmp_path / "p.yaml").write_bytes(b"version: 1\nkind: migbench-plan\n\xff\xfe\n")
    refused(migbench(*cmd, "p.yaml", cwd=tmp_path), "not UTF-8 text", "p.yaml:3")


def test_plan_into_a_read_only_directory_is_an_error_and_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    """Regression: `plan -o` into a read-only directory traced back writing `*.plan.yaml.tmp`."""
    (tmp_path / "tiny.yaml").write_text(SWEEP)
    ro = tmp_path / "ro"
    ro.mkdir()
    with refusals(monkeypatch) as fs:
        fs.readonly(ro)
        r = migbench("plan", "tiny.yaml", "-o", "ro/tiny.plan.yaml", "--no-runs", cwd=tmp_path)
        refused(r, "cannot write the plan file", "permission denied", "Hint: check the permissions")
        assert list(ro.iterdir()) == []


def test_run_in_a_read_only_directory_is_an_error_and_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    """Regression: `run` traced back creating `.migbench-sim` next to a sweep in a read-only directory."""
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "tiny.yaml").write_text(SWEEP)
    with refusals(monkeypatch) as fs:
        fs.readonly(ro)
        before = tree(ro)
        refused(migbench("run", "ro/tiny.yaml", cwd=tmp_path), "permission denied")
        assert tree(ro) == before


def test_apply_with_a_read_only_plan_directory_changes_no_gpu(tmp_path: Path, monkeypatch, planned: Path, sim) -> None:
    """Regression: `apply` traced back creating `runs/` beside a plan in a read-only directory."""
    with refusals(monkeypatch) as fs:
        fs.readonly(tmp_path)
        refused(migbench("apply", "tiny.plan.yaml", "--yes", cwd=tmp_path, env=sim), "permission denied")
    assert not (tmp_path / "runs").exists()
    host = json.loads((tmp_path / "sim" / "host.json").read_text())
    assert host["gpus"][0]["gpu_instances"] == []  # the checkpoint comes first: nothing was changed


def test_catalog_import_into_a_read_only_config_directory_is_an_error(tmp_path: Path, monkeypatch) -> None:
    """Regression: `catalog import` traced back writing a read-only ~/.config."""
    cfg = tmp_path / "config"
    cfg.mkdir()
    with refusals(monkeypatch) as fs:
        fs.readonly(cfg)
        r = migbench("catalog", "import", str(LGIP), str(LGIPP), "--name", "MY-GPU", "--partial", env={"MIGBENCH_CATALOG": "", "XDG_CONFIG_HOME": str(cfg)})
        refused(r, "cannot write the user catalogue", "permission denied")
        assert list(cfg.iterdir()) == []


def test_plan_output_that_is_a_directory_is_an_error(tmp_path: Path) -> None:
    """Regression: `plan -o DIR` traced back (kept: it is refused before solving)."""
    (tmp_path / "tiny.yaml").write_text(SWEEP)
    (tmp_path / "out").mkdir()
    refused(migbench("plan", "tiny.yaml", "-o", "out", cwd=tmp_path), "out is a directory")


def test_a_300_character_sweep_name_is_refused_at_its_line(tmp_path: Path) -> None:
    """Regression: a 300-character sweep name traced back (`File name too long`) writing the plan."""
    (tmp_path / "s.yaml").write_text(SWEEP.replace("name: tiny", "name: " + "a" * 300))
    refused(migbench("plan", "s.yaml", cwd=tmp_path), "s.yaml:2: name: the sweep name is 300 characters long; at most 100")
    assert [p.name for p in tmp_path.iterdir()] == ["s.yaml"]


def test_a_nul_byte_in_the_sweep_is_refused_at_its_line(tmp_path: Path) -> None:
    """Regression: a NUL byte in the sweep traced back (PyYAML's ReaderError)."""
    (tmp_path / "s.yaml").write_text(SWEEP.replace("memory: 4GiB", "memory: 4Gi\x00B"))
    refused(migbench("plan", "s.yaml", cwd=tmp_path), "s.yaml:6: a NUL byte")
    (tmp_path / "c.yaml").write_text(SWEEP.replace("memory: 4GiB", "memory: 4Gi\x07B"))
    refused(migbench("plan", "c.yaml", cwd=tmp_path), "c.yaml:6: the file holds a control character")


@pytest.mark.parametrize(
    "args",
    [["catalog", "--driver", "banana"], ["catalog", "A30", "--driver", "banana"], ["sim", "init", "SIM", "--gpu", "A30", "--driver", "banana"]],
    ids=" ".join,
)
def test_a_driver_that_is_not_a_version_is_an_error(tmp_path: Path, args: list[str]) -> None:
    """Regression: `catalog --driver banana` and `sim init --driver banana` traced back (ValueError)."""
    refused(migbench(*args, cwd=tmp_path), "'banana' is not a driver version", "Hint: write the driver version")
    assert not (tmp_path / "SIM").exists()


def test_catalog_import_of_directories_is_an_error(tmp_path: Path) -> None:
    """Regression: `catalog import DIR DIR` traced back (IsADirectoryError)."""
    refused(migbench("catalog", "import", str(tmp_path), str(tmp_path), "--name", "X"), "is a directory, not a `nvidia-smi mig -lgip` text file")


def test_a_user_catalogue_path_that_is_a_directory_is_an_error(tmp_path: Path) -> None:
    """Regression: MIGBENCH_CATALOG=DIR traced back in every command that reads the catalogue."""
    refused(migbench("catalog", env={"MIGBENCH_CATALOG": str(tmp_path)}), "is a directory, not a user catalogue")


def test_sim_init_on_a_file_is_an_error_and_keeps_the_file(tmp_path: Path) -> None:
    """Regression: `sim init FILE` traced back (FileExistsError)."""
    f = tmp_path / "notes.txt"
    f.write_text("keep me")
    refused(migbench("sim", "init", str(f), "--gpu", "A30"), "exists and is not a directory")
    assert f.read_text() == "keep me"


def test_a_hand_edited_plan_with_a_ghost_run_id_is_an_error_at_its_line(planned: Path, sim) -> None:
    """Regression: a run id listed on an instance but not among the runs traced back (KeyError)."""
    doc = yaml.safe_load(planned.read_text())
    j = len(doc["instances"][0]["runs"])
    doc["instances"][0]["runs"].append("ghost-123")
    planned.write_text(yaml.safe_dump(doc, sort_keys=False))
    line = next(i for i, t in enumerate(planned.read_text().splitlines(), 1) if "ghost-123" in t)
    for cmd in (["apply", "--dry-run"], ["apply", "--yes"], ["simulate"], ["check"], ["launch", "--dry-run"]):
        r = migbench(*cmd, str(planned), env=sim)
        refused(r, f"tiny.plan.yaml:{line}: instances[0].runs[{j}]: run ghost-123 is not one of the plan's runs")


def test_a_hand_edited_plan_with_a_key_given_twice_is_an_error_at_the_second(planned: Path, sim) -> None:
    """Regression: a plan with two `launch:` (or a run with two `memory_mib:`) was read with the last
    one only, without a word: what the user wrote first was silently dropped."""
    text = planned.read_text()
    first = next(i for i, t in enumerate(text.splitlines(), 1) if t == "launch:")
    twice = text + "launch:\n  max_attempts: 9\n"
    planned.write_text(twice)
    second = len(text.splitlines()) + 1
    for cmd in (["apply", "--dry-run"], ["simulate"], ["check"], ["launch", "--dry-run"]):
        refused(migbench(*cmd, str(planned), env=sim), f"tiny.plan.yaml:{second}: launch: duplicate key 'launch' (first at line {first})")
    lines = text.splitlines()
    at = next(i for i, t in enumerate(lines) if t.strip().startswith("memory_mib:"))
    lines.insert(at + 1, lines[at])  # the same key again, in the same run
    planned.write_text("\n".join(lines) + "\n")
    refused(migbench("check", str(planned), env=sim), f"tiny.plan.yaml:{at + 2}:", "duplicate key 'memory_mib'")


def test_a_hand_edited_plan_with_backoff_soon_is_an_error_at_its_line(planned: Path) -> None:
    """Regression: `backoff_s: soon` in a hand-edited plan traced back in the launcher."""
    planned.write_text(planned.read_text().replace("backoff_s: 30.0", "backoff_s: soon"))
    line = next(i for i, t in enumerate(planned.read_text().splitlines(), 1) if "backoff_s" in t)
    refused(migbench("launch", "--dry-run", str(planned)), f":{line}: launch.backoff_s: expected a number, got the string 'soon'")


@pytest.mark.parametrize("content", ["[1, 2]", '"text"', '{"version": 1, "gpus": [1]}'], ids=["list", "string", "gpu-int"])
def test_a_host_json_of_the_wrong_shape_is_an_error(tmp_path: Path, sim, content: str) -> None:
    """Regression: a simulated `host.json` of the wrong type traced back (AttributeError)."""
    (tmp_path / "sim" / "host.json").write_text(content)
    refused(migbench("sim", "show", env=sim), "simulated host state", "Hint: re-create it")
    r = migbench("sim", "nvidia-smi", "-L", env=sim)  # nvidia-smi's own way: its message, exit 255
    assert r.returncode == 255 and "simulated host state" in r.stderr and "Traceback" not in r.stderr


def test_an_unexpected_exception_is_an_internal_error_without_a_traceback(monkeypatch) -> None:
    """Regression: any exception migbench did not expect printed a Python traceback."""
    import migbench.catalog.store as store

    def boom(*a, **kw):  # type: ignore[no-untyped-def]
        raise RuntimeError("something broke\nsecond line")

    monkeypatch.setattr(store, "describe_models", boom)
    r = migbench("catalog")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("Error: internal error (RuntimeError: something broke)"), r.stderr
    assert "MIGBENCH_DEBUG=1" in r.stderr and "report" in r.stderr
    r = migbench("catalog", env={"MIGBENCH_DEBUG": "1"})
    assert r.returncode == 1 and "Traceback" in r.stderr and "Error: internal error" in r.stderr


def test_an_os_error_nobody_expected_is_said_in_words(monkeypatch) -> None:
    """An OSError from deep inside (here: the disk is full) is an `Error:` naming the path and why."""
    import errno

    import migbench.catalog.store as store

    def full(*a, **kw):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device", "/var/x")

    monkeypatch.setattr(store, "describe_models", full)
    r = migbench("catalog")
    refused(r, "/var/x: no space left on device", "Hint: the disk is full")
