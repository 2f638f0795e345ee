"""GPU models, their MIG profiles and legal placements; every maximal layout; import from nvidia-smi text.

The built-in data lives in `migbench/data/catalog.yaml` (sourced, with unverified values marked). A
user catalogue (`$MIGBENCH_CATALOG`, default `~/.config/migbench/catalog.yaml`, same format) adds
models taught with `migbench catalog import`. When NVML is reachable, `migbench.backend` builds a
`GpuModel` from the live profile table instead (`GpuModel.from_live`), so a driver's real memory
sizes and placements always win over this file.

Vocabulary (NVIDIA's): a GPU has `memory_slices` (8 on A100/H100/H200/B200, 4 on A30) and
`compute_slices` (7, or 4). A GPU-instance profile occupies a contiguous run of `memory_slices`
starting at one of its legal `starts`; `profile@start` (e.g. `3g.40gb@4`) names one placement.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from migbench.errors import InputError, MigbenchError, Problem

DriverVersion = tuple[int, ...]


def parse_driver(text: str | None) -> DriverVersion | None:
    """`"535.129.03"` -> (535, 129, 3); `"R525"`/`"525"` -> (525,). None stays None."""
    if text is None:
        return None
    t = str(text).strip().lstrip("rR")
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", t):
        raise ValueError(f"{text!r} is not a driver version (expected e.g. 535.129.03)")
    return tuple(int(p) for p in t.split("."))


def driver_str(v: DriverVersion | None) -> str:
    if v is None:
        return "unknown"
    if len(v) == 1:
        return f"R{v[0]}"
    return ".".join(f"{p:02d}" if i == 2 else str(p) for i, p in enumerate(v))


# ---------------------------------------------------------------------------------------------
# Value types
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Placement:
    """One GPU instance position: `profile@start`, start in memory slices. Canonical text form."""

    profile: str
    start: int

    def __str__(self) -> str:
        return f"{self.profile}@{self.start}"

    @classmethod
    def parse(cls, text: str) -> "Placement":
        m = re.fullmatch(r"\s*([0-9]+g\.[0-9]+gb(?:[+-][a-z.]+)?)\s*@\s*([0-9]+)\s*", text)
        if not m:
            raise ValueError(f"{text!r} is not a placement (expected profile@start, e.g. 3g.40gb@4)")
        return cls(m.group(1), int(m.group(2)))


Layout = tuple[Placement, ...]


def layout_key(placements: Iterable[Placement]) -> Layout:
    """Sort placements by start (then name) so a layout has one canonical order."""
    return tuple(sorted(placements, key=lambda p: (p.start, p.profile)))


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

    def placements(self) -> list[Placement]:
        return [Placement(self.name, s) for s in self.starts]

    @property
    def full_name(self) -> str:
        return f"MIG {self.name}"


@dataclass(frozen=True)
class Rule:
    """A combination the driver refuses before some driver branch (e.g. 4g+3g before R510)."""

    profiles: tuple[str, ...]
    before: DriverVersion
    source: str = ""


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
        """Profiles without media extensions (`+me`): the ones a training run wants."""
        return [p for p in self.profiles if not p.media]

    def max_memory_mib(self) -> int:
        return max((p.memory_mib or 0) for p in self.profiles)

    # -- rules ---------------------------------------------------------------------------------
    def check(self, placements: Sequence[Placement]) -> list[str]:
        """Every reason the driver would refuse this set of GPU instances; [] when it is legal.

        The rules (FACTS.md 0.1, b): a legal start for the profile; no two instances share a memory
        slice; at most `max_count` instances per profile; total compute slices within the GPU's;
        at most one media-extension (`+me`) instance; driver-specific combination rules.
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
            if self.driver is not None and self.driver < rule.before and all(
                counts.get(p) for p in rule.profiles
            ):
                problems.append(
                    f"{' + '.join(rule.profiles)} together need driver {driver_str(rule.before)} or newer"
                )
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


def _enumerate_layouts(model: GpuModel, names: tuple[str, ...], maximal: bool) -> list[Layout]:
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
    return out


