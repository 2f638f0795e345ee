"""Parameters as written: lists, W&B's `{values: [...]}`, `{value: x}` and distributions, Hydra's
shorthand strings (`a,b`, `range(...)`, `choice(...)`), and `zip` groups of linked parameters.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from migbench.sweep.fields import Ctx
from migbench.sweep.model import Parameter, canonical_json
from migbench.sweep.schema import (
    DISTRIBUTIONS,
    LIST_DISTRIBUTIONS,
    MAX_RUNS,
    NORMAL_FAMILY,
    PARAM_KEYS,
    PARAM_NAME_RE,
    Scalar,
)
from migbench.sweep.yamlnodes import Loader, MapNode, Node, ScalarNode, SeqNode, describe, describe_value


def parse_parameters(ctx: Ctx, node: Node | None, method: str, prefix: str = "") -> list[Parameter] | None:
    """`parameters:` in file order. A parameter that holds only `parameters:` nests (W&B): its
    leaves are named with dots, `optimizer: {parameters: {lr: ...}}` gives `optimizer.lr`."""
    if node is None:
        return []
    m = ctx.mapping(node, "a mapping of parameters (name: values)")
    if m is None:
        return None
    out: list[Parameter] = []
    ok = True
    for raw_key, e in m.entries.items():
        key = f"{prefix}{raw_key}" if isinstance(raw_key, str) else raw_key
        if isinstance(e.value, MapNode) and "parameters" in e.value.entries:
            nested = _nested(ctx, e.value, key, method)
            if nested is None:
                ok = False
            else:
                out.extend(nested)
            continue
        if not isinstance(key, str) or not PARAM_NAME_RE.fullmatch(key):
            ctx.at(
                e,
                f"{str(key)!r} is not a valid parameter name",
                "use letters, digits, '_', '.' and '-', starting with a letter or '_'",
                key=True,
            )
            ok = False
            continue
        if key == "repeat":
            ctx.at(e, "`repeat` is reserved for the repeat index ({repeat})", "rename the parameter", key=True)
            ok = False
            continue
        p = _parse_parameter(ctx, key, e.value, method)
        if p is None:
            ok = False
        else:
            out.append(p)
    return out if ok else None


def _nested(ctx: Ctx, m: MapNode, name: str, method: str) -> list[Parameter] | None:
    others = [e for k, e in m.entries.items() if k != "parameters"]
    for e in others:
        ctx.at(e, f"`{e.key}` beside `parameters:` (a nested parameter holds only its parameters)", key=True)
    if not isinstance(name, str) or not PARAM_NAME_RE.fullmatch(name):
        ctx.at(m, f"{str(name)!r} is not a valid parameter name")
        return None
    inner = parse_parameters(ctx, m.entries["parameters"].value, method, prefix=f"{name}.")
    if inner is not None and not inner:
        ctx.at(m.entries["parameters"].value, "a nested `parameters:` is empty")
        return None
    return None if others or inner is None else inner


def parse_hydra(ctx: Ctx, node: Node, method: str) -> list[Parameter] | None:
    """A Hydra sweep block, `hydra: {sweeper: {params: {name: overrides}}}`: each value is Hydra's
    override syntax (`a,b`, `range(...)`, `choice(...)`, a quoted literal). The rest of `hydra:`
    (mode, run and sweep dirs, launcher, job) is Hydra's own business: ignored with a note."""
    m = ctx.mapping(node, "Hydra's config block (hydra: {sweeper: {params: {...}}})")
    if m is None:
        return None
    for k, e in m.entries.items():
        if k not in ("sweeper", "sweep", "launcher"):  # hydra_run reads sweep and launcher
            ctx.note(e, f"`hydra.{k}` is Hydra's own setting: ignored (migbench reads hydra.sweeper.params, hydra.sweep and hydra.launcher)", key=True)
    sw = m.get("sweeper")
    if sw is None or (swm := ctx.mapping(sw, "a mapping with params:")) is None:
        ctx.missing(
            m,
            "sweeper",
            "a `hydra:` block without `sweeper: {params: {...}}` has no parameters",
            "write hydra: {sweeper: {params: {lr: '0.1,0.01'}}}, or use parameters:",
        )
        return None
    for k, e in swm.entries.items():
        if k != "params":
            ctx.note(e, f"`hydra.sweeper.{k}` is ignored: migbench expands the grid itself", key=True)
    pn = swm.get("params")
    if pn is None:
        ctx.missing(swm, "params", "`hydra.sweeper` has no `params`", "list the overrides to sweep: params: {lr: '0.1,0.01'}")
        return None
    pm = ctx.mapping(pn, "a mapping of overrides (name: a,b,c)")
    if pm is None:
        return None
    for e in pm.entries.values():
        if isinstance(e.value, (MapNode, SeqNode)):
            ctx.at(e.value, f"a Hydra sweep value is one override string such as 'a,b', got {describe(e.value)}")
            return None
    return parse_parameters(ctx, pm, method)


