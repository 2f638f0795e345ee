"""GPU models, their MIG profiles and legal placements, and every maximal layout.

Vocabulary (NVIDIA's): a GPU has `memory_slices` (8 on A100/H100/H200/B200, 4 on A30) and
`compute_slices` (7, or 4). A GPU-instance profile occupies a contiguous run of `memory_slices`
starting at one of its legal `starts`; `profile@start` (e.g. `3g.40gb@4`) names one placement.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from migbench.errors import BadValue, MigbenchError
from migbench.types import Layout, Placement, layout_key

DriverVersion = tuple[int, ...]


class _DriverPart(int):
    """One number of a driver version that prints as it was written: the `03` of `510.47.03` compares as
    3 but prints as `03`, so `".".join(map(str, version))` gives back `510.47.03` (not `510.47.3`) and a
    two-part version such as `570.169` stays two parts."""

    text: str

    def __new__(cls, text: str) -> _DriverPart:
        obj = super().__new__(cls, int(text))
        obj.text = text
        return obj

    def __str__(self) -> str:
        return self.text

    __repr__ = int.__repr__


def parse_driver(text: str | None) -> DriverVersion | None:
    """`"535.129.03"` -> (535, 129, 3) (each part printing as written: `03`); `"R525"`/`"525"` -> (525,);
    two-part versions such as `"570.169"` -> (570, 169). None stays None."""
    if text is None:
        return None
    t = str(text).strip().lstrip("rR")
    if not re.fullmatch(r"[0-9]{1,6}(\.[0-9]{1,6})*", t):
        raise BadValue(
            f"{text!r} is not a driver version (expected e.g. 535.129.03)",
            hint="write the driver version as nvidia-smi prints it, e.g. 535.129.03, or a branch such as R535",
        )
    return tuple(_DriverPart(p) for p in t.split("."))


def driver_str(v: DriverVersion | None) -> str:
    """A driver as people write it: `510.47.03`, `570.169`, `R525` for a bare branch."""
    if v is None:
        return "unknown"
    if len(v) == 1:
        return f"R{v[0]}"
    return ".".join(str(p) if isinstance(p, _DriverPart) else (f"{p:02d}" if i == 2 else str(p)) for i, p in enumerate(v))


@dataclass(frozen=True)
class Engines:
    sm: int | None = None
    ce: int | None = None
    dec: int | None = None
    enc: int | None = None
    jpeg: int | None = None
    ofa: int | None = None


@dataclass(frozen=True)
class Profile:
    """A GPU-instance profile as resolved for one driver.

    `id` is NVML's `nvmlGpuInstanceProfileInfo_t.id` (what nvidia-smi prints); it is per model:
    14 is 2g.10gb on an A100 but 1g.6gb on an A30. `memory_mib` is `memorySizeMB`; None when no
    source gives it (the planner then cannot use the profile without live NVML data).
    """

    name: str
    id: int
    compute_slices: int
    memory_slices: int
    max_count: int
    starts: tuple[int, ...]
    memory_mib: int | None
    media: bool = False
    engines: Engines = Engines()
    memory_source: str = ""
    unverified: tuple[str, ...] = ()
    since: DriverVersion | None = None
    variant: str = ""  # "" plain, or gfx / no_me / all_me (docs/mig-facts.md#rtx-pro-6000)
    placement_memory: tuple[tuple[int, int], ...] = ()  # (physical start, MiB) where one placement differs

    def placements(self) -> list[Placement]:
        return [Placement(self.name, s) for s in self.starts]

    @property
    def full_name(self) -> str:
        return f"MIG {self.name}"

    @property
    def plain(self) -> bool:
        """A profile a training run wants: no media extensions, no graphics or media variant."""
        return not self.media and not self.variant

    def memory_at(self, physical_start: int) -> int | None:
        """The memory a GPU instance of this profile reports at `physical_start` (docs/mig-facts.md#memory-by-driver:
        one capture shows two 3g.20gb instances of one A100 with different totals); the profile's own
        `memory_mib` everywhere else."""
        for start, mib in self.placement_memory:
            if start == physical_start:
                return mib
        return self.memory_mib


VARIANTS = ("gfx", "no_me", "all_me")


def variant_of(name: str) -> str:
    """The profile variant a name spells (docs/mig-facts.md#rtx-pro-6000, nvml.h `*_GFX`, `*_NO_ME`, `*_ALL_ME`):
    `1g.24gb+gfx` -> gfx, `1g.24gb-me` -> no_me, `1g.24gb+me.all` -> all_me, anything else -> ""."""
    if name.endswith("+gfx"):
        return "gfx"
    if name.endswith("-me"):
        return "no_me"
    if name.endswith("+me.all"):
        return "all_me"
    return ""


@dataclass(frozen=True)
class Rule:
    """A combination the driver refuses. `forbid_together`: these profiles together, before driver `before`
    (e.g. 4g+3g before R510). `all_me_excludes`: an instance of one of `profiles` (an `*_ALL_ME` profile) allows
    only `*_NO_ME` profiles beside it (nvml.h)."""

    profiles: tuple[str, ...]
    before: DriverVersion
    source: str = ""
    kind: str = "forbid_together"


@dataclass(frozen=True)
class GpuModel:
    """One GPU model's MIG geometry, resolved for one driver (or for the newest known one)."""

    key: str
    names: tuple[str, ...]
    architecture: str
    memory_slices: int
    compute_slices: int
    profiles: tuple[Profile, ...]
    pci_device_ids: tuple[int, ...] = ()
    driver: DriverVersion | None = None
    origin: str = "builtin"  # builtin | user | nvml
    sources: tuple[str, ...] = ()
    unverified: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()
    memory_total_mib: int | None = None

    # -- lookups -------------------------------------------------------------------------------
    def profile(self, name: str) -> Profile:
        n = name.strip()
        if n.upper().startswith("MIG "):
            n = n[4:].strip()
        for p in self.profiles:
            if p.name == n:
                return p
        if n.isdigit():
            return self.profile_by_id(int(n))
        known = ", ".join(p.name for p in self.profiles)
        raise MigbenchError(
            f"{self.key} has no MIG profile {name!r}",
            hint=f"its profiles are: {known}",
        )

    def has_profile(self, name: str) -> bool:
        return any(p.name == name for p in self.profiles)

    def profile_by_id(self, profile_id: int) -> Profile:
        for p in self.profiles:
            if p.id == profile_id:
                return p
        raise MigbenchError(f"{self.key} has no MIG profile with id {profile_id}")

    @property
    def display_name(self) -> str:
        return self.names[0] if self.names else self.key

    @property
    def mode_change_needs_reset(self) -> bool:
        """Ampere (A100, A30) needs a GPU reset to change MIG mode; Hopper and later do not."""
        return self.architecture == "ampere"

    @property
    def mode_persists_across_reboot(self) -> bool:
        """Ampere keeps the MIG mode bit in the InfoROM; Hopper+ loses it with the kernel module."""
        return self.architecture == "ampere"

    def plain_profiles(self) -> list[Profile]:
        """Profiles without media extensions (`+me`) or graphics/media variants: the ones a training run wants."""
        return [p for p in self.profiles if p.plain]

    def max_memory_mib(self) -> int:
        return max((p.memory_mib or 0) for p in self.profiles)

    # -- rules ---------------------------------------------------------------------------------
    def check(self, placements: Sequence[Placement]) -> list[str]:
        """Every reason the driver would refuse this set of GPU instances; [] when it is legal.

        The rules (docs/mig-facts.md#slot-model, #placements, #layouts): a legal start for the profile; no two
        instances share a memory slice; at most `max_count` instances per profile; total compute slices within
        the GPU's; at most one media-extension (`+me`) instance; driver-specific combination rules.
        """
        problems: list[str] = []
        used: dict[int, Placement] = {}
        counts: dict[str, int] = {}
        compute = 0
        media = 0
        for pl in placements:
            try:
                prof = self.profile(pl.profile)
            except MigbenchError as exc:
                problems.append(exc.message)
                continue
            if pl.start not in prof.starts:
                starts = ",".join(map(str, prof.starts))
                problems.append(f"{pl} is not a legal placement (starts for {prof.name}: {{{starts}}})")
                continue
            for s in range(pl.start, pl.start + prof.memory_slices):
                if s in used:
                    problems.append(f"{pl} overlaps {used[s]} on memory slice {s}")
                    break
                used[s] = pl
            counts[prof.name] = counts.get(prof.name, 0) + 1
            compute += prof.compute_slices
            media += 1 if prof.media else 0
        for name, n in sorted(counts.items()):
            prof = self.profile(name)
            if n > prof.max_count:
                problems.append(f"{n} x {name} exceeds its maximum of {prof.max_count} per GPU")
        if compute > self.compute_slices:
            problems.append(f"{compute} compute slices exceed the GPU's {self.compute_slices}")
        if media > 1:
            problems.append(f"{media} media-extension (+me) instances; at most one per GPU")
        for rule in self.rules:
            if rule.kind == "all_me_excludes":
                hit = [p for p in rule.profiles if counts.get(p)]
                others = [
                    pl.profile for pl in placements if pl.profile not in hit and self.has_profile(pl.profile) and self.profile(pl.profile).variant != "no_me"
                ]
                if hit and (others or sum(counts[p] for p in hit) > 1):
                    problems.append(f"{hit[0]} allows only -me profiles beside it (nvml.h *_ALL_ME)")
                continue
            if self.driver is not None and self.driver < rule.before and all(counts.get(p) for p in rule.profiles):
                problems.append(f"{' + '.join(rule.profiles)} together need driver {driver_str(rule.before)} or newer")
        return problems

    def is_legal(self, placements: Sequence[Placement]) -> bool:
        return not self.check(placements)

    # -- layouts -------------------------------------------------------------------------------
    def layouts(self, profiles: Sequence[str] | None = None, maximal: bool = True) -> list[Layout]:
        """Every legal layout (as sorted placement tuples) built from `profiles`.

        `profiles` defaults to the plain (non-`+me`) profiles. With `maximal`, only layouts to which
        no further instance of those profiles can be added. Deterministic order.
        """
        names = tuple(profiles) if profiles is not None else tuple(p.name for p in self.plain_profiles())
        return list(_enumerate_layouts(self, names, maximal))


@functools.lru_cache(maxsize=256)
def _enumerate_layouts(model: GpuModel, names: tuple[str, ...], maximal: bool) -> tuple[Layout, ...]:
    """The search behind `GpuModel.layouts`, once per (model, profiles): a model is a frozen value
    (its geometry, driver and rules), so its layouts never change; `catalog`, the planner, apply and
    the bench's re-plan step ask for them again and again (0.7 s of CPU per `migbench catalog`)."""
    cands: list[tuple[Placement, Profile]] = []
    for n in names:
        prof = model.profile(n)
        for s in prof.starts:
            cands.append((Placement(prof.name, s), prof))
    cands.sort(key=lambda c: (c[0].start, -c[1].memory_slices, c[0].profile))
    out: list[Layout] = []
    chosen: list[Placement] = []

    def can_add(pl: Placement) -> bool:
        return model.is_legal(chosen + [pl])

    def rec(i: int) -> None:
        # Record the current set (non-empty); recurse on later candidates only (combinations).
        if chosen:
            if not maximal or not any(can_add(c[0]) for c in cands if c[0] not in chosen):
                out.append(layout_key(chosen))
        for j in range(i, len(cands)):
            pl = cands[j][0]
            if can_add(pl):
                chosen.append(pl)
                rec(j + 1)
                chosen.pop()

    rec(0)
    out.sort(key=lambda lay: [(p.start, p.profile) for p in lay])
    return tuple(out)


def profile_order(p: Profile) -> tuple:
    """nvidia-smi's -lgip order: by compute slices, then memory slices, then profile id (plain before `+me` on
    every GPU seen; 14, 21, 47, 65, 67 = plain, +me, +gfx, +me.all, -me on RTX PRO 6000)."""
    return (p.compute_slices, p.memory_slices, p.id, p.name)


_PROFILE_NAME = re.compile(r"^([0-9]+)g\.([0-9]+)gb")


def compute_slices_of(name: str) -> int:
    m = _PROFILE_NAME.match(name)
    if not m:
        raise ValueError(f"{name!r} is not a MIG profile name (expected e.g. 3g.40gb)")
    return int(m.group(1))
