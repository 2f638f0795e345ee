"""A group's `memory:` — a quantity, a table by one parameter, the analytic estimate, or `measured`
(with one of those as its fallback) — resolved per run. A measured group's runs carry their
fallback's memory here; `migbench.footprints` puts the measured value in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from migbench import units
from migbench.estimate import (
    ATTENTIONS,
    OPTIMIZERS,
    PRECISIONS,
    Estimate,
    EstimateSpec,
    estimate,
    parse_param_count,
    parse_trainable,
)
from migbench.sweep.fields import Ctx
from migbench.sweep.model import (
    ExplicitMemory,
    MeasuredMemory,
    MemoryEstimate,
    MemorySpec,
    MemoryTable,
    canonical_json,
    render_value,
)
from migbench.sweep.schema import ESTIMATE_KEYS, ESTIMATE_OPTIONAL, ESTIMATE_REQUIRED, MEASURED_KEYS, MEMORY_TABLE_KEYS, declared
from migbench.sweep.templates import Lit, Macro, Part, Placeholder, check_names, fill, parse_template
from migbench.sweep.yamlnodes import MapNode, Node, ScalarNode, SeqNode, describe, describe_value


@dataclass
class GroupMemory:
    spec: MemorySpec
    resolve: Callable[[Ctx, dict[str, Any], int], tuple[int, str, tuple[tuple[str, int], ...]] | None]


MEASURED_SOURCE = "measured"
"""The `memory_source` of a measured group's run that has no fallback (memory 0 until resolved)."""


def parse_memory(ctx: Ctx, node: Node, pnames: list[str] | None, *, measured: bool = True) -> GroupMemory | None:
    if isinstance(node, ScalarNode):
        if node.value == "measured" and measured:
            return GroupMemory(MeasuredMemory(), lambda c, v, r: (0, MEASURED_SOURCE, ()))
        if node.value in ("auto", "measured"):
            ctx.at(
                node,
                f"memory: {node.value} cannot be used here" if node.value == "measured" else "memory: auto is spelled `measured`",
                "memory: measured, or {measured: true, fallback: 2.5GiB} (measure with `migbench profile SWEEP`)"
                if measured
                else "a fallback is a quantity (2.5GiB), a table {by: param, table: {...}} or {estimate: {...}}",
            )
            return None
        mib = ctx.memory(node)
        if mib is None:
            return None
        return GroupMemory(ExplicitMemory(mib), lambda c, v, r: (mib, "explicit", ()))
    if not isinstance(node, MapNode):
        ctx.at(node, f"expected a memory quantity, a table or an estimate, got {describe(node)}", units.MEMORY_HINT)
        return None
    if "measured" in node.entries and measured:
        return _parse_measured(ctx, node, pnames)
    if "estimate" in node.entries:
        for k, e in node.entries.items():
            if k != "estimate":
                ctx.at(e, f"`{k}` cannot be combined with `estimate`", key=True)
        return _parse_estimate(ctx, node.entries["estimate"].value, pnames)
    if "by" in node.entries or "table" in node.entries:
        return _parse_table(ctx, node, pnames)
    ctx.at(
        node,
        f"expected a memory quantity, {{by: param, table: {{...}}}} or {{estimate: {{...}}}}, got {describe(node)}",
        units.MEMORY_HINT,
    )
    return None


def _parse_by(ctx: Ctx, bn: Node, pnames: list[str] | None) -> tuple[str, ...] | None:
    """A measured memory's `by: [params]`; None (reported) when it is not a list of parameter names."""
    if not isinstance(bn, SeqNode):
        ctx.at(bn, f"expected a list of parameter names, got {describe(bn)}", "e.g. by: [batch_size, seq_len]")
        return None
    ok = True
    names: list[str] = []
    for item in bn.items:
        name = ctx.string(item, "a parameter name")
        if name is None:
            ok = False
        elif pnames is not None and name not in pnames:
            ctx.at(item, f"{name!r} is not a parameter; parameters are: {', '.join(pnames) or '(none)'}")
            ok = False
        else:
            names.append(name)
    return tuple(names) if ok else None


