"""Load a sweep file: parse the YAML with locations, check the sweep-level sections, parse each group,
expand every run, and report every problem at once.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from migbench.duration.model import ComputeBasis
from migbench.errors import InputError
from migbench.fsutil import decode_text, parse_state_mode, read_input
from migbench.names import ENV_PATTERN_RE, log_dir_problem
from migbench.sweep.fields import Ctx, wandb_only_note
from migbench.sweep.group import parse_group
from migbench.sweep.model import DurationModel, FleetEntry, Group, LaunchSettings, Run, Sweep
from migbench.sweep.schema import (
    DURATION_MODEL_KEYS,
    FLEET_KEYS,
    GROUP_FIELDS,
    GROUP_KEYS,
    GROUP_NAME_RE,
    LAUNCH_KEYS,
    MAX_FLEET_FILE_NODES,
    MAX_FLEET_GPUS,
    MAX_NAME_LEN,
    MAX_RUNS,
    MAX_SWEEP_BYTES,
    MAX_SWEEP_NODES,
    NODE_NAME_RE,
    SCHEMA_VERSION,
    SWEEP_NAME_RE,
    TOP_KEYS,
    WANDB_ONLY_KEYS,
    declared,
)
from migbench.sweep.yamlnodes import (
    Abort,
    AliasLimitError,
    Converter,
    Entry,
    Loader,
    MapNode,
    Node,
    Problems,
    ScalarNode,
    SeqNode,
    describe,
    reader_error_char,
    reader_error_line,
    short_repr,
    unknown_key_hint,
)
from migbench.yamlio import shape_problem


def load_sweep(path: str | Path, *, catalog: Any = None, runs: bool = False) -> Sweep:
    """Read and validate a sweep file; raises `InputError` listing every problem found. `runs`: the
    caller runs the sweep's commands (`run`, `submit`, `profile`): a file another user could have
    written (owned by them, or writable by every user) is refused (`fsutil.ForeignFile`)."""
    p = Path(path)
    data = read_input(p, "sweep file", limit=MAX_SWEEP_BYTES, hint='sweeps are YAML files; see the README\'s "The sweep file"', owned=runs, named=runs)
    text = decode_text(data, str(path), "sweep file")
    return _load(text, data, file=str(path), path=str(p.resolve()), base_dir=p.resolve().parent, catalog=catalog)


def load_sweep_text(text: str, *, file: str = "<sweep>", base_dir: Path | None = None, catalog: Any = None) -> Sweep:
    """Validate sweep YAML given as text; `file` names it in problems, `base_dir` anchors `workdir`
    (default: the current directory). `Sweep.path` is None and `sha256` is of the UTF-8 bytes."""
    base = (base_dir if base_dir is not None else Path.cwd()).resolve()
    return _load(text, text.encode("utf-8"), file=file, path=None, base_dir=base, catalog=catalog)


# =============================================================================================
# Loading
# =============================================================================================


def _load(text: str, data: bytes, *, file: str, path: str | None, base_dir: Path, catalog: Any) -> Sweep:
    problems = Problems(file)
    sha = hashlib.sha256(data).hexdigest()
    try:
        root = _parse_yaml(text, problems)
        sweep = None if root is None else _build(root, problems, sha=sha, path=path, base_dir=base_dir, catalog=catalog)
    except Abort as exc:
        problems.add(str(exc))
        sweep = None
    if problems.items or sweep is None:
        items = problems.sorted()
        n = len(items)
        raise InputError(f"{file}: {n} problem{'s' if n != 1 else ''}", problems=items)
    return sweep


def _parse_yaml(text: str, problems: Problems, max_nodes: int = MAX_SWEEP_NODES) -> Node | None:
    shape = shape_problem(text, max_nodes=max_nodes)
    if shape is not None:
        problems.add(shape.message, line=shape.line, field=shape.field, hint="is it the right file? the README lists migbench's input limits")
        return None
    try:
        loader = Loader(text)  # the reader refuses control characters here
    except yaml.reader.ReaderError as exc:
        problems.add(
            f"the file holds a control character ({reader_error_char(exc)}) YAML does not allow",
            line=reader_error_line(exc, text),
            hint="remove it; is this a text file?",
        )
        return None
    try:
        node = loader.get_single_node()
        if node is None:
            problems.add("the file is empty", hint="a sweep starts with `version: 1` and `name:`")
            return None
        return Converter(loader, problems).convert(node, "")
    except AliasLimitError as exc:
        mark = exc.problem_mark
        problems.add(
            str(exc.problem),
            line=mark.line + 1 if mark else None,
            hint="write the values out, or use fewer nested aliases",
        )
        return None
    except yaml.reader.ReaderError as exc:  # pragma: no cover - the constructor checks the whole text
        problems.add(f"the file holds a character YAML does not allow ({reader_error_char(exc)})", line=reader_error_line(exc, text))
        return None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = " ".join(x for x in (exc.context, exc.problem) if x) or "invalid YAML"
        problems.add(
            f"YAML syntax error: {what}" + (f" (column {mark.column + 1})" if mark else ""),
            line=mark.line + 1 if mark else None,
            hint="check the indentation and quoting around this line (a value holding ': ' or '#' needs quotes)",
        )
        return None
    except yaml.YAMLError as exc:  # pragma: no cover - every PyYAML error we know is marked
        problems.add(f"YAML error: {exc}")
        return None
    except RecursionError:  # pragma: no cover - shape_problem refuses deep nesting first
        problems.add("nested too deeply", hint="is it the right file? the README lists migbench's input limits")
        return None
    finally:
        loader.dispose()


def _build(root: Node, problems: Problems, *, sha: str, path: str | None, base_dir: Path, catalog: Any) -> Sweep | None:
    ctx = Ctx(problems)
    if not isinstance(root, MapNode):
        ctx.at(root, f"a sweep file must be a mapping (version:, name:, groups: ...), got {describe(root)}")
        return None
    has_groups = root.get("groups") is not None
    _check_top_keys(ctx, root, has_groups)
    version = _version(ctx, root)
    name = _sweep_name(ctx, root)
    top = ctx.read_keys(root, "top")
    get_catalog = _catalog_getter(catalog)
    fleet = _parse_fleet(ctx, root.get("fleet"), get_catalog) if "fleet" in root.entries else None
    duration_model = _parse_duration_model(ctx, root.get("duration_model"))
    launch = _parse_launch(ctx, root.get("launch"))
    defaults = _parse_defaults(ctx, root.get("defaults"))
    group_nodes = _group_nodes(ctx, root, name) if has_groups else _single_group(ctx, root, name)
    problems.all_groups = [n for _, n in group_nodes if n is not None]
    groups, runs = _expand_groups(
        problems, group_nodes, defaults, top["seed"], lambda g, n, own, ctx: parse_group(ctx, g, n, own, base_dir, get_catalog, fleet)
    )
    if problems.items or version is None or name is None:
        return None
    return Sweep(
        notes=problems.notes,
        version=version,
        name=name,
        path=path,
        sha256=sha,
        fleet=fleet,
        groups=tuple(groups),
        runs=tuple(runs),
        duration_model=duration_model,
        launch=launch,
        seed=top["seed"],
        description=top["description"],
    )


def _catalog_getter(catalog: Any) -> Callable[[], Any]:
    """The catalogue, read on first use (most sweeps name no GPU model the loader must check)."""
    holder: list[Any] = [catalog]

    def get_catalog() -> Any:
        if holder[0] is None:
            from migbench.catalog import default_catalog

            holder[0] = default_catalog()
        return holder[0]

    return get_catalog


def _check_top_keys(ctx: Ctx, root: MapNode, has_groups: bool) -> None:
    """Unknown top-level keys (with "did you mean"), group fields beside `groups:`, W&B-only keys."""
    allowed = TOP_KEYS if has_groups else TOP_KEYS + GROUP_FIELDS
    wandb = [e for k, e in root.entries.items() if k in WANDB_ONLY_KEYS]
    if wandb:
        ctx.note(wandb[0], wandb_only_note([str(e.key) for e in wandb]), key=True)
    for k, e in root.entries.items():
        if k in allowed or k in WANDB_ONLY_KEYS:
            continue
        if has_groups and k in GROUP_KEYS:
            ctx.at(
                e,
                f"{k!r} is a group field, but this file uses groups: (mixing the two forms)",
                "move it into each group or under defaults:, or drop groups: and write one group at top level",
                key=True,
            )
            continue
        known = "top-level keys are: " + ", ".join(TOP_KEYS)
        if not has_groups:
            known += " (or a single group's fields: command, parameters, memory, ...)"
        ctx.at(e, f"unknown key {str(k)!r}", unknown_key_hint(k, allowed, known), key=True)


def _version(ctx: Ctx, root: MapNode) -> int | None:
    if (vnode := root.get("version")) is None:
        ctx.require(root, declared("top", "version"))
        return None
    version = ctx.integer(vnode)
    if version is not None and version != SCHEMA_VERSION:
        ctx.at(vnode, f"unsupported version {version}; this migbench reads version {SCHEMA_VERSION}", "write `version: 1`")
        return None
    return version


def _sweep_name(ctx: Ctx, root: MapNode) -> str | None:
    if (nnode := root.get("name")) is None:
        ctx.require(root, declared("top", "name"))
        return None
    name = ctx.string(nnode, "a name")
    if name is not None and len(name) <= MAX_NAME_LEN and not SWEEP_NAME_RE.fullmatch(name):
        ctx.at(nnode, f"{short_repr(name)} is not a valid sweep name", "use letters, digits, '.', '_' and '-', starting with a letter or digit")
        return None
    if name is not None and len(name) > MAX_NAME_LEN:
        ctx.at(
            nnode,
            f"the sweep name is {len(name)} characters long; at most {MAX_NAME_LEN}",
            "it names the plan file and the state directory: shorten it",
        )
        return None
    return name


def _parse_defaults(ctx: Ctx, dn: Node | None) -> MapNode | None:
    """`defaults:`: group fields (not `name`) merged under every group."""
    if dn is None or (defaults := ctx.mapping(dn, "a mapping of group fields")) is None:
        return None
    for k, e in defaults.entries.items():
        if k == "name":
            ctx.at(e, "`name` cannot be a default (each group needs its own)", key=True)
    ctx.keys(MapNode(defaults.line, defaults.path, {k: v for k, v in defaults.entries.items() if k != "name"}), GROUP_FIELDS, "group")
    return defaults


def _single_group(ctx: Ctx, root: MapNode, name: str | None) -> list[tuple[MapNode, str | None]]:
    """The single-group form: a group's fields at top level, named after the sweep."""
    fields = {k: e for k, e in root.entries.items() if k in GROUP_FIELDS}
    if fields:
        return [(MapNode(root.line, "", fields), name or None)]
    ctx.at(
        root,
        "no runs: write `groups:` (a list of groups) or one group's command, parameters and memory at top level",
        'see the README\'s "The sweep file" section, or the sweep files in sweeps/',
    )
    return []