# ---------------------------------------------------------------------------------------------
# The catalogue: built-in + user file, resolved per driver
# ---------------------------------------------------------------------------------------------


def user_catalog_path() -> Path:
    env = os.environ.get("MIGBENCH_CATALOG")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "migbench" / "catalog.yaml"


def _norm(name: str) -> str:
    n = name.strip().upper()
    if n.startswith("NVIDIA "):
        n = n[len("NVIDIA ") :]
    return re.sub(r"[\s_]+", "-", n)


@dataclass
class Catalog:
    """Raw model specs (as in the YAML) keyed by model key; resolve with `model()`."""

    specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, user_path: Path | None = None, include_user: bool = True) -> "Catalog":
        cat = cls()
        builtin = yaml.safe_load((Path(__file__).parent / "data" / "catalog.yaml").read_text())
        cat._add_doc(builtin, "builtin")
        if include_user:
            path = user_path or user_catalog_path()
            if path.exists():
                try:
                    doc = yaml.safe_load(path.read_text())
                except yaml.YAMLError as exc:
                    raise InputError(
                        f"the user catalogue {path} is not valid YAML: {exc}",
                        hint="fix or delete it; `migbench catalog import` rewrites it",
                    ) from exc
                cat._add_doc(doc or {}, "user", source=str(path))
        return cat

    def _add_doc(self, doc: dict[str, Any], origin: str, source: str = "") -> None:
        if not isinstance(doc, dict) or doc.get("version") != 1 or not isinstance(doc.get("models"), dict):
            raise InputError(
                f"catalogue {source or origin} must be a mapping with `version: 1` and `models:`",
                hint="regenerate it with `migbench catalog import`",
            )
        for key, spec in doc["models"].items():
            spec = dict(spec)
            if "same_as" in spec:
                base = dict(self.specs.get(spec["same_as"]) or doc["models"].get(spec["same_as"]) or {})
                if not base:
                    raise InputError(f"catalogue model {key}: same_as {spec['same_as']!r} is unknown")
                base.update({k: v for k, v in spec.items() if k != "same_as"})
                base["same_as"] = spec["same_as"]
                spec = base
            self.specs[key] = spec
            self.origins[key] = origin

    def keys(self) -> list[str]:
        return sorted(self.specs)

    def find_key(self, name: str) -> str | None:
        """Match a model key or an NVML/nvidia-smi product name (with or without `NVIDIA `)."""
        if name in self.specs:
            return name
        want = _norm(name)
        for key in sorted(self.specs):
            if _norm(key) == want or any(_norm(n) == want for n in self.specs[key].get("names", [])):
                return key
        return None

    def find_by_pci(self, pci_device_id: int) -> str | None:
        dev = pci_device_id >> 16 if pci_device_id > 0xFFFF else pci_device_id
        for key in sorted(self.specs):
            if dev in self.specs[key].get("pci_device_ids", []):
                return key
        return None

    def model(self, name: str, driver: str | DriverVersion | None = None) -> GpuModel:
        key = self.find_key(name)
        if key is None:
            raise MigbenchError(
                f"unknown GPU model {name!r}",
                hint="known models: " + ", ".join(self.keys())
                + "; teach a new one with `migbench catalog import lgip.txt lgipp.txt --name MODEL`",
            )
        drv = parse_driver(driver) if isinstance(driver, str) else driver
        return _resolve(key, self.specs[key], drv, self.origins[key])