def _parse_measured(ctx: Ctx, node: MapNode, pnames: list[str] | None) -> GroupMemory | None:
    """`{measured: true, fallback: <memory>, by: [params], headroom: 0.1}`."""
    ctx.keys(node, MEASURED_KEYS, "measured memory")
    ok = True
    on = ctx.boolean(node.entries["measured"].value)
    if on is None:
        ok = False
    fallback: GroupMemory | None = None
    if (fn := node.get("fallback")) is not None:
        fallback = parse_memory(ctx, fn, pnames, measured=False)
        ok = ok and fallback is not None
    elif on is False:
        ctx.missing(node, "fallback", "measured: false needs a `fallback` (the memory to use instead)")
        ok = False
    by: tuple[str, ...] | None = None
    if (bn := node.get("by")) is not None:
        by = _parse_by(ctx, bn, pnames)
        ok = ok and by is not None
    headroom = None
    if (hn := node.get("headroom")) is not None:
        v = ctx.number(hn)
        if v is None:
            ok = False
        elif not (k := declared("measured", "headroom")).in_range(v):
            ctx.at(hn, f"headroom must be between {k.minimum} and {k.maximum}, got {v}", k.hint)
            ok = False
        else:
            headroom = float(v)
    if not ok:
        return None
    fb = fallback
    fb_spec = fb.spec if fb is not None else None
    assert not isinstance(fb_spec, MeasuredMemory)  # parsed with measured=False
    spec = MeasuredMemory(fb_spec, by, headroom)
    if on is False and fb is not None:
        return GroupMemory(fb.spec, fb.resolve)  # measured: false: the fallback alone

    def resolve(c: Ctx, values: dict[str, Any], rep: int) -> tuple[int, str, tuple[tuple[str, int], ...]] | None:
        if fb is None:
            return 0, MEASURED_SOURCE, ()
        return fb.resolve(c, values, rep)

    return GroupMemory(spec, resolve)


def _parse_table(ctx: Ctx, node: MapNode, pnames: list[str] | None) -> GroupMemory | None:
    ctx.keys(node, MEMORY_TABLE_KEYS, "memory table", " (or estimate:)")
    by = None
    if (bn := node.get("by")) is None:
        ctx.missing(node, "by", "a memory table needs `by` (the parameter whose value picks the entry)")
    elif (by := ctx.string(bn, "a parameter name")) is not None and pnames is not None and by not in pnames:
        ctx.at(bn, f"memory table is by {by!r}, which is not a parameter; parameters are: {', '.join(pnames) or '(none)'}")
        by = None
    table: dict[str, int] = {}
    lines: dict[str, int] = {}
    ok = True
    if (tn := node.get("table")) is None:
        ctx.missing(node, "table", "a memory table needs `table` ({value: quantity, ...})")
        ok = False
    elif (tm := ctx.mapping(tn, "a mapping {value: quantity, ...}")) is None:
        ok = False
    else:
        if not tm.entries:
            ctx.at(tm, "the memory table is empty")
            ok = False
        for key, e in tm.entries.items():
            skey = render_value(key)
            if skey in table or skey in lines:
                ctx.at(e, f"table key {skey!r} is given twice (first at line {lines[skey]})", key=True)
                ok = False
                continue
            lines[skey] = e.key_line
            mib = ctx.memory(e.value)
            if mib is None:
                ok = False
            else:
                table[skey] = mib
    default = None
    if (dn := node.get("default")) is not None:
        default = ctx.memory(dn)
        ok = ok and default is not None
    if not ok or by is None:
        return None
    tnode = node.get("table")
    spec = MemoryTable(by, table, default)
    byname = by

    def resolve(c: Ctx, values: dict[str, Any], rep: int) -> tuple[int, str, tuple[tuple[str, int], ...]] | None:
        val = render_value(values[byname])
        source = f"table:{byname}={val}"
        if val in table:
            return table[val], source, ()
        if default is not None:
            return default, source, ()
        c.at(
            tnode,
            f"group {c.group!r}: no memory for {byname}={val} (no table entry and no default)",
            f"add `{val}: <quantity>` to the table, or a `default:`",
        )
        return None

    return GroupMemory(spec, resolve)


_EST_INT = ("batch_size", "seq_len", "hidden", "layers", "heads", "vocab", "ffn")


def _coerce_choice(key: str, value: Any) -> str:
    known = {"precision": PRECISIONS, "optimizer": OPTIMIZERS, "attention": ATTENTIONS}[key]
    if not isinstance(value, str) or value.strip().lower() not in known:
        raise ValueError(f"unknown {key} {value!r} (known: {', '.join(known)})")
    return value.strip().lower()


def _coerce_whole(value: Any) -> int:
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]+\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a whole number >= 1, got {describe_value(value)}")
    return value


def _coerce_flag(value: Any) -> bool:
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {describe_value(value)}")
    return value


def _coerce_headroom(value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"expected a number >= 0 such as 0.15, got {describe_value(value)}")
    return float(value)


