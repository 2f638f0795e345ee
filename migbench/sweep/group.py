"""One group of a sweep: its fields, its parameters' expansion into runs, and its allowed profiles."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from migbench.sweep.expand import grid, sample_points
from migbench.sweep.fields import Ctx
from migbench.sweep.memory import parse_memory
from migbench.sweep.model import FleetEntry, Group, MemoryEstimate, MemorySpec, MemoryTable, Parameter, Run, canonical_json, run_id
from migbench.sweep.parameters import hydra_run, parse_hydra, parse_parameters, parse_zip
from migbench.sweep.schema import GROUP_KEYS, LAUNCH_MACROS, MAX_RUNS, PROFILE_RE
from migbench.sweep.templates import Macro, Part, check_names, fill, parse_command, parse_template, used_names
from migbench.sweep.yamlnodes import MapNode, Node, SeqNode, describe


def parse_group(
    ctx: Ctx,
    g: MapNode,
    name: str,
    own: MapNode,
    base_dir: Path,
    get_catalog: Callable[[], Any],
    fleet: tuple[FleetEntry, ...] | None,
) -> tuple[Group, Callable[[int, int], list[Run]]] | None:
    """Validate one group's fields; returns the Group and a function that expands its runs."""
    if own.path:  # in the single-group form the top-level keys were checked already
        ctx.keys(MapNode(own.line, own.path, own.entries), GROUP_KEYS, "group")

    # -- method, count, repeats
    method = "grid"
    if (n := g.get("method")) is not None and (s := ctx.string(n, "grid or random")) is not None:
        if s == "bayes":
            ctx.at(
                n,
                "unknown method 'bayes': Bayesian search picks each run from the results of the earlier ones, "
                "and migbench plans a fixed set of runs before any starts (grid or random)",
                "use method: random with count: N for the same space, or let W&B's or Optuna's agent drive a Bayes search",
            )
            method = "?"
        elif s not in ("grid", "random"):
            ctx.at(n, f"unknown method {s!r}; expected grid or random")
            method = "?"
        else:
            method = s
    count = _alias(ctx, g, "count", "run_cap", 1)
    repeats = _alias(ctx, g, "repeats", "num_samples", 1) or 1
    if method == "random" and count is None and g.get("count") is None and g.get("run_cap") is None:
        ctx.missing(g, "count", "missing `count` for method: random", "say how many samples to draw, e.g. count: 20")
    if method == "grid" and (g.get("count") is not None or g.get("run_cap") is not None):
        key = "count" if g.get("count") is not None else "run_cap"
        ctx.at(g.entries[key], f"`{key}` applies to method: random only", "drop it, or add method: random", key=True)

    # -- parameters (and a Hydra sweep block's) and zip
    params = parse_parameters(ctx, g.get("parameters"), method)
    hrun = None
    if (hn := g.get("hydra")) is not None:
        hydra = parse_hydra(ctx, hn, method)
        hrun = hydra_run(ctx, hn)
        if hydra is None or params is None:
            params = None
        else:
            dup = sorted({p.name for p in params} & {p.name for p in hydra})
            if dup:
                ctx.at(hn, f"{', '.join(dup)} given in both parameters: and hydra.sweeper.params", "keep one of them")
                params = None
            else:
                params = params + hydra
    pnames = [p.name for p in params] if params is not None else []
    zips = parse_zip(ctx, g.get("zip"), params, method)

    # -- command and program
    program = None
    if (n := g.get("program")) is not None:
        program = ctx.string(n, "a program path")
    shell = False
    if (n := g.get("shell")) is not None:
        shell = bool(ctx.boolean(n))
    cmd = parse_command(ctx, g, shell, program, pnames if params is not None else None)
    hydra_dir = (
        hrun is not None and cmd is not None and not shell and any(isinstance(p, Macro) and p.name == "args_no_hyphens" for parts in cmd.tokens for p in parts)
    )
    if hrun is not None and cmd is not None and not hydra_dir and hn is not None:
        ctx.note(
            hn,
            f"the command passes no Hydra overrides (${{args_no_hyphens}}), so no hydra.run.dir is added: give each run "
            f"its own, e.g. hydra.run.dir={hrun.run_dir}",
        )

    # -- memory
    memory = None
    if (n := g.get("memory")) is None:
        ctx.missing(
            g,
            "memory",
            "missing `memory`",
            "give the run's device footprint: memory: 2.5GiB, a table {by:, table:}, {estimate: {...}}, or measured",
        )
    else:
        memory = parse_memory(ctx, n, pnames if params is not None else None)

    # -- the rest
    duration_s = _opt(g, "duration", ctx.run_time)
    timeout_s = _opt(g, "timeout", ctx.run_time)
    if hrun is not None and hrun.timeout_s is not None:  # submitit's timeout_min
        timeout_s = timeout_s if timeout_s is not None else hrun.timeout_s
        duration_s = duration_s if duration_s is not None else hrun.timeout_s
    compute, compute_source = 1.0, "default" if g.get("compute") is None else "declared"
    if (n := g.get("compute")) is not None and (v := ctx.number(n)) is not None:
        if not 0 < v <= 1:
            ctx.at(n, f"compute must be in (0, 1], got {v}", "the fraction of a whole GPU's compute the run keeps busy")
        else:
            compute = float(v)
    max_per = 1
    if (n := g.get("max_runs_per_instance")) is not None and (v := ctx.integer(n, 1)) is not None:
        max_per = v
    retries = None
    if (n := g.get("retries")) is not None:
        retries = ctx.integer(n, 0)
    profiles = _parse_profiles(ctx, g.get("profiles"), get_catalog, fleet)
    env: dict[str, tuple[str, Node]] = {}
    env_parts: dict[str, list[Part]] = {}
    if (n := g.get("env")) is not None:
        env = ctx.env(n) or {}
        for key, (text, vnode) in env.items():
            parts, errors = parse_template(text, shell=False)
            for msg, hint in errors:
                ctx.at(vnode, msg, hint)
            for p in parts:
                if isinstance(p, Macro) and p.name not in LAUNCH_MACROS + ("program",):
                    ctx.at(
                        vnode,
                        f"{p.text} can only be used in command",
                        "env values may hold {param}, ${program}, ${run_id}, ${run_dir} and ${attempt}",
                    )
                if isinstance(p, Macro) and p.name == "program" and program is None:
                    ctx.at(vnode, "${program} is used but the group has no `program`", "add program: train.py")
            if params is not None:
                check_names(ctx, vnode, parts, pnames)
            env_parts[key] = parts
    workdir = str(base_dir)
    if (n := g.get("workdir")) is not None and (s := ctx.string(n, "a directory")) is not None:
        if not s.strip():
            ctx.at(n, "workdir is empty", "omit it to run in the sweep file's directory")
        else:
            workdir = str((base_dir / Path(s).expanduser()).resolve())

    def combos(seed: int) -> list[dict[str, Any]] | None:
        assert params is not None and zips is not None
        if method == "grid":
            return grid(ctx, g, params, zips, repeats)
        if (count or 0) * repeats > MAX_RUNS:
            ctx.at(g, f"count × repeats is more than {MAX_RUNS} runs")
            return None
        return sample_points(ctx, g, name, params, zips, count or 0, seed)

    if params is None or zips is None or memory is None or method not in ("grid", "random"):
        return None
    if ctx.failed or cmd is None:
        if method == "grid" or count is not None:  # still find the per-run memory problems
            for values in (combos(0) or [])[:MAX_RUNS]:
                memory.resolve(ctx, values, 0)
        return None
    _note_unused(ctx, params, [*cmd.tokens, *env_parts.values()], memory.spec, program)
    group = Group(
        name=name,
        command=cmd.written,
        memory=memory.spec,
        program=program,
        shell=shell,
        method=method,
        count=count if method == "random" else None,
        repeats=repeats,
        parameters=tuple(params),
        zip=tuple(zips),
        duration_s=duration_s,
        compute=compute,
        max_runs_per_instance=max_per,
        profiles=profiles,
        env={k: v for k, (v, _) in env.items()},
        workdir=workdir,
        retries=retries,
        timeout_s=timeout_s,
        line=own.line,
    )

    def expand(seed: int, start: int) -> list[Run]:
        points = combos(seed)
        if points is None:
            return []
        out: list[Run] = []
        seen: dict[str, int] = {}
        dups = 0
        for rep in range(repeats):
            for values in points:
                key = canonical_json([values, rep])
                if key in seen:
                    dups += 1
                    continue
                seen[key] = len(out)
                mem = memory.resolve(ctx, values, rep)
                if mem is None:
                    continue
                full = dict(values)
                full["repeat"] = rep
                out.append(
                    Run(
                        id=run_id(name, values, rep),
                        group=name,
                        index=start + len(out),
                        params=dict(values),
                        repeat=rep,
                        argv=hrun.argv(cmd.render(full, values)) if hrun is not None and hydra_dir else cmd.render(full, values),
                        shell=shell,
                        env={k: fill(env_parts[k], full, lambda m: (program or "") if m.name == "program" else m.text) for k in env_parts},
                        workdir=workdir,
                        memory_mib=mem[0],
                        memory_source=mem[1],
                        memory_parts=mem[2],
                        duration_s=duration_s,
                        compute=compute,
                        max_runs_per_instance=max_per,
                        profiles=profiles,
                        retries=retries,
                        timeout_s=timeout_s,
                        compute_source=compute_source,
                    )
                )
        if dups:
            ctx.at(
                g,
                f"group {name!r} has {dups} duplicate run{'s' if dups != 1 else ''} (same parameters and repeat)",
                "remove repeated values; use repeats: for replicas",
            )
        return out

    return group, expand


