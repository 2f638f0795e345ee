"""Small value types with one canonical text form, shared by every package.

- `Placement`: one GPU instance position, `profile@start` (start in memory slices), e.g. `3g.40gb@4`;
- `Layout`: a GPU's placements in canonical order (by start, then profile);
- `InstanceRef`: one planned instance on one GPU, `<gpu>:<profile>@<start>`, e.g. `0:3g.40gb@4`;
- `Objective`, `ComputeBasis`: the closed sets of planner settings;
- `LaunchSettings`: the launcher's settings, as a sweep declares them and a plan carries them;
- the checks of names and paths that any file may carry (`SAFE_NAME_RE`, `log_dir_problem`,
  `parse_state_mode`), shared by the sweep and plan loaders.
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


SAFE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
"""A name that becomes a file or directory name (sweep names, run ids): never `..`, `/` or hidden."""

ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ENV_PATTERN_RE = re.compile(r"[A-Za-z0-9_*?\[\]!]+")
"""An `env_passthrough` entry: a variable name or a shell-style pattern (`LC_*`)."""

STATE_MODE_ENV = "MIGBENCH_STATE_MODE"


def log_dir_problem(log_dir: str) -> str | None:
    """Why `log_dir` cannot hold the state (None when it can): empty, or a relative path that
    climbs out of the plan's directory with `..`. An absolute path is the user's explicit choice."""
    if not log_dir.strip():
        return "`launch.log_dir` is empty"
    if "\0" in log_dir:
        return "`launch.log_dir` contains a NUL byte"
    if not log_dir.startswith("/") and ".." in log_dir.replace("\\", "/").split("/"):
        return f"`launch.log_dir` {log_dir!r} climbs out of the plan's directory ('..'); give a path below it, or an absolute one"
    return None


def parse_state_mode(value: Any) -> int:
    """A state file mode from YAML (`0640` reads as the integer 416) or text (`"0640"`, `"640"`,
    `"0o640"`). Raises ValueError unless the owner can read and write and others cannot write."""
    bad = f"a file mode is an octal number such as 0600 or 0640, not {value!r}"
    if isinstance(value, bool):
        raise ValueError(bad)
    if isinstance(value, int):
        mode = value
    elif isinstance(value, str):
        text = value.strip().lower().removeprefix("0o")
        if not text or len(text) > 4 or any(c not in "01234567" for c in text):
            raise ValueError(bad)
        mode = int(text, 8)
    else:
        raise ValueError(bad)
    if mode < 0 or mode & ~0o777:
        raise ValueError(f"file mode {value!r} has bits beyond 0777")
    mode &= 0o666  # files never get execute bits; directories get them from the read bits
    if mode & 0o600 != 0o600:
        raise ValueError(f"file mode {mode:04o} must let the owner read and write (0600 at least)")
    if mode & 0o002:
        raise ValueError(f"file mode {mode:04o} is world-writable: refused for state that holds the sweep's env values")
    return mode


@dataclass(frozen=True)
class LaunchSettings:
    """Launcher settings: retries per run, backoff and stop grace in seconds, the flapping guard
    (stop launching after `flapping_max` failures within `flapping_window_s` seconds), environment
    added to every run, the log directory (relative to the plan file unless absolute), the
    variables of the launcher's environment a run may see (`env_passthrough`; None: all of them)
    and the mode of state files (`state_mode`; None: 0600)."""

    retries: int = 2
    backoff_s: float = 30.0
    stop_grace_s: float = 30.0
    flapping_window_s: float = 60.0
    flapping_max: int = 3
    env: dict[str, str] = field(default_factory=dict)
    log_dir: str = "runs"
    env_passthrough: tuple[str, ...] | None = None
    state_mode: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "retries": self.retries,
            "backoff_s": self.backoff_s,
            "stop_grace_s": self.stop_grace_s,
            "flapping_window_s": self.flapping_window_s,
            "flapping_max": self.flapping_max,
            "env": dict(self.env),
            "log_dir": self.log_dir,
        }
        if self.env_passthrough is not None:
            out["env_passthrough"] = list(self.env_passthrough)
        if self.state_mode is not None:
            out["state_mode"] = f"{self.state_mode:04o}"
        return out

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any] | None) -> LaunchSettings:
        """From a plan file's `launch:`; missing keys take the defaults. Raises ValueError naming the
        key whose value is wrong."""
        doc = doc or {}
        if not isinstance(doc, Mapping):
            raise ValueError(f"`launch` must be a mapping, not {type(doc).__name__}")
        d = cls()

        def num(key: str, default: float, kind: type = float) -> Any:
            v = doc.get(key, default)
            if v is None:
                return default
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
                raise ValueError(f"`launch.{key}` must be a number, not {v!r}")
            if v < 0:
                raise ValueError(f"`launch.{key}` must be >= 0, not {v!r}")
            return kind(v)

        env = doc.get("env") or {}
        if not isinstance(env, dict):
            raise ValueError(f"`launch.env` must be a mapping, not {type(env).__name__}")
        bad = [k for k in env if not isinstance(k, str) or not ENV_NAME_RE.fullmatch(k)]
        if bad:
            raise ValueError(f"`launch.env` has names that are not environment variable names: {bad[:3]!r}")
        log_dir = doc.get("log_dir", d.log_dir)
        if not isinstance(log_dir, str) or not log_dir:
            raise ValueError(f"`launch.log_dir` must be a non-empty string, not {log_dir!r}")
        if (why := log_dir_problem(log_dir)) is not None:
            raise ValueError(why)
        passthrough = doc.get("env_passthrough")
        if passthrough is not None:
            if not isinstance(passthrough, list) or not all(isinstance(p, str) and ENV_PATTERN_RE.fullmatch(p) for p in passthrough):
                raise ValueError(f"`launch.env_passthrough` must be a list of variable names or patterns such as LC_*, not {passthrough!r}")
            passthrough = tuple(passthrough)
        mode = doc.get("state_mode")
        return cls(
            retries=num("retries", d.retries, int),
            backoff_s=num("backoff_s", d.backoff_s),
            stop_grace_s=num("stop_grace_s", d.stop_grace_s),
            flapping_window_s=num("flapping_window_s", d.flapping_window_s),
            flapping_max=num("flapping_max", d.flapping_max, int),
            env={str(k): str(v) for k, v in env.items()},
            log_dir=log_dir,
            env_passthrough=passthrough,
            state_mode=None if mode is None else _mode_of(mode),
        )


def _mode_of(value: Any) -> int:
    try:
        return parse_state_mode(value)
    except ValueError as exc:
        raise ValueError(f"`launch.state_mode`: {exc}") from None
