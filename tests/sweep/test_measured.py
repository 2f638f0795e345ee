"""`memory: measured`: the forms, what its runs carry before footprints are resolved."""

from __future__ import annotations

import textwrap

from migbench.sweep import ExplicitMemory, MeasuredMemory, MemoryEstimate, MemoryTable, load_sweep_text


def _load(memory: str):  # type: ignore[no-untyped-def]
    text = textwrap.dedent(
        f"""
        version: 1
        name: m
        command: python train.py --batch {{batch}} --seq {{seq}} --lr {{lr}}
        parameters: {{batch: [8, 16], seq: [128, 256], lr: [0.1]}}
        memory: {memory}
        """
    )
    return load_sweep_text(text, file="m.yaml")


def test_memory_measured_alone_has_no_memory_until_resolved() -> None:
    sw = _load("measured")
    assert sw.groups[0].memory == MeasuredMemory()
    assert {(r.memory_mib, r.memory_source) for r in sw.runs} == {(0, "measured")}


def test_a_fallback_quantity_is_what_the_runs_carry() -> None:
    sw = _load("{measured: true, fallback: 6GiB, by: [batch, seq], headroom: 0.2}")
    assert sw.groups[0].memory == MeasuredMemory(ExplicitMemory(6144), ("batch", "seq"), 0.2)
    assert {(r.memory_mib, r.memory_source) for r in sw.runs} == {(6144, "explicit")}


def test_a_fallback_table_or_estimate_resolves_per_run() -> None:
    sw = _load("{measured: true, fallback: {by: batch, table: {8: 2GiB, 16: 4GiB}}}")
    assert isinstance(sw.groups[0].memory, MeasuredMemory) and isinstance(sw.groups[0].memory.fallback, MemoryTable)
    assert sorted({(r.params["batch"], r.memory_mib) for r in sw.runs}) == [(8, 2048), (16, 4096)]
    est = (
        "{measured: true, fallback: {estimate: {params: 124M, precision: bf16-mixed, optimizer: adamw, batch_size: '{batch}',"
        " seq_len: '{seq}', hidden: 768, layers: 12, heads: 12, vocab: 50257}}}"
    )
    sw = _load(est)
    assert isinstance(sw.groups[0].memory, MeasuredMemory) and isinstance(sw.groups[0].memory.fallback, MemoryEstimate)
    assert len({r.memory_mib for r in sw.runs}) == 4 and {r.memory_source for r in sw.runs} == {"estimate"}


def test_measured_false_is_the_fallback_alone() -> None:
    sw = _load("{measured: false, fallback: 3GiB}")
    assert sw.groups[0].memory == ExplicitMemory(3072)