@dataclass(frozen=True)
class HydraRun:
    """What a group's `hydra:` block says about each run besides its parameters: the directory
    Hydra writes it to (`hydra.run.dir`, passed on its command line) and the submitit launcher's
    time limit."""

    run_dir: str
    timeout_s: float | None = None

    def argv(self, argv: tuple[str, ...]) -> tuple[str, ...]:
        """`argv` with `hydra.run.dir=...` added, unless the command sets it already."""
        if any(a.lstrip("+").startswith("hydra.run.dir=") for a in argv):
            return argv
        return (*argv, f"hydra.run.dir={self.run_dir}")


def hydra_run(ctx: Ctx, node: Node) -> HydraRun | None:
    """A Hydra app run by migbench runs once per run (Hydra's run mode), so without a directory of
    its own each run would write to `outputs/<date>/<time>` and runs started in the same second
    would share one. The run's directory: `hydra.sweep.dir`/`hydra.sweep.subdir` (subdir default,
    and `${hydra.job.num}`, meaning the job's number in Hydra's multirun, become the run id), else
    migbench's run directory. `hydra.launcher.timeout_min` (submitit's time limit) becomes the
    group's timeout and, when it declares none, its duration; `gpus_per_node` above 1 is noted:
    each run gets one MIG instance."""
    if not isinstance(node, MapNode):
        return None
    run_dir = "${run_dir}"
    sweep = node.get("sweep")
    if isinstance(sweep, MapNode) and sweep.get("dir") is not None:
        base = ctx.string(sweep.entries["dir"].value, "a directory")
        sub = ctx.string(sweep.entries["subdir"].value, "a directory") if sweep.get("subdir") is not None else "${run_id}"
        if base is not None and sub is not None:
            run_dir = f"{base.rstrip('/')}/{sub.replace('${hydra.job.num}', '${run_id}')}"
    timeout_s = None
    launcher = node.get("launcher")
    if isinstance(launcher, MapNode):
        for k, e in launcher.entries.items():
            if k == "timeout_min":
                v = ctx.number(e.value)
                if v is not None and v > 0:
                    timeout_s = float(v) * 60
                elif v is not None:
                    ctx.at(e.value, f"timeout_min must be more than zero, got {v}")
            elif k == "gpus_per_node":
                v = ctx.number(e.value)
                if v is not None and v > 1:
                    ctx.note(e, f"`hydra.launcher.gpus_per_node: {v:g}`: each run gets one MIG instance", key=True)
            elif k != "_target_":
                ctx.note(e, f"`hydra.launcher.{k}` is the launcher's own setting: ignored", key=True)
    return HydraRun(run_dir, timeout_s)


_FORMS = "expected a list, {values: [...]}, {value: x} or a distribution"


def _parse_parameter(ctx: Ctx, name: str, node: Node, method: str) -> Parameter | None:
    if isinstance(node, SeqNode):
        values = _scalar_values(ctx, node)
        if values is None:
            return None
        return Parameter(name, values, line=node.line) if _nonempty(ctx, node, values) else None
    if isinstance(node, ScalarNode):
        if isinstance(node.value, str):
            return _hydra(ctx, name, node)
        if node.value is None:
            ctx.at(node, "empty grid: this parameter has no values", "write values, or {value: null} for a literal null")
            return None
        v = _scalar_value(ctx, node)
        return None if v is _BAD else Parameter(name, (v,), line=node.line)
    assert isinstance(node, MapNode)
    return _mapped_parameter(ctx, name, node, method)


