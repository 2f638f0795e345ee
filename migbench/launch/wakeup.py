"""How the launcher sleeps: `select` on a self-pipe that SIGCHLD, SIGINT and SIGTERM write to, so a
finishing shim or a Ctrl-C wakes it at once and an idle launcher costs nothing."""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable
from typing import Any


class Wakeup:
    """`install(on_stop)` routes SIGINT/SIGTERM to `on_stop(signum)` and wakes `sleep()` on them and
    on SIGCHLD; `restore()` puts the old handlers back. Outside the main thread it plainly polls."""

    def __init__(self) -> None:
        self._r: int | None = None
        self._w: int | None = None
        self._old_handlers: dict[int, Any] = {}
        self._old_wakeup: int | None = None

    def install(self, on_stop: Callable[[int], None]) -> None:
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        self._r, self._w = r, w
        try:
            self._old_wakeup = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        except ValueError:  # not the main thread: no signals, plain polling
            self._old_wakeup = None
            return
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old_handlers[s] = signal.signal(s, lambda signum, _frame: on_stop(signum))
        self._old_handlers[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, lambda *_: None)

    def restore(self) -> None:
        for s, h in self._old_handlers.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        self._old_handlers.clear()
        if self._old_wakeup is not None:
            signal.set_wakeup_fd(self._old_wakeup)
        for fd in (self._r, self._w):
            if fd is not None:
                os.close(fd)
        self._r = self._w = None

    def sleep(self, timeout: float) -> None:
        if self._r is None:
            time.sleep(max(0.0, timeout))
            return
        try:
            ready, _, _ = select.select([self._r], [], [], max(0.0, timeout))
        except InterruptedError:
            ready = []
        if ready:
            try:
                while os.read(self._r, 4096):
                    pass
            except BlockingIOError:
                pass
