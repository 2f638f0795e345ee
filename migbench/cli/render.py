"""Rich renderables: the GPU layout picture, the plan table, catalogue tables, status.

Everything here is pure presentation: it takes plain values and returns rich renderables or text,
sorted so output is stable (golden tests pin the console width).
"""

from __future__ import annotations

import json
import shlex
import textwrap
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from rich.cells import cell_len
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from migbench.names import printable
from migbench.units import format_duration, format_mib

if TYPE_CHECKING:  # only types: rendering must not pull the core in at `migbench --help`
    from migbench.backend.base import HostState
    from migbench.catalog import GpuModel, Layout
    from migbench.footprints.accuracy import AccuracyReport
    from migbench.forecast.simulate import SimReport
    from migbench.launch.status import StatusDoc
    from migbench.plan import Plan

SLICE_W = 9  # the fewest characters per memory slice in the layout picture
MAX_SLICE_W = 24  # the most: a picture grows with the terminal up to this
_COLOURS = ["cyan", "green", "magenta", "yellow", "blue", "red", "bright_cyan", "bright_green"]


# ---------------------------------------------------------------------------------------------
# Fitting tables to the width there is: ids, model names and commands are never cut
# ---------------------------------------------------------------------------------------------


def _cell_lines(cell: Any) -> list[str]:
    text = cell.plain if isinstance(cell, Text) else str(cell)
    return text.split("\n") or [""]


def fit_table(table: Table, width: int) -> int:
    """Size `table`'s columns for `width` columns and return the width it will take.

    Columns added with `no_wrap=True` (run ids, model names, MIG uuids, placements) keep their
    widest cell whole; the others may wrap between words, never inside one. Where even that does not
    fit, the table is drawn wider than `width` (the terminal wraps the long lines; nothing is cut).
    rich's own shrinking would cut no_wrap columns as a last resort, so every width is set here."""
    cols = table.columns
    if not cols:
        return 0
    natural, least = [], []
    for col in cols:
        lines = _cell_lines(col.header) + [ln for c in col.cells for ln in _cell_lines(c)]
        nat = max((cell_len(ln) for ln in lines), default=1) or 1
        word = max((cell_len(w) for ln in lines for w in ln.split()), default=1) or 1
        natural.append(nat)
        least.append(nat if col.no_wrap else min(nat, word))

    def extra() -> int:  # borders and padding
        pad = sum(table.padding[1] + table.padding[3] for _ in cols)
        if not table.pad_edge:
            pad -= table.padding[1] + table.padding[3]
        return pad + (((2 if table.show_edge else 0) + len(cols) - 1) if table.box else 0)

    if sum(natural) + extra() <= width:
        return sum(natural) + extra()
    if sum(least) + extra() > width and table.box is not None:  # narrow: drop the borders, keep the words
        table.box, table.pad_edge = None, False
    widths = list(least)
    spare = width - extra() - sum(widths)
    want = [n - m for n, m in zip(natural, least)]
    while spare > 0 and any(want):  # share what is left, a column at a time, toward natural widths
        for i in sorted(range(len(cols)), key=lambda k: -want[k]):
            if spare <= 0:
                break
            if want[i]:
                widths[i] += 1
                want[i] -= 1
                spare -= 1
    for col, w in zip(cols, widths):
        col.width = w
    total = sum(widths) + extra()
    if total > width:
        table.width = total
    return total


def _fold(text: str, width: int) -> list[str]:
    """`text` in lines of at most `width` characters, broken between words where it can be."""
    return textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False) or [""]


def _box_lines(width: int, lines: Sequence[str]) -> list[str]:
    return [ln.ljust(width) for ln in lines]


