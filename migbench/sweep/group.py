"""One group of a sweep: its fields, its parameters' expansion into runs, and its allowed profiles.

The fields that are one typed value (method, count, repeats, program, shell, duration, timeout,
compute, max_runs_per_instance, retries, env) are read from their declarations (`schema.KEYS`,
`Ctx.read_keys`); what relates fields (parameters and the command's placeholders, Hydra's block,
memory tables by a parameter, profiles on the fleet's GPUs) is checked here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migbench.sweep.expand import grid, sample_points
from migbench.sweep.fields import Ctx, Values
from migbench.sweep.memory import GroupMemory, parse_memory
from migbench.sweep.model import FleetEntry, Group, MemoryEstimate, MemorySpec, MemoryTable, Parameter, Run, canonical_json, run_id
from migbench.sweep.parameters import HydraRun, hydra_run, parse_hydra, parse_parameters, parse_zip
from migbench.sweep.schema import GROUP_KEYS, LAUNCH_MACROS, MAX_RUNS, PROFILE_RE, declared
from migbench.sweep.templates import Command, Macro, Part, check_names, fill, parse_command, parse_template, used_names
from migbench.sweep.yamlnodes import MapNode, Node, ScalarNode, SeqNode, describe

Expander = Callable[[int, int], list[Run]]


def parse_group(
    ctx: Ctx,
    g: MapNode,
    name: str,
    own: MapNode,
    base_dir: Path,
    get_catalog: Callable[[], Any],
    fleet: tuple[FleetEntry, ...] | None,
) -> tuple[Group, Expander] | None:
    """Validate one group's fields (`g`: defaults merged into `own`); returns the Group and a
    function that expands its runs, or None (every problem reported)."""
    if own.path:  # in the single-group form the top-level keys were checked already
        ctx.keys(MapNode(own.line, own.path, own.entries), GROUP_KEYS, "group")
    v = ctx.read_keys(g, "group", ("method", "count", "repeats"))
    method = _method(g, v)
    _check_count(ctx, g, method, v["count"])
    params, hrun, hn = _parameters(ctx, g, method)
    pnames = [p.name for p in params] if params is not None else None
    zips = parse_zip(ctx, g.get("zip"), params, method)
    v.add(ctx.read_keys(g, "group", ("program", "shell")))
    cmd = parse_command(ctx, g, v["shell"], v["program"], pnames)
    hydra_dir = _hydra_dir(ctx, hn, hrun, cmd, v["shell"])
    memory = _memory(ctx, g, pnames)
    v.add(ctx.read_keys(g, "group", ("duration", "timeout", "compute", "max_runs_per_instance", "retries")))
    if hrun is not None and hrun.timeout_s is not None:  # submitit's timeout_min
        v["timeout"] = v["timeout"] if v["timeout"] is not None else hrun.timeout_s
        v["duration"] = v["duration"] if v["duration"] is not None else hrun.timeout_s
    profiles = _parse_profiles(ctx, g.get("profiles"), get_catalog, fleet)
    v.add(ctx.read_keys(g, "group", ("env",)))
    env_parts = _env_parts(ctx, v["env"] or {}, v["program"], pnames)
    workdir = _workdir(ctx, g, base_dir)
    if params is None or zips is None or memory is None or method not in ("grid", "random"):
        return None
    spec = _Spec(ctx, g, name, method, v["count"] if method == "random" else None, v["repeats"], params, zips, memory)
    if ctx.failed or cmd is None:
        if method == "grid" or v["count"] is not None:  # still find the per-run memory problems
            for values in (spec.combos(0) or [])[:MAX_RUNS]:
                memory.resolve(ctx, values, 0)
        return None
    _note_unused(ctx, params, [*cmd.tokens, *env_parts.values()], memory.spec, v["program"])
    group = Group(
        name=name,
        command=cmd.written,
        memory=memory.spec,
        program=v["program"],
        shell=v["shell"],
        method=method,
        count=spec.count,
        repeats=spec.repeats,
        parameters=tuple(params),
        zip=tuple(zips),
        duration_s=v["duration"],
        compute=v["compute"],
        max_runs_per_instance=v["max_runs_per_instance"],
        profiles=profiles,
        env={k: text for k, (text, _) in (v["env"] or {}).items()},
        workdir=workdir,
        retries=v["retries"],
        timeout_s=v["timeout"],
        line=own.line,
    )
    source = "default" if g.get("compute") is None else "declared"
    return group, _Runs(spec, group, cmd, hrun if hydra_dir else None, env_parts, source)


def _method(g: MapNode, v: Values) -> str:
    """grid or random; "?" for a string that is neither (reported): a value of another type was
    reported too, and the group is read as a grid for its other problems."""
    n = g.get("method")
    if "method" in v.bad and isinstance(n, ScalarNode) and isinstance(n.value, str):
        return "?"
    return str(v["method"])


def _check_count(ctx: Ctx, g: MapNode, method: str, count: int | None) -> None:
    """`count` (or `run_cap`) is needed by method: random, and means nothing to a grid."""
    given = [k for k in ("count", "run_cap") if g.get(k) is not None]
    if method == "random" and count is None and not given:
        ctx.missing(g, "count", "missing `count` for method: random", "say how many samples to draw, e.g. count: 20")
    if method == "grid" and given:
        ctx.at(g.entries[given[0]], f"`{given[0]}` applies to method: random only", "drop it, or add method: random", key=True)


def _parameters(ctx: Ctx, g: MapNode, method: str) -> tuple[list[Parameter] | None, HydraRun | None, Node | None]:
    """`parameters:` and a Hydra sweep block's; the Hydra block's run settings and its node."""
    params = parse_parameters(ctx, g.get("parameters"), method)
    hn = g.get("hydra")
    if hn is None:
        return params, None, None
    hydra = parse_hydra(ctx, hn, method)
    hrun = hydra_run(ctx, hn)
    if hydra is None or params is None:
        return None, hrun, hn
    dup = sorted({p.name for p in params} & {p.name for p in hydra})
    if dup:
        ctx.at(hn, f"{', '.join(dup)} given in both parameters: and hydra.sweeper.params", "keep one of them")
        return None, hrun, hn
    return params + hydra, hrun, hn


def _hydra_dir(ctx: Ctx, hn: Node | None, hrun: HydraRun | None, cmd: Command | None, shell: bool) -> bool:
    """Whether each run gets `hydra.run.dir=`: the command passes Hydra overrides (${args_no_hyphens});
    a note says what to add where it does not."""
    if hrun is None or cmd is None or hn is None:
        return False
    if not shell and any(isinstance(p, Macro) and p.name == "args_no_hyphens" for parts in cmd.tokens for p in parts):
        return True
    ctx.note(
        hn,
        f"the command passes no Hydra overrides (${{args_no_hyphens}}), so no hydra.run.dir is added: give each run its own, e.g. hydra.run.dir={hrun.run_dir}",
    )
    return False


def _memory(ctx: Ctx, g: MapNode, pnames: list[str] | None) -> GroupMemory | None:
    if (n := g.get("memory")) is None:
        ctx.require(g, declared("group", "memory"))
        return None
    return parse_memory(ctx, n, pnames)


def _env_parts(ctx: Ctx, env: dict[str, tuple[str, Node]], program: str | None, pnames: list[str] | None) -> dict[str, list[Part]]:
    """Each env value's template: {param}, ${program} and the launch macros; no list macros."""
    out: dict[str, list[Part]] = {}
    for name, (text, vnode) in env.items():
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
        if pnames is not None:
            check_names(ctx, vnode, parts, pnames)
        out[name] = parts
    return out


