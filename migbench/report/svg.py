"""SVG written by hand: escaping, elements, time and value axes, step paths, and a tiny PNG encoder
for the heat map at scale.

Why by hand rather than matplotlib: the report needs rectangles, lines and text with data
attributes on each bar (so a browser test, or a person's click, can find a run's bars), tooltips
(`<title>`), and to stay small at 10,000 runs; matplotlib would add a ~40 MB dependency with its
own fonts and backend, and its SVG carries neither per-bar data nor hover titles without writing
the same element code anyway.
"""

from __future__ import annotations

import base64
import math
import struct
import zlib
from collections.abc import Iterable, Sequence
from html import escape


def esc(text: object) -> str:
    return escape(str(text), quote=True)


def attrs(**kw: object) -> str:
    """` k="v"` pairs; `class_` -> class, `data_run` -> data-run; None values are left out."""
    out = []
    for k, v in kw.items():
        if v is None:
            continue
        name = k.rstrip("_").replace("_", "-")
        if isinstance(v, float):
            v = f"{v:.2f}".rstrip("0").rstrip(".")
        out.append(f' {name}="{esc(v)}"')
    return "".join(out)


def rect(x: float, y: float, w: float, h: float, *, title: str | None = None, **kw: object) -> str:
    a = attrs(x=x, y=y, width=max(w, 0.0), height=h, **kw)
    if title:
        return f"<rect{a}><title>{esc(title)}</title></rect>"
    return f"<rect{a}/>"


def text(x: float, y: float, body: str, **kw: object) -> str:
    return f"<text{attrs(x=x, y=y, **kw)}>{esc(body)}</text>"


def line(x1: float, y1: float, x2: float, y2: float, **kw: object) -> str:
    return f"<line{attrs(x1=x1, y1=y1, x2=x2, y2=y2, **kw)}/>"


def svg(width: float, height: float, body: Iterable[str], *, label: str, **kw: object) -> str:
    a = attrs(viewBox=f"0 0 {width:.0f} {height:.0f}", width=f"{width:.0f}", height=f"{height:.0f}", role="img", **kw)
    return f'<svg{a} aria-label="{esc(label)}">' + "".join(body) + "</svg>"


def nice_step(span: float, target: int = 8) -> float:
    """A round tick step (1, 2, 5 x 10^k) giving about `target` ticks over `span`."""
    if span <= 0:
        return 1.0
    raw = span / target
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


_TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800]


def time_step(span: float, target: int = 8) -> float:
    for s in _TIME_STEPS:
        if span / s <= target:
            return float(s)
    return nice_step(span, target)


def fmt_t(seconds: float) -> str:
    """A time axis label: 45s, 12m, 3h, 2d4h."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        m, r = divmod(s, 60)
        return f"{m}m" + (f"{r}s" if r else "")
    if s < 86400:
        h, r = divmod(s, 3600)
        return f"{h}h" + (f"{r // 60}m" if r // 60 else "")
    d, r = divmod(s, 86400)
    return f"{d}d" + (f"{r // 3600}h" if r // 3600 else "")


def time_axis(x0: float, width: float, horizon: float, y: float, height: float, *, below: bool = False) -> list[str]:
    """Vertical grid lines and labels (above the lines, or `below` them) for a time axis from 0 to
    `horizon` seconds."""
    step = time_step(horizon)
    out = []
    t = 0.0
    while t <= horizon + 1e-9:
        x = x0 + width * t / horizon
        out.append(line(x, y, x, y + height, class_="grid"))
        out.append(text(x, y + height + 12 if below else y - 3, fmt_t(t), class_="tick", text_anchor="middle"))
        t += step
    return out


def value_ticks(top: float, target: int = 4) -> list[float]:
    """Round ticks from 0 up to the first at or above `top`."""
    if top <= 0:
        return [0.0, 1.0]
    step = nice_step(top, target)
    n = int(math.ceil(top / step - 1e-9))
    return [i * step for i in range(n + 1)]


def step_path(points: Sequence[tuple[float, float]], horizon: float, fx: float, fy: float, x0: float, y0: float, columns: int | None = None) -> str:
    """An SVG path `d` for a step function (t, v from t on) over [0, horizon], x = x0 + fx t,
    y = y0 - fy v. With `columns`, at most that many steps: each column shows the most its
    span reaches (peaks survive the thinning)."""
    if not points:
        return ""
    pts = list(points)
    if columns and len(pts) > columns:
        pts = _thin(pts, horizon, columns)
    d = [f"M{x0:.1f},{y0 - fy * _value_at(pts, 0.0):.1f}"]
    for t, v in pts:
        d.append(f"H{x0 + fx * min(t, horizon):.1f}V{y0 - fy * v:.1f}")
    d.append(f"H{x0 + fx * horizon:.1f}")
    return "".join(d)


def _value_at(pts: Sequence[tuple[float, float]], t: float) -> float:
    v = 0.0
    for tt, vv in pts:
        if tt > t:
            break
        v = vv
    return v


def _thin(pts: Sequence[tuple[float, float]], horizon: float, columns: int) -> list[tuple[float, float]]:
    width = horizon / columns if horizon > 0 else 1.0
    out: list[tuple[float, float]] = []
    i = 0
    cur = 0.0
    for c in range(columns):
        lo, hi = c * width, (c + 1) * width
        top = cur
        while i < len(pts) and pts[i][0] < hi:
            cur = pts[i][1]
            top = max(top, cur)
            i += 1
        out.append((lo, top))
    return out


def sample(points: Sequence[tuple[float, float]] | None, t: float) -> float | None:
    return None if points is None else _value_at(points, t)


# ---------------------------------------------------------------------------------------------
# PNG (for the heat map at scale: one pixel per GPU row and time bin)
# ---------------------------------------------------------------------------------------------


def png_rgb(rows: Sequence[Sequence[tuple[int, int, int]]]) -> bytes:
    """An 8-bit RGB PNG of `rows` (each a list of (r, g, b))."""
    h = len(rows)
    w = len(rows[0]) if rows else 0
    raw = b"".join(b"\x00" + bytes(c for px in row for c in px) for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def data_uri_png(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def ramp(value: float) -> tuple[int, int, int]:
    """0 -> near white, 1 -> the report's running blue."""
    v = min(1.0, max(0.0, value))
    lo, hi = (247, 251, 255), (8, 81, 156)
    return tuple(round(a + (b - a) * v) for a, b in zip(lo, hi))  # type: ignore[return-value]
