"""The report's pictures as inline SVG: the layout grid per GPU, the timeline (Gantt), the heat map
at scale, the charts over time, the grain lever and memory. Each takes `report.data` values and
returns an SVG string; `report.html` puts them on the page with the tables behind them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from statistics import median
from typing import Any

from migbench.report.data import (
    DETAIL_GPUS,
    HEAT_BINS,
    Bar,
    GpuView,
    InstanceMemory,
    MemoryRow,
    Report,
    Series,
    busy_intervals,
)
from migbench.report.svg import (
    data_uri_png,
    esc,
    fmt_t,
    line,
    png_rgb,
    ramp,
    rect,
    step_path,
    svg,
    text,
    time_axis,
    value_ticks,
)

WIDTH = 1000
GRID_RUN_LINES = 8  # run ids listed per instance in the grid before "+N more"


def _mib(mib: float) -> str:
    return f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"


# ---------------------------------------------------------------------------------------------
# Layout grid
# ---------------------------------------------------------------------------------------------


def grid(g: GpuView, width: int = WIDTH) -> str:
    """One GPU: memory slices across, each instance a block (profile@start) coloured by its state,
    listing its runs (the dot is the run's state)."""
    sw = width / g.memory_slices
    most = max((len(i.runs) for i in g.instances), default=0)
    lines = min(most, GRID_RUN_LINES)
    h = 40 + 14 * max(lines, 1)
    top = 16
    out = []
    for s in range(g.memory_slices):
        out.append(text(s * sw + 3, 11, f"slice {s}", class_="tick"))
    used = {s for i in g.instances for s in range(i.start, i.start + i.memory_slices)}
    for s in range(g.memory_slices):
        if s not in used:
            out.append(rect(s * sw + 1, top, sw - 2, h, class_="free", title=f"memory slice {s}: no instance"))
    for i in g.instances:
        x, w = i.start * sw + 1, i.memory_slices * sw - 2
        cid = f"clip-{g.gpu}-{i.start}-{i.profile.replace('.', '_')}"
        body = [f'<clipPath id="{esc(cid)}"><rect x="{x:.1f}" y="{top}" width="{w:.1f}" height="{h}"/></clipPath>']
        tip = f"{i.key}: {i.compute_slices} compute slices, {_mib(i.memory_mib)}; {i.state}; {len(i.planned)} run(s) planned"
        body.append(rect(x, top, w, h, class_=f"inst st-{i.state}", title=tip))
        body.append(f'<g clip-path="url(#{esc(cid)})">')
        body.append(text(x + 5, top + 14, i.label, class_="lbl"))
        body.append(text(x + 5, top + 27, f"{i.compute_slices}/{g.compute_slices} compute · {_mib(i.memory_mib)}", class_="sub"))
        y = top + 41
        for rid, st in i.runs[: GRID_RUN_LINES if len(i.runs) <= GRID_RUN_LINES else GRID_RUN_LINES - 1]:
            body.append(rect(x + 5, y - 8, 8, 8, class_=f"dot o-{st}"))
            body.append(text(x + 16, y, rid, class_="run", data_grid_run=rid))
            y += 14
        if len(i.runs) > GRID_RUN_LINES:
            body.append(text(x + 16, y, f"+{len(i.runs) - GRID_RUN_LINES + 1} more", class_="sub"))
        body.append("</g>")
        out.append(f'<g class="instance"{_data(instance=i.key, state=i.state)}>' + "".join(body) + "</g>")
    return svg(width, top + h + 2, out, label=f"{g.title}: layout", class_="layout")


def grid_rows(gpus: Sequence[GpuView], width: int = WIDTH) -> str:
    """Every GPU as one row of blocks (the layout grid at scale): each instance coloured by its state,
    its profile written where it fits, its run counts in its tooltip."""
    row_h, label_w = 18, 150
    sw = (width - label_w) / max((g.memory_slices for g in gpus), default=8)
    out = []
    for n, g in enumerate(gpus):
        y = 2 + n * row_h
        cells = [text(4, y + 12, g.title, class_="lane")]
        for i in g.instances:
            counts: dict[str, int] = {}
            for _, st in i.runs:
                counts[st] = counts.get(st, 0) + 1
            tip = f"{i.key}: {i.state}; " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no runs")
            x, w = label_w + i.start * sw + 0.5, i.memory_slices * sw - 1
            cells.append(rect(x, y, w, row_h - 3, class_=f"inst st-{i.state}", title=tip))
            if w > 44:
                cells.append(text(x + 3, y + 11, i.label, class_="sub"))
        out.append(f'<g class="gpurow"{_data(gpu=g.gpu)}>' + "".join(cells) + "</g>")
    return svg(width, 4 + len(gpus) * row_h, out, label="layout of every GPU, one row each", class_="layout rows")


def _data(**kw: object) -> str:
    return "".join(f' data-{k.replace("_", "-")}="{esc(v)}"' for k, v in kw.items() if v is not None)


def mini_layout(memory_slices: int, placements: Sequence[str], sizes: Mapping[str, int], width: int = 240) -> str:
    """A GPU's layout as a strip (the grain lever's "lighting up" picture); `sizes`: profile ->
    memory slices."""
    sw = width / memory_slices
    out = [rect(0.5, 0.5, width - 1, 26, class_="free")]
    for p in placements:
        prof, _, start = p.partition("@")
        x = int(start) * sw
        out.append(rect(x + 1, 1, sizes.get(prof, 1) * sw - 2, 24, class_="inst st-planned", title=p))
        out.append(text(x + 4, 17, prof.split(".")[0], class_="sub"))
    return svg(width, 28, out, label="layout: " + " ".join(placements), class_="mini")


# ---------------------------------------------------------------------------------------------
# Timeline
# ---------------------------------------------------------------------------------------------

LABEL_W = 150
TRACK_H = 9


def _tracks(bars: Sequence[Bar]) -> list[tuple[Bar, int]]:
    """Greedy interval colouring: each bar on the lowest track free at its start."""
    ends: list[float] = []
    out = []
    for b in sorted(bars, key=lambda b: (b.start_s, b.end_s, b.run, b.attempt)):
        for k, e in enumerate(ends):
            if e <= b.start_s + 1e-9:
                ends[k] = b.end_s
                out.append((b, k))
                break
        else:
            ends.append(b.end_s)
            out.append((b, len(ends) - 1))
    return out


def _bar_w(w: float) -> float:
    """A bar's drawn width: a pixel's gap to the next bar where it is wide, at least one pixel."""
    return max(1.0, w - 1.0 if w > 3 else w)


def _bar_title(b: Bar) -> str:
    what = "planned" if b.kind == "planned" else f"attempt {b.attempt}: {b.outcome}"
    note = f"; {b.note}" if b.note else ""
    return f"{b.run} on {b.instance}, {what}, {fmt_t(b.start_s)} to {fmt_t(b.end_s)} ({fmt_t(b.end_s - b.start_s)}){note}"


def gantt(report: Report, gpus: Sequence[GpuView], width: int = WIDTH) -> str:
    """One lane per instance of `gpus`: planned runs (grey) above, actual attempts (by outcome) below."""
    horizon = report.horizon_s
    plot_w = width - LABEL_W - 10
    by_inst: dict[str, list[Bar]] = {}
    for b in report.bars:
        by_inst.setdefault(b.instance, []).append(b)
    body: list[str] = []
    y = 22
    lanes = []
    for g in gpus:
        for i in [*g.instances, *g.past]:
            bs = by_inst.get(i.key, [])
            p = _tracks([b for b in bs if b.kind == "planned"])
            a = _tracks([b for b in bs if b.kind == "actual"])
            np_ = max((k for _, k in p), default=-1) + 1
            na = max((k for _, k in a), default=-1) + 1
            h = max(1, np_) * TRACK_H + (max(1, na) * TRACK_H + 3 if report.launch else 0) + 8
            lanes.append((g, i, p, a, y, np_, h))
            y += h
    total_h = y + 4
    body.extend(rect(0, y0, width, h, class_="zebra") for n, (_g, _i, _p, _a, y0, _np, h) in enumerate(lanes) if n % 2)
    body.extend(time_axis(LABEL_W, plot_w, horizon, 18, total_h - 18))
    for g, i, p, a, y0, np_, _h in lanes:
        gone = " (re-cut)" if i in g.past else ""
        body.append(text(4, y0 + 11, f"{g.gpu}:{i.label}{gone}", class_="lane", data_lane=i.key))
        for b, k in p:
            x = LABEL_W + plot_w * b.start_s / horizon
            w = _bar_w(plot_w * (b.end_s - b.start_s) / horizon)
            body.append(
                f'<rect class="bar planned"{_data(run=b.run, kind="planned")} x="{x:.1f}" y="{y0 + 3 + k * TRACK_H}" '
                f'width="{w:.1f}" height="{TRACK_H - 2}"><title>{esc(_bar_title(b))}</title></rect>'
            )
        ya = y0 + 3 + max(1, np_) * TRACK_H + 3
        for b, k in a:
            x = LABEL_W + plot_w * b.start_s / horizon
            w = _bar_w(plot_w * (b.end_s - b.start_s) / horizon)
            cls = (
                f"bar actual o-{b.outcome}"
                + (" moved" if "after an OOM" in b.note else "")
                + (" lent" if "lent instance" in b.note else "")
                + (" retry" if "retry" in b.note else "")
            )
            body.append(
                f'<rect class="{cls}"{_data(run=b.run, kind="actual", attempt=b.attempt)} x="{x:.1f}" y="{ya + k * TRACK_H}" '
                f'width="{w:.1f}" height="{TRACK_H - 2}"><title>{esc(_bar_title(b))}</title></rect>'
            )
    return svg(width, total_h, body, label="timeline: planned and actual runs per instance", class_="gantt")


def heatmap(report: Report, width: int = WIDTH) -> tuple[str, list[tuple[int, list[float], list[float] | None]]]:
    """Every GPU as a row of busy compute slices over time (planned row above actual), as one
    inline PNG. Returns the SVG and the numbers: (gpu, planned fractions per bin, actual or None)."""
    horizon = report.horizon_s
    bins = HEAT_BINS
    bw = horizon / bins
    gpu_of = {i.key: (g.gpu, i.compute_slices) for g in report.gpus for i in g.instances}
    slices = {g.gpu: g.compute_slices for g in report.gpus}

    def fill(bars: Sequence[Bar]) -> dict[int, list[float]]:
        acc = {g.gpu: [0.0] * bins for g in report.gpus}
        for key, ivs in busy_intervals(bars).items():
            if key not in gpu_of:
                continue
            gpu, sl = gpu_of[key]
            row = acc[gpu]
            for s, e in ivs:
                b0, b1 = int(s / bw), min(bins - 1, int(e / bw))
                for b in range(b0, b1 + 1):
                    lo, hi = max(s, b * bw), min(e, (b + 1) * bw)
                    if hi > lo:
                        row[b] += sl * (hi - lo)
        return {g: [v / (slices[g] * bw) for v in row] for g, row in acc.items()}

    planned = fill([b for b in report.bars if b.kind == "planned"])
    actual = fill([b for b in report.bars if b.kind == "actual"]) if report.launch else None
    rows: list[list[tuple[int, int, int]]] = []
    numbers = []
    shades = [ramp(k / 255) for k in range(256)]

    def colour(vs: list[float]) -> list[tuple[int, int, int]]:
        return [shades[min(255, max(0, int(v * 255 + 0.5)))] for v in vs]

    for g in report.gpus:
        rows.append(colour(planned[g.gpu]))
        if actual is not None:
            rows.append(colour(actual[g.gpu]))
        numbers.append((g.gpu, planned[g.gpu], actual[g.gpu] if actual is not None else None))
    per = 2 if actual is not None else 1
    row_h = max(1, min(6, 900 // max(1, len(rows))))
    plot_w = width - LABEL_W - 10
    h = len(rows) * row_h
    body = time_axis(LABEL_W, plot_w, horizon, 18, h + 6)
    body.append(
        f'<image x="{LABEL_W}" y="22" width="{plot_w}" height="{h}" preserveAspectRatio="none" '
        f'style="image-rendering:pixelated" href="{data_uri_png(png_rgb(rows))}"/>'
    )
    step = max(1, len(report.gpus) // 16)
    for n, g in enumerate(report.gpus):
        if n % step == 0:
            body.append(text(4, 22 + (n * per + 1) * row_h, f"GPU {g.gpu}", class_="lane"))
    legend = "planned row above actual row" if actual is not None else "planned"
    body.append(text(LABEL_W, h + 40, f"each GPU: {legend}; colour = share of its compute slices busy (white 0 %, blue 100 %)", class_="sub"))
    return svg(width, h + 46, body, label="heat map: busy compute slices per GPU over time", class_="heat"), numbers


# ---------------------------------------------------------------------------------------------
# Over time
# ---------------------------------------------------------------------------------------------


def series_chart(s: Series, horizon: float, width: int = WIDTH, height: int = 170) -> str:
    x0, y_top, y0 = 60, 8, height - 22
    plot_w = width - x0 - 10
    top = max([v for pts in (s.planned, s.actual) if pts for _, v in pts] + [1.0])
    ticks = value_ticks(top)
    top = ticks[-1]
    fx, fy = plot_w / horizon, (y0 - y_top) / top
    body = time_axis(x0, plot_w, horizon, y_top, y0 - y_top, below=True)
    for v in ticks:
        yy = y0 - fy * v
        body.append(line(x0, yy, x0 + plot_w, yy, class_="grid"))
        body.append(text(x0 - 4, yy + 4, f"{v:g}", class_="tick", text_anchor="end"))
    body.append(text(4, y_top + 8, s.unit, class_="sub"))
    for kind, pts in (("planned", s.planned), ("actual", s.actual)):
        if pts:
            body.append(f'<path class="line {kind}"{_data(series=s.key, kind=kind)} d="{step_path(pts, horizon, fx, fy, x0, y0, columns=plot_w)}"/>')
    return svg(width, height, body, label=f"{s.title} over time, planned and actual", class_="series")


# ---------------------------------------------------------------------------------------------
# Grain lever
# ---------------------------------------------------------------------------------------------


def grain_chart(
    points: Sequence[Any], what: str, title: str, fmt: Callable[[float], str], *, ceiling: float | None = None, width: int = 320, height: int = 200
) -> str:
    """x = instances in the fleet, y = `what` of each grain; the chosen plan ringed."""
    pts = [(p, getattr(p, what)) for p in points if getattr(p, what) is not None]
    x0, y_top, y0 = 52, 24, height - 30
    plot_w = width - x0 - 14
    body = [text(width / 2, 14, title, class_="lbl", text_anchor="middle")]
    if not pts:
        body.append(text(x0, height / 2, "not known (runs without durations)", class_="sub"))
        return svg(width, height, body, label=title, class_="grainc")
    xs = [p.instances for p, _ in pts]
    lo_x, hi_x = 0, max(xs) * 1.08 + 1
    yt = value_ticks(ceiling if ceiling is not None else max(v for _, v in pts) * 1.05, 3)
    hi_y = yt[-1]
    fx, fy = plot_w / (hi_x - lo_x), (y0 - y_top) / hi_y
    for v in yt:
        yy = y0 - fy * v
        body.append(line(x0, yy, x0 + plot_w, yy, class_="grid"))
        body.append(text(x0 - 4, yy + 4, fmt(v), class_="tick", text_anchor="end"))
    for v in value_ticks(hi_x, 4):
        if v <= hi_x:
            body.append(text(x0 + fx * v, y0 + 13, f"{v:g}", class_="tick", text_anchor="middle"))
    body.append(text(x0 + plot_w / 2, height - 4, "instances in the fleet", class_="sub", text_anchor="middle"))
    path = " ".join(f"{'M' if k == 0 else 'L'}{x0 + fx * p.instances:.1f},{y0 - fy * v:.1f}" for k, (p, v) in enumerate(pts))
    body.append(f'<path class="line grainl" d="{path}"/>')
    for p, v in pts:
        cx, cy = x0 + fx * p.instances, y0 - fy * v
        if p.chosen:
            body.append(f'<circle class="chosen" cx="{cx:.1f}" cy="{cy:.1f}" r="8"><title>chosen plan</title></circle>')
        body.append(
            f'<circle class="pt" cx="{cx:.1f}" cy="{cy:.1f}" r="4"{_data(grain=p.grain)}><title>{esc(p.label)}: '
            f"{p.instances} instances, {esc(fmt(v))}</title></circle>"
        )
        body.append(text(cx + 6, cy - 6, f"{p.grain}g", class_="tick"))
    return svg(width, height, body, label=title, class_="grainc")


# ---------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------


def memory_runs_chart(runs: Sequence[MemoryRow], width: int = WIDTH, height: int = 220) -> str:
    """Per run: planned memory (grey bar), measured peak (dot; red above the plan), instance memory (tick)."""
    runs = sorted(runs, key=lambda r: (r.group, r.planned_mib, r.id))
    x0, y_top, y0 = 60, 10, height - 24
    plot_w = width - x0 - 10
    top = float(max([max(r.planned_mib, r.peak_mib or 0, r.instance_mib or 0) for r in runs] + [1]))
    ticks = value_ticks(top / 1024)
    top = ticks[-1] * 1024
    fy = (y0 - y_top) / top
    cw = plot_w / max(1, len(runs))
    body = []
    for v in ticks:
        yy = y0 - fy * v * 1024
        body.append(line(x0, yy, x0 + plot_w, yy, class_="grid"))
        body.append(text(x0 - 4, yy + 4, f"{v:g}", class_="tick", text_anchor="end"))
    body.append(text(4, y_top + 8, "GiB", class_="sub"))
    for k, r in enumerate(runs):
        x = x0 + k * cw
        body.append(
            rect(
                x + cw * 0.15,
                y0 - fy * r.planned_mib,
                cw * 0.7,
                fy * r.planned_mib,
                class_="mplan",
                data_mem_run=r.id,
                title=f"{r.id}: planned {_mib(r.planned_mib)}",
            )
        )
        if r.instance_mib:
            yy = y0 - fy * r.instance_mib
            body.append(line(x + cw * 0.05, yy, x + cw * 0.95, yy, class_="minst"))
        if r.peak_mib is not None:
            over = r.peak_mib > r.planned_mib
            body.append(
                f'<circle class="mpeak{" over" if over else ""}" cx="{x + cw / 2:.1f}" cy="{y0 - fy * r.peak_mib:.1f}" '
                f'r="{max(1.5, min(4.0, cw / 3)):.1f}"><title>{esc(r.id)}: measured peak {_mib(r.peak_mib)} '
                f"({r.peak_mib / max(1, r.planned_mib):.0%} of planned)</title></circle>"
            )
    groups: list[tuple[str, int, int]] = []
    for k, r in enumerate(runs):
        if not groups or groups[-1][0] != r.group:
            groups.append((r.group, k, k))
        else:
            groups[-1] = (r.group, groups[-1][1], k)
    for name, a, b in groups:
        body.append(text(x0 + (a + b + 1) / 2 * cw, height - 6, name, class_="tick", text_anchor="middle"))
        body.append(line(x0 + a * cw, y0, x0 + a * cw, y0 + 6, class_="axis"))
    return svg(width, height, body, label="memory per run: planned vs measured peak", class_="mem")


def memory_groups_chart(runs: Sequence[MemoryRow], width: int = WIDTH, height: int = 220) -> tuple[str, list[tuple]]:
    """Per group: planned memory (bar) and measured peaks (least to most, median dot)."""
    groups: dict[str, list[MemoryRow]] = {}
    for r in runs:
        groups.setdefault(r.group, []).append(r)
    rows = []
    for name, rs in sorted(groups.items()):
        peaks = sorted(r.peak_mib for r in rs if r.peak_mib is not None)
        rows.append(
            (
                name,
                len(rs),
                max(r.planned_mib for r in rs),
                peaks[0] if peaks else None,
                median(peaks) if peaks else None,
                peaks[-1] if peaks else None,
                len(peaks),
            )
        )
    x0, y_top, y0 = 60, 10, height - 24
    plot_w = width - x0 - 10
    top = float(max([max(r[2], r[5] or 0) for r in rows] + [1]))
    ticks = value_ticks(top / 1024)
    top = ticks[-1] * 1024
    fy = (y0 - y_top) / top
    cw = plot_w / max(1, len(rows))
    body = []
    for v in ticks:
        yy = y0 - fy * v * 1024
        body.append(line(x0, yy, x0 + plot_w, yy, class_="grid"))
        body.append(text(x0 - 4, yy + 4, f"{v:g}", class_="tick", text_anchor="end"))
    for k, (name, n, plan_mib, lo, med, hi, _m) in enumerate(rows):
        x = x0 + k * cw
        body.append(rect(x + cw * 0.15, y0 - fy * plan_mib, cw * 0.7, fy * plan_mib, class_="mplan", title=f"{name}: {n} runs, planned {_mib(plan_mib)}"))
        if lo is not None and hi is not None and med is not None:
            body.append(line(x + cw / 2, y0 - fy * lo, x + cw / 2, y0 - fy * hi, class_="whisk"))
            body.append(
                f'<circle class="mpeak{" over" if hi > plan_mib else ""}" cx="{x + cw / 2:.1f}" cy="{y0 - fy * med:.1f}" r="3">'
                f"<title>{esc(name)}: measured peaks {_mib(lo)} to {_mib(hi)}, median {_mib(med)}</title></circle>"
            )
    return svg(width, height, body, label="memory per group: planned vs measured peaks", class_="mem"), rows


def headroom_chart(insts: Sequence[InstanceMemory], width: int = WIDTH) -> str:
    """Per instance: its memory (outline), the planned peak (grey) and the measured peak (blue)."""
    row_h = 14
    x0 = LABEL_W
    plot_w = width - x0 - 10
    top = float(max([i.memory_mib for i in insts] + [1]))
    body = []
    for k, i in enumerate(insts):
        y = 4 + k * row_h
        body.append(text(4, y + 10, i.key, class_="lane"))
        body.append(rect(x0, y, plot_w * i.memory_mib / top, row_h - 4, class_="mcap", title=f"{i.key}: {_mib(i.memory_mib)}"))
        body.append(
            rect(
                x0,
                y + 2,
                plot_w * i.planned_peak_mib / top,
                row_h - 8,
                class_="mplan",
                title=f"planned peak {_mib(i.planned_peak_mib)}, headroom {_mib(i.planned_headroom_mib)}",
            )
        )
        if i.measured_peak_mib is not None:
            xx = x0 + plot_w * i.measured_peak_mib / top
            body.append(line(xx, y - 1, xx, y + row_h - 3, class_="mmeas"))
    return svg(width, 8 + len(insts) * row_h, body, label="memory headroom per instance", class_="head")


__all__ = [
    "DETAIL_GPUS",
    "gantt",
    "grain_chart",
    "grid",
    "headroom_chart",
    "heatmap",
    "memory_groups_chart",
    "memory_runs_chart",
    "mini_layout",
    "series_chart",
]
