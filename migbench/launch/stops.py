"""Stop requests to a launcher and its staged shutdown.

`migbench stop` sets a flag in the launcher's row (1: stop, 2: `--now`), then sends SIGTERM; the
flag is read first, so that SIGTERM counts as the same request. A first SIGINT/SIGTERM stops (with
`--drain`: drains, i.e. starts nothing more and lets running runs finish; a second one stops); a
stop sends SIGTERM to every run and SIGKILL after the plan's `stop_grace`; another signal, or
`stop --now`, kills every run at once. The launch then ends with exit code 130.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

from migbench.launch.children import Children
from migbench.launch.journal import Journal


class Stops:
    """A launcher's stop state: `draining`, `stopping` (with `deadline`, monotonic s), `killed`,
    and `reason` (the first request's). `requested` reads `migbench stop`'s flag."""

    def __init__(self, journal: Journal, children: Children, say: Callable[[str], None], *, grace_s: float, drain: bool, requested: Callable[[], int]):
        self.journal = journal
        self.children = children
        self.say = say
        self.grace_s = grace_s
        self.drain = drain
        self.requested = requested
        self.draining = False
        self.stopping = False
        self.killed = False
        self.reason: str | None = None
        self.deadline: float | None = None
        self.signals: list[int] = []  # received, not handled yet (the wake-up's handler appends)
        self.signal_count = 0

    @property
    def any(self) -> bool:
        """Draining or stopping: no run starts any more, and the launch ends interrupted."""
        return self.stopping or self.draining

    def handle(self) -> None:
        """`migbench stop`'s flag, then the signals received since the last call."""
        req = self.requested()
        if req >= 2 and not self.killed:
            self.kill_now("`migbench stop --now`: killing every run now")
        elif req == 1 and not self.stopping:
            self.begin_stop("`migbench stop`: stopping")
        while self.signals:
            signum = self.signals.pop(0)
            self.signal_count += 1
            name = signal.Signals(signum).name
            n = self.signal_count
            if req and n == 1:
                continue  # the SIGTERM of `migbench stop`
            if self.drain and n == 1:
                self.begin_drain(f"{name}: draining (no new runs; running runs finish)")
            elif (self.drain and n == 2) or (not self.drain and n == 1):
                self.begin_stop(f"{name}: stopping")
            else:
                self.kill_now(f"second {name}: killing every run now")

    def begin_drain(self, reason: str) -> None:
        if self.draining or self.stopping:
            return
        self.draining = True
        self.reason = reason
        self.journal.update(state="draining", stop_reason=reason)
        self.say(f"{reason}; {len(self.children.active)} running (signal again to stop them)")

    def begin_stop(self, reason: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.reason = reason
        self.deadline = time.monotonic() + self.grace_s
        self.journal.update(state="stopping", stop_reason=reason)
        self.say(f"{reason}: SIGTERM to {len(self.children.active)} run(s), SIGKILL after {self.grace_s:g} s (signal again to kill now)")
        self.children.signal_all(signal.SIGTERM)

    def kill_now(self, reason: str) -> None:
        self.stopping = True
        self.killed = True
        self.reason = self.reason or reason
        self.journal.update(state="stopping", stop_reason=self.reason)
        if self.children.active:
            self.say(f"{reason}: SIGKILL to {len(self.children.active)} run(s)")
        self.children.signal_all(signal.SIGKILL)

    def grace_over(self, mono: float) -> None:
        """SIGKILL to what still runs once the stop's grace is over."""
        if self.stopping and not self.killed and self.deadline is not None and mono >= self.deadline and self.children.active:
            self.kill_now(f"stop grace of {self.grace_s:g} s over")

    def timeout(self, timeout: float) -> float:
        """`timeout` (s), shortened to wake up when the stop's grace ends."""
        if self.stopping and not self.killed and self.deadline is not None:
            return min(timeout, max(0.0, self.deadline - time.monotonic()))
        return timeout
