"""Resource limits hold before the work (issue 10, item 2): a range() is refused from its arithmetic,
a YAML alias bomb while it is read, a fleet past MAX_FLEET_GPUS at its line; each with little
memory (measured with tracemalloc, not with a clock)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from migbench.errors import InputError, UsageError
from migbench.planner.fleet import parse_fleet_option
from migbench.sweep import load_sweep_text
from migbench.sweep.schema import MAX_FLEET_GPUS, MAX_NAME_LEN
from migbench.sweep.yamlnodes import MAX_ALIAS_VALUES

HEAD = "version: 1\nname: t\nfleet: [{gpu: A30, count: 1}]\ncommand: run {x}\nmemory: 1GiB\n"


def peak_mib(fn: Callable[[], Any]) -> float:
    """The most memory Python allocated while `fn` ran, in MiB."""
    tracemalloc.start()
    try:
        fn()
    except InputError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak / 2**20


def problems_of(text: str) -> list[str]:
    with pytest.raises(InputError) as info:
        load_sweep_text(text)
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize("expr", ["range(0,10000000)", "range(0,1e7)", "range(0, 5e6, 0.5)"])
def test_a_huge_range_is_refused_from_its_arithmetic(expr: str) -> None:
    """Regression: `range(0,1000000000)` was expanded before the value cap was checked (23.7 GB, killed)."""
    text = HEAD + f'parameters: {{x: "{expr}"}}\n'
    assert any("parameters.x" in p and "10,000,000 values (more than 100,000)" in p for p in problems_of(text))
    assert peak_mib(lambda: load_sweep_text(text)) < 20  # the 10 million values were never made


@pytest.mark.parametrize("expr", ["range(0,100000000000000000000)", "range(100000000000000000000,0,-1)"])
def test_a_range_past_2_63_values_is_refused_not_an_internal_error(expr: str) -> None:
    """Regression: `range(0,10**20)` ended in "internal error (OverflowError: Python int too large to
    convert to C ssize_t)": len() of a range that long overflows; the count is exact arithmetic now."""
    text = HEAD + f'parameters: {{x: "{expr}"}}\n'
    assert any("parameters.x" in p and "100,000,000,000,000,000,000 values (more than 100,000)" in p for p in problems_of(text))


def test_a_range_at_the_limit_still_expands() -> None:
    sweep = load_sweep_text(HEAD + 'parameters: {x: "range(0,30000,3)"}\n')
    assert len(sweep.runs) == 10_000 and sweep.runs[-1].params == {"x": 29997}


BOMB = "".join(f"l{k}: &l{k} [{', '.join([f'*l{k - 1}'] * 9) if k else ', '.join(['lol'] * 9)}]\n" for k in range(9))


def test_a_yaml_alias_bomb_is_refused_while_it_is_read() -> None:
    """Regression: an alias bomb was refused only after 16-23 s and 450 MB of expanding it."""
    text = HEAD + "parameters: {x: [1]}\n" + "description: x\n" + BOMB
    probs = problems_of(text)
    assert len(probs) == 1 and f"aliases expand to more than {MAX_ALIAS_VALUES:,} values" in probs[0]
    line = int(probs[0].split(":")[1])
    assert 8 < line < 8 + 9, probs  # a line of the bomb: where its expansion passed the limit
    assert peak_mib(lambda: load_sweep_text(text)) < 20


def test_anchors_and_merges_in_ordinary_use_still_load() -> None:
    text = (
        HEAD.replace("command: run {x}\nmemory: 1GiB\n", "")
        + """\
defaults: &d
  memory: 1GiB
  parameters: &p {x: [1, 2]}
groups:
  - name: a
    command: run {x}
    <<: *d
  - name: b
    command: run {x} --b
    parameters: *p
    memory: 2GiB
"""
    )
    sweep = load_sweep_text(text)
    assert [r.group for r in sweep.runs] == ["a", "a", "b", "b"]


def test_a_fleet_past_the_limit_is_refused_at_its_line() -> None:
    """Regression: `count: 1000000` was accepted and planning hung at 6 GB."""
    text = HEAD.replace("count: 1}", "count: 1000000}") + "parameters: {x: [1]}\n"
    assert any(f"fleet[0].count: 1000000 GPUs: a fleet has at most {MAX_FLEET_GPUS}" in p for p in problems_of(text))
    text = HEAD.replace("fleet: [{gpu: A30, count: 1}]", "fleet: [{gpu: A30, count: 4000}, {gpu: A30, count: 4000}]")
    assert any(f"the fleet has 8000 GPUs; at most {MAX_FLEET_GPUS}" in p for p in problems_of(text + "parameters: {x: [1]}\n"))


def test_a_fleet_option_past_the_limit_is_a_usage_error() -> None:
    """Regression: `--fleet A100-SXM4-80GB:1000000` hung for more than 300 s."""
    with pytest.raises(UsageError, match=f"1000000 GPUs; a fleet has at most {MAX_FLEET_GPUS}"):
        parse_fleet_option("A100-SXM4-80GB:1000000")
    with pytest.raises(UsageError, match="5000 GPUs"):
        parse_fleet_option("A30:2500,A100-SXM4-80GB:2500")
    assert sum(s.count for s in parse_fleet_option(f"A30:{MAX_FLEET_GPUS}")) == MAX_FLEET_GPUS


@pytest.mark.parametrize("field", ["name", "group"])
def test_names_that_become_paths_have_a_length_limit(field: str) -> None:
    """Regression: a 300-character sweep name traced back (`File name too long`) when the plan was written."""
    long = "a" * (MAX_NAME_LEN + 1)
    text = (
        HEAD.replace("name: t", f"name: {long}")
        if field == "name"
        else HEAD.replace("command: run {x}\nmemory: 1GiB\n", f"groups: [{{name: {long}, command: run, memory: 1GiB}}]\n")
    )
    probs = problems_of(text)
    assert any(f"is {MAX_NAME_LEN + 1} characters long; at most {MAX_NAME_LEN}" in p for p in probs), probs


def test_a_sweep_file_past_the_size_limit_is_refused_unread(tmp_path) -> None:
    from migbench.sweep import load_sweep
    from migbench.sweep.schema import MAX_SWEEP_BYTES

    p = tmp_path / "big.yaml"
    with open(p, "wb") as f:
        f.truncate(MAX_SWEEP_BYTES + 1)
    with pytest.raises(InputError, match="too large for a sweep file"):
        load_sweep(p)