def slice_width(model: GpuModel, width: int) -> int:
    """Characters per memory slice so a picture of `model` fills `width` columns (within bounds)."""
    return max(SLICE_W, min(MAX_SLICE_W, (width - 5) // max(model.memory_slices, 1)))


def layout_picture(
    model: GpuModel,
    instances: Sequence[tuple[str, int, int, int, Sequence[str]]],
    *,
    title: str,
    max_run_lines: int = 4,
    width: int = 80,
) -> Text:
    """Draw one GPU: its memory slices left to right, each instance a box spanning its slices,
    with its compute slices (■ used of the GPU's total), memory and runs. The picture uses the
    `width` there is; a box too narrow for a run id shows how many runs it holds instead (the
    run table lists them), never a cut id.

    `instances`: (profile, start, memory_mib, compute_slices, run ids) tuples.
    """
    sw = slice_width(model, width)
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
    header = "".join(f"{i:<{sw}}" for i in range(n))
    out.append(" mem " + header.rstrip() + "\n", style="dim")
    top = " " * 4 + "┌" + "┬".join("─" * (size * sw - 1) for _, size, _ in cells) + "┐\n"
    bottom = " " * 4 + "└" + "┴".join("─" * (size * sw - 1) for _, size, _ in cells) + "┘\n"
    out.append(top)
    contents: list[tuple[list[str], int, str]] = []  # (lines, how many are the title, style)
    for k, (_start, size, inst) in enumerate(cells):
        w = size * sw - 1
        if inst is None:
            contents.append((_box_lines(w, ["free"]), 1, "dim"))
            continue
        prof, st, mem, comp, runs = inst
        label = f"{prof}@{st}"
        head = [label] if len(label) <= w else _fold(prof, w) + [f"@{st}"]
        lines = head + _fold("■" * comp + f" {format_mib(mem)}", w)
        if not runs:
            lines.append("(idle)")
        elif all(len(r) <= w for r in runs):
            shown = list(runs[:max_run_lines])
            if len(runs) > max_run_lines:
                shown[-1] = f"+{len(runs) - max_run_lines + 1} more"
            lines += shown
        else:
            lines += _fold(f"{len(runs)} run{'s' if len(runs) != 1 else ''}", w)
        contents.append((_box_lines(w, lines), len(head), _COLOURS[k % len(_COLOURS)]))
    height = max(len(c[0]) for c in contents)
    for row in range(height):
        out.append(" " * 4 + "│")
        for (lines, n_head, style), (_, size, _) in zip(contents, cells):
            w = size * sw - 1
            text = lines[row] if row < len(lines) else " " * w
            out.append(text, style=style if row < n_head else ("dim" if style == "dim" else ""))
            out.append("│")
        out.append("\n")
    out.append(bottom)
    return out


def plan_pictures(plan: Plan, models: dict[str, GpuModel], *, width: int = 80) -> list[Text]:
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
        insts = [(i.profile, i.start, i.memory_mib, model.profile(i.profile).compute_slices, list(i.runs)) for i in by_gpu.get(gpus[0], [])]
        if len(gpus) == 1:
            title = f"GPU {gpus[0]}  {first.model}"
            if first.node is not None:
                title += f"  ·  {first.node} GPU {local[gpus[0]]}"
        else:
            title = f"{len(gpus)} GPUs ({index_ranges(gpus)})  {first.model}, no runs"
            if first.node is not None:
                title += f"  ·  {first.node} GPUs {index_ranges([local[x] for x in gpus])}"
        pics.append(layout_picture(model, insts, title=title, width=width))
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


def shell_word(text: str) -> str:
    """`text` as one shell word: `shlex.quote`, or, when it holds a character that is not printable
    (an escape sequence, a line break), bash's `$'...'` with those characters escaped, so that a
    value never writes a terminal's control sequences raw (a sweep's value could set the title or
    the clipboard) and the line still pastes back as the same word."""
    if text.isprintable():
        return shlex.quote(text)
    out = []
    for c in text:
        if c in "\\'":
            out.append("\\" + c)
        elif c.isprintable():
            out.append(c)
        else:
            n = ord(c)
            out.append(f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}")
    return "$'" + "".join(out) + "'"


def format_params(params: dict[str, Any]) -> str:
    """A run's parameters as `name=value` words (values that hold spaces quoted, control characters
    escaped: `shell_word`), for tables."""
    return " ".join(f"{k}={shell_word(v) if isinstance(v, str) else json.dumps(v)}" for k, v in params.items())


def plan_table(plan: Plan, *, width: int = 80, params: bool = True) -> Table:
    """Every run: id, group, memory, instance, wave, estimated times and (`params`) its parameters.
    Ids and placements are never cut; parameters wrap between words."""
    timed = any(r.est_end_s is not None for r in plan.runs)
    t = Table(title=f"{plan.name}: {len(plan.runs)} runs on {len(plan.instances)} instances", title_justify="left")
    t.add_column("run", no_wrap=True)
    t.add_column("group")
    t.add_column("memory", justify="right")
    t.add_column("memory from")
    nodes = bool(plan.nodes())
    if nodes:
        t.add_column("node")
    t.add_column("GPU", justify="right")
    t.add_column("instance", no_wrap=True)
    t.add_column("wave", justify="right")
    if timed:
        t.add_column("est. start", justify="right")
        t.add_column("est. end", justify="right")
    if params:
        t.add_column("parameters")
    order = sorted(
        plan.runs,
        key=lambda r: (r.at is None, r.at.gpu if r.at else 0, r.at.start if r.at else 0, r.at.wave if r.at else 0, r.id),
    )
    for r in order:
        row = [r.id, r.group, format_mib(r.memory_mib), r.memory_source or "-"]
        if nodes:
            row.append((plan.node_of(r.gpu) or "-") if r.gpu is not None else "-")
        row += [
            "-" if r.gpu is None else str(r.gpu),
            "unplaced" if r.at is None else f"{r.at.profile}@{r.at.start}",
            "-" if r.wave is None else str(r.wave),
        ]
        if timed:
            row += [
                "-" if r.est_start_s is None else format_duration(r.est_start_s),
                "-" if r.est_end_s is None else format_duration(r.est_end_s),
            ]
        if params:
            row.append(format_params(r.params) or "-")
        t.add_row(*row)
    fit_table(t, width)
    return t


RUN_TABLE_MAX = 200
"""Past this many runs `migbench plan` prints a summary per group and GPU model instead of one row per
run (`--runs` prints them all)."""


def runs_summary_table(plan: Plan, *, width: int = 80) -> Table:
    """One row per (group, GPU model): how many runs, their memory, the instances they run on, the
    waves they take and when the last is estimated to end."""
    model_of = {g.gpu: g.model for g in plan.fleet}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in plan.runs:
        key = (r.group, "unplaced" if r.gpu is None else model_of.get(r.gpu, "?"))
        d = rows.setdefault(key, {"runs": 0, "mem": set(), "inst": {}, "waves": 0, "end": None})
        d["runs"] += 1
        d["mem"].add(r.memory_mib)
        if r.at is not None:
            d["inst"].setdefault(r.at.profile, set()).add((r.at.gpu, r.at.start))
            d["waves"] = max(d["waves"], (r.wave or 0) + 1)
        if r.est_end_s is not None:
            d["end"] = max(d["end"] or 0.0, r.est_end_s)
    timed = any(d["end"] is not None for d in rows.values())
    t = Table(
        title=f"{plan.name}: {len(plan.runs)} runs on {len(plan.instances)} instances, by group and GPU model (`--runs` lists every run)",
        title_justify="left",
    )
    for col, just in (("group", "left"), ("GPU model", "left"), ("runs", "right"), ("memory", "right"), ("instances", "left"), ("waves", "right")):
        t.add_column(col, justify=just, no_wrap=col == "GPU model")  # type: ignore[arg-type]
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
    fit_table(t, width)
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
    plan: Plan,
    models: dict[str, GpuModel],
    *,
    seconds: bool = True,
    show_runs: bool = True,
    all_runs: bool = False,
    width: int = 80,
) -> RenderableType:
    """The layout per GPU, the runs (one row each up to RUN_TABLE_MAX runs or with `all_runs`, else a
    summary per group and GPU model), the unplaced runs, the solver's line and the warnings, sized
    for `width` columns."""
    parts: list[RenderableType] = []
    parts.extend(plan_pictures(plan, models, width=width))
    if show_runs:
        if all_runs or len(plan.runs) <= RUN_TABLE_MAX:
            parts.append(plan_table(plan, width=width))
        else:
            parts.append(runs_summary_table(plan, width=width))
    if plan.unplaced:
        t = Table(title="unplaced", title_justify="left")
        t.add_column("run", no_wrap=True)
        t.add_column("memory", justify="right")
        t.add_column("reason")
        for u in plan.unplaced:
            t.add_row(u.id, format_mib(u.memory_mib), u.reason)
        fit_table(t, width)
        parts.append(t)
    parts.append(solver_line(plan, seconds=seconds))
    for w in plan.warnings:
        parts.append(Text(f"warning: {w}", style="yellow"))
    return Group(*parts)


def catalog_models_table(docs: Iterable[dict[str, Any]], *, width: int = 80) -> Table:
    """The known models; the model key (what sweeps and --fleet take) is never cut."""
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
        t.add_column(col, justify=just, no_wrap=col == "model")  # type: ignore[arg-type]
    for d in docs:
        t.add_row(
            d["model"],
            d["name"],
            d["architecture"],
            f"{d['memory_slices']}/{d['compute_slices']}",
            str(d["profiles"]),
            str(d["maximal_layouts"]),
            d["origin"],
        )
    fit_table(t, width)
    return t


def catalog_profiles_table(model: GpuModel, *, width: int = 80) -> Table:
    drv = "newest known driver" if model.driver is None else f"driver {'.'.join(map(str, model.driver))}"
    t = Table(title=f"{model.key} ({model.display_name}), {model.architecture}, {drv}", title_justify="left")
    for col in ["profile", "id", "compute", "memory slices", "memory MiB", "max", "placements", "SM", "note"]:
        t.add_column(col, justify="left" if col in ("profile", "placements", "note") else "right", no_wrap=col in ("profile", "placements"))
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
    fit_table(t, width)
    return t


def layouts_text(model: GpuModel, layouts: Sequence[Layout]) -> Text:
    out = Text()
    out.append(f"{model.key}: {len(layouts)} maximal layouts\n", style="bold")
    w = len(str(len(layouts)))
    for i, lay in enumerate(layouts, 1):
        comp = sum(model.profile(p.profile).compute_slices for p in lay)
        out.append(f"{i:>{w}}  " + " ".join(str(p) for p in lay) + f"  (compute {comp})\n")
    return out


def host_view(host: HostState, *, width: int = 80) -> RenderableType:
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
        t.add_column("instance", no_wrap=True)
        t.add_column("GI", justify="right")
        t.add_column("CI", justify="right")
        t.add_column("MIG device uuid", no_wrap=True)
        t.add_column("memory used/total", justify="right")
        t.add_column("processes")
        for gi in g.instances:
            devs = g.devices_of(gi.id)
            if not devs:
                t.add_row(str(gi.placement), str(gi.id), "-", "(no compute instance)", "-", "")
            for d in devs:
                procs = ", ".join(f"{p.pid} ({format_mib(p.used_memory_mib)})" if p.used_memory_mib is not None else str(p.pid) for p in d.processes)
                t.add_row(
                    str(gi.placement),
                    str(gi.id),
                    str(d.ci_id),
                    d.uuid,
                    f"{d.memory_used_mib}/{d.memory_total_mib} MiB",
                    procs or "-",
                )
        if not g.instances:
            procs = ", ".join(str(p.pid) for p in g.processes) or "-"
            t.add_row("(none)", "", "", "", "", procs)
        fit_table(t, width)
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


SPARK_W = 48  # the most columns the "runs over time" chart takes
SPARK_MIN_W = 12


def simulate_view(reports: Sequence[SimReport], *, width: int = 80) -> RenderableType:
    """One row per layout. Headers wrap between words, never inside one (`makespan`, not `makesp…`);
    the chart takes the columns left over, up to SPARK_W, and is left out below SPARK_MIN_W."""
    cols = [
        ("layout", "left"),
        ("makespan", "right"),
        ("vs plan", "right"),
        ("at once", "right"),
        ("utilisation", "right"),
        ("occupancy", "right"),
        ("idle slices", "right"),
    ]
    base = reports[0].makespan_s if reports else 0
    rows = []
    for r in reports:
        ratio = "-" if not base else f"{r.makespan_s / base:.2f}x"
        label = r.label + (f" ({r.unrunnable} cannot run)" if r.unrunnable else "")
        rows.append(
            [
                label,
                format_duration(r.makespan_s),
                ratio,
                str(r.started_at_once),
                f"{r.utilisation * 100:.1f}%",
                f"{r.occupancy * 100:.1f}%",
                f"{r.idle_slices}/{r.total_slices}",
            ]
        )

    def table(chart: int) -> Table:
        t = Table(title="simulated sweep", title_justify="left")
        for col, just in cols:
            t.add_column(col, justify=just)  # type: ignore[arg-type]
        if chart:
            t.add_column("runs over time", no_wrap=True)
        for row, r in zip(rows, reports):
            t.add_row(*row, *([_spark(r.timeline, r.makespan_s, chart)] if chart else []))
        return t

    natural = fit_table(table(0), 1 << 20)
    t = table(max(SPARK_MIN_W, min(SPARK_W, width - natural - 3)))  # 3: the chart's border and padding
    if fit_table(t, width) > width:  # too narrow for a chart beside whole words: leave it out
        t = table(0)
        fit_table(t, width)
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
    "succeeded": "green",
    "running": "cyan",
    "starting": "cyan",
    "failed": "red",
    "oom": "red",
    "interrupted": "yellow",
    "abandoned": "magenta",
    "unknown": "bold red",
    "queued": "",
}