def _group_nodes(ctx: Ctx, root: MapNode, name: str | None) -> list[tuple[MapNode, str | None]]:
    """`groups:`: each group's mapping and its name (None when missing or bad: reported)."""
    gnode = root.get("groups")
    assert gnode is not None
    if not isinstance(gnode, SeqNode):
        ctx.at(gnode, f"expected a list of groups, got {describe(gnode)}")
        return []
    if not gnode.items:
        ctx.at(gnode, "`groups` is empty", "list at least one group (name, command, memory, ...)")
        return []
    out: list[tuple[MapNode, str | None]] = []
    seen: dict[str, int] = {}
    for item in gnode.items:
        if (g := ctx.mapping(item, "a group (a mapping with name, command, memory, ...)")) is not None:
            out.append((g, _group_name(ctx, g, seen)))
    return out


def _group_name(ctx: Ctx, g: MapNode, seen: dict[str, int]) -> str | None:
    """A group's `name`: valid, not too long, not a name an earlier group has (`seen`: name -> line)."""
    if (gn := g.get("name")) is None:
        ctx.missing(g, "name", "missing group `name`", "give each group a unique name such as `ablation`")
        return None
    gname = ctx.string(gn, "a group name")
    if gname is None:
        return None
    if not GROUP_NAME_RE.fullmatch(gname):
        ctx.at(gn, f"{short_repr(gname)} is not a valid group name", "use lower-case letters, digits, '_' and '-', starting with a letter or digit")
        return None
    if len(gname) > MAX_NAME_LEN:
        ctx.at(gn, f"the group name is {len(gname)} characters long; at most {MAX_NAME_LEN}", "it starts every run id (a directory name): shorten it")
        return None
    if gname in seen:
        ctx.at(gn, f"duplicate group name {gname!r} (first at line {seen[gname]})", "group names must be unique: they prefix the run ids")
        return None
    seen[gname] = gn.line
    return gname