def _coerce_estimate(key: str, value: Any) -> Any:
    """One estimate field from YAML (or from a substituted placeholder) to EstimateSpec's type."""
    if key == "params":
        return parse_param_count(value)
    if key in ("precision", "optimizer", "attention"):
        return _coerce_choice(key, value)
    if key in _EST_INT:
        return _coerce_whole(value)
    if key == "activation_checkpointing":
        return _coerce_flag(value)
    if key in ("context", "workspace"):
        return float(units.parse_memory_mib(value))
    if key == "trainable":
        return parse_trainable(value)
    if key == "headroom":
        return _coerce_headroom(value)
    raise KeyError(key)  # pragma: no cover


_EST_FIELD = {"context": "context_mib", "workspace": "workspace_mib"}


def _parse_estimate_field(
    ctx: Ctx,
    key: str,
    v: Node,
    pnames: list[str] | None,
    fixed: dict[str, Any],
    templated: dict[str, tuple[list[Part], ScalarNode]],
) -> bool:
    """One estimate field into `fixed` (its value) or `templated` (its {param} template); False (reported) when bad."""
    if not isinstance(v, ScalarNode):
        ctx.at(v, f"expected a single value, got {describe(v)}")
        return False
    ok = True
    if isinstance(v.value, str) and ("{" in v.value or "}" in v.value):
        parts, errors = parse_template(v.value, shell=False)
        for msg, hint in errors:
            ctx.at(v, msg, hint)
            ok = False
        if any(isinstance(p, Macro) for p in parts):
            ctx.at(v, "macros cannot be used in an estimate; use {param} placeholders")
            ok = False
        if pnames is not None and not check_names(ctx, v, parts, pnames):
            ok = False
        if any(isinstance(p, Placeholder) for p in parts):
            templated[key] = (parts, v)
            return ok
        value: Any = "".join(p.text for p in parts if isinstance(p, Lit))
    else:
        value = v.value
    try:
        fixed[key] = _coerce_estimate(key, value)
    except ValueError as exc:
        hint = units.MEMORY_HINT if key in ("context", "workspace") else None
        ctx.at(v, f"bad {key}: {exc}", hint)
        ok = False
    return ok


def _parse_estimate(ctx: Ctx, node: Node, pnames: list[str] | None) -> GroupMemory | None:
    m = ctx.mapping(node, "a mapping of estimator inputs (params, precision, optimizer, batch_size, ...)")
    if m is None:
        return None
    ctx.keys(m, ESTIMATE_KEYS, "estimate")
    fixed: dict[str, Any] = {}
    templated: dict[str, tuple[list[Part], ScalarNode]] = {}
    ok = True
    for key in ESTIMATE_REQUIRED:
        if key not in m.entries:
            ctx.missing(
                m,
                key,
                f"the estimate needs `{key}`",
                "required: " + ", ".join(ESTIMATE_REQUIRED) + "; optional: " + ", ".join(ESTIMATE_OPTIONAL),
            )
            ok = False
    for key, e in m.entries.items():
        if key not in ESTIMATE_KEYS:
            ok = False
            continue
        ok = _parse_estimate_field(ctx, key, e.value, pnames, fixed, templated) and ok
    if not ok or pnames is None:
        return None
    spec = MemoryEstimate({k: v for k, v in fixed.items()} | {k: v.value for k, (_, v) in templated.items()})
    cache: dict[str, Estimate | None] = {}

    def resolve(c: Ctx, values: dict[str, Any], rep: int) -> tuple[int, str, tuple[tuple[str, int], ...]] | None:
        full = dict(values)
        full["repeat"] = rep
        kw: dict[str, Any] = {_EST_FIELD.get(k, k): v for k, v in fixed.items()}
        bad = False
        for key, (parts, vnode) in templated.items():
            if len(parts) == 1 and isinstance(parts[0], Placeholder):
                raw: Any = full[parts[0].name]
            else:
                raw = fill(parts, full, lambda mm: mm.text)
            try:
                kw[_EST_FIELD.get(key, key)] = _coerce_estimate(key, raw)
            except ValueError as exc:
                c.at(vnode, f"bad {key} {render_value(raw)!r} for run {canonical_json(values)}: {exc}")
                bad = True
        if bad:
            return None
        ckey = canonical_json(kw)
        if ckey not in cache:
            try:
                cache[ckey] = estimate(EstimateSpec(**kw))
            except ValueError as exc:  # pragma: no cover - fields were coerced one by one
                c.at(m, f"cannot estimate: {exc}")
                cache[ckey] = None
        est = cache[ckey]
        if est is None:
            return None
        parts_mib = tuple((n, int(math.ceil(v - 1e-9))) for n, v in est.parts)
        return est.total_mib, "estimate", parts_mib

    return GroupMemory(spec, resolve)
