"""Analytic training-memory estimate for transformer runs (docs/memory-estimation.md#decomposition to
#overheads, and "Analytic" in #migbench-estimator). Pure.

    M    = ctx + P_t·bytes_per_param(precision, optimizer)        "cuda context", "model states"
             + P_f·frozen_bytes(precision)                        "frozen weights" (only with `trainable`)
             + L·act_per_layer(s, b, h, a, ffn, attention, ckpt)  "activations"
             + b·s·V·logit_bytes                                  "logits"
             + ws                                                 "workspace"
    plan = M·(1 + headroom)                                       "headroom" is the M·headroom part

Every part is in MiB (2^20 bytes). The sources of each formula are cited where it is computed and
repeated in `Estimate.notes`, so a user can see why a run was sized as it was. What is a derivation
of ours (not read from a source) says so.

Symbols: P parameters (P_t trainable, P_f = P − P_t frozen: LoRA adapters on a frozen base), s sequence
length, b micro-batch size, h hidden size, a attention heads, L layers, V vocabulary size, lp bytes per
activation element (4 for fp32, 2 for every 16-bit regime).

Expected accuracy (docs/memory-estimation.md#migbench-estimator): model states exact; activations within about
10–30 % for standard transformer blocks; nothing outside transformers. Calibration on a GPU (tier 2) should win
over this.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

MIB = 1024**2

PRECISIONS: tuple[str, ...] = ("fp32", "fp16-mixed", "bf16-mixed", "bf16", "fp16")
OPTIMIZERS: tuple[str, ...] = ("adamw", "adam", "adamw8bit", "sgd", "sgd-momentum")
ATTENTIONS: tuple[str, ...] = ("eager", "flash")

PART_NAMES: tuple[str, ...] = ("cuda context", "model states", "activations", "logits", "workspace", "headroom")
FROZEN_PART = "frozen weights"
"""The part after "cuda context" when some parameters are frozen (`trainable` given)."""

_COUNT_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
_COUNT_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE]([-+]?[0-9]+))?\s*([kKmMbBgGtT]?)\s*$")


def parse_param_count(value: object) -> float:
    """A parameter count: `124M`, `1.3B`, `7b`, `350k`, `124e6`, 124000000 -> float (parameters).

    Suffixes are decimal (k = 10^3, M = 10^6, B or G = 10^9, T = 10^12), as model cards write them.
    Raises ValueError with a readable reason.
    """
    if isinstance(value, bool):
        raise ValueError("expected a parameter count such as 124M or 1.3B, got a boolean")
    if isinstance(value, (int, float)):
        n = float(value)
    elif isinstance(value, str):
        m = _COUNT_RE.match(value)
        if not m:
            raise ValueError(f"{value!r} is not a parameter count (write e.g. 124M, 1.3B or 124e6)")
        n = float(m.group(1) + (f"e{m.group(2)}" if m.group(2) else "")) * _COUNT_SUFFIX[m.group(3).lower()]
    else:
        raise ValueError(f"expected a parameter count such as 124M or 1.3B, got {type(value).__name__}")
    if not math.isfinite(n) or n <= 0:
        raise ValueError(f"{value!r} must be a positive parameter count")
    return n


def parse_trainable(value: object) -> float:
    """`trainable:` — a count of trained parameters (`4M`, `40e6`, any number above 1) or a fraction of
    all of them (a number in (0, 1], or a percentage such as `0.6%`). Returns the count, or the
    fraction (<= 1). Raises ValueError with a readable reason."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            pct = float(value.strip()[:-1])
        except ValueError:
            raise ValueError(f"{value!r} is not a percentage") from None
        if not 0 < pct <= 100:
            raise ValueError(f"{value!r} must be more than 0% and at most 100%")
        return pct / 100
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1:
        return float(value)
    n = parse_param_count(value)
    if n <= 1:
        raise ValueError(f"{value!r}: write a fraction as a number in (0, 1] or a percentage, a count as e.g. 4M")
    return n


def frozen_bytes_per_param(precision: str) -> int:
    """A frozen parameter's bytes: its weight in the compute precision (4 for fp32, 2 for the 16-bit
    regimes), with no gradient and no optimizer state (docs/memory-estimation.md#frozen-weights)."""
    return 4 if precision == "fp32" else 2