def _resolve(key: str, spec: dict[str, Any], driver: DriverVersion | None, origin: str) -> GpuModel:
    profiles = []
    for ps in spec.get("profiles", []):
        since = parse_driver(ps.get("since"))
        if driver is not None and since is not None and driver < since:
            continue
        mib, src, exact = _pick_memory(ps.get("memory_mib") or [], driver)
        unv = list(ps.get("unverified", []))
        if mib is not None and not exact and "memory" not in unv:
            unv.append("memory")
        eng = ps.get("engines") or {}
        profiles.append(
            Profile(
                name=ps["name"],
                id=int(ps["id"]),
                compute_slices=int(ps["compute"]),
                memory_slices=int(ps["memory_slices"]),
                max_count=int(ps["max"]),
                starts=tuple(int(s) for s in ps["starts"]),
                memory_mib=mib,
                media=bool(ps.get("media", False)),
                engines=Engines(**{k: eng.get(k) for k in ("sm", "ce", "dec", "enc", "jpeg", "ofa")}),
                memory_source=src,
                unverified=tuple(unv),
                since=since,
            )
        )
    rules = tuple(
        Rule(tuple(r["profiles"]), parse_driver(r["before"]) or (0,), r.get("source", ""))
        for r in spec.get("rules", [])
        if r.get("kind") == "forbid_together"
    )
    return GpuModel(
        key=key,
        names=tuple(spec.get("names", [])),
        architecture=spec.get("architecture", "unknown"),
        memory_slices=int(spec["memory_slices"]),
        compute_slices=int(spec["compute_slices"]),
        profiles=tuple(profiles),
        pci_device_ids=tuple(int(x) for x in spec.get("pci_device_ids", [])),
        driver=driver,
        origin=origin,
        sources=tuple(spec.get("sources", [])),
        unverified=tuple(spec.get("unverified", [])),
        rules=rules,
        memory_total_mib=spec.get("memory_total_mib"),
    )


def _pick_memory(obs: list[dict[str, Any]], driver: DriverVersion | None) -> tuple[int | None, str, bool]:
    """Choose the memory observation for `driver`: newest not newer than it, else the oldest.

    Returns (MiB, a description of where it came from, whether it matches the driver's branch).
    """
    if not obs:
        return None, "no source gives this profile's memory", False
    rows = sorted(((parse_driver(o["driver"]) or (0,), o) for o in obs), key=lambda r: r[0])
    if driver is None:
        v, o = rows[-1]
        return int(o["mib"]), f"catalogue, observed on driver {o['driver']} (newest known)", True
    older = [r for r in rows if r[0] <= driver]
    v, o = older[-1] if older else rows[0]
    exact = v[0] == driver[0]
    how = "same branch" if exact else "nearest observation, other branch"
    return int(o["mib"]), f"catalogue, observed on driver {o['driver']} ({how})", exact


@cache
def default_catalog() -> Catalog:
    """The built-in catalogue plus the user's file (cached per process)."""
    return Catalog.load()


# ---------------------------------------------------------------------------------------------
# Live tables (from NVML) and import from nvidia-smi text
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileRow:
    """One profile as read from NVML or `nvidia-smi mig -lgip/-lgipp` (no catalogue knowledge)."""

    name: str
    id: int
    compute_slices: int
    max_count: int
    memory_mib: int
    starts: tuple[int, ...] = ()
    memory_slices: int | None = None
    engines: Engines = Engines()


def model_from_rows(
    key: str,
    rows: Sequence[ProfileRow],
    *,
    names: Sequence[str] = (),
    architecture: str = "unknown",
    driver: DriverVersion | None = None,
    origin: str = "nvml",
    pci_device_ids: Sequence[int] = (),
    memory_source: str = "NVML memorySizeMB",
    base: GpuModel | None = None,
) -> GpuModel:
    """Build a GpuModel from a live profile table. Geometry comes from the placements themselves:
    memory slices = max(start + size), compute slices = the largest profile's compute slices."""
    if not rows:
        raise MigbenchError(f"no MIG profiles found for {key}")
    profiles = []
    for r in rows:
        size = r.memory_slices
        if size is None:
            raise MigbenchError(f"profile {r.name} of {key} has no placement size")
        profiles.append(
            Profile(
                name=r.name,
                id=r.id,
                compute_slices=r.compute_slices,
                memory_slices=size,
                max_count=r.max_count,
                starts=tuple(sorted(r.starts)),
                memory_mib=r.memory_mib,
                media="+me" in r.name,
                engines=r.engines,
                memory_source=memory_source,
            )
        )
    mem_slices = max(max(p.starts, default=0) + p.memory_slices for p in profiles)
    compute = max(p.compute_slices for p in profiles)
    return GpuModel(
        key=key,
        names=tuple(names) or (base.names if base else ()),
        architecture=architecture if architecture != "unknown" or base is None else base.architecture,
        memory_slices=mem_slices,
        compute_slices=compute,
        profiles=tuple(sorted(profiles, key=profile_order)),
        pci_device_ids=tuple(pci_device_ids) or (base.pci_device_ids if base else ()),
        driver=driver,
        origin=origin,
        sources=(memory_source,),
        rules=base.rules if base else (),
        memory_total_mib=base.memory_total_mib if base else None,
    )


