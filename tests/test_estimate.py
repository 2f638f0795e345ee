"""The analytic memory estimator against docs/memory-estimation.md's tables and illustrative arithmetic
(#bytes-per-parameter, #activations, #overheads)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from migbench.estimate import (
    MIB,
    OPTIMIZERS,
    PART_NAMES,
    PRECISIONS,
    EstimateSpec,
    activation_bytes_per_layer,
    bytes_per_param,
    estimate,
    logits_bytes,
    parse_param_count,
)

GB = 1e9


def gpt2_small(**kw: object) -> EstimateSpec:
    """docs/memory-estimation.md#activations' illustrative model: GPT-2 small, s=1024, b=8, h=768, a=12, L=12, V=50257."""
    base: dict[str, object] = dict(
        params="124M",
        precision="bf16-mixed",
        optimizer="adamw",
        batch_size=8,
        seq_len=1024,
        hidden=768,
        layers=12,
        heads=12,
        vocab=50257,
    )
    base.update(kw)
    return EstimateSpec(**base)  # type: ignore[arg-type]


# -- illustrative arithmetic (docs/memory-estimation.md#activations) ----------------------------


def test_eager_activations_match_the_illustrative_072_gb_per_layer_and_86_gb_total() -> None:
    spec = gpt2_small()
    per_layer = activation_bytes_per_layer(spec)
    assert per_layer == pytest.approx(0.72 * GB, abs=0.01 * GB)
    assert per_layer == 1024 * 8 * 768 * (34 + 5 * 12 * 1024 / 768)  # Korthikanti's lp = 2 form, exactly
    assert estimate(spec).part("activations") * MIB == pytest.approx(8.6 * GB, abs=0.05 * GB)


def test_flash_attention_drops_the_score_tensors_021_gb_per_layer() -> None:
    spec = gpt2_small(attention="flash")
    assert activation_bytes_per_layer(spec) == pytest.approx(0.21 * GB, abs=0.01 * GB)
    assert activation_bytes_per_layer(spec) == 34 * 1024 * 8 * 768
    assert estimate(spec).part("activations") * MIB == pytest.approx(2.6 * GB, abs=0.05 * GB)


def test_model_states_at_18_bytes_per_param_are_22_gb_for_124m() -> None:
    est = estimate(gpt2_small())
    assert est.bytes_per_param == 18
    assert est.part("model states") * MIB == pytest.approx(2.2 * GB, abs=0.05 * GB)


def test_logits_are_several_copies_of_bsv() -> None:
    bsv = 8 * 1024 * 50257
    assert bsv * 4 == pytest.approx(1.65 * GB, abs=0.01 * GB)  # docs/memory-estimation.md#activations: "one fp32 logits copy"
    assert logits_bytes(gpt2_small()) == bsv * (2 + 4 + 4)
    assert logits_bytes(gpt2_small(precision="bf16")) == bsv * 10
    assert logits_bytes(gpt2_small(precision="fp32")) == bsv * 8


# -- bytes per parameter (docs/memory-estimation.md#bytes-per-parameter) ------------------------

BPP = {
    ("fp32", "adamw"): 16,
    ("fp32", "adam"): 16,
    ("fp32", "adamw8bit"): 10,
    ("fp32", "sgd"): 8,
    ("fp32", "sgd-momentum"): 12,
    ("bf16-mixed", "adamw"): 18,
    ("fp16-mixed", "adam"): 18,
    ("bf16-mixed", "adamw8bit"): 12,
    ("fp16-mixed", "sgd"): 10,
    ("bf16-mixed", "sgd-momentum"): 14,
    ("bf16", "adamw"): 8,
    ("fp16", "adam"): 8,
    ("bf16", "adamw8bit"): 6,
    ("bf16", "sgd"): 4,
    ("fp16", "sgd-momentum"): 6,
}