def _expand_groups(
    problems: Problems,
    group_nodes: list[tuple[MapNode, str | None]],
    defaults: MapNode | None,
    seed: int,
    parse: Callable[[MapNode, str, MapNode, Ctx], tuple[Group, Callable[[int, int], list[Run]]] | None],
) -> tuple[list[Group], list[Run]]:
    """Parse each group (defaults merged in) and expand its runs; a run id produced twice is a problem."""
    groups: list[Group] = []
    runs: list[Run] = []
    ids: dict[str, str] = {}
    for g, gname in group_nodes:
        gctx = Ctx(problems, gname)
        parsed = parse(_merge_defaults(defaults, g), gname or "", g, gctx)
        if parsed is None or gname is None:
            continue
        group, expander = parsed
        groups.append(group)
        for run in expander(seed, len(runs)):
            if run.id in ids:
                gctx.at(g, f"run id {run.id} is produced twice (a hash collision); rename group {group.name!r}")
                continue
            ids[run.id] = run.group
            runs.append(run)
            if len(runs) > MAX_RUNS:
                raise Abort(f"the sweep expands to more than {MAX_RUNS} runs")
    return groups, runs


# ---- sweep-level sections ----------------------------------------------------------------------


def _parse_fleet_entry(ctx: Ctx, m: MapNode, get_catalog: Callable[[], Any]) -> FleetEntry | None:
    """One `{gpu: MODEL, count: N, node: HOST, driver: VERSION}`; None (reported) when bad."""
    gpu = None
    driver: str | None = None
    host: str | None = None
    if (hn := m.get("node")) is not None and (text := ctx.string(hn, "a node (host) name")) is not None:
        if NODE_NAME_RE.fullmatch(text):
            host = text
        else:
            ctx.at(
                hn,
                f"{text!r} is not a node name Slurm and Kubernetes accept",
                "use letters, digits, '.', '_' and '-' (at most 63), starting and ending with a letter or digit",
            )
    if (gn := m.get("gpu")) is None:
        ctx.require(m, declared("fleet", "gpu"))
    elif (text := ctx.string(gn, "a GPU model name")) is not None:
        gpu = _fleet_model(ctx, gn, text, get_catalog())
    count = ctx.read_keys(m, "fleet", ("count",))["count"]
    if count is not None and count > MAX_FLEET_GPUS:
        ctx.at(m.entries["count"].value, f"{count} GPUs: a fleet has at most {MAX_FLEET_GPUS}", declared("fleet", "count").hint)
        count = None
    if (dn := m.get("driver")) is not None:
        driver = _fleet_driver(ctx, dn)
    return FleetEntry(gpu, count, driver, host) if gpu is not None and count is not None else None


