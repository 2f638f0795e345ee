"""The report as one self-contained HTML file: inline SVG (and one inline PNG at scale), inline CSS
and a few lines of inline JavaScript (click a run to light up its bars everywhere, keep the scroll
position when a live report reloads itself, open every table before printing). Nothing is loaded
from anywhere: the file opens from disk and prints."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from migbench import __version__
from migbench.report import charts
from migbench.report.data import DETAIL_GPUS, TABLE_MAX_ROWS, Bar, Report
from migbench.report.svg import esc, fmt_t, sample

STATE_LEGEND = [
    ("running", "running"),
    ("queued", "work queued"),
    ("done", "all its runs finished"),
    ("idle", "no runs"),
    ("planned", "planned (not launched)"),
]
OUTCOME_LEGEND = [
    ("planned", "planned (duration model)"),
    ("succeeded", "succeeded"),
    ("running", "running"),
    ("failed", "failed"),
    ("oom", "out of memory"),
    ("interrupted", "interrupted / lost"),
]

CSS = """
:root{--run:#2171b5;--queued:#fdae61;--done:#74c476;--idle:#f4f4f4;--planned:#c6dbef;--fail:#d7301f;--oom:#7f0000;--int:#969696}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#222;margin:0 auto;max-width:1060px;padding:16px 24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 6px;border-bottom:1px solid #ddd;padding-bottom:3px}
h3{font-size:15px;margin:16px 0 4px}
.meta{color:#555;font-size:13px}.tiles{display:flex;flex-wrap:wrap;gap:8px;margin:10px 0}
.tile{border:1px solid #ddd;border-radius:6px;padding:6px 10px;min-width:120px}
.tile b{display:block;font-size:18px}.tile span{color:#666;font-size:12px}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 10px;margin:8px 0;font-size:13px}
nav{font-size:13px;margin:8px 0}nav a{margin-right:12px}figure{margin:10px 0}figcaption{font-weight:600;margin-bottom:2px}
svg{display:block;max-width:100%;height:auto}svg text{font:11px system-ui,"DejaVu Sans",sans-serif;fill:#222}
.tick{fill:#666!important;font-size:10px!important}.sub{fill:#555!important;font-size:10px!important}.lbl{font-weight:600}
.lane{font-size:10px!important}
line.grid{stroke:#e6e6e6}line.axis{stroke:#999}.zebra{fill:#fafafa}
.free{fill:#fff;stroke:#bbb;stroke-dasharray:3 3}.inst{stroke:#555;stroke-width:1}
.st-running{fill:#d6e6f7}.st-queued{fill:#fee8c8}.st-done{fill:#e5f5e0}.st-idle{fill:var(--idle)}.st-planned{fill:#eef4fb}
.dot{stroke:none}.o-running,.o-starting{fill:var(--run)}.o-queued{fill:var(--queued)}.o-succeeded{fill:var(--done)}.o-failed{fill:var(--fail)}
.o-oom{fill:var(--oom)}.o-interrupted,.o-lost,.o-abandoned,.o-unknown{fill:var(--int)}.o-planned{fill:var(--planned)}
.bar.planned{fill:var(--planned);stroke:#6baed6;stroke-width:.5}.bar.actual{stroke:#333;stroke-width:.3}.bar.retry{stroke:#000;stroke-width:1}
.bar.moved{stroke:#7f0000;stroke-width:1.2;stroke-dasharray:2 1}
.bar.lent{stroke:#238b45;stroke-width:1.4;stroke-dasharray:6 2}.hl{stroke:#e7298a!important;stroke-width:2!important;fill-opacity:1}
text.hl{fill:#e7298a!important;font-weight:700}
path.line{fill:none;stroke-width:1.6}path.planned{stroke:#6baed6;stroke-dasharray:5 3}path.actual{stroke:var(--run)}path.grainl{stroke:#999}
circle.pt{fill:var(--run)}circle.chosen{fill:none;stroke:#e7298a;stroke-width:2.5}
.mplan{fill:#d9d9d9}.mcap{fill:#fff;stroke:#999}.minst{stroke:#333;stroke-width:1.5}.mpeak{fill:var(--run)}.mpeak.over{fill:var(--fail)}
.mmeas{stroke:var(--run);stroke-width:3}.whisk{stroke:var(--run);stroke-width:2}
.legend{display:flex;flex-wrap:wrap;gap:12px;font-size:12px;margin:4px 0}
.legend i{display:inline-block;width:12px;height:12px;border:1px solid #888;margin-right:4px;vertical-align:-2px}
.legend i.st-running{background:#d6e6f7}.legend i.st-queued{background:#fee8c8}.legend i.st-done{background:#e5f5e0}
.legend i.st-idle{background:#f4f4f4}.legend i.st-planned{background:#eef4fb}
.legend i.o-planned{background:var(--planned)}.legend i.o-succeeded{background:var(--done)}.legend i.o-running{background:var(--run)}
.legend i.o-failed{background:var(--fail)}
.legend i.o-oom{background:var(--oom)}.legend i.mplan{background:#d9d9d9}.legend i.minst{background:#333;height:3px;vertical-align:3px}
.legend i.o-interrupted{background:var(--int)}.legend i.e-retry{border:2px solid #000}
.legend i.e-moved{border:2px dashed #7f0000}.legend i.e-lent{border:2px dashed #238b45}
table{border-collapse:collapse;font-size:12px;margin:6px 0}th,td{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}details{margin:6px 0}summary{cursor:pointer;color:#2171b5}
.grains{display:flex;flex-wrap:wrap;gap:8px}.strips td{vertical-align:middle}
footer{margin-top:30px;color:#777;font-size:12px}
@media print{nav,.noprint{display:none}body{max-width:none;padding:0}h2{break-after:avoid}figure,svg,tr{break-inside:avoid}
@page{size:A4 landscape;margin:10mm}}
"""

JS = """
(function(){
var key='migbench-scroll:'+location.pathname;
try{var y=sessionStorage.getItem(key);if(y!==null){window.scrollTo(0,+y);}}catch(e){}
window.addEventListener('scroll',function(){try{sessionStorage.setItem(key,String(window.scrollY));}catch(e){}},{passive:true});
window.addEventListener('beforeprint',function(){document.querySelectorAll('details').forEach(function(d){d.open=true;});});
var cur=null,sel='[data-run],[data-grid-run],[data-mem-run]';
document.addEventListener('click',function(ev){
var el=ev.target.closest?ev.target.closest(sel):null;
var id=el?(el.getAttribute('data-run')||el.getAttribute('data-grid-run')||el.getAttribute('data-mem-run')):null;
document.querySelectorAll('.hl').forEach(function(e){e.classList.remove('hl');});
if(!id||id===cur){cur=null;return;}
cur=id;var q=CSS.escape(id);
document.querySelectorAll('[data-run="'+q+'"],[data-grid-run="'+q+'"],[data-mem-run="'+q+'"]').forEach(function(e){e.classList.add('hl');});
});
document.documentElement.setAttribute('data-ready','1');
})();
"""


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f} %"


def _t(v: float | None) -> str:
    return "-" if v is None else fmt_t(v)


def _mib(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1024:.2f} GiB" if abs(v) >= 1024 else f"{v:.0f} MiB"


def table(head: Sequence[str], rows: Iterable[Sequence[object]], *, numeric: Iterable[int] = (), caption: str | None = None, cls: str = "") -> str:
    num = set(numeric)
    out = [f'<table class="{esc(cls)}">' if cls else "<table>"]
    if caption:
        out.append(f"<caption>{esc(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead><tbody>")
    for r in rows:
        out.append("<tr>" + "".join(f"<td{' class=n' if k in num else ''}>{esc(c)}</td>" for k, c in enumerate(r)) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def details(summary: str, body: str, *, open_: bool = False) -> str:
    return f"<details{' open' if open_ else ''}><summary>{esc(summary)}</summary>{body}</details>"


def legend(items: Sequence[tuple[str, str]]) -> str:
    return '<div class="legend">' + "".join(f'<span><i class="{esc(c)}"></i>{esc(t)}</span>' for c, t in items) + "</div>"


def render(report: Report) -> str:
    """The whole page."""
    parts = [_head(report), _summary(report), _grid(report), _timeline(report), _layouts(report), _over_time(report), _grain(report), _memory(report)]
    parts.append(
        f"<footer>migbench {esc(__version__)} · generated {esc(time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(report.generated_at)))}"
        " · self-contained: this file loads nothing from the network</footer>"
    )
    parts.append(f"<script>{JS}</script></body></html>")
    return "".join(parts)


def _head(report: Report) -> str:
    refresh = f'<meta http-equiv="refresh" content="{int(report.refresh_s)}">' if report.refresh_s else ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"{refresh}<title>migbench report: {esc(report.title)}</title><style>{CSS}</style></head><body>"
    )


def _summary(report: Report) -> str:
    out = [f"<h1>{esc(report.title)}</h1>"]
    meta = [f"plan {esc(report.plan_file or '(not saved)')}"]
    la = report.launch
    if la is not None:
        meta.append(f"launch state {esc(la.state_dir)}")
        lr = la.launcher
        if la.running:
            meta.append(f"launcher running (PID {esc(lr.get('pid'))})")
        elif lr.get("pid") is not None:
            meta.append(f"launcher exited ({esc(lr.get('state'))})")
    if report.refresh_s:
        meta.append(f"this page reloads every {report.refresh_s} s while the sweep runs")
    out.append('<div class="meta">' + " · ".join(meta) + "</div>")
    out.append(
        "<nav>"
        + "".join(
            f'<a href="#{k}">{t}</a>'
            for k, t in (("grid", "Layout"), ("timeline", "Timeline"), ("over-time", "Over time"), ("grain", "Grain lever"), ("memory", "Memory"))
        )
        + "</nav>"
    )
    tiles = [
        (f"{report.runs:,}", "runs"),
        (f"{len(report.gpus)}", "GPUs"),
        (f"{sum(len(g.instances) for g in report.gpus)}", "MIG instances"),
        (_t(report.planned.makespan_s if report.planned else None), "planned makespan"),
        (_pct(report.planned.utilisation if report.planned else None), "planned utilisation"),
    ]
    if la is not None:
        c = la.counts
        tiles += [
            (f"{c.get('succeeded', 0)}/{la.total}", "succeeded"),
            (f"{c.get('running', 0) + c.get('starting', 0)}", "running"),
            (f"{c.get('queued', 0) + c.get('interrupted', 0)}", "queued"),
            (f"{c.get('failed', 0) + c.get('oom', 0) + c.get('abandoned', 0)}", "failed / OOM / abandoned"),
            (_t(la.span_s if report.actual else None), "actual so far" if la.running else "actual makespan"),
            (_pct(report.actual.utilisation if report.actual else None), "actual utilisation"),
        ]
    out.append('<div class="tiles">' + "".join(f'<div class="tile"><b>{esc(v)}</b><span>{esc(k)}</span></div>' for v, k in tiles) + "</div>")
    for n in report.notes:
        out.append(f'<div class="note">{esc(n)}</div>')
    if report.summarised:
        out.append('<div class="note"><b>At this scale the page summarises:</b><ul>' + "".join(f"<li>{esc(s)}</li>" for s in report.summarised) + "</ul></div>")
    return "".join(out)


def _grid(report: Report) -> str:
    out = [
        '<section id="grid"><h2>Layout grid</h2>',
        "<p>Each GPU's memory slices left to right; each MIG instance is a block labelled <code>profile@start</code>, "
        "coloured by its state, with its runs (the dot is the run's state).</p>",
        legend([(f"st-{k}", t) for k, t in STATE_LEGEND] + [(f"o-{k}", f"run {t}") for k, t in OUTCOME_LEGEND[1:]]),
    ]
    if report.detail:
        for g in report.gpus:
            counts: dict[str, int] = {}
            for i in g.instances:
                counts[i.state] = counts.get(i.state, 0) + 1
            cap = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            out.append(
                f'<figure class="gpu" data-gpu="{g.gpu}"><figcaption>{esc(g.title)} · {len(g.instances)} instance(s): {esc(cap)}</figcaption>'
                f"{charts.grid(g)}</figure>"
            )
    else:
        out.append(f"<p>{len(report.gpus)} GPUs, one row each (hover an instance for its runs by state).</p>")
        out.append(charts.grid_rows(report.gpus))
    rows = []
    for g in report.gpus:
        for i in g.instances:
            st: dict[str, int] = {}
            for _, s in i.runs:
                st[s] = st.get(s, 0) + 1
            rows.append(
                (g.gpu, i.label, i.compute_slices, _mib(i.memory_mib), i.state, len(i.planned), ", ".join(f"{n} {s}" for s, n in sorted(st.items())) or "-")
            )
    out.append(
        details(
            f"Table: {len(rows)} instances",
            table(["GPU", "instance", "compute slices", "memory", "state", "runs planned", "runs now"], rows[: max(TABLE_MAX_ROWS, 4096)], numeric=(0, 2, 5)),
        )
    )
    out.append("</section>")
    return "".join(out)


def _attempts_text(bars: Sequence[Bar]) -> str:
    return "; ".join(f"{b.attempt}: {b.instance} {fmt_t(b.start_s)}-{fmt_t(b.end_s)} {b.outcome}" + (f" ({b.note})" if b.note else "") for b in bars)


def _timeline(report: Report) -> str:
    out = [
        '<section id="timeline"><h2>Timeline</h2>',
        "<p>One lane per instance: the planned runs (from the duration model, light) above the actual attempts from "
        "<code>launch.db</code> (by outcome; a black edge is a retry, a dashed red edge an attempt moved after an OOM, a "
        "long-dashed green edge a run the launcher started on another instance that was idle: lending, not a failure). "
        "Hover a bar for its times; click one to light up the run everywhere.</p>",
        legend([(f"o-{k}", t) for k, t in OUTCOME_LEGEND] + [("e-retry", "retry"), ("e-moved", "moved after an OOM"), ("e-lent", "lent instance")]),
    ]
    if not any(b.kind == "planned" for b in report.bars) and not any(b.kind == "actual" for b in report.bars):
        out.append('<div class="note">Nothing to draw: the plan has no durations and nothing has run yet.</div>')
    if report.detail:
        out.append(charts.gantt(report, report.gpus))
    else:
        first = report.gpus[:DETAIL_GPUS]
        out.append(f"<h3>The first {len(first)} GPUs, bar by bar</h3>")
        out.append(charts.gantt(report, first))
        out.append(f"<h3>All {len(report.gpus)} GPUs: busy compute slices over time</h3>")
        svg_heat, numbers = charts.heatmap(report)
        out.append(svg_heat)
        cols = 12
        bins = len(numbers[0][1]) if numbers else 0
        step = max(1, bins // cols)
        head = ["GPU", "row"] + [fmt_t(report.horizon_s * b / bins) for b in range(0, bins, step)]
        rows: list[list[object]] = []
        for gpu, p, a in numbers:
            rows.append([gpu, "planned"] + [f"{sum(p[b : b + step]) / step * 100:.0f} %" for b in range(0, bins, step)])
            if a is not None:
                rows.append([gpu, "actual"] + [f"{sum(a[b : b + step]) / step * 100:.0f} %" for b in range(0, bins, step)])
        out.append(details("Table: busy share of each GPU's compute slices, by time", table(head, rows)))
    by_run: dict[str, list[Bar]] = {}
    for b in report.bars:
        by_run.setdefault(b.run, []).append(b)
    run_rows = []
    shown = sorted(by_run) if report.detail else sorted(by_run)[:TABLE_MAX_ROWS]
    for rid in shown:
        bs = by_run[rid]
        pb = next((b for b in bs if b.kind == "planned"), None)
        ab = sorted((b for b in bs if b.kind == "actual"), key=lambda b: b.attempt)
        retries = sum(1 for b in ab if "retry" in b.note)
        moved = sum(1 for b in ab if "after an OOM" in b.note)
        run_rows.append(
            (
                rid,
                report.groups.get(rid, ""),
                pb.instance if pb else "-",
                _t(pb.start_s if pb else None),
                _t(pb.end_s if pb else None),
                _t(ab[0].start_s if ab else None),
                _t(ab[-1].end_s if ab else None),
                ab[-1].outcome if ab else "-",
                retries,
                moved,
                _attempts_text(ab),
            )
        )
    cut = "" if len(shown) == len(by_run) else f" (the first {len(shown)} of {len(by_run)})"
    out.append(
        details(
            f"Table: runs, planned and actual{cut}",
            table(
                ["run", "group", "planned on", "planned start", "planned end", "actual start", "actual end", "outcome", "retries", "OOM moves", "attempts"],
                run_rows,
                numeric=(8, 9),
            ),
        )
    )
    out.append("</section>")
    return "".join(out)


def _layouts(report: Report) -> str:
    """The bench's layouts over time: each GPU's layout when the bench started and after each re-cut."""
    if not report.layouts:
        return ""
    rows = []
    last: dict[int, set[str]] = {}
    for t, gpu, lay in report.layouts:
        now = {p for p in lay.split(" + ") if p}
        if gpu in last:
            gone, new = sorted(last[gpu] - now), sorted(now - last[gpu])
            change = "; ".join(x for x in (f"destroyed {', '.join(gone)}" if gone else "", f"created {', '.join(new)}" if new else "") if x)
        else:
            change = "as the bench found it"
        rows.append((_t(t), gpu, lay or "no instance", change))
        last[gpu] = now
    n = sum(1 for r in rows if r[3] != "as the bench found it")
    return (
        '<section id="layouts"><h2>Layouts over time</h2>'
        f"<p>The host's bench re-cut idle slices {n} time(s) as sweeps arrived and GPUs drained; an instance with a run on it "
        "is never destroyed. Lanes marked <em>(re-cut)</em> in the timeline are instances that no longer exist.</p>"
        + table(["at", "GPU", "layout", "change"], rows, numeric=(1,))
        + "</section>"
    )


def _over_time(report: Report) -> str:
    h = report.horizon_s
    out = ['<section id="over-time"><h2>Over time</h2>']
    pu = report.planned.utilisation if report.planned else None
    au = report.actual.utilisation if report.actual else None
    po = report.planned.occupancy if report.planned else None
    ao = report.actual.occupancy if report.actual else None
    out.append(
        "<p><b>Sustained utilisation</b> = busy compute / available compute: the compute the runs are served under the "
        "duration model (on each instance, the smaller of its compute share and its runs' compute demand) over every "
        f"GPU's whole compute over the makespan: planned <b>{_pct(pu)}</b>, actual <b>{_pct(au)}</b>. "
        "<b>Occupancy</b> = busy compute slice-hours / available slice-hours (an instance's slices count while any run "
        f"is on it, however little compute the run uses): planned <b>{_pct(po)}</b>, actual <b>{_pct(ao)}</b>.</p>"
    )
    out.append(legend([("o-planned", "planned (dashed)"), ("o-running", "actual (solid)")]))
    for s in report.series:
        out.append(f"<h3>{esc(s.title)}</h3>" + charts.series_chart(s, h))
    n = 24
    head = ["time"] + [f"{s.key} {k}" for s in report.series for k in ("planned", "actual")]
    rows = []
    for k in range(n + 1):
        t = h * k / n
        row: list[object] = [fmt_t(t)]
        for s in report.series:
            for pts in (s.planned, s.actual):
                v = sample(pts, t)
                row.append("-" if v is None else f"{v:.1f}".rstrip("0").rstrip("."))
        rows.append(row)
    out.append(details("Table: the series sampled at 25 moments", table(head, rows, numeric=range(1, len(head)))))
    urows: list[tuple[object, ...]] = [(u.gpu, u.slices, _pct(u.planned), _pct(u.actual), u.runs_planned, u.attempts) for u in report.utilisation]
    urows.append(
        (
            "all",
            sum(u.slices for u in report.utilisation),
            _pct(pu),
            _pct(au),
            sum(u.runs_planned for u in report.utilisation),
            sum(u.attempts for u in report.utilisation),
        )
    )
    out.append(
        details(
            "Table: sustained utilisation per GPU",
            table(["GPU", "compute slices", "planned", "actual", "runs planned", "attempts"], urows, numeric=(1, 4, 5)),
            open_=len(urows) <= 17,
        )
    )
    out.append("</section>")
    return "".join(out)


def _grain(report: Report) -> str:
    out = ['<section id="grain"><h2>The grain lever</h2>']
    lever = report.grain
    if lever is None:
        out.append(
            f'<div class="note">The grain lever is {esc(report.grain_note or "not computed for this page")}; '
            "`migbench grain SWEEP` prints it in the terminal.</div></section>"
        )
        return "".join(out)
    out.append(
        "<p>The sweep planned at every partition grain the fleet allows: the grain is the smallest instance a layout "
        "may use, from one whole-GPU instance per GPU to every profile. Each grain is planned by the same planner and "
        "played forward under the duration model. The ringed point is the chosen plan.</p>"
    )
    pts = lever.points
    out.append('<div class="grains">')
    out.append(charts.grain_chart(pts, "runs_at_once", "runs at once", lambda v: f"{v:g}"))
    out.append(charts.grain_chart(pts, "utilisation", "utilisation (busy compute)", lambda v: f"{v * 100:.0f}%", ceiling=1.0))
    out.append(charts.grain_chart(pts, "makespan_s", "makespan", fmt_t))
    out.append("</div>")
    strips = []
    for p in pts:
        for gpu, lay in sorted(p.per_gpu.items()):
            strips.append(
                f'<tr data-grain="{p.grain}"><td>{esc(p.label)}{" ★" if p.chosen else ""}</td><td>GPU {gpu}</td>'
                f"<td>{charts.mini_layout(lever.memory_slices.get(gpu, 8), lay, lever.sizes)}</td></tr>"
            )
    out.append('<h3>The first GPU at each grain</h3><table class="strips"><tbody>' + "".join(strips) + "</tbody></table>")
    rows = [
        (
            p.label + (" (chosen)" if p.chosen else ""),
            p.instances,
            p.runs_at_once,
            _pct(p.utilisation),
            _pct(p.occupancy),
            _t(p.makespan_s),
            p.unplaced,
            p.status,
            "; ".join(f"{m}: {', '.join(v)}" for m, v in p.profiles.items()),
        )
        for p in pts
    ]
    out.append(
        table(["grain", "instances", "runs at once", "utilisation", "occupancy", "makespan", "unplaced", "solver", "profiles allowed"], rows, numeric=(1, 2, 6))
    )
    for n in lever.notes:
        out.append(f'<div class="note">{esc(n)}</div>')
    out.append("</section>")
    return "".join(out)


def _memory(report: Report) -> str:
    out = ['<section id="memory"><h2>Memory</h2>']
    runs = report.memory_runs
    measured = [r for r in runs if r.peak_mib is not None]
    out.append(
        f"<p>Planned memory is what the plan sized each run by (the sweep's declared or estimated memory); measured peaks "
        f"come from <code>launch.db</code> ({len(measured)} of {len(runs)} runs measured). A red dot is a peak above the plan.</p>"
    )
    if report.detail:
        out.append(legend([("mplan", "planned"), ("o-running", "measured peak"), ("o-failed", "peak above plan"), ("minst", "instance memory")]))
        out.append(charts.memory_runs_chart(runs))
    else:
        svg_groups, grows = charts.memory_groups_chart(runs)
        out.append(svg_groups)
        out.append(
            details(
                "Table: memory per group",
                table(
                    ["group", "runs", "planned", "least peak", "median peak", "most peak", "measured"],
                    [(g, n, _mib(p), _mib(lo), _mib(m), _mib(hi), k) for g, n, p, lo, m, hi, k in grows],
                    numeric=(1, 6),
                ),
            )
        )
    shown = runs if report.detail else runs[:TABLE_MAX_ROWS]
    rows = [
        (
            r.id,
            r.group,
            _mib(r.planned_mib),
            _mib(r.peak_mib),
            "-" if r.peak_mib is None else f"{r.peak_mib / max(1, r.planned_mib):.0%}",
            _mib(r.instance_mib),
            _mib(None if r.peak_mib is None or r.instance_mib is None else r.instance_mib - r.peak_mib),
            r.source or "-",
        )
        for r in shown
    ]
    cut = "" if len(shown) == len(runs) else f" (the first {len(shown)} of {len(runs)})"
    out.append(
        details(f"Table: memory per run{cut}", table(["run", "group", "planned", "measured peak", "peak / planned", "instance", "headroom", "peak from"], rows))
    )
    insts = sorted(report.memory_instances, key=lambda i: i.measured_headroom_mib if i.measured_headroom_mib is not None else i.planned_headroom_mib)
    out.append(
        "<h3>Headroom per instance</h3><p>Instance memory less the most its co-running runs hold at once: planned (their "
        "planned memory) and measured (the sum of co-running attempts' measured peaks, an upper bound). Least headroom first.</p>"
    )
    if report.detail:
        out.append(legend([("st-idle", "instance memory"), ("mplan", "planned peak"), ("o-running", "measured peak")]))
        out.append(charts.headroom_chart(insts))
    ishown = insts if report.detail else insts[:TABLE_MAX_ROWS]
    out.append(
        details(
            f"Table: headroom per instance ({len(ishown)} of {len(insts)})",
            table(
                ["instance", "memory", "planned peak", "planned headroom", "measured peak", "measured headroom"],
                [
                    (
                        i.key,
                        _mib(i.memory_mib),
                        _mib(i.planned_peak_mib),
                        _mib(i.planned_headroom_mib),
                        _mib(i.measured_peak_mib),
                        _mib(i.measured_headroom_mib),
                    )
                    for i in ishown
                ],
            ),
        )
    )
    out.append("</section>")
    return "".join(out)
