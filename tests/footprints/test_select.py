"""Which runs `migbench profile` probes: one per configuration, or K per group spread over it."""

from __future__ import annotations

import textwrap

import pytest

from migbench.errors import UsageError
from migbench.footprints.select import probe_targets
from migbench.sweep import load_sweep_text


def sweep(memory: str):  # type: ignore[no-untyped-def]
    return load_sweep_text(
        textwrap.dedent(f"""
        version: 1
        name: s
        groups:
          - name: a
            command: python t.py --batch {{batch}} --lr {{lr}}
            parameters: {{batch: [4, 8, 16, 32, 64], lr: [0.1, 0.01]}}
            repeats: 2
            memory: {memory}
          - name: b
            command: python t.py --seed {{seed}}
            parameters: {{seed: [0, 1]}}
            memory: 2GiB
        """),
        file="s.yaml",
    )


def test_one_probe_per_configuration():
    sw = sweep("{measured: true, fallback: {by: batch, table: {4: 1GiB, 8: 2GiB, 16: 4GiB, 32: 8GiB, 64: 16GiB}}, by: [batch]}")
    t = probe_targets(sw)
    a = [x for x in t if x.run.group == "a"]
    assert sorted(x.run.params["batch"] for x in a) == [4, 8, 16, 32, 64]
    assert all(x.covers == 4 for x in a)  # 2 lrs x 2 repeats share each batch size's footprint
    assert {x.run.params["batch"]: x.need_mib for x in a}[64] == 16384
    b = [x for x in t if x.run.group == "b"]
    assert len(b) == 2 and all(x.covers == 1 for x in b)  # no `by`: every parameter counts


def test_a_sample_spreads_over_the_group_and_one_is_the_largest():
    sw = sweep("{measured: true, fallback: {by: batch, table: {4: 1GiB, 8: 2GiB, 16: 4GiB, 32: 8GiB, 64: 16GiB}}, by: [batch]}")
    a = [x.run.params["batch"] for x in probe_targets(sw, sample=3, groups=["a"])]
    assert sorted(a) == [4, 16, 64]
    assert [x.run.params["batch"] for x in probe_targets(sw, sample=1, groups=["a"])] == [64]
    with pytest.raises(UsageError, match="no group 'c'"):
        probe_targets(sw, groups=["c"])


def test_without_by_every_parameter_set_is_probed_once():
    sw = sweep("4GiB")
    a = [x for x in probe_targets(sw) if x.run.group == "a"]
    assert len(a) == 10 and all(x.covers == 2 for x in a)  # its repeats share a probe