def _fleet_model(ctx: Ctx, gn: Node, text: str, cat: Any) -> str | None:
    """The catalogue's key for the model named `text`; None (reported) when the catalogue lacks it."""
    gpu = cat.find_key(text)
    if gpu is None:
        close = close_models(text, cat.keys())
        ctx.at(
            gn,
            f"unknown GPU model {text!r}",
            (f"did you mean {' or '.join(repr(c) for c in close)}? " if close else "")
            + "known models: "
            + ", ".join(cat.keys())
            + "; teach a new one with `migbench catalog import`",
        )
    return gpu


def _fleet_driver(ctx: Ctx, dn: Node) -> str | None:
    """A fleet entry's `driver:` version as nvidia-smi prints it; None (reported) when malformed."""
    if isinstance(dn, ScalarNode) and dn.value is not None and not isinstance(dn.value, bool):
        from migbench.catalog import parse_driver

        try:
            parse_driver(dn.raw)
            return dn.raw.strip()
        except ValueError as exc:
            ctx.at(dn, str(exc), 'write the driver version as nvidia-smi prints it, e.g. "535.129.03"')
    else:
        ctx.at(dn, f'expected a driver version such as "535.129.03", got {describe(dn)}')
    return None


def _parse_fleet(ctx: Ctx, node: Node | None, get_catalog: Callable[[], Any]) -> tuple[FleetEntry, ...] | None:
    if node is None or not isinstance(node, SeqNode):
        if node is not None:
            ctx.at(node, f"expected a list of {{gpu: MODEL, count: N}}, got {describe(node)}")
        return None
    if not node.items:
        ctx.at(node, "`fleet` is empty", "list the GPUs, e.g. `- {gpu: A100-SXM4-80GB, count: 4}`, or omit fleet:")
        return None
    out: list[FleetEntry] = []
    with_node: list[Node] = []
    without_node: list[Node] = []
    for item in node.items:
        m = ctx.mapping(item, "{gpu: MODEL, count: N}")
        if m is None:
            continue
        ctx.keys(m, FLEET_KEYS, "fleet entry")
        (with_node if m.get("node") is not None else without_node).append(item)
        if (entry := _parse_fleet_entry(ctx, m, get_catalog)) is not None:
            out.append(entry)
    if with_node and without_node:
        ctx.at(
            without_node[0],
            "this fleet entry names no `node`, but others do",
            "name the node of every entry (a fleet is either one local host or a list of nodes)",
        )
    total = sum(f.count for f in out)
    if total > MAX_FLEET_GPUS:
        ctx.at(node, f"the fleet has {total} GPUs; at most {MAX_FLEET_GPUS}", "plan a bigger cluster in parts")
        return None
    return tuple(out)


