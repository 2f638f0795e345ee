"""Quantities with units: memory in MiB, durations in seconds. Parsing is strict and exact.

`2.5GiB`, `2560MiB`, `3GB` (decimal gigabytes), `512M`... and `8h`, `90m`, `1h30m`, `45s`, `2d`.
Memory is always rounded *up* to a whole MiB, so a plan never under-counts a footprint.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation

_MEMORY_UNITS = {
    "b": Decimal(1),
    "kib": Decimal(1024),
    "mib": Decimal(1024**2),
    "gib": Decimal(1024**3),
    "tib": Decimal(1024**4),
    "kb": Decimal(10**3),
    "mb": Decimal(10**6),
    "gb": Decimal(10**9),
    "tb": Decimal(10**12),
    "k": Decimal(1024),
    "m": Decimal(1024**2),
    "g": Decimal(1024**3),
    "t": Decimal(1024**4),
}
_MEMORY_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*([a-zA-Z]+)\s*$")

_DURATION_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(d|h|hr|min|m|sec|s)", re.IGNORECASE)


def _any_case(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)


def _alternatives(words: Iterable[str]) -> str:
    return "(?:" + "|".join(_any_case(w) for w in sorted(words, key=lambda w: (-len(w), w))) + ")"


MEMORY_PATTERN = r"^\s*(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*" + _alternatives(_MEMORY_UNITS) + r"\s*$"
"""What `parse_memory_mib` reads, as a JSON Schema (ECMA-262) pattern."""
DURATION_PATTERN = r"^ *(?:[0-9]+(?:\.[0-9]+)? *" + _alternatives(_DURATION_UNITS) + " *)+$"
"""What `parse_duration_s` reads from a string, as a JSON Schema (ECMA-262) pattern."""
ZERO_DURATION_PATTERN = r"^ *(?:0+(?:\.0+)? *" + _alternatives(_DURATION_UNITS) + " *)+$"
"""A duration string whose every part is zero (`0s`, `0h 0m`): `parse_duration_s` refuses it."""

MEMORY_HINT = "write a number with a unit, e.g. 2560MiB, 2.5GiB or 3GB (GB = 10^9 bytes, GiB = 2^30)"
DURATION_HINT = "write a duration such as 8h, 90m, 1h30m, 45s or 2d"


def parse_memory_mib(text: object) -> int:
    """Parse a memory quantity into MiB (rounded up). Raises ValueError with a readable reason."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"expected a memory quantity, got {type(text).__name__}")
    if isinstance(text, (int, float)):
        raise ValueError(f"{text!r} has no unit")
    m = _MEMORY_RE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a memory quantity")
    number, unit = m.group(1), m.group(2).lower()
    if unit not in _MEMORY_UNITS:
        raise ValueError(f"unknown memory unit {m.group(2)!r} in {text!r}")
    try:
        value = Decimal(number) * _MEMORY_UNITS[unit]
    except InvalidOperation as exc:  # pragma: no cover - the regex only lets numbers through
        raise ValueError(f"{text!r} is not a number") from exc
    if value <= 0:
        raise ValueError(f"{text!r} must be more than zero")
    return int(math.ceil(value / Decimal(1024**2)))


def parse_duration_s(text: object) -> float:
    """Parse a duration into seconds. A bare number is seconds."""
    if isinstance(text, bool):
        raise ValueError("expected a duration, got a boolean")
    if isinstance(text, (int, float)):
        if text <= 0:
            raise ValueError(f"{text!r} must be more than zero")
        return float(text)
    if not isinstance(text, str):
        raise ValueError(f"expected a duration, got {type(text).__name__}")
    s = text.strip().replace(" ", "")
    if not s:
        raise ValueError("empty duration")
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            raise ValueError(f"{text!r} is not a duration")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]
        pos = m.end()
    if pos != len(s):
        raise ValueError(f"{text!r} is not a duration")
    if total <= 0:
        raise ValueError(f"{text!r} must be more than zero")
    return total


def format_mib(mib: float) -> str:
    """Human form of a MiB amount: `2.50 GiB` from 2560, `512 MiB` below 1 GiB."""
    if mib >= 1024:
        return f"{mib / 1024:.2f} GiB"
    return f"{mib:.0f} MiB"


def format_duration(seconds: float) -> str:
    """`8h`, `1h30m`, `45s`, `2d3h`; rounded to the second."""
    s = int(round(seconds))
    if s <= 0:
        return "0s"
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    out = ""
    if days:
        out += f"{days}d"
    if hours:
        out += f"{hours}h"
    if minutes:
        out += f"{minutes}m"
    if secs and not days:
        out += f"{secs}s"
    return out or "0s"
