"""Small value types with one canonical text form, shared by every package.

- `Placement`: one GPU instance position, `profile@start` (start in memory slices), e.g. `3g.40gb@4`;
- `Layout`: a GPU's placements in canonical order (by start, then profile);
- `InstanceRef`: one planned instance on one GPU, `<gpu>:<profile>@<start>`, e.g. `0:3g.40gb@4`;
- `Objective`, `ComputeBasis`: the closed sets of planner settings;
- `LaunchSettings`: the launcher's settings, as a sweep declares them and a plan carries them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


@dataclass(frozen=True, order=True)
class Placement:
    """One GPU instance position: `profile@start`, start in memory slices. Canonical text form."""

    profile: str
    start: int

    def __str__(self) -> str:
        return f"{self.profile}@{self.start}"

    @classmethod
    def parse(cls, text: str) -> Placement:
        m = re.fullmatch(r"\s*([0-9]+g\.[0-9]+gb(?:[+-][a-z.]+)?)\s*@\s*([0-9]+)\s*", text)
        if not m:
            raise ValueError(f"{text!r} is not a placement (expected profile@start, e.g. 3g.40gb@4)")
        return cls(m.group(1), int(m.group(2)))


Layout = tuple[Placement, ...]


def layout_key(placements: Iterable[Placement]) -> Layout:
    """Sort placements by start (then name) so a layout has one canonical order."""
    return tuple(sorted(placements, key=lambda p: (p.start, p.profile)))


@dataclass(frozen=True, order=True)
class InstanceRef:
    """One planned instance: a placement on one GPU. Its text form `<gpu>:<profile>@<start>` is the
    instance key used in plans, bindings, the launch state and the duration model's slots."""

    gpu: int
    placement: Placement

    def __str__(self) -> str:
        return f"{self.gpu}:{self.placement}"

    @property
    def key(self) -> str:
        return str(self)

    @classmethod
    def of(cls, gpu: int, profile: str, start: int) -> InstanceRef:
        return cls(int(gpu), Placement(profile, int(start)))

    @classmethod
    def parse(cls, text: str) -> InstanceRef:
        gpu, sep, rest = text.partition(":")
        if not sep or not gpu.strip().isdigit():
            raise ValueError(f"{text!r} is not an instance (expected gpu:profile@start, e.g. 0:3g.40gb@4)")
        return cls(int(gpu), Placement.parse(rest))


class Objective(str, Enum):
    """What the planner optimises: `auto` picks makespan when every run has a duration."""

    AUTO = "auto"
    THROUGHPUT = "throughput"
    MAKESPAN = "makespan"

    def __str__(self) -> str:
        return self.value


class ComputeBasis(str, Enum):
    """How an instance's share of the GPU's compute is measured (see `migbench.duration`)."""

    SM = "sm"
    SLICES = "slices"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class LaunchSettings:
    """Launcher settings: retries per run, backoff and stop grace in seconds, the flapping guard
    (stop launching after `flapping_max` failures within `flapping_window_s` seconds), environment
    added to every run, and the log directory (relative to the plan file unless absolute)."""

    retries: int = 2
    backoff_s: float = 30.0
    stop_grace_s: float = 30.0
    flapping_window_s: float = 60.0
    flapping_max: int = 3
    env: dict[str, str] = field(default_factory=dict)
    log_dir: str = "runs"

    def to_dict(self) -> dict[str, Any]:
        return {
            "retries": self.retries,
            "backoff_s": self.backoff_s,
            "stop_grace_s": self.stop_grace_s,
            "flapping_window_s": self.flapping_window_s,
            "flapping_max": self.flapping_max,
            "env": dict(self.env),
            "log_dir": self.log_dir,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any] | None) -> LaunchSettings:
        """From a plan file's `launch:`; missing keys take the defaults. Raises ValueError naming the
        key whose value has the wrong type."""
        doc = doc or {}
        d = cls()

        def num(key: str, default: float, kind: type = float) -> Any:
            v = doc.get(key, default)
            if v is None:
                return default
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"`launch.{key}` must be a number, not {v!r}")
            if v < 0:
                raise ValueError(f"`launch.{key}` must be >= 0, not {v!r}")
            return kind(v)

        env = doc.get("env") or {}
        if not isinstance(env, dict):
            raise ValueError(f"`launch.env` must be a mapping, not {type(env).__name__}")
        log_dir = doc.get("log_dir", d.log_dir)
        if not isinstance(log_dir, str) or not log_dir:
            raise ValueError(f"`launch.log_dir` must be a non-empty string, not {log_dir!r}")
        return cls(
            retries=num("retries", d.retries, int),
            backoff_s=num("backoff_s", d.backoff_s),
            stop_grace_s=num("stop_grace_s", d.stop_grace_s),
            flapping_window_s=num("flapping_window_s", d.flapping_window_s),
            flapping_max=num("flapping_max", d.flapping_max, int),
            env={str(k): str(v) for k, v in env.items()},
            log_dir=log_dir,
        )
