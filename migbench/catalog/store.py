"""The catalogue: the built-in file plus the user's, resolved per driver.

The built-in data lives in `migbench/catalog/data/catalog.yaml` (sourced, with unverified values marked). A
user catalogue (`$MIGBENCH_CATALOG`, default `~/.config/migbench/catalog.yaml`, same format) adds
models taught with `migbench catalog import`. When NVML is reachable, `migbench.backend` builds a
`GpuModel` from the live profile table instead, so a driver's real memory sizes and placements
always win over this file.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from migbench import yamlio
from migbench.catalog.model import DriverVersion, Engines, GpuModel, Profile, Rule, driver_str, parse_driver, variant_of
from migbench.errors import InputError, MigbenchError, Problem
from migbench.fsutil import read_input_text, write_text_atomic
from migbench.types import PROFILE_NAME


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
    def load(cls, user_path: Path | None = None, include_user: bool = True) -> Catalog:
        cat = cls()
        builtin = yamlio.load((Path(__file__).parent / "data" / "catalog.yaml").read_text())
        cat._add_doc(builtin, "builtin")
        if include_user:
            path = user_path or user_catalog_path()
            doc = read_user_catalog(path)
            if doc is not None:
                cat._add_doc(doc or {}, "user", source=str(path))
        return cat

    def _add_doc(self, doc: dict[str, Any], origin: str, source: str = "") -> None:
        if not isinstance(doc, dict) or doc.get("version") != 1 or not isinstance(doc.get("models"), dict):
            raise InputError(
                f"catalogue {source or origin} must be a mapping with `version: 1` and `models:`",
                hint="regenerate it with `migbench catalog import`",
            )
        for key, spec in doc["models"].items():
            if not isinstance(spec, dict):
                raise InputError(f"catalogue {source or origin}: model {key!r} is not a mapping", hint=_FIX_USER)
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
                hint="known models: " + ", ".join(self.keys()) + "; teach a new one with `migbench catalog import lgip.txt lgipp.txt --name MODEL`",
            )
        drv = parse_driver(driver) if isinstance(driver, str) else driver
        try:
            return _resolve(key, self.specs[key], drv, self.origins[key])
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            if isinstance(exc, MigbenchError):
                raise
            where = "the user catalogue" if self.origins[key] == "user" else "the built-in catalogue"
            raise InputError(f"{where}: model {key} is malformed ({type(exc).__name__}: {exc})", hint=_FIX_USER) from None


def model_from_spec(key: str, spec: dict[str, Any], driver: str | DriverVersion | None = None, origin: str = "user") -> GpuModel:
    """A model from one catalogue-format spec (what `spec_from_model` writes) resolved for `driver`;
    the simulated host keeps the profile table it was built from this way."""
    return _resolve(key, spec, parse_driver(driver) if isinstance(driver, str) else driver, origin)


def _resolve(key: str, spec: dict[str, Any], driver: DriverVersion | None, origin: str) -> GpuModel:
    profiles = []
    for ps in spec.get("profiles", []):
        since = parse_driver(ps.get("since"))
        if driver is not None and since is not None and driver < since:
            continue
        mib, src, certain = pick_memory(ps.get("memory_mib") or [], driver)
        unv = list(ps.get("unverified", []))
        if mib is not None and not certain and "memory" not in unv:
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
                variant=str(ps.get("variant") or variant_of(ps["name"])),
                placement_memory=_placement_memory(ps.get("memory_by_placement") or [], driver),
            )
        )
    rules = tuple(
        Rule(tuple(r["profiles"]), parse_driver(r.get("before")) or (0,), r.get("source", ""), r["kind"])
        for r in spec.get("rules", [])
        if r.get("kind") in ("forbid_together", "all_me_excludes")
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


def _placement_memory(obs: list[dict[str, Any]], driver: DriverVersion | None) -> tuple[tuple[int, int], ...]:
    """`memory_by_placement: [{start, mib, before}]`: an instance at physical `start` reports `mib` on drivers
    older than `before` (docs/mig-facts.md#memory-by-driver, the one capture that shows it)."""
    out = []
    for o in obs:
        before = parse_driver(o.get("before"))
        if before is not None and driver is not None and driver >= before:
            continue
        out.append((int(o["start"]), int(o["mib"])))
    return tuple(out)


def _obs_driver(o: dict[str, Any]) -> str:
    d = str(o["driver"])
    if not o.get("driver_stated", True):
        return f"an unstated driver (filed under {d})"
    return f"driver {d} [U]" if o.get("unverified") else f"driver {d}"


def _trusted(o: dict[str, Any]) -> bool:
    """An observation that pins its driver: stated, from a source of known provenance, not derived."""
    return bool(o.get("driver_stated", True)) and not o.get("unverified", False)


def pick_memory(obs: list[dict[str, Any]], driver: DriverVersion | None) -> tuple[int | None, str, bool]:
    """The memory to plan with for `driver`, from observations `{driver, mib, source, driver_stated, unverified}`.

    The newest observation not newer than the driver applies (the oldest when the driver is older than all;
    the newest when no driver is given). Where the captures do not pin the change point, the smaller value is
    used and the description names the values (docs/mig-facts.md#memory-by-driver): observations of one driver
    that differ; a driver between two observations that differ; an observation whose driver was not stated or
    whose source is unverified (it may stand for any driver, so the values before it, back to a trusted one,
    may still apply). An observation of exactly the driver (full version) is what that driver printed and is
    used as is. Returns (MiB, how it was chosen, certain); `certain` is False whenever a plan should warn.
    """
    if not obs:
        return None, "no source gives this profile's memory", False
    rows = sorted(((parse_driver(str(o["driver"])) or (0,), o) for o in obs), key=lambda r: tuple(r[0]))
    versions = sorted({tuple(v) for v, _ in rows})
    group = {v: [o for w, o in rows if tuple(w) == v] for v in versions}
    want = None if driver is None else tuple(driver)
    notes: list[str] = []
    if want is None:
        at = versions[-1]
    else:
        older = [v for v in versions if v <= want]
        at = older[-1] if older else versions[0]
        if not older:
            notes.append(f"driver {driver_str(driver)} is older than every observation")
    i = versions.index(at)
    stated = [o for o in group[at] if o.get("driver_stated", True)]
    exact = want is not None and len(want) > 1 and at == want and bool(stated)
    cands = stated if exact else list(group[at])
    if len({int(o["mib"]) for o in cands}) > 1:
        notes.append("observations of one driver differ")
    if not exact:
        k = i
        while k > 0 and not any(_trusted(o) for o in group[versions[k]]):
            k -= 1
            cands += group[versions[k]]
        if k < i and len({int(o["mib"]) for o in cands}) > 1:
            notes.append("the newer value's driver is not stated or not verified")
        same_branch = len(at) == 1 and want is not None and at[0] == want[0]  # "525" covers every R525 driver
        if want is not None and want > at and i + 1 < len(versions) and not same_branch:
            nxt = group[versions[i + 1]]
            if {int(o["mib"]) for o in nxt} != {int(o["mib"]) for o in group[at]}:
                cands += nxt
                notes.append(f"driver {driver_str(driver)} lies between observations that differ")
    mib = min(int(o["mib"]) for o in cands)
    values = sorted({(parse_driver(str(o["driver"])) or (0,), int(o["mib"]), _obs_driver(o)) for o in cands})
    if len({m for _, m, _ in values}) > 1:
        listed = ", ".join(f"{m} MiB on {d}" for _, m, d in values)
        return mib, (f"catalogue: {listed}; the change point is unknown ({'; '.join(notes)}), so the smaller, {mib} MiB, is planned with"), False
    o = next(o for o in cands if int(o["mib"]) == mib)
    certain = all(_trusted(x) for x in (stated if exact else group[at])) and not notes and (want is None or at[0] == want[0])
    if want is None:
        how = "newest known"
    elif notes:
        how = notes[0]
    else:
        how = "same branch" if at[0] == want[0] else "nearest observation, other branch"
    derived = str(o.get("source", "")) if str(o.get("source", "")).startswith("derived") else ""
    return mib, f"catalogue, observed on {_obs_driver(o)} ({how}{'; ' + derived if derived else ''})", certain


@cache
def default_catalog() -> Catalog:
    """The built-in catalogue plus the user's file (cached per process)."""
    return Catalog.load()


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
                **({"variant": p.variant} if p.variant else {}),
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
        "unverified": list(model.unverified)
        + ["imported from nvidia-smi text; memory exact to 0.01 GiB only"]
        + ([] if driver_label else ["driver version not given at import"]),
    }


