"""Rich renderables: the GPU layout picture, the plan table, catalogue tables, status.

Everything here is pure presentation: it takes plain values and returns rich renderables or text,
sorted so output is stable (golden tests pin the console width).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from migbench.units import format_duration, format_mib

if TYPE_CHECKING:  # only types: rendering must not pull the core in at `migbench --help`
    from migbench.backend.base import HostState
    from migbench.catalog import GpuModel, Layout
    from migbench.forecast.simulate import SimReport
    from migbench.plan import Plan

SLICE_W = 9  # characters per memory slice in the layout picture
_COLOURS = ["cyan", "green", "magenta", "yellow", "blue", "red", "bright_cyan", "bright_green"]


def _box_lines(width: int, lines: Sequence[str]) -> list[str]:
    return [(ln[:width]).ljust(width) for ln in lines]


def layout_picture(
    model: GpuModel,
    instances: Sequence[tuple[str, int, int, int, Sequence[str]]],
    *,
    title: str,
    max_run_lines: int = 4,
) -> Text:
    """Draw one GPU: its memory slices left to right, each instance a box spanning its slices,
    with its compute slices (■ used of the GPU's total), memory and runs.

    `instances`: (profile, start, memory_mib, compute_slices, run ids) tuples.
    """
    n = model.memory_slices
    by_start = {start: (prof, start, mem, comp, runs) for prof, start, mem, comp, runs in instances}
    cells: list[tuple[int, int, tuple | None]] = []  # (start, size, instance or None)
    s = 0
    while s < n:
        if s in by_start:
            prof, start, mem, comp, runs = by_start[s]
            size = model.profile(prof).memory_slices
            cells.append((s, size, by_start[s]))
            s += size
        else:
            e = s + 1
            while e < n and e not in by_start:
                e += 1
            cells.append((s, e - s, None))
            s = e
    out = Text()
    used_c = sum(model.profile(p).compute_slices for p, *_ in instances)
    out.append(title, style="bold")
    out.append(
        f"  ·  {len(instances)} instance(s), {used_c}/{model.compute_slices} compute slices, "
        f"{sum(model.profile(p).memory_slices for p, *_ in instances)}/{n} memory slices\n"
    )
    header = "".join(f"{i:<{SLICE_W}}" for i in range(n))
    out.append(" mem " + header.rstrip() + "\n", style="dim")
    top = " " * 4 + "┌" + "┬".join("─" * (size * SLICE_W - 1) for _, size, _ in cells) + "┐\n"
    bottom = " " * 4 + "└" + "┴".join("─" * (size * SLICE_W - 1) for _, size, _ in cells) + "┘\n"
    out.append(top)
    contents: list[tuple[list[str], str]] = []
    for k, (_start, size, inst) in enumerate(cells):
        w = size * SLICE_W - 1
        if inst is None:
            contents.append((_box_lines(w, ["free"]), "dim"))
            continue
        prof, st, mem, comp, runs = inst
        lines = [f"{prof}@{st}", "■" * comp + f" {format_mib(mem)}"]
        if runs:
            shown = list(runs[:max_run_lines])
            if len(runs) > max_run_lines:
                shown[-1] = f"+{len(runs) - max_run_lines + 1} more"
            lines += shown
        else:
            lines.append("(idle)")
        contents.append((_box_lines(w, lines), _COLOURS[k % len(_COLOURS)]))
    height = max(len(c[0]) for c in contents)
    for row in range(height):
        out.append(" " * 4 + "│")
        for (lines, style), (_, size, _) in zip(contents, cells):
            w = size * SLICE_W - 1
            text = lines[row] if row < len(lines) else " " * w
            out.append(text, style=style if row == 0 else ("dim" if style == "dim" else ""))
            out.append("│")
        out.append("\n")
    out.append(bottom)
    return out


def plan_pictures(plan: Plan, models: dict[str, GpuModel]) -> list[Text]:
    """One picture per GPU that runs something; GPUs of one node (or of the one host) with no run and
    the same model and layout share one picture (10,000 idle GPUs are one picture, not 10,000), where
    the first of them is. In a fleet of several nodes, grouped under a line per node."""
    by_gpu: dict[int, list[Any]] = {}
    for i in plan.instances:
        by_gpu.setdefault(i.gpu, []).append(i)
    local: dict[int, int] = {}  # plan GPU -> its index on its node
    counts: dict[str, int] = {}
    for g in plan.fleet:
        if g.node is not None:
            local[g.gpu] = counts[g.node] = counts.get(g.node, -1) + 1
    idle: dict[tuple[str | None, str, tuple[tuple[str, int], ...]], list[int]] = {}
    order: list[tuple[str | None, str, tuple[tuple[str, int], ...]] | int] = []
    for g in plan.fleet:
        insts = by_gpu.get(g.gpu, [])
        if any(i.runs for i in insts):
            order.append(g.gpu)
            continue
        key = (g.node, g.model, tuple(sorted((i.profile, i.start) for i in insts)))
        if key not in idle:
            idle[key] = []
            order.append(key)
        idle[key].append(g.gpu)
    fleet = {g.gpu: g for g in plan.fleet}
    pics: list[Text] = []
    nodes_shown: set[str] = set()
    for what in order:
        gpus = [what] if isinstance(what, int) else idle[what]
        first = fleet[gpus[0]]
        if first.node is not None and first.node not in nodes_shown:
            nodes_shown.add(first.node)
            pics.append(node_line(plan, first.node))
        model = models[first.model]
        insts = [
            (i.profile, i.start, i.memory_mib, model.profile(i.profile).compute_slices, list(i.runs))
            for i in by_gpu.get(gpus[0], [])
        ]
        if len(gpus) == 1:
            title = f"GPU {gpus[0]}  {first.model}"
            if first.node is not None:
                title += f"  ·  {first.node} GPU {local[gpus[0]]}"
        else:
            title = f"{len(gpus)} GPUs ({index_ranges(gpus)})  {first.model}, no runs"
            if first.node is not None:
                title += f"  ·  {first.node} GPUs {index_ranges([local[x] for x in gpus])}"
        pics.append(layout_picture(model, insts, title=title))
    return pics


def index_ranges(xs: Sequence[int]) -> str:
    """`0-3, 5, 7-9`: sorted indices as runs of consecutive numbers."""
    out: list[str] = []
    xs = sorted(xs)
    i = 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
            j += 1
        out.append(str(xs[i]) if i == j else f"{xs[i]}-{xs[j]}")
        i = j + 1
    return ", ".join(out)


def node_line(plan: Plan, node: str) -> Text:
    """`node gpu01: 2 GPU(s) (A100-SXM4-80GB), 4 x 1g.10gb, 1 x 3g.40gb, 12 runs`."""
    gpus = plan.node_gpus(node)
    on = {g.gpu for g in gpus}
    counts: dict[str, int] = {}
    for i in plan.instances:
        if i.gpu in on:
            counts[i.profile] = counts.get(i.profile, 0) + 1
    runs = sum(1 for r in plan.runs if r.gpu in on)
    models = ", ".join(dict.fromkeys(g.model for g in gpus))
    txt = Text()
    txt.append(f"node {node}", style="bold")
    txt.append(f": {len(gpus)} GPU(s) ({models}), " + ", ".join(f"{n} x {p}" for p, n in sorted(counts.items())) + f", {runs} runs")
    return txt


def plan_table(plan: Plan) -> Table:
    timed = any(r.est_end_s is not None for r in plan.runs)
    t = Table(title=f"{plan.name}: {len(plan.runs)} runs on {len(plan.instances)} instances", title_justify="left")
    t.add_column("run")
    t.add_column("group")
    t.add_column("memory", justify="right")
    nodes = bool(plan.nodes())
    if nodes:
        t.add_column("node")
    t.add_column("GPU", justify="right")
    t.add_column("instance")
    t.add_column("wave", justify="right")
    if timed:
        t.add_column("est. start", justify="right")
        t.add_column("est. end", justify="right")
    order = sorted(
        plan.runs,
        key=lambda r: (r.gpu is None, r.gpu if r.gpu is not None else 0, r.start or 0, r.wave or 0, r.id),
    )
    for r in order:
        row = [r.id, r.group, format_mib(r.memory_mib)]
        if nodes:
            row.append((plan.node_of(r.gpu) or "-") if r.gpu is not None else "-")
        row += [
            "-" if r.gpu is None else str(r.gpu),
            "unplaced" if r.gpu is None else f"{r.profile}@{r.start}",
            "-" if r.wave is None else str(r.wave),
        ]
        if timed:
            row += [
                "-" if r.est_start_s is None else format_duration(r.est_start_s),
                "-" if r.est_end_s is None else format_duration(r.est_end_s),
            ]
        t.add_row(*row)
    return t


RUN_TABLE_MAX = 200
"""Past this many runs `migbench plan` prints a summary per group and GPU model instead of one row per
run (`--runs` prints them all)."""


def runs_summary_table(plan: Plan) -> Table:
    """One row per (group, GPU model): how many runs, their memory, the instances they run on, the
    waves they take and when the last is estimated to end."""
    model_of = {g.gpu: g.model for g in plan.fleet}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in plan.runs:
        key = (r.group, "unplaced" if r.gpu is None else model_of.get(r.gpu, "?"))
        d = rows.setdefault(key, {"runs": 0, "mem": set(), "inst": {}, "waves": 0, "end": None})
        d["runs"] += 1
        d["mem"].add(r.memory_mib)
        if r.gpu is not None:
            d["inst"].setdefault(r.profile, set()).add((r.gpu, r.start))
            d["waves"] = max(d["waves"], (r.wave or 0) + 1)
        if r.est_end_s is not None:
            d["end"] = max(d["end"] or 0.0, r.est_end_s)
    timed = any(d["end"] is not None for d in rows.values())
    t = Table(
        title=f"{plan.name}: {len(plan.runs)} runs on {len(plan.instances)} instances, by group and GPU model "
        "(`--runs` lists every run)",
        title_justify="left",
    )
    for col, just in (("group", "left"), ("GPU model", "left"), ("runs", "right"), ("memory", "right"),
                      ("instances", "left"), ("waves", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    if timed:
        t.add_column("est. end", justify="right")
    for (group, model), d in sorted(rows.items()):
        mems = sorted(d["mem"])
        mem = format_mib(mems[0]) if len(mems) == 1 else f"{format_mib(mems[0])}-{format_mib(mems[-1])}"
        inst = ", ".join(f"{len(v)} x {p}" for p, v in sorted(d["inst"].items())) or "-"
        row = [group, model, str(d["runs"]), mem, inst, str(d["waves"]) if d["inst"] else "-"]
        if timed:
            row.append("-" if d["end"] is None else format_duration(d["end"]))
        t.add_row(*row)
    return t


def solver_line(plan: Plan, *, seconds: bool = True) -> Text:
    s = plan.solver
    if s.objective_name == "makespan_s":
        obj = f"makespan {format_duration(s.objective)} (bound {format_duration(s.bound)})"
    else:
        obj = f"{int(s.objective)} runs at once (bound {int(s.bound)})"
    txt = Text()
    txt.append("solver: ", style="bold")
    txt.append(f"{s.status}", style="green" if s.status == "OPTIMAL" else "yellow")
    txt.append(f", {obj}, gap {s.gap * 100:.2f}%")
    if seconds and s.seconds is not None:
        txt.append(f", {s.seconds:.2f}s")
    extra = []
    if s.objective_name == "makespan_s":
        extra.append(f"{s.runs_at_once} runs start at once")
    elif s.makespan_s is not None:
        extra.append(f"est. makespan {format_duration(s.makespan_s)}")
    waves = max((r.wave or 0 for r in plan.runs if r.wave is not None), default=0)
    extra.append(f"{waves + 1} wave(s)")
    if plan.unplaced:
        extra.append(f"{len(plan.unplaced)} unplaced")
    txt.append("; " + ", ".join(extra))
    return txt


def plan_view(
    plan: Plan, models: dict[str, GpuModel], *, seconds: bool = True, show_runs: bool = True, all_runs: bool = False
) -> RenderableType:
    """The layout per GPU, the runs (one row each up to RUN_TABLE_MAX runs or with `all_runs`, else a
    summary per group and GPU model), the unplaced runs, the solver's line and the warnings."""
    parts: list[RenderableType] = []
    parts.extend(plan_pictures(plan, models))
    if show_runs:
        parts.append(plan_table(plan) if all_runs or len(plan.runs) <= RUN_TABLE_MAX else runs_summary_table(plan))
    if plan.unplaced:
        t = Table(title="unplaced", title_justify="left")
        t.add_column("run")
        t.add_column("memory", justify="right")
        t.add_column("reason")
        for u in plan.unplaced:
            t.add_row(u.id, format_mib(u.memory_mib), u.reason)
        parts.append(t)
    parts.append(solver_line(plan, seconds=seconds))
    for w in plan.warnings:
        parts.append(Text(f"warning: {w}", style="yellow"))
    return Group(*parts)


def catalog_models_table(docs: Iterable[dict[str, Any]]) -> Table:
    t = Table(title="GPU models migbench knows", title_justify="left")
    for col, just in [
        ("model", "left"),
        ("NVML name", "left"),
        ("arch", "left"),
        ("slices (mem/compute)", "right"),
        ("profiles", "right"),
        ("layouts", "right"),
        ("origin", "left"),
    ]:
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for d in docs:
        t.add_row(
            d["model"], d["name"], d["architecture"], f"{d['memory_slices']}/{d['compute_slices']}", str(d["profiles"]),
            str(d["maximal_layouts"]), d["origin"],
        )
    return t


def catalog_profiles_table(model: GpuModel) -> Table:
    drv = "newest known driver" if model.driver is None else f"driver {'.'.join(map(str, model.driver))}"
    t = Table(title=f"{model.key} ({model.display_name}), {model.architecture}, {drv}", title_justify="left")
    for col in ["profile", "id", "compute", "memory slices", "memory MiB", "max", "placements", "SM", "note"]:
        t.add_column(col, justify="left" if col in ("profile", "placements", "note") else "right")
    for p in model.profiles:
        note = []
        if p.media:
            note.append("+me: at most one per GPU")
        if p.unverified:
            note.append("unverified: " + ", ".join(p.unverified))
        starts = ",".join(map(str, p.starts))
        t.add_row(
            p.name,
            str(p.id),
            str(p.compute_slices),
            str(p.memory_slices),
            "?" if p.memory_mib is None else str(p.memory_mib),
            str(p.max_count),
            f"{{{starts}}}:{p.memory_slices}",
            "?" if p.engines.sm is None else str(p.engines.sm),
            "; ".join(note),
        )
    return t


def layouts_text(model: GpuModel, layouts: Sequence[Layout]) -> Text:
    out = Text()
    out.append(f"{model.key}: {len(layouts)} maximal layouts\n", style="bold")
    w = len(str(len(layouts)))
    for i, lay in enumerate(layouts, 1):
        comp = sum(model.profile(p.profile).compute_slices for p in lay)
        out.append(f"{i:>{w}}  " + " ".join(str(p) for p in lay) + f"  (compute {comp})\n")
    return out


def host_view(host: HostState) -> RenderableType:
    """GPUs, MIG mode, instances (profile@start), MIG uuids and processes of a host."""
    parts: list[RenderableType] = []
    head = Text()
    head.append("host: ", style="bold")
    head.append(f"driver {host.driver}" + (" (simulated)" if host.simulated else ""))
    parts.append(head)
    for g in host.gpus:
        if g.mig_current is None:
            mode = "not supported"
        else:
            mode = ("enabled" if g.mig_current else "disabled") + (
                "" if g.mig_current == g.mig_pending else f", pending {'enable' if g.mig_pending else 'disable'}"
            )
        t = Table(title=f"GPU {g.index}  {g.name}  {g.uuid}  MIG {mode}", title_justify="left")
        t.add_column("instance")
        t.add_column("GI", justify="right")
        t.add_column("CI", justify="right")
        t.add_column("MIG device uuid")
        t.add_column("memory used/total", justify="right")
        t.add_column("processes")
        for gi in g.instances:
            devs = g.devices_of(gi.id)
            if not devs:
                t.add_row(str(gi.placement), str(gi.id), "-", "(no compute instance)", "-", "")
            for d in devs:
                procs = ", ".join(
                    f"{p.pid} ({format_mib(p.used_memory_mib)})" if p.used_memory_mib is not None else str(p.pid)
                    for p in d.processes
                )
                t.add_row(
                    str(gi.placement), str(gi.id), str(d.ci_id), d.uuid,
                    f"{d.memory_used_mib}/{d.memory_total_mib} MiB", procs or "-",
                )
        if not g.instances:
            procs = ", ".join(str(p.pid) for p in g.processes) or "-"
            t.add_row("(none)", "", "", "", "", procs)
        parts.append(t)
    return Group(*parts)


def _spark(timeline: Sequence[tuple[float, int]], makespan: float, width: int = 48) -> str:
    """Runs running over time as a one-line bar chart (each column = makespan / width)."""
    if makespan <= 0 or not timeline:
        return ""
    blocks = " ▁▂▃▄▅▆▇█"
    cols = []
    peak = max((n for _, n in timeline), default=1) or 1
    j = 0
    cur = 0
    for c in range(width):
        t = (c + 0.5) * makespan / width
        while j < len(timeline) and timeline[j][0] <= t:
            cur = timeline[j][1]
            j += 1
        cols.append(blocks[min(8, round(8 * cur / peak))])
    return "".join(cols)


def simulate_view(reports: Sequence[SimReport]) -> RenderableType:
    t = Table(title="simulated sweep", title_justify="left")
    for col, just in [
        ("layout", "left"), ("makespan", "right"), ("vs plan", "right"), ("at once", "right"),
        ("utilisation", "right"), ("compute use", "right"), ("idle slices", "right"), ("runs over time", "left"),
    ]:
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    base = reports[0].makespan_s if reports else 0
    for r in reports:
        ratio = "-" if not base else f"{r.makespan_s / base:.2f}x"
        label = r.label + (f" ({r.unrunnable} cannot run)" if r.unrunnable else "")
        t.add_row(
            label, format_duration(r.makespan_s), ratio, str(r.started_at_once), f"{r.utilisation * 100:.1f}%",
            f"{r.compute_use * 100:.1f}%", f"{r.idle_slices}/{r.total_slices}", _spark(r.timeline, r.makespan_s),
        )
    return t


# ---------------------------------------------------------------------------------------------
# status
# ---------------------------------------------------------------------------------------------


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    s = float(s)
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


_STATE_STYLE = {
    "succeeded": "green", "running": "cyan", "starting": "cyan", "failed": "red", "oom": "red",
    "interrupted": "yellow", "abandoned": "magenta", "queued": "",
}


def status_view(doc: dict[str, Any] | None, host: Any, notes: list[str], *, all_runs: bool = False) -> RenderableType:
    parts: list[RenderableType] = [Text(n, style="yellow") for n in notes]
    if doc is not None:
        la = doc["launcher"]
        head = Text()
        head.append(f"{doc['sweep'] or '?'}", style="bold")
        head.append(f"  state {doc['state_dir']}\n")
        if la["pid"] is None:
            head.append("launcher: never started")
        elif la["alive"]:
            head.append(f"launcher: running, PID {la['pid']}", style="green")
            head.append(f", {la['state']}")
        else:
            head.append(f"launcher: not running (last PID {la['pid']}, {la['state']}")
            head.append(f", exit {la['exit_code']})" if la["exit_code"] is not None else ")")
        if la.get("stop_requested"):
            head.append(f"; stop requested ({la['stop_requested']})", style="yellow")
        if la.get("stop_reason"):
            head.append(f"; {la['stop_reason']}", style="yellow")
        if la.get("flapping"):
            head.append(f"\nflapping guard: {la['flapping']}", style="bold red")
        parts.append(head)
        counts = Text("runs: ")
        nz = [(s, n) for s, n in doc["counts"].items() if n]
        for k, (s, n) in enumerate(nz):
            counts.append(f"{n} {s}", style=_STATE_STYLE.get(s, ""))
            if k < len(nz) - 1:
                counts.append(", ")
        counts.append(f"  (of {doc['total']})")
        parts.append(counts)
        t = Table(title_justify="left")
        for col, just in (("run", "left"), ("state", "left"), ("try", "right"), ("instance", "left"), ("MIG uuid", "left"),
                          ("elapsed", "right"), ("peak / instance", "right"), ("note", "left")):
            t.add_column(col, justify=just)  # type: ignore[arg-type]
        now = time.time()
        from migbench.launch.status import runs_to_show

        shown, left_out = runs_to_show(doc, all_runs)
        for r in shown:
            mem = "-"
            if r["peak_mib"] is not None or r["instance_mib"] is not None:
                mem = f"{'-' if r['peak_mib'] is None else r['peak_mib']} / {r['instance_mib'] or '-'} MiB"
            note = r["last_error"] or ""
            if r["state"] == "queued" and r["retry_at"]:
                note = f"retry in {_fmt_s(max(0.0, r['retry_at'] - now))}; " + note
            t.add_row(
                r["id"], Text(r["state"], style=_STATE_STYLE.get(r["state"], "")), str(r["attempt"] or "-"),
                r["instance"] or "-", r["mig_uuid"] or "-", _fmt_s(r["elapsed_s"]), mem, note[:120],
            )
        parts.append(t)
        if left_out:
            parts.append(Text(left_out, style="dim"))
    if host is not None:
        parts.append(host_view(host))
    elif doc is None:
        parts.append(Text("no launch state found and no GPU driver reachable"))
    return Group(*parts)
