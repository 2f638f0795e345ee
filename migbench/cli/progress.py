"""Progress on a terminal while `plan` (and `run`) works: one transient line with the step
(expanding, solving, writing), the time so far and, while solving, the best plan, the bound and the
gap as they improve. Shown only when stdout is a terminal and the output is not JSON, and only once a
command has taken more than `DELAY_S`, so quick plans print exactly what they printed before."""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text

from migbench.units import format_duration

if TYPE_CHECKING:
    from migbench.planner.budget import Progress

DELAY_S = 1.0
_PHASES = {
    "bound": "proving a bound",
    "layouts": "trying layouts",
    "exact": "solving exactly",
    "search": "searching layouts and queues",
    "solving": "solving",
    "done": "solved",
}
_SPIN = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def describe(step: str, elapsed_s: float, p: Progress | None) -> str:
    """The progress line's text (no spinner): `solving (proving a bound) · 3.2 s · best 2d11h · bound
    2d9h · gap 3.5% · budget 40%`."""
    parts = [step if p is None or step != "solving" else f"solving ({_PHASES.get(p.phase, p.phase)})", f"{elapsed_s:.1f} s"]
    if p is not None and step == "solving":

        def show(v: float) -> str:
            return format_duration(v) if p.objective_name == "makespan_s" else f"{v:.0f} runs at once"

        if p.incumbent is not None:
            parts.append(f"best {show(p.incumbent)}")
        if p.bound is not None:
            parts.append(f"bound {show(p.bound)}")
        if p.gap is not None and p.incumbent is not None:
            parts.append(f"gap {p.gap * 100:.1f}%")
        parts.append(f"budget {p.spent * 100:.0f}%")
    return " · ".join(parts)


class PlanProgress:
    """A context manager around a command's steps; `step(text)` names the step, `update` is the
    planner's progress callback (`SolveOptions.progress`). Disabled, it does nothing at all."""

    def __init__(self, con: Console, *, enabled: bool, started: float | None = None) -> None:
        self.started = time.monotonic() if started is None else started
        self.current = "starting"
        self.last: Progress | None = None
        self.live = Live(self, console=con, transient=True, refresh_per_second=4) if enabled else None

    def __enter__(self) -> PlanProgress:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self.live is not None:
            self.live.stop()

    def step(self, text: str) -> None:
        self.current = text
        self.last = None

    def update(self, p: Progress) -> None:
        self.current = "solving"
        self.last = p

    def __rich__(self) -> RenderableType:
        elapsed = time.monotonic() - self.started
        if elapsed < DELAY_S:
            return Text("")
        spin = _SPIN[int(elapsed * 8) % len(_SPIN)]
        return Text(f"{spin} {describe(self.current, elapsed, self.last)}", style="dim", no_wrap=True, overflow="ellipsis")