_FIX_USER = "fix or delete it (`$MIGBENCH_CATALOG`, default ~/.config/migbench/catalog.yaml); `migbench catalog import` rewrites it"


def read_user_catalog(path: Path) -> Any:
    """The user catalogue's YAML document, None when there is no file; an `Error:` when the path is
    a directory, unreadable, too big, not text or not YAML."""
    if not path.exists() and not path.is_symlink():
        return None
    text = read_input_text(path, "user catalogue", hint=_FIX_USER)
    doc = yamlio.load_checked(text, str(path), "user catalogue", max_nodes=MAX_CATALOG_NODES, hint=_FIX_USER)
    found = spec_problems(doc)
    if found:
        lines = yamlio.field_lines(text)
        probs = [Problem(msg, str(path), lines.get(field), field) for field, msg in found]
        raise InputError(f"{path}: {len(probs)} problem(s) in the user catalogue", hint=_FIX_USER, problems=probs)
    return doc


MAX_CATALOG_NODES = 200_000
"""A user catalogue holds at most this many YAML values (the built-in one: about 6,000)."""

_INT_FIELDS = ("memory_slices", "compute_slices", "memory_total_mib")
_PROFILE_INTS = ("id", "compute", "memory_slices", "max")


def _bad_int(v: Any) -> bool:
    return isinstance(v, bool) or not isinstance(v, int) or v < 0 or v > 2**31