def _note_unused(ctx: Ctx, params: list[Parameter], templates: list[list[Part]], memory: MemorySpec, program: str | None) -> None:
    """A note for each parameter no command, env value or memory rule uses: it never reaches the
    program, and a list of values makes runs whose commands are all the same."""
    used, every = used_names(templates)
    if every:
        return
    if isinstance(memory, MemoryTable):
        used.add(memory.by)
    elif isinstance(memory, MemoryEstimate):
        for v in memory.fields.values():
            if isinstance(v, str):
                used |= used_names([parse_template(v, shell=False)[0]])[0]
    for p in params:
        if p.name in used:
            continue
        n = len(p.values) if p.values is not None else None
        if n is None:
            effect = "its samples give runs with the same command"
        elif n > 1:
            effect = f"its {n} values give runs with the same command"
        else:
            effect = "its value never reaches the program"
        ctx.p.note(
            f"parameter {p.name!r} is used by no command, env value or memory rule: {effect}; pass it as "
            f"{{{p.name}}} or with ${{args}}, unless the program reads it from wandb.config (WANDB_CONFIG_PATHS)",
            line=p.line,
        )


def _opt(g: MapNode, key: str, check: Callable[[Node], Any]) -> Any:
    n = g.get(key)
    return None if n is None else check(n)