@pytest.mark.parametrize(("precision", "optimizer"), sorted(BPP))
def test_bytes_per_param_table(precision: str, optimizer: str) -> None:
    total, note = bytes_per_param(precision, optimizer)
    assert total == BPP[(precision, optimizer)]
    assert "docs/memory-estimation.md#bytes-per-parameter" in note


def test_every_precision_and_optimizer_has_a_rate() -> None:
    for p in PRECISIONS:
        for o in OPTIMIZERS:
            assert bytes_per_param(p, o)[0] > 0


def test_unknown_precision_or_optimizer_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        bytes_per_param("fp8", "adamw")
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        gpt2_small(optimizer="lion")


# -- activation variants ------------------------------------------------------------------------


def test_ffn_equal_to_4h_changes_nothing() -> None:
    assert activation_bytes_per_layer(gpt2_small(ffn=4 * 768)) == activation_bytes_per_layer(gpt2_small())


def test_ffn_width_scales_only_the_ffn_wide_tensors_as_megatron() -> None:
    """Megatron-LM's selective-recompute form s·b·h·(18 + 4·ffn/h) for lp = 2 (theoretical_memory_usage.py)."""
    s, b, h, ffn = 1024, 8, 768, 2048
    spec = gpt2_small(attention="flash", ffn=ffn)
    assert activation_bytes_per_layer(spec) == pytest.approx(s * b * h * (18 + 4 * ffn / h))


def test_fp32_uses_four_bytes_per_activation() -> None:
    s, b, h, a = 1024, 8, 768, 12
    spec = gpt2_small(precision="fp32", optimizer="adamw")
    assert activation_bytes_per_layer(spec) == s * b * h * (16 * 4 + 2) + (2 * 4 + 1) * a * s * s * b


def test_activation_checkpointing_keeps_layer_inputs_plus_one_layer() -> None:
    s, b, h, L = 1024, 8, 768, 12
    spec = gpt2_small(activation_checkpointing=True)
    one_layer = activation_bytes_per_layer(spec)
    assert estimate(spec).part("activations") * MIB == pytest.approx(L * 2 * s * b * h + one_layer)
    assert estimate(spec).part("activations") < estimate(gpt2_small()).part("activations") / 5


# -- the whole estimate ----------------------------------------------------------------------------


def test_parts_are_in_order_and_total_is_the_ceiling_of_their_sum() -> None:
    est = estimate(gpt2_small())
    assert tuple(n for n, _ in est.parts) == PART_NAMES
    assert est.part("cuda context") == 512
    assert est.part("workspace") == 64
    others = sum(v for n, v in est.parts if n != "headroom")
    assert est.part("headroom") == pytest.approx(0.15 * others)
    assert est.total_mib == math.ceil(sum(v for _, v in est.parts))
    assert len(est.notes) == len(est.parts)
    assert any("docs/memory-estimation.md#activations" in n for n in est.notes) and any("derivation" in n for n in est.notes)


def test_quantities_and_headroom_are_honoured() -> None:
    est = estimate(gpt2_small(context_mib=300, workspace_mib=0, headroom=0))
    assert est.part("cuda context") == 300 and est.part("workspace") == 0 and est.part("headroom") == 0
    assert est.total_mib == math.ceil(sum(v for _, v in est.parts))


def test_estimate_is_monotone_in_batch_size() -> None:
    totals = [estimate(gpt2_small(batch_size=b)).total_mib for b in (1, 2, 4, 8, 16)]
    assert totals == sorted(totals) and len(set(totals)) == len(totals)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("124M", 124e6),
        ("1.3B", 1.3e9),
        ("7b", 7e9),
        ("350k", 350e3),
        ("124e6", 124e6),
        (124e6, 124e6),
        (124_000_000, 124e6),
        ("2T", 2e12),
        ("1.5G", 1.5e9),
    ],
)
def test_parse_param_count(text: object, value: float) -> None:
    assert parse_param_count(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["124 millions", "", "M", "-5M", 0, True, None, "1.3X"])
def test_parse_param_count_refuses(text: object) -> None:
    with pytest.raises(ValueError):
        parse_param_count(text)


