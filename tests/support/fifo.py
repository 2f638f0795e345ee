"""A named pipe planted where migbench reads a file: a writer that lets a wrongly blocked reader go."""

from __future__ import annotations

import os
import threading
from pathlib import Path


class Unblock:
    """Opens the FIFO at `path` for writing whenever a reader waits on it (then closes it: EOF), so
    that a command that wrongly blocks in open() returns and the test fails instead of hanging."""

    def __init__(self, path: Path):
        self.path, self.stop = path, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # ENXIO: no reader waits
                pass
            self.stop.wait(0.01)

    def __enter__(self) -> Unblock:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