MAX_MODEL_KEY = 100
"""A model key (`catalog import --name`) is at most this many characters: it names the model in every table."""


def name_problem(name: object, what: str = "a model name", limit: int = MAX_MODEL_KEY) -> str | None:
    """Why `name` cannot name a model (or a profile): not text, empty, too long, or not one line of
    printable text (a line break in it was written into the exported batch scripts); None when it can."""
    if not isinstance(name, str) or not name.strip():
        return f"{what} is text, not {'empty' if isinstance(name, str) else type(name).__name__}"
    if len(name) > limit:
        return f"{what} is at most {limit} characters, not {len(name)}"
    if name != name.strip() or any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        return f"{what} is one line of printable text, without control or format characters or spaces around it"
    return None


def _key_problems(at: str, key: object) -> list[tuple[str, str]]:
    bad = name_problem(key)
    return [] if bad is None else [(at, bad)]


def _profile_problems(pat: str, ps: Any) -> list[tuple[str, str]]:
    """spec_problems for one profile of a model (`pat`: where it is)."""
    if not isinstance(ps, dict):
        return [(pat, "a profile is a mapping")]
    out: list[tuple[str, str]] = []
    if not isinstance(ps.get("name"), str):
        out.append((f"{pat}.name", "a profile needs its name (3g.40gb)"))
    elif (bad := name_problem(ps["name"], "a profile name")) is not None:
        out.append((f"{pat}.name", bad))
    elif not PROFILE_NAME.fullmatch(ps["name"]):
        form = "<compute>g.<memory>gb, with a variant's suffix where it has one (3g.40gb, 1g.10gb+me)"
        out.append((f"{pat}.name", f"{ps['name']!r} is not a MIG profile name: {form}"))
    for f in _PROFILE_INTS:
        if _bad_int(ps.get(f)):
            out.append((f"{pat}.{f}", f"must be a whole number of at least 0, not {ps.get(f)!r}"))
    if not isinstance(ps.get("starts"), list) or any(_bad_int(x) for x in ps["starts"]):
        out.append((f"{pat}.starts", "must be a list of placement starts (whole numbers)"))
    for f in ("memory_mib", "memory_by_placement"):
        obs = ps.get(f) or []
        if not isinstance(obs, list) or any(not isinstance(o, dict) or _bad_int(o.get("mib")) for o in obs):
            out.append((f"{pat}.{f}", "must be a list of {driver, mib} with mib a whole number of at least 0"))
    return out