def activation_bytes_per_element(precision: str) -> int:
    """lp: bytes per stored activation element — 4 for fp32, 2 for the 16-bit regimes (mixed or pure)."""
    return 4 if precision == "fp32" else 2


def bytes_per_param(precision: str, optimizer: str) -> tuple[float, str]:
    """Model-state bytes per parameter (weights + gradients + optimizer state), with its derivation.

    docs/memory-estimation.md#bytes-per-parameter (HF "model memory anatomy", accelerate, ZeRO, Megatron):

    | regime \\ optimizer | adam/adamw | adamw8bit | sgd | sgd-momentum |
    |---|---|---|---|---|
    | fp32                        | 4+4+8 = 16 | 4+4+2 = 10 | 4+4 = 8  | 4+4+4 = 12 |
    | fp16-/bf16-mixed (AMP)      | 6+4+8 = 18 | 6+4+2 = 12 | 6+4 = 10 | 6+4+4 = 14 |
    | pure bf16 / fp16            | 2+2+4 = 8  | 2+2+2 = 6  | 2+2 = 4  | 2+2+2 = 6  |

    Weights: fp32 4; AMP keeps an fp32 master plus a 16-bit copy, 4 + 2 = 6 (HF anatomy, the 18 B
    figure); pure 16-bit 2. Gradients: 4 in fp32 and AMP (HF anatomy counts fp32 gradients), 2 pure.
    Optimizer: Adam's m and v are 2 × 4 = 8 B (2 × 2 = 4 with 16-bit states, AnyPrecisionAdamW);
    8-bit AdamW 2 B; plain SGD none; SGD momentum one buffer, 4 B (HF anatomy's 12 for fp32).
    The AMP/pure rows for 8-bit AdamW, SGD and SGD momentum are our derivation from those parts.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (known: {', '.join(PRECISIONS)})")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r} (known: {', '.join(OPTIMIZERS)})")
    if precision == "fp32":
        weights, grads, regime = 4, 4, "fp32 weights 4 + fp32 grads 4"
    elif precision.endswith("-mixed"):
        weights, grads, regime = 6, 4, "fp32 master 4 + 16-bit copy 2 + fp32 grads 4"
    else:
        weights, grads, regime = 2, 2, "16-bit weights 2 + 16-bit grads 2"
    pure16 = precision in ("bf16", "fp16")
    if optimizer in ("adam", "adamw"):
        opt, what = (4, "16-bit m and v 4") if pure16 else (8, "fp32 m and v 8")
    elif optimizer == "adamw8bit":
        opt, what = 2, "8-bit m and v 2"
    elif optimizer == "sgd":
        opt, what = 0, "no optimizer state"
    else:  # sgd-momentum
        opt, what = (2, "16-bit momentum 2") if pure16 else (4, "fp32 momentum 4")
    total = float(weights + grads + opt)
    note = (
        f"model states: {total:g} B/param = {regime} + {what} "
        "(docs/memory-estimation.md#bytes-per-parameter, HF model-memory anatomy; rows other than fp32/AMP Adam, pure-bf16 AdamW, "
        "fp32 SGD-momentum and 8-bit AdamW are derived from the same parts)"
    )
    return total, note


@dataclass(frozen=True)
class EstimateSpec:
    """What the estimator needs to know about one training run.

    params: number of parameters (accepts "124M", "1.3B", 124e6); precision: fp32 | fp16-mixed |
    bf16-mixed | bf16 | fp16; optimizer: adamw | adam | adamw8bit | sgd | sgd-momentum; batch_size:
    micro-batch per step (sequences); seq_len: tokens per sequence; hidden, layers, heads, vocab:
    the transformer's shape; attention: eager (stores the a·s² score tensors) or flash (does not);
    activation_checkpointing: full recompute of each layer; ffn: FFN width (default 4·hidden);
    context_mib: the CUDA context (docs/memory-estimation.md#overheads: plan 0.3–0.6 GiB with lazy
    loading; 0.5 GiB default); workspace_mib: cuBLAS/cuDNN workspaces (#migbench-estimator: about 64 MiB);
    headroom: fraction added on top of the sum for the caching allocator and fragmentation
    (#migbench-estimator: 0.15–0.20); trainable: the parameters that are trained (LoRA adapters,
    an unfrozen head), as a count (4M, 40e6, anything above 1) or a fraction of `params` (0 < f ≤ 1);
    None trains them all. The others are frozen: weights only (`frozen_bytes_per_param`).
    """

    params: float
    precision: str
    optimizer: str
    batch_size: int
    seq_len: int
    hidden: int
    layers: int
    heads: int
    vocab: int
    attention: str = "eager"
    activation_checkpointing: bool = False
    ffn: int | None = None
    context_mib: float = 512.0
    workspace_mib: float = 64.0
    headroom: float = 0.15
    trainable: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", parse_param_count(self.params))
        if self.trainable is not None:
            t = parse_trainable(self.trainable)
            count = t * self.params if t <= 1 else t
            if count > self.params:
                raise ValueError(f"trainable ({count:,.0f}) is more than params ({self.params:,.0f})")
            object.__setattr__(self, "trainable", count)
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r} (known: {', '.join(PRECISIONS)})")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r} (known: {', '.join(OPTIMIZERS)})")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {self.attention!r} (known: {', '.join(ATTENTIONS)})")
        for name in ("batch_size", "seq_len", "hidden", "layers", "heads", "vocab"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {v!r}")
        if self.ffn is not None and (isinstance(self.ffn, bool) or not isinstance(self.ffn, int) or self.ffn < 1):
            raise ValueError(f"ffn must be a whole number >= 1, got {self.ffn!r}")
        if not isinstance(self.activation_checkpointing, bool):
            raise ValueError("activation_checkpointing must be true or false")
        for name in ("context_mib", "workspace_mib", "headroom"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a number >= 0, got {v!r}")


@dataclass(frozen=True)
class Estimate:
    """The estimate's parts in MiB, in order, and the total the planner should reserve.

    parts: ("cuda context", "model states", "activations", "logits", "workspace", "headroom"), MiB;
    total_mib: ceil of their sum; bytes_per_param: model-state bytes per parameter;
    activation_bytes_per_layer: one layer's full activations (bytes, as if not checkpointed);
    notes: one line per formula, with its source.
    """

    spec: EstimateSpec
    parts: tuple[tuple[str, float], ...]
    total_mib: int
    bytes_per_param: float
    activation_bytes_per_layer: float
    notes: tuple[str, ...]

    def part(self, name: str) -> float:
        """One part's MiB by name (KeyError if unknown)."""
        for n, v in self.parts:
            if n == name:
                return v
        raise KeyError(name)


def activation_bytes_per_layer(spec: EstimateSpec) -> float:
    """Bytes of activations one transformer layer saves for backward, not checkpointed.

    docs/memory-estimation.md#activations: Korthikanti et al. 2022 (arXiv:2205.05198) as generalised to
    any precision by EleutherAI (`EleutherAI/cookbook:calc/calc_transformer_mem.py`):
    `s·b·h·(16·lp + 2) + (2·lp + 1)·a·s²·b` (lp = 2 gives `s·b·h·(34 + 5·a·s/h)`).
    Flash/memory-efficient attention does not store the `a·s²·b` tensors, so that term is dropped.

    FFN width other than 4h (derivation): of the MLP's `(9·lp + 1)·s·b·h` share (19·sbh for lp = 2),
    only the two ffn-wide tensors — the activation function's input and the second linear's input,
    `2·lp·s·b·ffn` — depend on the width; the first linear's input (`lp·sbh`) and the dropout mask
    (`sbh`) are h wide. So we add `2·lp·s·b·(ffn − 4h)`, which matches Megatron-LM's
    `s·b·h·(18 + 4·ffn/h)` for lp = 2 (`NVIDIA/Megatron-LM:megatron/training/theoretical_memory_usage.py`).
    """
    s, b, h, a = spec.seq_len, spec.batch_size, spec.hidden, spec.heads
    lp = activation_bytes_per_element(spec.precision)
    ffn = spec.ffn if spec.ffn is not None else 4 * h
    per_layer = float(s * b * h * (16 * lp + 2) + 2 * lp * s * b * (ffn - 4 * h))
    if spec.attention == "eager":
        per_layer += float((2 * lp + 1) * a * s * s * b)
    return per_layer


def logits_bytes(spec: EstimateSpec) -> float:
    """Bytes for the output logits and the loss (derivation from docs/memory-estimation.md#activations:
    "several `b·s·V` copies").

    16-bit regimes: the 16-bit logits (lp), their fp32 upcast for cross-entropy (4) and the fp32
    gradient (4): `b·s·V·(lp + 4 + 4)`. fp32: the logits and their gradient, `b·s·V·8`.
    """
    bsv = spec.batch_size * spec.seq_len * spec.vocab
    lp = activation_bytes_per_element(spec.precision)
    return float(bsv * 8) if lp == 4 else float(bsv * (lp + 4 + 4))


def estimate(spec: EstimateSpec) -> Estimate:
    """Estimate a training run's peak device memory (MiB) from its shape; see the module docstring."""
    bpp, states_note = bytes_per_param(spec.precision, spec.optimizer)
    trained = spec.params if spec.trainable is None else spec.trainable
    frozen = spec.params - trained
    lp = activation_bytes_per_element(spec.precision)
    layer = activation_bytes_per_layer(spec)
    s, b, h = spec.seq_len, spec.batch_size, spec.hidden
    if spec.activation_checkpointing:
        act = spec.layers * lp * s * b * h + layer
        act_note = (
            f"activations: full checkpointing keeps each layer's input, L·lp·s·b·h (2·s·b·h per layer for "
            f"16-bit, lp = {lp}), plus one layer's full activations while it is recomputed "
            "(docs/memory-estimation.md#activations, Korthikanti et al. 2022; lp for fp32 is our generalisation)"
        )
    else:
        act = spec.layers * layer
        act_note = (
            "activations: L·[s·b·h·(16·lp + 2) + 2·lp·s·b·(ffn − 4h)"
            + (" + (2·lp + 1)·a·s²·b]" if spec.attention == "eager" else "] (flash: no a·s² term)")
            + f" with lp = {lp} (docs/memory-estimation.md#activations: Korthikanti et al. 2022 generalised by EleutherAI's "
            "calc_transformer_mem.py; the ffn term is our derivation, equal to Megatron-LM's 18 + 4·ffn/h)"
        )
    logits = logits_bytes(spec)
    logits_note = (
        "logits: b·s·V·8 (fp32 logits + fp32 gradient)"
        if lp == 4
        else f"logits: b·s·V·(lp + 4 + 4) = {lp + 8} B per element (16-bit logits, fp32 upcast for the loss, fp32 gradient)"
    ) + ' — our derivation from docs/memory-estimation.md#activations ("several b·s·V copies")'
    frozen_part: list[tuple[str, float]] = []
    frozen_note: tuple[str, ...] = ()
    if spec.trainable is not None:
        fb = frozen_bytes_per_param(spec.precision)
        frozen_part = [(FROZEN_PART, frozen * fb / MIB)]
        frozen_note = (
            f"frozen weights: {frozen:,.0f} parameters × {fb} B (weights in the compute precision; no gradient, "
            "no optimizer state: docs/memory-estimation.md#frozen-weights, LoRA, Hu et al. 2021)",
        )
        states_note = f"model states of the {trained:,.0f} trainable parameters: " + states_note.removeprefix("model states: ")
    base = [
        ("cuda context", float(spec.context_mib)),
        *frozen_part,
        ("model states", trained * bpp / MIB),
        ("activations", act / MIB),
        ("logits", logits / MIB),
        ("workspace", float(spec.workspace_mib)),
    ]
    headroom = spec.headroom * sum(v for _, v in base)
    parts = tuple(base) + (("headroom", headroom),)
    total = int(math.ceil(sum(v for _, v in parts) - 1e-9))
    notes = (
        f"cuda context: {spec.context_mib:g} MiB per process (docs/memory-estimation.md#overheads: plan 0.3–0.6 GiB with lazy "
        "module loading; measure once per driver and torch)",
        *frozen_note,
        states_note,
        act_note,
        logits_note,
        f"workspace: {spec.workspace_mib:g} MiB for cuBLAS/cuDNN workspaces (docs/memory-estimation.md#overheads, #migbench-estimator)",
        f"headroom: {spec.headroom:g} × the sum of the other parts for the caching allocator and "
        "fragmentation (docs/memory-estimation.md#decomposition, #migbench-estimator: 10–20 %)",
    )
    return Estimate(
        spec=spec,
        parts=parts,
        total_mib=total,
        bytes_per_param=bpp,
        activation_bytes_per_layer=layer,
        notes=notes,
    )
