"""Issue 19 items 14 and 15: YAML a hostile or careless user writes, in every loader (sweep, plan,
footprints, fleet file, user catalogue), through the command line: explicit tags that do not fit
their scalar, a catalogue `architecture` that is a list or a float, `-.inf` slices or MiB, nesting
~500 deep, and files with far more values than the file can hold. Each is a clear error naming the
file, the line and the field; never "internal error", a RecursionError or a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from migbench import plancheck
from migbench.footprints import file as footprints_file
from tests.support.cli import migbench

SWEEP = "version: 1\nname: s\ncommand: echo {x}\nparameters: {x: [1, 2]}\nmemory: 1GiB\nfleet: [{gpu: A30, count: 1}]\n"
BAD_TAGS = ["!!int abc", "!!float abc", "!!bool abc", "!!timestamp abc", "!!int 0x"]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("hostile")
    (d / "s.yaml").write_text(SWEEP)
    r = migbench("plan", "s.yaml", "-o", "s.plan.yaml", "--no-runs", cwd=d)
    assert r.returncode == 0, r.stderr
    return d


def _refused(r, file: Path, line: int | None, field: str | None) -> None:  # type: ignore[no-untyped-def]
    out = r.stdout + r.stderr
    assert r.returncode == 1, (r.returncode, out)
    assert "Traceback" not in out and "internal error" not in out and "RecursionError" not in out, out
    assert "Error: " in r.stderr, out
    where = f"{file}:{line}" if line is not None else str(file)
    assert where in r.stderr, out
    if field is not None:
        assert field in r.stderr, out


# -- the five loaders, each with the bad value at a known line and field --------------------------


def _sweep(d: Path, value: str) -> tuple[list[str], dict[str, str], Path, int, str]:
    f = d / "bad-sweep.yaml"
    f.write_text(SWEEP.replace("memory: 1GiB", f"memory: 1GiB\nretries: {value}"))
    return ["plan", str(f), "-o", str(d / "out.plan.yaml")], {}, f, 6, "retries"


def _plan(d: Path, value: str) -> tuple[list[str], dict[str, str], Path, int, str]:
    text = (d / "s.plan.yaml").read_text()
    lines = text.splitlines()
    i = next(n for n, ln in enumerate(lines) if ln.startswith("  retries:"))
    lines[i] = f"  retries: {value}"
    f = d / "bad.plan.yaml"
    f.write_text("\n".join(lines) + "\n")
    return ["simulate", str(f)], {}, f, i + 1, "launch.retries"


def _footprints(d: Path, value: str) -> tuple[list[str], dict[str, str], Path, int, str]:
    f = d / "bad.footprints.yaml"
    f.write_text(f"version: 1\nkind: migbench-footprints\nsweep: s\nmeasurements:\n  - run: s-0\n    peak_mib: {value}\n")
    return ["plan", str(d / "s.yaml"), "-o", str(d / "out.plan.yaml"), "--footprints", str(f)], {}, f, 6, "measurements[0].peak_mib"


def _fleet(d: Path, value: str) -> tuple[list[str], dict[str, str], Path, int, str]:
    f = d / "bad-fleet.yaml"
    f.write_text(f"- node: n1\n  gpu: A30\n  count: {value}\n")
    return ["plan", str(d / "s.yaml"), "-o", str(d / "out.plan.yaml"), "--fleet-file", str(f)], {}, f, 3, "count"


def _catalogue(d: Path, value: str) -> tuple[list[str], dict[str, str], Path, int, str]:
    f = d / "bad-catalog.yaml"
    f.write_text(f"version: 1\nmodels:\n  X1:\n    architecture: ampere\n    memory_slices: {value}\n")
    return ["catalog"], {"MIGBENCH_CATALOG": str(f)}, f, 5, "models.X1.memory_slices"


LOADERS = {"sweep": _sweep, "plan": _plan, "footprints": _footprints, "fleet file": _fleet, "catalogue": _catalogue}


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("value", BAD_TAGS)
def test_an_explicit_tag_its_scalar_does_not_fit_is_a_located_error(work, loader, value):
    """Guards issue 19 item 14: `!!int abc` and its kin ended in "internal error" in every loader."""
    args, env, f, line, field = LOADERS[loader](work, value)
    r = migbench(*args, cwd=work, env=env)
    _refused(r, f, line, field)
    assert "is not a valid" in r.stderr or "must be" in r.stderr, r.stderr


@pytest.mark.parametrize("loader", list(LOADERS))
def test_an_escaped_lone_surrogate_is_a_located_error(work, loader):
    """Guards: a double-quoted `"\\uDCFF"` (an escape of half a UTF-16 pair, no character) was read as
    text that no file can hold: a sweep parameter holding it ended in "internal error" when its run id
    was hashed (and a plan could not have been written)."""
    args, env, f, line, field = LOADERS[loader](work, '"\\uDCFF"')
    r = migbench(*args, cwd=work, env=env)
    _refused(r, f, line, field if loader == "sweep" else None)  # the others find a field by libyaml, which stops at the escape
    f = work / "bad-param.yaml"
    f.write_text(SWEEP.replace("[1, 2]", '[1, "\\uDCFF"]'))
    r = migbench("plan", str(f), "-o", str(work / "out.plan.yaml"), cwd=work)
    _refused(r, f, 4, "parameters.x[1]")
    assert "lone surrogate" in r.stderr, r.stderr


def test_a_plan_keeps_reading_a_path_whose_bytes_are_not_utf8(work):
    """A plan made in a directory whose name is not UTF-8 holds that byte as the escape of a lone
    surrogate (a run's absolute workdir, as the plan writer writes it): the plan loader reads it back;
    only a sweep file refuses such an escape."""
    text = (work / "s.plan.yaml").read_text()
    lines = text.splitlines()
    i = next(n for n, ln in enumerate(lines) if ln.startswith("  workdir: "))
    lines[i] = '  workdir: "/tmp/d\\uDCFE"'
    (work / "odd-dir.plan.yaml").write_text("\n".join(lines) + "\n")
    from migbench.plan import Plan

    assert {r.workdir for r in Plan.load(work / "odd-dir.plan.yaml").runs} >= {"/tmp/d\udcfe"}


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("depth", [500, 2000])
def test_nesting_500_deep_is_refused_with_its_line_not_a_recursion_error(work, loader, depth):
    """Guards issue 19 item 14: ~500 levels of nesting gave RecursionError (sweep, footprints; plan at
    ~1,000); past libyaml's own limit (2,000) the fleet file still did."""
    args, env, f, line, field = LOADERS[loader](work, "[" * depth + "]" * depth)
    r = migbench(*args, cwd=work, env=env)
    _refused(r, f, line, field if depth < 1000 else None)  # past libyaml's own limit its error says the line only
    assert "nested more than 100 levels deep" in r.stderr, r.stderr


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("architecture", "[ampere, hopper]", "must be a name"),
        ("architecture", "8.0", "must be a name"),
        ("compute_slices", "-.inf", "whole number"),
        ("memory_total_mib", "-.inf", "whole number"),
        ("same_as", "[1, 2]", "must name another model"),  # found by bench/faults_security.py's fuzz pass
    ],
)
def test_a_catalogue_value_of_the_wrong_kind_is_a_located_error(work, field, value, why):
    """Guards issue 19 item 14: a catalogue `architecture` list or float, `-.inf` compute or memory: internal errors."""
    f = work / "cat.yaml"
    lines = ["version: 1", "models:", "  X1:", "    architecture: ampere", "    memory_slices: 8", "    compute_slices: 7", "    profiles: []"]
    at = next((i for i, ln in enumerate(lines) if ln.strip().startswith(field + ":")), None)
    if at is None:
        lines.append(f"    {field}: {value}")
        at = len(lines) - 1
    else:
        lines[at] = f"    {field}: {value}"
    f.write_text("\n".join(lines) + "\n")
    r = migbench("catalog", env={"MIGBENCH_CATALOG": str(f)})
    _refused(r, f, at + 1, f"models.X1.{field}")
    assert why in r.stderr


