"""The live view of `migbench status --watch`: the layout grid with each instance's runs and their
progress, the counts, and the ETA (`migbench.report.progress` computes them)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from migbench.units import format_duration

if TYPE_CHECKING:
    from migbench.report.progress import GpuProgress, InstanceProgress, Snapshot

RUN_LINES = 6  # runs listed per instance before "+N more"
MAX_GPU_LINES = 64  # GPUs listed in the summarised view

_STYLE = {"running": "bold cyan", "queued": "yellow", "done": "green", "idle": "dim"}
_RUN = {
    "running": ("▶", "cyan"),
    "starting": ("▶", "cyan"),
    "queued": ("·", "yellow"),
    "interrupted": ("·", "yellow"),
    "succeeded": ("✓", "green"),
    "failed": ("✗", "red"),
    "oom": ("✗", "red"),
    "abandoned": ("✗", "magenta"),
}


def bar(fraction: float, width: int = 10) -> str:
    """A progress bar in eighths of a character."""
    f = min(1.0, max(0.0, fraction))
    eighths = round(f * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (" ▏▎▍▌▋▊▉"[part] if part else "")).ljust(width, "░")[:width]


def live_view(snap: Snapshot, *, now: float | None = None) -> RenderableType:
    now = time.time() if now is None else now
    parts: list[RenderableType] = [_header(snap, now)]
    if snap.summarised:
        parts.append(_summary_table(snap))
    else:
        parts.extend(_gpu_grid(g) for g in snap.gpus)
    for n in snap.notes:
        parts.append(Text(n, style="yellow"))
    return Group(*parts)


def _header(snap: Snapshot, now: float) -> Text:
    t = Text()
    t.append(snap.sweep, style="bold")
    la = snap.launcher
    if la.get("alive"):
        t.append(f"  launcher running (PID {la.get('pid')})", style="green")
    elif la.get("pid") is not None:
        t.append(f"  launcher not running ({la.get('state')})", style="yellow")
    else:
        t.append("  launcher never started", style="yellow")
    t.append("\n")
    frac = snap.done / snap.total if snap.total else 0.0
    t.append(bar(frac, 30), style="green")
    t.append(f" {snap.done}/{snap.total} done", style="bold")
    t.append(f" · {snap.running} running", style="cyan")
    t.append(f" · {snap.queued} queued", style="yellow")
    if snap.failed:
        t.append(f" · {snap.failed} failed/OOM/abandoned", style="red")
    t.append("\n")
    if snap.eta_s is not None:
        if snap.eta_s <= 0 and snap.running == 0 and snap.queued == 0:
            t.append("all runs finished")
        else:
            at = time.strftime("%H:%M", time.localtime(now + snap.eta_s))
            t.append(f"ETA {format_duration(snap.eta_s)} (about {at})", style="bold")
            how = (
                f"duration model × {snap.factor:.2f}, from {snap.finished_sample} finished run(s)"
                if snap.factor is not None
                else "duration model as planned (no run has finished yet)"
            )
            t.append(f" · {how}", style="dim")
    return t


def _cell(inst: InstanceProgress) -> Text:
    t = Text()
    t.append(inst.label, style=_STYLE.get(inst.state, ""))
    t.append(f" {inst.state}\n", style="dim")
    runs = inst.runs
    shown = runs if len(runs) <= RUN_LINES else runs[: RUN_LINES - 1]
    for r in shown:
        mark, style = _RUN.get(r.state, ("?", ""))
        t.append(f"{mark} ", style=style)
        t.append(r.id)
        if r.state in ("running", "starting"):
            f = r.fraction or 0.0
            t.append(f" {bar(f, 6)} {f * 100:.0f}%", style="cyan")
        elif r.state not in ("succeeded", "queued"):
            t.append(f" {r.state}", style=style)
        t.append("\n")
    if len(runs) > len(shown):
        rest = runs[len(shown) :]
        q = sum(1 for r in rest if r.state in ("queued", "interrupted"))
        t.append(f"+{len(rest)} more ({q} queued, {len(rest) - q} other)\n", style="dim")
    if not runs:
        t.append("(no runs)", style="dim")
    t.rstrip()
    return t


def _gpu_grid(g: GpuProgress) -> Table:
    t = Table(title=g.title, title_justify="left", show_header=False, expand=True, padding=(0, 1))
    for _ in g.instances:
        t.add_column(ratio=1, overflow="fold")
    t.add_row(*[_cell(i) for i in g.instances])
    return t


def _summary_table(snap: Snapshot) -> Table:
    t = Table(title=f"{len(snap.gpus)} GPUs (summarised: one line per GPU)", title_justify="left")
    for col, just in (
        ("GPU", "left"),
        ("instances running/queued/done/idle", "right"),
        ("runs running", "right"),
        ("queued", "right"),
        ("done", "right"),
        ("progress", "left"),
    ):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for g in snap.gpus[:MAX_GPU_LINES]:
        states = [i.state for i in g.instances]
        runs = [r for i in g.instances for r in i.runs]
        done = sum(1 for r in runs if r.state in ("succeeded", "failed", "oom", "abandoned"))
        t.add_row(
            g.title,
            "/".join(str(states.count(s)) for s in ("running", "queued", "done", "idle")),
            str(sum(1 for r in runs if r.state in ("running", "starting"))),
            str(sum(1 for r in runs if r.state in ("queued", "interrupted"))),
            str(done),
            bar(done / len(runs) if runs else 0.0, 16),
        )
    if len(snap.gpus) > MAX_GPU_LINES:
        t.caption = f"... and {len(snap.gpus) - MAX_GPU_LINES} more GPUs (`migbench report PLAN` draws them all)"
    return t