def _mapped_parameter(ctx: Ctx, name: str, node: MapNode, method: str) -> Parameter | None:
    """A parameter written as a mapping: `{value: v}`, `{values: [...]}` or a distribution."""
    keys = set(node.entries)
    if not keys & {"value", "values", "distribution", "min", "max", "mu", "sigma"}:
        ctx.at(
            node,
            f"{_FORMS}, got {describe(node)}",
            "e.g. [1, 2, 3], {values: [1, 2, 3]}, {value: 7} or {distribution: uniform, min: 0, max: 1}",
        )
        return None
    ctx.keys(node, PARAM_KEYS, "parameter")
    dist_node = node.get("distribution")
    fixed = dist_node.value if isinstance(dist_node, ScalarNode) and dist_node.value in LIST_DISTRIBUTIONS else None
    if fixed is not None:
        want = "values" if fixed == "categorical" else "value"
        if want not in keys:
            ctx.missing(node, want, f"distribution: {fixed} needs `{want}`")
            return None
        keys = keys - {"distribution"}
    if "probabilities" in keys:
        if method == "random":
            ctx.at(
                node.entries["probabilities"],
                "`probabilities` is not supported: every value is drawn with the same probability",
                "remove probabilities, or repeat a value's runs with repeats:",
                key=True,
            )
            return None
        ctx.note(node.entries["probabilities"], "`probabilities` is ignored: a grid tries every value", key=True)
        keys = keys - {"probabilities"}
    if "values" in keys and "distribution" in keys:
        ctx.at(
            node.entries["distribution"],
            "`values` together with `distribution` in one parameter",
            "keep values: for a list, or distribution: (method: random) for sampling",
            key=True,
        )
        return None
    if "value" in keys and ("values" in keys or "distribution" in keys):
        ctx.at(
            node.entries["value"],
            "`value` is one fixed value; it cannot be combined with values or distribution",
            key=True,
        )
        return None
    if "value" in keys or "values" in keys:
        return _listed_parameter(ctx, name, node, keys)
    return _distribution(ctx, name, node, method)


def _listed_parameter(ctx: Ctx, name: str, node: MapNode, keys: set[str]) -> Parameter | None:
    """`{value: v}` or `{values: [...]}` (`keys`: the mapping's keys that still count)."""
    extra = keys - {"value", "values"}
    for k in sorted(extra & set(PARAM_KEYS), key=str):
        ctx.at(node.entries[k], f"`{k}` belongs to a distribution, not to a list of values", key=True)
    if "value" in keys:
        v = _scalar_value(ctx, node.entries["value"].value)
        return None if v is _BAD or extra else Parameter(name, (v,), line=node.line)
    vn = node.entries["values"].value
    if not isinstance(vn, SeqNode):
        ctx.at(vn, f"expected a list of values, got {describe(vn)}")
        return None
    values = _scalar_values(ctx, vn)
    if values is None or extra or not _nonempty(ctx, vn, values):
        return None
    return Parameter(name, values, line=node.line)


_BAD = object()


def _scalar_value(ctx: Ctx, node: Node) -> Any:
    if not isinstance(node, ScalarNode):
        ctx.at(
            node,
            f"a parameter value must be a single value (string, number, boolean), got {describe(node)}",
            "write a nested value as a string and parse it in the program",
        )
        return _BAD
    v = node.value
    if isinstance(v, (_dt.date, _dt.datetime)):
        ctx.at(node, f"expected a string, number or boolean, got {describe_value(v)}")
        return _BAD
    if isinstance(v, float) and not math.isfinite(v):
        ctx.at(node, f"{node.raw!r} is not a finite number")
        return _BAD
    if isinstance(v, str) and "\x00" in v:
        ctx.at(node, "a value cannot hold a NUL character (no program can receive it)")
        return _BAD
    if not isinstance(v, (str, int, float, bool)) and v is not None:  # pragma: no cover - binary etc.
        ctx.at(node, f"unsupported value type {type(v).__name__}")
        return _BAD
    return v