def spec_problems(doc: Any) -> list[tuple[str, str]]:
    """(field, message) for each value of a catalogue document that is not of its kind: the model
    fields `_resolve` reads (an `architecture` that is a list, `-.inf` slices or MiB...)."""
    out: list[tuple[str, str]] = []
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), dict):
        return out  # `_add_doc` says what a catalogue is
    for key, spec in doc["models"].items():
        at = f"models.{key}"
        out += _key_problems(at, key)
        if not isinstance(spec, dict):
            out.append((at, "a model is a mapping"))
            continue
        if "same_as" in spec and not isinstance(spec["same_as"], str):
            out.append((f"{at}.same_as", f"must name another model, not {type(spec['same_as']).__name__}"))
        for f in ("names", "sources", "unverified"):
            if isinstance(spec.get(f), list) and not all(isinstance(x, str) for x in spec[f]):
                out.append((f"{at}.{f}", "must be a list of text"))
        if isinstance(spec.get("rules"), list) and not all(isinstance(r, dict) for r in spec["rules"]):
            out.append((f"{at}.rules", "must be a list of mappings"))
        if "architecture" in spec and not isinstance(spec["architecture"], str):
            out.append((f"{at}.architecture", f"must be a name such as ampere or hopper, not {type(spec['architecture']).__name__}"))
        for f in _INT_FIELDS:
            if spec.get(f) is not None and _bad_int(spec[f]):
                out.append((f"{at}.{f}", f"must be a whole number of at least 0, not {spec[f]!r}"))
        for f in ("names", "pci_device_ids", "sources", "unverified", "profiles", "rules"):
            if f in spec and not isinstance(spec[f], list):
                out.append((f"{at}.{f}", f"must be a list, not {type(spec[f]).__name__}"))
        if any(_bad_int(x) for x in spec.get("pci_device_ids") or [] if isinstance(spec.get("pci_device_ids"), list)):
            out.append((f"{at}.pci_device_ids", "must be whole numbers (0x20B2)"))
        profs = spec.get("profiles")
        for i, ps in enumerate(profs if isinstance(profs, list) else []):
            out += _profile_problems(f"{at}.profiles[{i}]", ps)
    return out


def save_user_model(key: str, spec: dict[str, Any], path: Path | None = None) -> Path:
    """Add or replace `key` in the user catalogue file (atomic write)."""
    path = path or user_catalog_path()
    doc: dict[str, Any] = {"version": 1, "models": {}}
    loaded = read_user_catalog(path) or {}
    if isinstance(loaded, dict) and isinstance(loaded.get("models"), dict):
        doc = loaded
    doc["models"][key] = spec
    write_text_atomic(path, yaml.safe_dump(doc, sort_keys=True, width=120), "user catalogue")
    default_catalog.cache_clear()
    return path


def describe_models(cat: Catalog, driver: str | None = None) -> list[dict[str, Any]]:
    """One summary per known model (what `migbench catalog --json` prints)."""
    out = []
    for key in cat.keys():
        m = cat.model(key, driver)
        out.append(
            {
                "model": key,
                "name": m.display_name,
                "architecture": m.architecture,
                "memory_slices": m.memory_slices,
                "compute_slices": m.compute_slices,
                "profiles": len(m.profiles),
                "maximal_layouts": len(m.layouts()),
                "origin": m.origin,
            }
        )
    return out


def describe_model(model: GpuModel) -> dict[str, Any]:
    """One model's profile table (what `migbench catalog MODEL --json` prints)."""
    return {
        "model": model.key,
        "names": list(model.names),
        "architecture": model.architecture,
        "memory_slices": model.memory_slices,
        "compute_slices": model.compute_slices,
        "driver": None if model.driver is None else ".".join(map(str, model.driver)),
        "profiles": [
            {
                "name": p.name,
                "id": p.id,
                "compute_slices": p.compute_slices,
                "memory_slices": p.memory_slices,
                "memory_mib": p.memory_mib,
                "max_count": p.max_count,
                "starts": list(p.starts),
                "media": p.media,
                "sm": p.engines.sm,
                "memory_source": p.memory_source,
                "unverified": list(p.unverified),
                **({"variant": p.variant} if p.variant else {}),
                **({"memory_by_placement": [{"start": s, "mib": m} for s, m in p.placement_memory]} if p.placement_memory else {}),
            }
            for p in model.profiles
        ],
        "sources": list(model.sources),
        "unverified": list(model.unverified),
    }