def _launcher_head(doc: StatusDoc) -> Text:
    """The status's first lines: the sweep, its state directory and what the launcher is doing."""
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
    return head


def _runs_table(doc: StatusDoc, all_runs: bool, params: dict[str, dict[str, Any]] | None) -> tuple[Table, str | None]:
    """The runs to show, one row each, and the line saying which were left out (None: none)."""
    t = Table(title_justify="left")
    for col, just in (
        ("run", "left"),
        ("state", "left"),
        ("try", "right"),
        ("instance", "left"),
        ("MIG uuid", "left"),
        ("elapsed", "right"),
        ("peak / instance", "right"),
        ("note", "left"),
    ):
        t.add_column(col, justify=just, no_wrap=col in ("run", "instance", "MIG uuid"))  # type: ignore[arg-type]
    if params is not None:
        t.add_column("parameters")
    now = time.time()
    from migbench.launch.status import runs_to_show

    shown, left_out = runs_to_show(doc, all_runs)
    for r in shown:
        mem = "-"
        if r["peak_mib"] is not None or r["instance_mib"] is not None:
            mem = f"{'-' if r['peak_mib'] is None else r['peak_mib']} / {r['instance_mib'] or '-'} MiB"
        note = printable(r["last_error"] or "")
        if r["state"] == "queued" and r["retry_at"]:
            note = f"retry in {_fmt_s(max(0.0, r['retry_at'] - now))}; " + note
        t.add_row(
            r["id"],
            Text(r["state"], style=_STATE_STYLE.get(r["state"], "")),
            str(r["attempt"] or "-"),
            r["instance"] or "-",
            r["mig_uuid"] or "-",
            _fmt_s(r["elapsed_s"]),
            mem,
            note[:120],
            *([format_params(params.get(r["id"]) or {}) or "-"] if params is not None else []),
        )
    return t, left_out


