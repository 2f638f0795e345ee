"""Peak-memory sampling: NVML read in a background thread, so a slow read never delays a start.

Every `interval_s` (stretched so that reading takes at most `max_share` of the thread's time: the
simulated driver's NVML is far slower than the real one) the sampler reads the host through
`migbench.backend.select.reader()` and keeps the newest sample: for each MIG device uuid, the
(PID, used MiB) of its processes. The supervisor applies a sample to the runs active at that time.
"""

from __future__ import annotations

import threading
import time
from typing import Any

Sample = dict[str, tuple[tuple[int, int], ...]]


class MemorySampler:
    """A daemon thread reading NVML while `wanted` is true. `take()` returns a new sample once."""

    def __init__(self, interval_s: float, *, max_share: float = 0.1):
        self.interval_s = interval_s
        self.max_share = max_share
        self.wanted = False
        self.error: str | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sample: Sample | None = None
        self._thread = threading.Thread(target=self._run, name="migbench-memory", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30.0)

    def take(self) -> Sample | None:
        with self._lock:
            s, self._sample = self._sample, None
        return s

    def _run(self) -> None:
        reader: Any = None
        try:
            while not self._stop.is_set():
                if not self.wanted:
                    self._stop.wait(min(self.interval_s, 0.5))
                    continue
                t0 = time.monotonic()
                try:
                    if reader is None:
                        from migbench.backend.select import reader as make_reader

                        reader = make_reader()
                    host = reader.read()
                except Exception as exc:  # noqa: BLE001 - monitoring must never stop the runs
                    self.error = str(exc)
                    self._stop.wait(max(30.0, self.interval_s))
                    continue
                sample = {d.uuid: tuple((int(p.pid), int(p.used_memory_mib or 0)) for p in d.processes) for g in host.gpus for d in g.devices}
                with self._lock:
                    self._sample = sample
                cost = time.monotonic() - t0
                self._stop.wait(max(self.interval_s, cost / self.max_share))
        finally:
            if reader is not None:
                try:
                    reader.close()
                except Exception:  # noqa: BLE001 - closing NVML is best effort
                    pass