def _workdir(ctx: Ctx, g: MapNode, base_dir: Path) -> str:
    """Where the runs start: `workdir` relative to the sweep file's directory (default: that directory)."""
    if (n := g.get("workdir")) is None or (s := ctx.string(n, "a directory")) is None:
        return str(base_dir)
    if not s.strip():
        ctx.at(n, "workdir is empty", "omit it to run in the sweep file's directory")
        return str(base_dir)
    return str((base_dir / Path(s).expanduser()).resolve())


@dataclass
class _Spec:
    """What a group's runs are drawn from: its parameters, zips, method, count and repeats."""

    ctx: Ctx
    g: MapNode
    name: str
    method: str
    count: int | None
    repeats: int
    params: list[Parameter]
    zips: list[tuple[str, ...]]
    memory: GroupMemory

    def combos(self, seed: int) -> list[dict[str, Any]] | None:
        if self.method == "grid":
            return grid(self.ctx, self.g, self.params, self.zips, self.repeats)
        if (self.count or 0) * self.repeats > MAX_RUNS:
            self.ctx.at(self.g, f"count × repeats is more than {MAX_RUNS} runs")
            return None
        return sample_points(self.ctx, self.g, self.name, self.params, self.zips, self.count or 0, seed)


@dataclass
class _Runs:
    """Expands a parsed group into its runs (`(seed, first index) -> runs`), once per sweep load."""

    spec: _Spec
    group: Group
    cmd: Command
    hrun: HydraRun | None
    """The Hydra run settings where each run gets `hydra.run.dir=`."""
    env_parts: dict[str, list[Part]]
    compute_source: str

    def __call__(self, seed: int, start: int) -> list[Run]:
        points = self.spec.combos(seed)
        if points is None:
            return []
        out: list[Run] = []
        seen: set[str] = set()
        dups = 0
        for rep in range(self.spec.repeats):
            for values in points:
                k = canonical_json([values, rep])
                if k in seen:
                    dups += 1
                    continue
                seen.add(k)
                run = self._run(values, rep, start + len(out))
                if run is not None:
                    out.append(run)
        if dups:
            name = self.group.name
            self.spec.ctx.at(
                self.spec.g,
                f"group {name!r} has {dups} duplicate run{'s' if dups != 1 else ''} (same parameters and repeat)",
                "remove repeated values; use repeats: for replicas",
            )
        return out

    def _run(self, values: dict[str, Any], rep: int, index: int) -> Run | None:
        mem = self.spec.memory.resolve(self.spec.ctx, values, rep)
        if mem is None:
            return None
        g, program = self.group, self.group.program
        full = dict(values)
        full["repeat"] = rep
        argv = self.cmd.render(full, values)
        return Run(
            id=run_id(g.name, values, rep),
            group=g.name,
            index=index,
            params=dict(values),
            repeat=rep,
            argv=self.hrun.argv(argv) if self.hrun is not None else argv,
            shell=g.shell,
            env={k: fill(parts, full, lambda m: (program or "") if m.name == "program" else m.text) for k, parts in self.env_parts.items()},
            workdir=g.workdir,
            memory_mib=mem[0],
            memory_source=mem[1],
            memory_parts=mem[2],
            duration_s=g.duration_s,
            compute=g.compute,
            max_runs_per_instance=g.max_runs_per_instance,
            profiles=g.profiles,
            retries=g.retries,
            timeout_s=g.timeout_s,
            compute_source=self.compute_source,
        )


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
