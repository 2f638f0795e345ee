"""Small value types with one canonical text form, shared by every package.

- `Placement`: one GPU instance position, `profile@start` (start in memory slices), e.g. `3g.40gb@4`;
- `Layout`: a GPU's placements in canonical order (by start, then profile);
- `InstanceRef`: one planned instance on one GPU, `<gpu>:<profile>@<start>`, e.g. `0:3g.40gb@4`;
- `Objective`: what the planner optimises (light enough for the CLI to parse options with it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

PROFILE_NAME = re.compile(r"[0-9]+g\.[0-9]+gb(?:[+-][a-z.]+)?")
"""A MIG profile's name as plans, instances and the catalogue write it: `3g.40gb`, with a variant's
suffix where there is one (`1g.10gb+me`, `1g.24gb+gfx`, `1g.24gb-me`, `1g.24gb+me.all`)."""


@dataclass(frozen=True, order=True)
class Placement:
    """One GPU instance position: `profile@start`, start in memory slices. Canonical text form."""

    profile: str
    start: int

    def __str__(self) -> str:
        return f"{self.profile}@{self.start}"

    @classmethod
    def parse(cls, text: str) -> Placement:
        m = re.fullmatch(rf"\s*({PROFILE_NAME.pattern})\s*@\s*([0-9]+)\s*", text)
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