def load_fleet_file(path: str | Path, *, catalog: Any = None) -> tuple[FleetEntry, ...]:
    """Read `--fleet-file`: the sweep's `fleet:` list (`[{node: gpu01, gpu: MODEL, count: 8}, ...]`),
    alone or under a `fleet:` key. Raises `InputError` listing every problem."""
    p = Path(path)
    data = read_input(p, "fleet file", limit=MAX_SWEEP_BYTES, hint="give a YAML list of {node, gpu, count}")
    text = decode_text(data, str(path), "fleet file")
    problems = Problems(str(path))
    fleet: tuple[FleetEntry, ...] | None = None
    try:
        root = _parse_yaml(text, problems, MAX_FLEET_FILE_NODES)
        if isinstance(root, MapNode) and root.get("fleet") is not None:
            root = root.get("fleet")
        if root is not None:
            fleet = _parse_fleet(Ctx(problems), root, _catalog_getter(catalog))
    except Abort as exc:
        problems.add(str(exc))
    if problems.items or not fleet:
        items = problems.sorted()
        raise InputError(
            f"{path}: {len(items) or 1} problem(s) in the fleet file",
            problems=items,
            hint="a fleet file is a list like `- {node: gpu01, gpu: A100-SXM4-80GB, count: 8}`",
        )
    return fleet