def _scalar_values(ctx: Ctx, node: SeqNode) -> tuple[Scalar, ...] | None:
    out: list[Scalar] = []
    ok = True
    seen: dict[str, int] = {}
    for item in node.items:
        v = _scalar_value(ctx, item)
        if v is _BAD:
            ok = False
            continue
        key = canonical_json(v)
        if key in seen:
            ctx.at(
                item,
                f"value {key} is listed twice (first at line {seen[key]})",
                "each value makes its own runs; use repeats: for replicas",
            )
            ok = False
            continue
        seen[key] = item.line
        out.append(v)
    return tuple(out) if ok else None


def _nonempty(ctx: Ctx, node: Node, values: Sequence[Any]) -> bool:
    if values:
        return True
    ctx.at(node, "empty grid: this parameter has no values", "list at least one value, or remove the parameter")
    return False


_HYDRA_FN = re.compile(r"^\s*(range|choice|interval|glob|sort|shuffle|tag)\s*\((.*)\)\s*$", re.S)


def _hydra(ctx: Ctx, name: str, node: ScalarNode) -> Parameter | None:
    """Hydra shorthand: `"a,b,c"`, `"range(0,10,2)"`, `"choice(a,b)"`; a value quoted whole (`"'a,b'"`)
    is one literal string, as in Hydra's override grammar; otherwise one string value."""
    text = node.value
    quoted = _quoted(text.strip())
    if quoted is not None:
        return Parameter(name, (quoted,), line=node.line)
    fn = _HYDRA_FN.match(text)
    if fn:
        fname, body = fn.group(1), fn.group(2)
        if fname == "range":
            return _hydra_range(ctx, name, node, body)
        if fname == "choice":
            items = _split_items(ctx, node, body)
            return None if items is None else Parameter(name, items, line=node.line)
        hint = (
            "interval() samples a range: write {distribution: uniform, min: a, max: b} with method: random"
            if fname == "interval"
            else "write the value as {value: '...'} if it is meant literally"
        )
        ctx.at(
            node,
            f"unsupported sweep function {fname}() in {text!r}; supported: a,b,c  range(start,stop[,step])  choice(a,b)",
            hint,
        )
        return None
    if "," in text:
        items = _split_items(ctx, node, text)
        return None if items is None else Parameter(name, items, line=node.line)
    v = _scalar_value(ctx, node)
    return None if v is _BAD else Parameter(name, (v,), line=node.line)


def _quoted(text: str) -> str | None:
    """The inside of `'...'` or `"..."` when the quotes enclose the whole text (and only once)."""
    if len(text) >= 2 and text[0] in "'\"" and text[-1] == text[0] and text[0] not in text[1:-1]:
        return text[1:-1]
    return None


def _split_commas(text: str) -> list[str] | None:
    """Split a Hydra list on commas outside quotes (`a,'b,c'` is two items); None if a quote is left open."""
    items: list[str] = []
    buf: list[str] = []
    quote = ""
    for ch in text:
        if quote:
            buf.append(ch)
            if ch == quote:
                quote = ""
        elif ch in "'\"" and not "".join(buf).strip():
            quote = ch
            buf.append(ch)
        elif ch == ",":
            items.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    if quote:
        return None
    items.append("".join(buf))
    return items