def profile_order(p: Profile) -> tuple:
    """nvidia-smi's -lgip order: by compute slices, then memory slices, plain before `+me`."""
    return (p.compute_slices, p.memory_slices, p.media, p.name)


_PROFILE_NAME = re.compile(r"^([0-9]+)g\.([0-9]+)gb")


def compute_slices_of(name: str) -> int:
    m = _PROFILE_NAME.match(name)
    if not m:
        raise ValueError(f"{name!r} is not a MIG profile name (expected e.g. 3g.40gb)")
    return int(m.group(1))


def min_mib_printing_as(gib_text: str) -> int:
    """The smallest whole MiB whose `%.2f` GiB form equals `gib_text` (nvidia-smi's -lgip column).

    The column keeps 0.01 GiB, so the exact `memorySizeMB` is not recoverable from text; taking the
    smallest consistent value never promises a run more memory than the instance has.
    """
    target = float(gib_text)
    guess = int(target * 1024) - 16
    for mib in range(max(guess, 0), guess + 48):
        if f"{mib / 1024:.2f}" == f"{target:.2f}":
            return mib
    raise ValueError(f"cannot read {gib_text!r} as a GiB amount")


def parse_lgip(text: str, *, file: str = "lgip.txt") -> dict[int, list[ProfileRow]]:
    """Parse `nvidia-smi mig -lgip` table text -> {gpu index: [ProfileRow (no placements yet)]}.

    Each profile takes two table rows: `GPU Name ID Free/Total GiB P2P SM DEC ENC` then
    `CE JPEG OFA`. Prompts, comments and borders are ignored.
    """
    out: dict[int, list[ProfileRow]] = {}
    lines = text.splitlines()
    row1 = re.compile(
        r"^\|\s*(\d+)\s+MIG\s+(\S+)\s+(\d+)\s+(\d+)/(\d+)\s+([0-9.]+)\s+(Yes|No)\s+(\d+)\s+(\d+)\s+(\d+)\s*\|"
    )
    row2 = re.compile(r"^\|\s+(\d+)\s+(\d+)\s+(\d+)\s*\|$")
    i = 0
    while i < len(lines):
        m = row1.match(lines[i].strip())
        if m:
            gpu, name, pid = int(m.group(1)), m.group(2), int(m.group(3))
            total = int(m.group(5))
            mib = min_mib_printing_as(m.group(6))
            sm, dec, enc = int(m.group(8)), int(m.group(9)), int(m.group(10))
            ce = jpeg = ofa = None
            if i + 1 < len(lines):
                m2 = row2.match(lines[i + 1].strip())
                if m2:
                    ce, jpeg, ofa = int(m2.group(1)), int(m2.group(2)), int(m2.group(3))
                    i += 1
            out.setdefault(gpu, []).append(
                ProfileRow(
                    name=name,
                    id=pid,
                    compute_slices=compute_slices_of(name),
                    max_count=total,
                    memory_mib=mib,
                    engines=Engines(sm=sm, ce=ce, dec=dec, enc=enc, jpeg=jpeg, ofa=ofa),
                )
            )
        i += 1
    if not out:
        raise InputError(
            f"{file}: no `nvidia-smi mig -lgip` table found",
            hint="paste the whole output of `nvidia-smi mig -lgip`, borders included",
            problems=[Problem("no profile rows found", file=file)],
        )
    return out


_LGIPP = re.compile(r"GPU\s+(\d+)\s+Profile ID\s+(\d+)\s+Placements?\s*:\s*\{([0-9,\s]*)\}:(\d+)")