def test_a_125000_value_fleet_file_is_refused_before_it_is_built(work):
    """Guards issue 19 item 15: a 125,000-node fleet file took 35 s and 1 GB before it was refused."""
    f = work / "huge-fleet.yaml"
    f.write_text("".join(f"- {{node: n{i}, gpu: A30, count: 1}}\n" for i in range(125_000 // 7)))
    r = migbench("plan", str(work / "s.yaml"), "-o", str(work / "out.plan.yaml"), "--fleet-file", str(f), cwd=work)
    _refused(r, f, None, None)
    assert "more than 50,000 values" in r.stderr, r.stderr


@pytest.mark.parametrize("loader", ["plan", "footprints"])
def test_a_plan_or_footprints_file_past_its_value_limit_is_refused_before_it_is_built(work, loader, monkeypatch):
    """Guards issue 19 item 15: footprints had no limit at all (100 MB parsed for 76 s), and a plan
    with a 26M-item list exhausted 8 GiB: the count of values is checked before any node exists
    (the limit is lowered here so that the test stays small)."""
    monkeypatch.setattr(plancheck, "MAX_PLAN_NODES", 5_000)
    monkeypatch.setattr(footprints_file, "MAX_FOOTPRINTS_NODES", 5_000)
    args, env, f, line, _ = LOADERS[loader](work, "[" + ", ".join(["1"] * 6_000) + "]")
    r = migbench(*args, cwd=work, env=env)
    _refused(r, f, line, None)
    assert "more than 5,000 values" in r.stderr, r.stderr


def test_a_footprints_file_past_its_size_limit_is_refused_unread(work, monkeypatch):
    """Guards issue 19 item 15: a footprints file had no size limit."""
    monkeypatch.setattr(footprints_file, "MAX_FOOTPRINTS_BYTES", 1 << 20)
    f = work / "big.footprints.yaml"
    f.write_text("version: 1\nkind: migbench-footprints\n" + "# padding\n" * 200_000)
    r = migbench("plan", str(work / "s.yaml"), "-o", str(work / "out.plan.yaml"), "--footprints", str(f), cwd=work)
    assert r.returncode == 1 and "too large for a footprints file" in r.stderr, r.stderr


def test_one_list_past_the_plans_item_limit_is_refused_as_soon_as_it_is_counted(work, monkeypatch):
    """Guards issue 19 item 15: a 100 MB plan with a 26M-item list exhausted 8 GiB; now one list
    longer than a plan's longest can be (MAX_PLAN_ITEMS, lowered here) is refused while counted
    (once the file may hold more values than MAX_PLAN_NODES, lowered too)."""
    monkeypatch.setattr(plancheck, "MAX_PLAN_ITEMS", 1_000)
    monkeypatch.setattr(plancheck, "MAX_PLAN_NODES", 2_000)
    args, env, f, line, _ = LOADERS["plan"](work, "[" + ", ".join(["1"] * 1_500) + "]")
    r = migbench(*args, cwd=work, env=env)
    _refused(r, f, line, "launch.retries[")
    assert "more than 1,000 items" in r.stderr, r.stderr