def _split_items(ctx: Ctx, node: ScalarNode, text: str) -> tuple[Scalar, ...] | None:
    out: list[Scalar] = []
    seen: set[str] = set()
    parts = _split_commas(text)
    if parts is None:
        ctx.at(node, f"a quote is not closed in {node.value!r}", "close it: 'a,b' is one value holding a comma")
        return None
    for raw in parts:
        item = raw.strip()
        literal = _quoted(item)
        if literal is not None:
            key = canonical_json(literal)
            if key in seen:
                ctx.at(node, f"value {item!r} is listed twice in {node.value!r}")
                return None
            seen.add(key)
            out.append(literal)
            continue
        if not item:
            ctx.at(
                node,
                f"empty item in the comma list {node.value!r}",
                "remove the extra comma; a value holding a comma is written {value: 'a,b'}",
            )
            return None
        v: Any = item
        try:
            parsed = yaml.load(item, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError:
            parsed = None
        if isinstance(parsed, (str, int, float, bool)) and not (isinstance(parsed, float) and not math.isfinite(parsed)):
            v = parsed
        key = canonical_json(v)
        if key in seen:
            ctx.at(node, f"value {item!r} is listed twice in {node.value!r}")
            return None
        seen.add(key)
        out.append(v)
    return tuple(out)


def _hydra_range(ctx: Ctx, name: str, node: ScalarNode, body: str) -> Parameter | None:
    nums: list[int | float] = []
    for raw in body.split(","):
        try:
            s = raw.strip()
            nums.append(int(s) if re.fullmatch(r"[-+]?[0-9]+", s) else float(s))
        except ValueError:
            nums = []
            break
    if not 1 <= len(nums) <= 3 or not all(math.isfinite(x) for x in nums):
        ctx.at(node, f"{node.value!r} is not range(stop), range(start, stop) or range(start, stop, step)")
        return None
    start, stop, step = (0, nums[0], 1) if len(nums) == 1 else (nums[0], nums[1], nums[2] if len(nums) == 3 else 1)
    if step == 0:
        ctx.at(node, f"{node.value!r}: the step cannot be 0")
        return None
    ints = all(isinstance(x, int) for x in (start, stop, step))
    # the count comes from the arithmetic: range(0,1e9) is refused before a value is made
    if ints:  # exact arithmetic: len(range(...)) overflows past 2**63 values
        span, st = int(stop) - int(start), int(step)
        n = max(0, (span + st - (1 if st > 0 else -1)) // st)
    else:
        n = max(0, math.ceil((stop - start) / step - 1e-12))
    if n > MAX_RUNS:
        ctx.at(node, f"{node.value!r} has {n:,} values (more than {MAX_RUNS:,})", "use a larger step, or method: random")
        return None
    if ints:
        values: tuple[Scalar, ...] = tuple(range(int(start), int(stop), int(step)))
    else:
        values = tuple(round(start + i * step, 12) for i in range(n))
    if not values:
        ctx.at(node, f"empty grid: {node.value!r} has no values", "check start, stop and the step's sign")
        return None
    return Parameter(name, values, line=node.line)


def _distribution(ctx: Ctx, name: str, node: MapNode, method: str) -> Parameter | None:
    dist = _distribution_name(ctx, node)
    if dist is None:
        return None
    if method == "grid":
        ctx.at(
            node.entries.get("distribution") or node,
            "a distribution never ends a grid; use method: random",
            "or list the values to try: values: [...]",
        )
        return None
    args = _distribution_args(ctx, node, dist)
    if args is None:
        return None
    if dist in NORMAL_FAMILY:
        args.setdefault("mu", 0.0)
        args.setdefault("sigma", 1.0)
        if args["sigma"] <= 0:
            ctx.at(node.get("sigma") or node, f"sigma must be > 0, got {args['sigma']}")
            return None
    elif not _range_ok(ctx, node, dist, args):
        return None
    if dist.startswith("q_"):
        args.setdefault("q", 1)
        if args["q"] <= 0:
            ctx.at(node.get("q") or node, f"q must be > 0, got {args['q']}")
            return None
    return Parameter(name, None, dist, args, line=node.line)


def _distribution_name(ctx: Ctx, node: MapNode) -> str | None:
    """The distribution's name: `distribution:`, or W&B's inference from `min:` and `max:`; None (reported)."""
    if (dn := node.get("distribution")) is not None:
        dist = ctx.string(dn, "a distribution name")
        if dist is None:
            return None
        if dist not in DISTRIBUTIONS:
            close = difflib.get_close_matches(dist, DISTRIBUTIONS, n=1, cutoff=0.6)
            hint = (
                "for a list of choices use values: [...]"
                if dist == "categorical"
                else ((f"did you mean {close[0]!r}? " if close else "") + "distributions: " + ", ".join(DISTRIBUTIONS))
            )
            ctx.at(dn, f"unknown distribution {dist!r}", hint)
            return None
        return dist
    if "min" in node.entries and "max" in node.entries:
        lo, hi = node.get("min"), node.get("max")
        both_int = all(isinstance(n, ScalarNode) and isinstance(n.value, int) and not isinstance(n.value, bool) for n in (lo, hi))
        return "int_uniform" if both_int else "uniform"  # as W&B infers it
    ctx.at(
        node,
        f"{_FORMS}, got {describe(node)}",
        "a distribution needs distribution: (or min: and max: for uniform); normal takes mu: and sigma:",
    )
    return None


def _distribution_args(ctx: Ctx, node: MapNode, dist: str) -> dict[str, float] | None:
    """The numbers given to distribution `dist` (min, max, q, mu, sigma); None (reported) when one is bad or does not apply."""
    wanted = ("mu", "sigma", "q") if dist in NORMAL_FAMILY else ("min", "max", "q")
    args: dict[str, float] = {}
    ok = True
    for key in ("min", "max", "q", "mu", "sigma"):
        e = node.entries.get(key)
        if e is None:
            continue
        if key not in wanted or (key == "q" and not dist.startswith("q_")):
            ctx.at(e, f"`{key}` does not apply to distribution {dist}", key=True)
            ok = False
            continue
        v = ctx.number(e.value)
        if v is None:
            ok = False
        else:
            args[key] = v
    return args if ok else None


def _range_ok(ctx: Ctx, node: MapNode, dist: str, args: dict[str, float]) -> bool:
    """A uniform-family distribution's min and max: both given, in order, and fit for `dist`; False (reported) when not."""
    ok = True
    for key in ("min", "max"):
        if key not in args:
            ctx.missing(node, key, f"distribution {dist} needs `{key}`")
            ok = False
    if not ok:
        return False
    if args["min"] >= args["max"]:
        ctx.at(node.get("max") or node, f"max ({args['max']}) must be greater than min ({args['min']})")
        return False
    if dist == "int_uniform" and not all(isinstance(args[k], int) for k in ("min", "max")):
        ctx.at(node, "int_uniform needs whole-number min and max")
        return False
    if dist in ("log_uniform_values", "q_log_uniform_values") and args["min"] <= 0:
        ctx.at(
            node.get("min") or node,
            f"{dist} needs min > 0 (it samples between the values' logarithms)",
            "for exponents use log_uniform (min and max are natural-log exponents, as W&B)",
        )
        return False
    return True


def parse_zip(ctx: Ctx, node: Node | None, params: list[Parameter] | None, method: str) -> list[tuple[str, ...]] | None:
    if node is None:
        return []
    if not isinstance(node, SeqNode) or not all(isinstance(i, SeqNode) for i in node.items):
        ctx.at(node, f"expected a list of parameter-name lists, e.g. [[lr, warmup]], got {describe(node)}")
        return None
    by_name = {p.name: p for p in params or []}
    out: list[tuple[str, ...]] = []
    used: dict[str, int] = {}
    ok = True
    for item in node.items:
        assert isinstance(item, SeqNode)
        names: list[str] = []
        for n in item.items:
            s = ctx.string(n, "a parameter name")
            if s is None:
                ok = False
                continue
            if params is not None and s not in by_name:
                ctx.at(n, f"zip names {s!r}, which is not a parameter; parameters are: {', '.join(by_name) or '(none)'}")
                ok = False
                continue
            if s in used:
                ctx.at(n, f"parameter {s!r} is in more than one zip group (first at line {used[s]})")
                ok = False
                continue
            used[s] = n.line
            names.append(s)
        if not item.items:
            ctx.at(item, "an empty zip group", "list the parameters that vary together, e.g. [lr, warmup]")
            ok = False
            continue
        if params is None or not names or len(names) != len(item.items):
            continue
        dists = [s for s in names if by_name[s].values is None]
        if dists:
            ctx.at(item, f"cannot zip {', '.join(dists)}: a distribution has no list of values to pair up")
            ok = False
            continue
        lengths = {s: len(by_name[s].values or ()) for s in names}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{s} has {k}" for s, k in lengths.items())
            ctx.at(item, f"zipped parameters need value lists of equal length: {shown}")
            ok = False
            continue
        tuples = list(zip(*(by_name[s].values or () for s in names), strict=True))
        if len({canonical_json(list(t)) for t in tuples}) != len(tuples):
            ctx.at(item, f"zipped parameters {', '.join(names)} repeat the same combination of values")
            ok = False
            continue
        out.append(tuple(names))
    return out if ok and params is not None else None
