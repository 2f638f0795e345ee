"""Stops: `migbench stop`, signals, `--drain` and the stop's grace, on a journal and recorded
signals (no process)."""

from __future__ import annotations

import signal
import time
from contextlib import ExitStack
from pathlib import Path

from migbench.launch.children import Active, Children
from migbench.launch.stops import Stops
from tests.support.launchparts import journal


class _Recorded(Children):
    def __init__(self) -> None:
        super().__init__(lambda text: None, 0.1)
        self.sent: list[int] = []
        self.active["r"] = Active("r", 1, "i", Path("/nonexistent"), 0, None)

    def signal_all(self, sig: int) -> None:
        self.sent.append(sig)


def _stops(tmp_path, stack, *, drain=False, requested=0, grace_s=60.0):  # type: ignore[no-untyped-def]
    j = journal(tmp_path, stack)
    ch = _Recorded()
    return Stops(j, ch, lambda text: None, grace_s=grace_s, drain=drain, requested=lambda: requested), ch, j


def test_with_drain_a_first_signal_drains_a_second_stops_a_third_kills(tmp_path):
    with ExitStack() as stack:
        st, ch, j = _stops(tmp_path, stack, drain=True)
        st.signals.append(signal.SIGTERM)
        st.handle()
        assert st.draining and not st.stopping and st.any and ch.sent == [] and j.launcher_updates["state"] == "draining"
        st.signals.append(signal.SIGINT)
        st.handle()
        assert st.stopping and ch.sent == [signal.SIGTERM] and st.reason == "SIGINT: stopping"
        st.signals.append(signal.SIGINT)
        st.handle()
        assert st.killed and ch.sent == [signal.SIGTERM, signal.SIGKILL]


def test_the_sigterm_that_migbench_stop_sends_with_its_flag_is_the_same_request(tmp_path):
    with ExitStack() as stack:
        st, ch, j = _stops(tmp_path, stack, requested=1)
        st.signals.append(signal.SIGTERM)
        st.handle()
        assert st.stopping and not st.killed and ch.sent == [signal.SIGTERM] and st.reason == "`migbench stop`: stopping"


def test_what_still_runs_when_the_grace_is_over_is_killed(tmp_path):
    with ExitStack() as stack:
        st, ch, j = _stops(tmp_path, stack, grace_s=30.0)
        assert st.timeout(1.0) == 1.0
        st.begin_stop("stop")
        assert st.timeout(100.0) <= 30.0
        st.grace_over(time.monotonic())
        assert not st.killed
        st.grace_over(time.monotonic() + 31.0)
        assert st.killed and ch.sent == [signal.SIGTERM, signal.SIGKILL] and st.reason == "stop"