def close_models(text: str, keys: list[str]) -> list[str]:
    """The models a mistyped name may mean: those whose name holds it, whatever the case (`a100`: the
    four A100s), else the closest spelling."""
    want = re.sub(r"[^a-z0-9]", "", text.lower())
    holding = [k for k in keys if want and want in re.sub(r"[^a-z0-9]", "", k.lower())]
    if holding:
        return holding[:6]
    lower = {k.lower(): k for k in keys}
    return [lower[c] for c in difflib.get_close_matches(text.lower(), list(lower), n=1, cutoff=0.5)]


def _parse_duration_model(ctx: Ctx, node: Node | None) -> DurationModel:
    if node is None or (m := ctx.mapping(node, "a mapping {interference: 0.0, compute_basis: sm}")) is None:
        return DurationModel()
    ctx.keys(m, DURATION_MODEL_KEYS, "duration_model")
    v = ctx.read_keys(m, "duration_model")
    return DurationModel(v["interference"], ComputeBasis(v["compute_basis"]))


def _env_passthrough(ctx: Ctx, n: Node) -> tuple[str, ...] | None:
    """`launch.env_passthrough`: the launcher's variables a run may see; None (reported) when bad."""
    names = [ctx.string(item, "a variable name or pattern such as LC_*") for item in n.items] if isinstance(n, SeqNode) else None
    if names is None:
        ctx.at(n, f"expected a list of variable names (the launcher's variables a run may see), got {describe(n)}")
    elif all(x is not None for x in names):
        bad = [x for x in names if x is not None and not ENV_PATTERN_RE.fullmatch(x)]
        if bad:
            ctx.at(n, f"{bad[0]!r} is not a variable name or pattern", "names such as PATH, HOME or LC_*")
        else:
            return tuple(x for x in names if x is not None)
    return None


def _parse_launch(ctx: Ctx, node: Node | None) -> LaunchSettings:
    if node is None or (m := ctx.mapping(node, "a mapping of launch options")) is None:
        return LaunchSettings()
    ctx.keys(m, LAUNCH_KEYS, "launch")
    v = ctx.read_keys(m, "launch")
    kw: dict[str, Any] = {declared("launch", k).field: x for k, x in v.items() if x is not None}
    if "env" in kw:
        kw["env"] = {k: text for k, (text, _) in kw["env"].items()}
    if (n := m.get("log_dir")) is not None and (s := ctx.string(n, "a directory")) is not None:
        if (why := log_dir_problem(s)) is not None:
            ctx.at(n, why)
        else:
            kw["log_dir"] = s
    if (n := m.get("env_passthrough")) is not None and (passthrough := _env_passthrough(ctx, n)) is not None:
        kw["env_passthrough"] = passthrough
    if (n := m.get("state_mode")) is not None:
        try:
            if not isinstance(n, ScalarNode):
                raise ValueError(f"expected an octal file mode such as 0600 or 0640, got {describe(n)}")
            kw["state_mode"] = parse_state_mode(n.value)
        except ValueError as exc:
            ctx.at(n, str(exc), "0600 (the default: only you) or 0640 (your group reads)")
    return LaunchSettings(**kw)


def _merge_defaults(defaults: MapNode | None, group: MapNode) -> MapNode:
    """Group fields over defaults; `env` and `parameters` mappings merge key by key."""
    if defaults is None:
        return group
    out: dict[Any, Entry] = {k: e for k, e in defaults.entries.items() if k in GROUP_FIELDS}
    for key, e in group.entries.items():
        base = out.get(key)
        if key in ("env", "parameters") and base is not None and isinstance(base.value, MapNode) and isinstance(e.value, MapNode):
            entries = dict(base.value.entries)
            entries.update(e.value.entries)
            out[key] = Entry(key, e.key_line, e.path, MapNode(e.value.line, e.value.path, entries))
        else:
            out[key] = e
    return MapNode(group.line, group.path, out)
