"""A real headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
JSON messages separated by NUL bytes on file descriptors 3 and 4), with nothing but the standard
library: open a page, collect its console messages, exceptions and every request it makes,
evaluate JavaScript in it, and take a screenshot.

Debian's `chromium` (installed by `.ci/install-chromium`); `find_chromium()` is None where it is
missing, and the tests skip with that reason.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--mute-audio",
    "--hide-scrollbars",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageVisit:
    """What a page did while it loaded: console messages, uncaught exceptions, requests, load time."""

    console: list[dict[str, Any]] = field(default_factory=list)  # {"level", "text"}
    exceptions: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # URLs
    load_s: float = 0.0

    @property
    def errors(self) -> list[str]:
        return [m["text"] for m in self.console if m["level"] in ("error", "assert")] + self.exceptions


class Browser:
    """`with Browser() as b: visit = b.open(path); b.evaluate(js); b.screenshot(png)`."""

    def __init__(self, width: int = 1280, height: int = 900, timeout_s: float = 60.0):
        exe = find_chromium()
        if exe is None:
            raise RuntimeError("chromium is not installed (.ci/install-chromium installs Debian's)")
        self.timeout_s = timeout_s
        self.profile = tempfile.mkdtemp(prefix="migbench-chromium-")
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()

        def child_fds() -> None:
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.proc = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "--remote-debugging-pipe", "about:blank"],
            pass_fds=(3, 4),
            preexec_fn=child_fds,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=True)
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)

    # -- the protocol ------------------------------------------------------------------------------
    def _recv(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._r, 1 << 16)
            if not chunk:
                raise EOFError("chromium closed the pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: dict[str, Any] | None = None, *, session: bool = False) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout_s
        while True:
            m = self._recv(deadline)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout_s
        for k, m in enumerate(self.events):
            if m.get("method") == method:
                return self.events.pop(k)
        while True:
            m = self._recv(deadline)
            if m.get("method") == method:
                return m
            self.events.append(m)

    # -- what a person does ----------------------------------------------------------------------
    def open(self, path: str | Path) -> PageVisit:
        """Load a file and wait for its load event; report what it logged and requested."""
        self.events.clear()
        t0 = time.monotonic()
        self.call("Page.navigate", {"url": Path(path).resolve().as_uri()}, session=True)
        self.wait_event("Page.loadEventFired")
        visit = PageVisit(load_s=time.monotonic() - t0)
        self.evaluate("1")  # flush the events queued before the load event
        for m in self.events:
            p = m.get("params", {})
            if m.get("method") == "Runtime.consoleAPICalled":
                visit.console.append({"level": p.get("type"), "text": " ".join(str(a.get("value", a.get("description"))) for a in p.get("args", []))})
            elif m.get("method") == "Log.entryAdded":
                e = p.get("entry", {})
                visit.console.append({"level": e.get("level"), "text": e.get("text", "")})
            elif m.get("method") == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                visit.exceptions.append(str(d.get("exception", {}).get("description") or d.get("text")))
            elif m.get("method") == "Network.requestWillBeSent":
                visit.requests.append(p.get("request", {}).get("url", ""))
        return visit

    def evaluate(self, expression: str) -> Any:
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}, session=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r.get("result", {}).get("value")

    def screenshot(self, out: str | Path, *, full_page: bool = False, clip: tuple[int, int, int, int] | None = None) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page or clip:
            w, h = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            x, y, cw, ch = clip or (0, 0, w, h)
            params.update(clip={"x": x, "y": y, "width": cw, "height": ch, "scale": 1}, captureBeyondViewport=True)
        data = self.call("Page.captureScreenshot", params, session=True)["data"]
        p = Path(out)
        p.write_bytes(base64.b64decode(data))
        return p

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (OSError, RuntimeError, TimeoutError, EOFError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