def test_spec_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        gpt2_small(batch_size=0)
    with pytest.raises(ValueError, match="attention"):
        gpt2_small(attention="sdpa-ish")
    with pytest.raises(ValueError, match="headroom"):
        gpt2_small(headroom=-0.1)
    spec = gpt2_small()
    assert spec.params == 124e6
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.layers = 3  # type: ignore[misc]


# -- trainable parameters: LoRA and frozen weights (docs/memory-estimation.md#frozen-weights) ----


def test_the_docs_lora_example_states() -> None:
    """docs' example: a 7e9 bf16 base with 40e6 AdamW-trained adapters needs ~7e9·2 + 40e6·18 ≈ 14.7 GB of
    model states, against 7e9·18 ≈ 126 GB for full mixed-precision fine-tuning. (`params` counts every
    parameter, so the frozen ones are params − trainable: 80 MB less than the docs' rounding.)"""
    lora = estimate(gpt2_small(params="7B", trainable="40M"))
    full = estimate(gpt2_small(params="7B"))
    states = (lora.part("frozen weights") + lora.part("model states")) * MIB
    assert states == pytest.approx(7e9 * 2 + 40e6 * 18 - 40e6 * 2, rel=1e-9)
    assert states == pytest.approx(14.7 * GB, abs=0.1 * GB)
    assert full.part("model states") * MIB == pytest.approx(126 * GB)
    with pytest.raises(KeyError):
        full.part("frozen weights")
    assert tuple(n for n, _ in lora.parts) == ("cuda context", "frozen weights", *PART_NAMES[1:])
    assert len(lora.notes) == len(lora.parts) and "no gradient, no optimizer state" in lora.notes[1]
    assert lora.activation_bytes_per_layer == full.activation_bytes_per_layer  # freezing keeps the activations


@pytest.mark.parametrize(("trainable", "count"), [("40M", 40e6), (40e6, 40e6), (0.5, 3.5e9), (1, 7e9), ("0.6%", 42e6), ("100%", 7e9)])
def test_trainable_is_a_count_or_a_fraction(trainable: object, count: float) -> None:
    assert gpt2_small(params="7B", trainable=trainable).trainable == pytest.approx(count)


def test_frozen_weights_are_at_the_compute_precision() -> None:
    fp32 = estimate(gpt2_small(params="1B", trainable=0.25, precision="fp32"))
    assert fp32.part("frozen weights") * MIB == pytest.approx(0.75e9 * 4)
    assert fp32.part("model states") * MIB == pytest.approx(0.25e9 * 16)
    pure = estimate(gpt2_small(params="1B", trainable=0.25, precision="bf16"))
    assert pure.part("frozen weights") * MIB == pytest.approx(0.75e9 * 2)


@pytest.mark.parametrize("bad", [0, -1, "x", True, 2e9, "0%", "101%", "1"])
def test_a_bad_trainable_is_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        gpt2_small(params="1B", trainable=bad)


def test_a_bad_trainable_in_a_sweep_is_a_problem_at_its_line() -> None:
    from migbench.errors import InputError
    from migbench.sweep import load_sweep_text

    est = "{params: 1B, trainable: %s, precision: bf16-mixed, optimizer: adamw, batch_size: 1, seq_len: 8, hidden: 8, layers: 1, heads: 1, vocab: 8}"
    ok = load_sweep_text("version: 1\nname: t\ncommand: run\nmemory:\n  estimate: " + est % "5%" + "\n")
    assert dict(ok.runs[0].memory_parts)["frozen weights"] == math.ceil(0.95e9 * 2 / MIB)
    with pytest.raises(InputError) as info:
        load_sweep_text("version: 1\nname: t\ncommand: run\nmemory:\n  estimate: " + est % "2B" + "\n")
    assert any(p.line == 5 and "trainable (2,000,000,000) is more than params" in p.message for p in info.value.problems), [str(p) for p in info.value.problems]
