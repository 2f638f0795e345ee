"""The command line as a user meets it: golden output, JSON shapes, errors without tracebacks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import DATA, REPO
from tests.support.cli import migbench

ROOT = REPO
GOLDEN = DATA / "golden"
SAMPLES = DATA / "samples"


def mb(*args: str, cwd: Path | None = None, env: dict | None = None):  # type: ignore[no-untyped-def]
    return migbench(*args, cwd=cwd, env=env)


@pytest.mark.slow
def test_the_console_script_runs_as_a_process(tmp_path):
    """The one place the real console script starts: a new Python process, `python -m migbench`."""
    env = dict(os.environ, MIGBENCH_CATALOG=str(tmp_path / "none.yaml"))
    env.pop("MIGBENCH_SIM", None)
    r = subprocess.run(
        [sys.executable, "-m", "migbench", "plan", "sweeps/phase2-ablations.yaml", "-o", str(tmp_path / "p.yaml"), "--no-runs", "--time-limit", "2"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0 and "plan written to" in r.stdout, r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "migbench", "plan", str(tmp_path / "missing.yaml")], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60
    )
    assert r.returncode == 1 and r.stderr.startswith("Error: ") and "Traceback" not in r.stderr


def normalise(text: str) -> str:
    return re.sub(r", \d+\.\d+s;", ", <seconds>;", text)


def test_plan_golden_output(tmp_path):
    """The printed plan, byte for byte, on a sweep whose optimum is unique (one layout, one
    assignment), planned with a fixed work budget and a limit no load reaches: a better solver or a
    busy machine cannot change it (the phase-2 golden failed beside CPU burners, issue 23 item 6)."""
    out = tmp_path / "p.yaml"
    r = mb("plan", str(DATA / "sweeps" / "good" / "unique-optimum.yaml"), "-o", str(out), "--work", "1", "--time-limit", "600")
    assert r.returncode == 0, r.stderr
    got = normalise(r.stdout).replace(str(out), "<plan>")
    golden = GOLDEN / "plan_unique_optimum.txt"
    if os.environ.get("MIGBENCH_UPDATE_GOLDEN"):
        golden.write_text(got)
    assert "OPTIMAL" in got and "wall-clock" not in got
    assert got == golden.read_text()


def test_plan_json_document(tmp_path):
    r = mb("plan", "sweeps/phase2-ablations.yaml", "-o", str(tmp_path / "p.yaml"), "--json", "--time-limit", "2")
    doc = json.loads(r.stdout)
    assert doc["version"] == 1
    assert {"gpu", "model"} <= set(doc["fleet"][0])
    inst = doc["instances"][0]
    assert {"gpu", "profile", "start", "memory_mib", "runs"} <= set(inst)
    run = doc["runs"][0]
    assert {"id", "memory_mib", "gpu", "profile", "start", "wave"} <= set(run)
    assert doc["unplaced"] == []
    assert {"status", "objective", "bound", "gap", "seconds"} <= set(doc["solver"])
    # every run of the sweep once
    assert len(doc["runs"]) == len({r["id"] for r in doc["runs"]}) == 76
    # instances are legal placements of a known profile
    assert all(re.fullmatch(r"[0-9]g\.[0-9]+gb", i["profile"]) for i in doc["instances"])


def test_catalog_layouts_json_lists_every_maximal_layout():
    r = mb("catalog", "A100-SXM4-40GB", "--layouts", "--json")
    doc = json.loads(r.stdout)
    assert doc["model"] == "A100-SXM4-40GB" and len(doc["layouts"]) == 78
    assert ["3g.20gb@0", "3g.20gb@4"] in doc["layouts"]
    r = mb("catalog", "A100-SXM4-40GB", "--layouts", "--json", "--driver", "510.47.03")
    assert len(json.loads(r.stdout)["layouts"]) == 19


def test_catalog_lists_models_and_profiles():
    r = mb("catalog")
    assert r.returncode == 0
    for key in ["A100-SXM4-40GB", "A100-PCIE-40GB", "A100-SXM4-80GB", "A30", "H100-SXM5-80GB", "H100-NVL", "H200", "B200"]:
        assert key in r.stdout
    r = mb("catalog", "NVIDIA H100 NVL")
    assert r.returncode == 0 and "3g.47gb" in r.stdout and "47488" in r.stdout


def test_catalog_import_teaches_a_gpu_from_real_captures(tmp_path):
    cat = tmp_path / "catalog.yaml"
    src = SAMPLES / "h100-nvl_lgip-lgipp_1.txt"
    text = src.read_text()
    lgip = tmp_path / "lgip.txt"
    lgipp = tmp_path / "lgipp.txt"
    lgip.write_text(text.split("nvidia-smi mig -lgipp")[0])
    lgipp.write_text(text.split("nvidia-smi mig -lgipp")[1])
    env = {"MIGBENCH_CATALOG": str(cat)}
    r = mb("catalog", "import", str(lgip), str(lgipp), "--name", "Next-GPU-94GB", "--architecture", "hopper", "--driver", "560.35.03", "--json", env=env)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc == {"model": "Next-GPU-94GB", "profiles": 7, "maximal_layouts": 78, "catalog": str(cat)}
    r = mb("catalog", "Next-GPU-94GB", "--json", env=env)
    m = json.loads(r.stdout)
    byname = {p["name"]: p for p in m["profiles"]}
    assert byname["3g.47gb"]["starts"] == [0, 4] and byname["3g.47gb"]["memory_slices"] == 4
    # -lgip prints 0.01 GiB; the import keeps the smallest MiB that prints so (47488 prints 46.38)
    assert 47483 <= byname["3g.47gb"]["memory_mib"] <= 47488
    assert byname["1g.12gb+me"]["media"] is True
    # and it plans
    sweep = tmp_path / "s.yaml"
    sweep.write_text("version: 1\nname: s\ncommand: python t.py {x}\nparameters: {x: [1, 2, 3]}\nmemory: 20GiB\n")
    r = mb("plan", str(sweep), "--fleet", "Next-GPU-94GB:1", "-o", str(tmp_path / "p.yaml"), "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["solver"]["objective"] == 3


def test_catalog_import_rejects_mismatched_texts(tmp_path):
    lgip = SAMPLES / "a30_lgip-lgipp-lgi_1.txt"
    lgipp = SAMPLES / "a100-40gb_lgipp_1.txt"
    r = mb("catalog", "import", str(lgip), str(lgipp), "--name", "X", env={"MIGBENCH_CATALOG": str(tmp_path / "c.yaml")})
    assert r.returncode == 1 and "Error:" in r.stderr and "Traceback" not in r.stderr
    assert "no placements" in r.stderr


BAD = sorted((DATA / "sweeps" / "bad").glob("*.yaml"))


@pytest.mark.parametrize("path", BAD[:12], ids=lambda p: p.stem)
def test_bad_sweeps_give_an_error_with_file_and_line_and_exit_1(path):
    r = mb("plan", str(path), "--fleet", "A100-SXM4-40GB:1")
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.startswith("Error: ") and "Traceback" not in r.stderr
    assert re.search(re.escape(path.name) + r"(:\d+)?", r.stderr)


def test_too_big_run_is_an_error_naming_run_memory_and_largest_instance(tmp_path):
    sweep = tmp_path / "s.yaml"
    sweep.write_text("version: 1\nname: big\ncommand: python t.py\nmemory: 100GiB\n")
    r = mb("plan", str(sweep), "--fleet", "A100-SXM4-80GB:2", "-o", str(tmp_path / "p.yaml"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "big-" in r.stderr and "102400 MiB" in r.stderr and "7g.80gb" in r.stderr
    r = mb("plan", str(sweep), "--fleet", "A100-SXM4-80GB:2", "-o", str(tmp_path / "p.yaml"), "--allow-unplaced", "--json")
    doc = json.loads(r.stdout)
    assert doc["unplaced"][0]["memory_mib"] == 102400 and doc["runs"][0]["gpu"] is None


def test_usage_errors_exit_2():
    assert mb("plan").returncode == 2
    r = mb("plan", "sweeps/phase2-ablations.yaml", "--fleet", "A100-SXM4-80GB:zero")
    assert r.returncode == 2 and "--fleet" in r.stderr
    assert mb("apply", "nope.yaml", "--gpus", "a,b").returncode in (1, 2)


def test_every_command_has_help_and_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    r = mb("--help")
    commands = re.findall(r"^│ (\w[\w-]*)\s", r.stdout, flags=re.M) or re.findall(r"^  (\w[\w-]*)\s{2,}", r.stdout, flags=re.M)
    assert {"plan", "apply", "catalog", "sim"} <= set(commands), r.stdout
    for c in commands:
        h = mb(c, "--help")
        assert h.returncode == 0 and "Usage" in h.stdout, c
        assert f"migbench {c}" in readme, f"README does not mention `migbench {c}`"


def test_a_plan_written_to_dev_null_goes_through_it_and_never_replaces_it(tmp_path):
    """Regression: `plan -o /dev/null` (as root) once renamed a regular file over /dev/null."""
    sweep = tmp_path / "s.yaml"
    sweep.write_text("version: 1\nname: s\ncommand: run {x}\nparameters: {x: [1, 2]}\nmemory: 1GiB\nfleet: [{gpu: A30, count: 1}]\n")
    before = os.stat("/dev/null")
    r = mb("plan", str(sweep), "-o", "/dev/null", "--no-runs")
    assert r.returncode == 0, r.stderr
    after = os.stat("/dev/null")
    assert (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)
    r = mb("plan", str(sweep), "-o", str(tmp_path))
    assert r.returncode == 1 and "is a directory" in r.stderr


def test_an_empty_gpus_list_is_a_usage_error_not_every_gpu():
    """Regression: `apply PLAN --gpus ""` (a script's `--gpus "$GPUS"` with GPUS unset) parsed to no
    GPU, which apply took as every GPU of the plan, and re-cut them all."""
    import pytest

    from migbench.cli.common import parse_gpus
    from migbench.errors import UsageError

    for text in ("", " ", ",", " , "):
        with pytest.raises(UsageError):
            parse_gpus(text)
    assert parse_gpus("2, 0,") == [0, 2] and parse_gpus(None) is None


@pytest.mark.parametrize(
    "args",
    [
        ["plan", "S", "--time-limit", "inf"],
        ["plan", "S", "--time-limit", "1e308"],
        ["plan", "S", "--work", "inf"],
        ["grain", "S", "--time-limit", "inf"],
        ["run", "S", "--time-limit", "inf"],
    ],
)
def test_an_infinite_solver_budget_is_a_usage_error_not_an_internal_error(tmp_path, args):
    """Guards: `plan --time-limit inf` (or 1e308, or `--work inf`), `grain --time-limit inf` and
    `report --grain-time-limit inf` ended in 'internal error (OverflowError: cannot convert float
    infinity to integer)' from the planner's budget."""
    sweep = tmp_path / "s.yaml"
    sweep.write_text("version: 1\nname: s\ncommand: run {x}\nparameters: {x: [1, 2]}\nmemory: 1GiB\nfleet: [{gpu: A30, count: 1}]\n")
    out = ["-o", str(tmp_path / "p.yaml")] if args[0] == "plan" else []
    r = mb(*[str(sweep) if a == "S" else a for a in args], *out)
    assert r.returncode == 2 and "less than or equal to 604800" in r.stderr and "internal error" not in r.stderr, r.stdout + r.stderr
    assert not (tmp_path / "p.yaml").exists()