def _alias(ctx: Ctx, g: MapNode, key: str, alias: str, minimum: int) -> int | None:
    a, b = (g.entries.get(k) if g.get(k) is not None else None for k in (key, alias))
    if a is not None and b is not None:
        ctx.at(b, f"`{alias}` is another name for `{key}`; give only one", key=True)
        return None
    e = a or b
    return None if e is None else ctx.integer(e.value, minimum)


# ---- profiles ----------------------------------------------------------------------------------


def _parse_profiles(ctx: Ctx, node: Node | None, get_catalog: Callable[[], Any], fleet: tuple[FleetEntry, ...] | None) -> tuple[str, ...] | None:
    if node is None:
        return None
    if not isinstance(node, SeqNode):
        ctx.at(node, f"expected a list of MIG profile names such as [1g.10gb, 2g.20gb], got {describe(node)}")
        return None
    if not node.items:
        ctx.at(node, "`profiles` is empty: no instance could run this group", "list allowed profiles, or omit profiles:")
        return None
    out: list[str] = []
    for item in node.items:
        s = ctx.string(item, "a MIG profile name such as 1g.10gb")
        if s is None:
            continue
        if not PROFILE_RE.fullmatch(s):
            ctx.at(
                item,
                f"{s!r} is not a MIG profile name",
                "profiles look like 1g.10gb, 3g.40gb or 1g.10gb+me (nvidia-smi mig -lgip lists them)",
            )
            continue
        if s in out:
            ctx.at(item, f"profile {s!r} is listed twice")
            continue
        out.append(s)
    if fleet and len(out) == len(node.items):
        cat = get_catalog()
        try:
            models = [cat.model(f.gpu) for f in fleet]
        except Exception:  # noqa: BLE001 - a catalogue problem is reported elsewhere
            models = []
        if models:
            for item, s in zip(node.items, out, strict=True):
                if not any(m.has_profile(s) for m in models):
                    ctx.at(
                        item,
                        f"profile {s!r} exists on none of the fleet's GPUs ({', '.join(m.key for m in models)})",
                        "`migbench catalog show MODEL` lists a model's profiles",
                    )
    return tuple(out)