def status_view(
    doc: StatusDoc | None,
    host: HostState | None,
    notes: list[str],
    *,
    all_runs: bool = False,
    width: int = 80,
    params: dict[str, dict[str, Any]] | None = None,
) -> RenderableType:
    """The launcher, its runs (ids, instances and MIG uuids never cut; `params` when known; without
    `all_runs` the active, failed and latest finished ones) and the GPUs."""
    parts: list[RenderableType] = [Text(n, style="yellow") for n in notes]
    if doc is not None:
        parts.append(_launcher_head(doc))
        counts = Text("runs: ")
        nz = [(s, n) for s, n in doc["counts"].items() if n]
        for k, (s, n) in enumerate(nz):
            counts.append(f"{n} {s}", style=_STATE_STYLE.get(s, ""))
            if k < len(nz) - 1:
                counts.append(", ")
        counts.append(f"  (of {doc['total']})")
        parts.append(counts)
        t, left_out = _runs_table(doc, all_runs, params)
        fit_table(t, width)
        parts.append(t)
        if left_out:
            parts.append(Text(left_out, style="dim"))
    if host is not None:
        parts.append(host_view(host, width=width))
    elif doc is None:
        parts.append(Text("no launch state found and no GPU driver reachable"))
    return Group(*parts)


def _pct(x: float) -> str:
    return f"{x * 100:+.0f}%"


