"""Fleets of several machines: `node:` in `fleet:` entries and `--fleet-file`."""

from __future__ import annotations

import pytest

from migbench.errors import InputError
from migbench.sweep import FleetEntry, load_fleet_file, load_sweep_text

BODY = "command: run {x}\nparameters: {x: [1, 2]}\nmemory: 1GiB\n"


def sweep_with(fleet: str):  # type: ignore[no-untyped-def]
    return load_sweep_text(f"version: 1\nname: s\nfleet:\n{fleet}{BODY}")


def test_fleet_entries_name_their_node():
    s = sweep_with("  - {node: gpu01, gpu: A100-SXM4-80GB, count: 2}\n  - {node: gpu02, gpu: A30, count: 1, driver: '535.104.05'}\n")
    assert s.fleet == (FleetEntry("A100-SXM4-80GB", 2, None, "gpu01"), FleetEntry("A30", 1, "535.104.05", "gpu02"))


def test_a_fleet_without_nodes_is_the_local_host():
    assert sweep_with("  - {gpu: A30, count: 1}\n").fleet == (FleetEntry("A30", 1),)


@pytest.mark.parametrize(
    ("fleet", "message", "line"),
    [
        ("  - {node: gpu01, gpu: A30, count: 1}\n  - {gpu: A30, count: 1}\n", "names no `node`, but others do", 5),
        ("  - {node: 'gpu 01', gpu: A30, count: 1}\n", "'gpu 01' is not a node name", 4),
        ("  - {node: -gpu, gpu: A30, count: 1}\n", "'-gpu' is not a node name", 4),
        ("  - {node: 12, gpu: A30, count: 1}\n", "node", 4),
    ],
)
def test_bad_nodes_are_errors_with_line(fleet, message, line):
    with pytest.raises(InputError) as e:
        sweep_with(fleet)
    probs = e.value.problems
    assert any(message in p.message and p.line == line for p in probs), [(p.message, p.line) for p in probs]


def test_fleet_file_is_the_same_list_alone_or_under_fleet(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("- {node: n0, gpu: A100-SXM4-80GB, count: 8}\n- {node: n1, gpu: A100-SXM4-80GB, count: 8}\n")
    b = tmp_path / "b.yaml"
    b.write_text("fleet:\n  - {node: n0, gpu: A100-SXM4-80GB, count: 8}\n  - {node: n1, gpu: A100-SXM4-80GB, count: 8}\n")
    want = (FleetEntry("A100-SXM4-80GB", 8, None, "n0"), FleetEntry("A100-SXM4-80GB", 8, None, "n1"))
    assert load_fleet_file(a) == load_fleet_file(b) == want


def test_a_bad_fleet_file_names_file_line_and_problem(tmp_path):
    f = tmp_path / "inv.yaml"
    f.write_text("- {node: n0, gpu: A100-SXM4-80GB, count: 8}\n- {node: n1, gpu: A100-SXM9, count: 8}\n")
    with pytest.raises(InputError) as e:
        load_fleet_file(f)
    assert str(f) in e.value.message
    assert [(p.line, "unknown GPU model" in p.message) for p in e.value.problems] == [(2, True)]
    with pytest.raises(InputError):
        load_fleet_file(tmp_path / "missing.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(InputError):
        load_fleet_file(tmp_path / "empty.yaml")
