"""A named pipe planted where migbench reads a file: a writer that lets a wrongly blocked reader go."""

from __future__ import annotations

import os
import threading
from pathlib import Path


class Unblock:
    """Opens the FIFO at `path` for writing whenever a reader waits on it (then closes it: EOF), so
    that a command that wrongly blocks in open() returns and the test fails instead of hanging.
    `writers`: opens it for reading instead, for a command that wrongly waits to write to it (its
    write then fails: the pipe has no reader). `data`: what each writer writes before it closes (a
    reader that wrongly reads the pipe gets it)."""

    def __init__(self, path: Path, *, writers: bool = False, data: bytes = b""):
        self.path, self.stop, self.data = path, threading.Event(), data
        self.flags = os.O_RDONLY | os.O_NONBLOCK if writers else os.O_WRONLY | os.O_NONBLOCK
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                fd = os.open(self.path, self.flags)
                try:
                    if self.data:
                        os.write(fd, self.data)
                finally:
                    os.close(fd)
            except OSError:  # ENXIO: no reader waits (a reader's open never fails so)
                pass
            self.stop.wait(0.01)

    def __enter__(self) -> Unblock:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