def accuracy_view(rep: AccuracyReport) -> RenderableType:
    """`estimate --accuracy`: errors per group and predictor, then the runs sized wrongly."""
    t = Table(title=f"{rep.sweep}: memory accuracy per group (error vs the measured peak: mean / worst)", title_justify="left")
    t.add_column("group")
    t.add_column("runs", justify="right")
    t.add_column("measured", justify="right")
    t.add_column("in a launch", justify="right")
    names = ("declared", "analytic", "profile vs history", "fit")
    for n in names:
        t.add_column(n + (" (LOO)" if n == "fit" else ""), justify="right")
    for g in rep.groups:
        cells = []
        for n in names:
            st = g.stats.get(n)
            cells.append("-" if st is None else f"{_pct(st.mean)} / {_pct(st.worst)} (n={st.n})")
        t.add_row(g.group, str(g.runs), str(g.measured), str(g.history), *cells)
    parts: list[RenderableType] = [t]
    for g in rep.groups:
        if g.fit:
            parts.append(Text(f"fit of {g.group}: {g.fit}"))
    if rep.missized:
        m = Table(title=f"runs whose declared memory picks another instance than their peak + {rep.headroom * 100:.0f}% needs", title_justify="left")
        for c in ("run", "group", "declared", "peak", "needs", "declared instance", "needed instance", ""):
            m.add_column(c, justify="right" if c in ("declared", "peak", "needs") else "left")
        for x in rep.missized:
            m.add_row(
                x.run_id,
                x.group,
                format_mib(x.declared_mib),
                format_mib(x.peak_mib),
                format_mib(x.need_mib),
                x.declared_instance or "-",
                x.needed_instance or "none",
                x.verdict,
            )
        parts.append(m)
    elif any(g.measured for g in rep.groups):
        parts.append(Text("every measured run's declared memory picks the instance its peak needs"))
    if rep.compute:
        ct = Table(title=f"{rep.sweep}: compute per group, declared (or the memory-sized default) vs measured by `profile --speed`", title_justify="left")
        for col in ("group", "declared", "measured", "error", "timed on"):
            ct.add_column(col, justify="left" if col in ("group", "timed on") else "right")
        for ca in rep.compute:
            ct.add_row(
                ca.group,
                "-" if ca.declared is None else f"{ca.declared:.3g}" + (" (default)" if ca.source == "default" else ""),
                ("at least " if ca.lower_bound else "") + f"{ca.measured:.3g}",
                "-" if ca.error is None else _pct(ca.error),
                ca.instances,
            )
        parts.append(ct)
    return Group(*parts)