def parse_lgipp(text: str, *, file: str = "lgipp.txt") -> dict[int, dict[int, tuple[tuple[int, ...], int]]]:
    """Parse `nvidia-smi mig -lgipp` -> {gpu: {profile id: (starts, size in memory slices)}}.

    Both the plural `Placements:` and the singular `Placement :` forms occur in real output.
    """
    out: dict[int, dict[int, tuple[tuple[int, ...], int]]] = {}
    for m in _LGIPP.finditer(text):
        starts = tuple(int(s) for s in m.group(3).replace(" ", "").split(",") if s)
        out.setdefault(int(m.group(1)), {})[int(m.group(2))] = (starts, int(m.group(4)))
    if not out:
        raise InputError(
            f"{file}: no `nvidia-smi mig -lgipp` placement lines found",
            hint="paste the output of `nvidia-smi mig -lgipp` (lines like `GPU  0 Profile ID 19 Placements: {0,1,2}:1`)",
            problems=[Problem("no placement lines found", file=file)],
        )
    return out


def rows_from_text(lgip: str, lgipp: str, *, gpu: int = 0, lgip_file: str = "lgip", lgipp_file: str = "lgipp") -> list[ProfileRow]:
    """Join -lgip and -lgipp text for one GPU into complete rows; every profile needs placements."""
    tables = parse_lgip(lgip, file=lgip_file)
    places = parse_lgipp(lgipp, file=lgipp_file)
    if gpu not in tables:
        raise InputError(f"{lgip_file}: no profiles for GPU {gpu}", hint=f"GPUs present: {sorted(tables)}")
    pl = places.get(gpu, {})
    rows, problems = [], []
    for r in tables[gpu]:
        if r.id not in pl:
            problems.append(
                Problem(f"profile {r.name} (ID {r.id}) has no placements in the -lgipp text", file=lgipp_file)
            )
            continue
        starts, size = pl[r.id]
        rows.append(replace(r, starts=starts, memory_slices=size))
    if problems:
        raise InputError(
            "the -lgip and -lgipp texts do not describe the same profiles",
            hint="capture both from the same GPU and driver",
            problems=problems,
        )
    return rows


def spec_from_model(model: GpuModel, *, driver_label: str | None, sources: Sequence[str]) -> dict[str, Any]:
    """The catalogue-YAML form of a model (what `catalog import` writes to the user file)."""
    drv = driver_label or "0"
    profiles = []
    for p in model.profiles:
        e = {k: v for k, v in vars(p.engines).items() if v is not None}
        profiles.append(
            {
                "name": p.name,
                "id": p.id,
                "compute": p.compute_slices,
                "memory_slices": p.memory_slices,
                "max": p.max_count,
                "starts": list(p.starts),
                **({"media": True} if p.media else {}),
                "engines": e,
                "memory_mib": [{"driver": drv, "mib": p.memory_mib, "note": "from -lgip text (0.01 GiB precision, rounded down)"}],
            }
        )
    return {
        "names": list(model.names),
        "pci_device_ids": list(model.pci_device_ids),
        "architecture": model.architecture,
        "memory_slices": model.memory_slices,
        "compute_slices": model.compute_slices,
        "sources": list(sources),
        "profiles": profiles,
        "unverified": ["imported from nvidia-smi text; memory exact to 0.01 GiB only"]
        + ([] if driver_label else ["driver version not given at import"]),
    }


def save_user_model(key: str, spec: dict[str, Any], path: Path | None = None) -> Path:
    """Add or replace `key` in the user catalogue file (atomic write)."""
    path = path or user_catalog_path()
    doc: dict[str, Any] = {"version": 1, "models": {}}
    if path.exists():
        loaded = yaml.safe_load(path.read_text()) or {}
        if isinstance(loaded, dict) and isinstance(loaded.get("models"), dict):
            doc = loaded
    doc["models"][key] = spec
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=True, width=120))
    os.replace(tmp, path)
    default_catalog.cache_clear()
    return path
