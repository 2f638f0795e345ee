"""The footprints file: measured peak memory per run, as `migbench profile` writes it.

```yaml
version: 1
kind: migbench-footprints
sweep: toy-sweep                    # the sweep it was measured for (name, and sha256 of its file)
sweep_sha256: 3f2a...
measurements:                       # one per run id, sorted by group then run id
  - run: lm-0a1b2c3d4e              # the run's id: <group>-<hash of its parameters>
    group: lm
    params: {batch: 16, lr: 0.001}  # its parameter set (matched when the id is not)
    repeat: 0
    peak_mib: 17408                 # the peak: the larger of the two readings below
    how: nvml-process+run-report    # nvml-process | nvml-device | run-report, joined by '+'
    nvml_peak_mib: 17408            # NVML per-process used memory, sampled every `sample_s`
    reported_peak_mib: 17408        # what the run wrote to MIGBENCH_REPORT_MEMORY (null: nothing)
    samples: 41
    sample_s: 0.05
    outcome: stopped                # stopped (at the probe's limit) | finished | oom | failed
    lower_bound: false              # true: it died of OOM, so it needs more than peak_mib
    declared_mib: 34816             # what the sweep declared when it was measured
    gpu_model: A100-SXM4-80GB
    profile: 3g.40gb
    instance_mib: 40192
    driver: 550.54.15
    simulated: true
    date: '2025-01-31T12:00:00Z'    # UTC, when the probe started
    probe_s: 2.04                   # how long the probe ran
speeds:                             # `migbench profile --speed`: compute per group, next to memory
  - group: lm
    run: lm-0a1b2c3d4e              # the run probed on two instance sizes
    compute: 0.31                   # the fitted share of a whole GPU it keeps busy
    lower_bound: false              # true: as slow on the larger instance: it needs at least this
    how: progress-lines             # step-markers (MIGBENCH_STEP lines) | progress-lines (step N)
    gpu_model: A100-SXM4-80GB
    small: {profile: 1g.10gb, capacity: 0.142857, step_s: 0.652, steps: 9}
    large: {profile: 3g.40gb, capacity: 0.428571, step_s: 0.301, steps: 19}
    driver: 550.54.15
    simulated: true
    date: '2025-01-31T12:00:00Z'
```

Versioned: a file of another `version` or `kind` is refused, and so is any malformed entry, with
the file, line and field. Writing is atomic and deterministic (sorted keys and entries).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from migbench import yamlio
from migbench.errors import InputError, Problem, os_reason
from migbench.fsutil import read_input_text, write_text_atomic

FOOTPRINTS_VERSION = 1
FOOTPRINTS_KIND = "migbench-footprints"
OUTCOMES = ("stopped", "finished", "oom", "failed")
HOWS = ("nvml-process", "nvml-device", "run-report")


@dataclass(frozen=True)
class Measurement:
    """One run's probe: its peak (MiB) and everything needed to judge whether it applies elsewhere."""

    run: str
    group: str
    params: dict[str, Any]
    peak_mib: int
    how: str
    outcome: str
    gpu_model: str
    profile: str
    instance_mib: int
    driver: str
    date: str
    probe_s: float
    repeat: int = 0
    nvml_peak_mib: int | None = None
    reported_peak_mib: int | None = None
    samples: int = 0
    sample_s: float | None = None
    lower_bound: bool = False
    declared_mib: int | None = None
    simulated: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["probe_s"] = round(float(self.probe_s), 3)
        if self.sample_s is not None:
            d["sample_s"] = round(float(self.sample_s), 4)
        return d


SPEED_HOWS = ("step-markers", "progress-lines")


@dataclass(frozen=True)
class SpeedSide:
    """One of a speed probe's two runs: the instance, its compute share, the seconds per step."""

    profile: str
    capacity: float
    step_s: float
    steps: int

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "capacity": round(self.capacity, 6), "step_s": round(self.step_s, 4), "steps": self.steps}


@dataclass(frozen=True)
class Speed:
    """A group's compute, measured: one run timed on a memory-sized instance and on a larger one."""

    group: str
    run: str
    compute: float
    lower_bound: bool
    how: str
    gpu_model: str
    small: SpeedSide
    large: SpeedSide
    driver: str = ""
    simulated: bool = False
    date: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["compute"] = round(self.compute, 4)
        d["small"], d["large"] = self.small.to_dict(), self.large.to_dict()
        return d


_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "run": str,
    "group": str,
    "params": dict,
    "peak_mib": int,
    "how": str,
    "outcome": str,
    "gpu_model": str,
    "profile": str,
    "instance_mib": int,
    "driver": str,
    "date": str,
    "probe_s": (int, float),
}
_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "repeat": int,
    "nvml_peak_mib": int,
    "reported_peak_mib": int,
    "samples": int,
    "sample_s": (int, float),
    "lower_bound": bool,
    "declared_mib": int,
    "simulated": bool,
}


@dataclass
class Footprints:
    """A footprints file's content. `path` is where it was read from or written to."""

    sweep: str
    sweep_sha256: str = ""
    measurements: list[Measurement] = field(default_factory=list)
    path: str | None = None
    speeds: list[Speed] = field(default_factory=list)

    def speed_of(self) -> dict[str, Speed]:
        """Group -> its measured compute."""
        return {s.group: s for s in self.speeds}

    def with_speeds(self, newer: Iterable[Speed]) -> Footprints:
        """These speeds with `newer` ones replacing those of the same group."""
        out = self.speed_of()
        for s in newer:
            out[s.group] = s
        return replace(self, speeds=sorted(out.values(), key=lambda s: s.group))

    def by_run(self) -> dict[str, Measurement]:
        return {m.run: m for m in self.measurements}

    def peaks(self) -> dict[str, tuple[int, str]]:
        """Run id -> (peak MiB, how it was measured) of the probes a plan may use (not the OOM'd
        lower bounds, not the failed probes): what `migbench report --footprints` shows."""
        return {
            m.run: (m.peak_mib, f"profile ({m.how}, {m.probe_s:.1f} s on {m.profile})")
            for m in self.measurements
            if not m.lower_bound and m.outcome not in ("oom", "failed")
        }

    def merged(self, newer: Iterable[Measurement]) -> Footprints:
        """These measurements with `newer` ones replacing those of the same run id."""
        out = self.by_run()
        for m in newer:
            out[m.run] = m
        return replace(self, measurements=sorted(out.values(), key=lambda m: (m.group, m.run)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": FOOTPRINTS_VERSION,
            "kind": FOOTPRINTS_KIND,
            "sweep": self.sweep,
            "sweep_sha256": self.sweep_sha256,
            "measurements": [m.to_dict() for m in sorted(self.measurements, key=lambda m: (m.group, m.run))],
            **({"speeds": [s.to_dict() for s in sorted(self.speeds, key=lambda s: s.group)]} if self.speeds else {}),
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, width=120, allow_unicode=True)

    def save(self, path: str | os.PathLike[str]) -> Path:
        p = Path(path)
        if p.is_dir():
            raise InputError(f"{p} is a directory", hint="give the footprints file's name, e.g. -o sweep.footprints.yaml")
        try:
            write_text_atomic(p, self.to_yaml())
        except OSError as exc:
            raise InputError(f"cannot write the footprints file {p}: {os_reason(exc)}", hint="check the directory and its permissions") from None
        self.path = str(p)
        return p


MAX_FOOTPRINTS_BYTES = 64 * 2**20
"""A footprints file larger than this is refused before it is parsed (a measurement is about 300
bytes: 100,000 runs are about 30 MiB)."""
MAX_FOOTPRINTS_NODES = 4_000_000
"""A footprints file holds at most this many YAML values (`yamlio.shape_problem`)."""


def load_footprints(path: str | os.PathLike[str], *, regular: bool = False, owned: bool = False) -> Footprints:
    """Read and validate a footprints file. Every problem is reported at once, with line and field.
    `regular`: the default file, found by its name (never read from a pipe: `fsutil.open_regular`);
    `owned`: and refused when another user could have written it (`fsutil.ForeignFile`)."""
    p = Path(path)
    hint = "write it with `migbench profile SWEEP -o FILE`"
    text = read_input_text(p, "footprints file", limit=MAX_FOOTPRINTS_BYTES, hint=hint, regular=regular, owned=owned)
    doc = yamlio.load_checked(text, str(p), "footprints file", max_nodes=MAX_FOOTPRINTS_NODES, hint=hint)
    root = yaml.compose(text, Loader=yaml.CSafeLoader if yamlio.C_AVAILABLE else yaml.SafeLoader)  # lines only: checked above
    if not isinstance(doc, dict) or doc.get("kind") != FOOTPRINTS_KIND:
        raise InputError(f"{p}: not a migbench footprints file (no `kind: {FOOTPRINTS_KIND}`)", hint=hint)
    if doc.get("version") != FOOTPRINTS_VERSION:
        raise InputError(
            f"{p}: footprints file version {doc.get('version')!r}; this migbench reads version {FOOTPRINTS_VERSION}",
            hint="measure again with this migbench's `migbench profile`",
        )
    problems: list[Problem] = []
    lines = _entry_lines(root)
    sweep = doc.get("sweep")
    if not isinstance(sweep, str) or not sweep:
        problems.append(Problem("`sweep` must name the sweep the footprints were measured for", file=str(p), field="sweep"))
    entries = doc.get("measurements")
    out: list[Measurement] = []
    if not isinstance(entries, list):
        problems.append(Problem("`measurements` must be a list", file=str(p), field="measurements"))
        entries = []
    seen: set[str] = set()
    for i, e in enumerate(entries):
        where = f"measurements[{i}]"
        line = lines[i] if i < len(lines) else None
        m = _measurement(e, where, str(p), line, problems)
        if m is None:
            continue
        if m.run in seen:
            problems.append(Problem(f"run {m.run} is measured twice", file=str(p), line=line, field=f"{where}.run"))
            continue
        seen.add(m.run)
        out.append(m)
    speeds = _speeds(doc.get("speeds"), str(p), problems)
    if problems:
        raise InputError(f"{p}: {len(problems)} problem(s) in the footprints file", hint=hint, problems=problems)
    return Footprints(str(sweep), str(doc.get("sweep_sha256") or ""), out, str(p), speeds)


def _speeds(entries: Any, file: str, problems: list[Problem]) -> list[Speed]:
    """The `speeds:` section (absent: none), every entry checked."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        problems.append(Problem("`speeds` must be a list", file=file, field="speeds"))
        return []
    out: list[Speed] = []
    for i, e in enumerate(entries):
        where = f"speeds[{i}]"
        try:
            sides = []
            for k in ("small", "large"):
                s = e[k]
                side = SpeedSide(str(s["profile"]), float(s["capacity"]), float(s["step_s"]), int(s["steps"]))
                if not 0 < side.capacity <= 1 or side.step_s <= 0:
                    raise ValueError(f"{k}: capacity must be in (0, 1] and step_s positive")
                sides.append(side)
            sp = Speed(
                str(e["group"]),
                str(e["run"]),
                float(e["compute"]),
                bool(e.get("lower_bound", False)),
                str(e["how"]),
                str(e["gpu_model"]),
                sides[0],
                sides[1],
                str(e.get("driver") or ""),
                bool(e.get("simulated", False)),
                str(e.get("date") or ""),
            )
        except (KeyError, TypeError, ValueError) as exc:
            what = f"missing `{exc.args[0]}`" if isinstance(exc, KeyError) else str(exc) or "malformed"
            problems.append(Problem(f"a speed entry is malformed: {what}", file=file, field=where))
            continue
        if not 0 < sp.compute <= 1:
            problems.append(Problem(f"compute must be in (0, 1], got {sp.compute}", file=file, field=f"{where}.compute"))
        elif sp.how not in SPEED_HOWS:
            problems.append(Problem(f"unknown timing {sp.how!r} (one of {', '.join(SPEED_HOWS)})", file=file, field=f"{where}.how"))
        else:
            out.append(sp)
    return out


def _entry_lines(root: Any) -> list[int]:
    """1-based line of each `measurements` item, from the composed YAML."""
    if not isinstance(root, yaml.MappingNode):
        return []
    for k, v in root.value:
        if getattr(k, "value", None) == "measurements" and isinstance(v, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in v.value]
    return []


def _measurement(e: Any, where: str, file: str, line: int | None, problems: list[Problem]) -> Measurement | None:
    if not isinstance(e, dict):
        problems.append(Problem("a measurement is a mapping", file=file, line=line, field=where))
        return None
    bad = len(problems)
    known = {f.name for f in fields(Measurement)}
    for k in e:
        if k not in known:
            problems.append(Problem(f"unknown key {k!r}", file=file, line=line, field=f"{where}.{k}"))
    for k, typ in _REQUIRED.items():
        if k not in e or e[k] is None:
            problems.append(Problem(f"missing `{k}`", file=file, line=line, field=f"{where}.{k}"))
        elif not isinstance(e[k], typ) or isinstance(e[k], bool) and typ is not bool:
            problems.append(Problem(f"`{k}` has the wrong type ({type(e[k]).__name__})", file=file, line=line, field=f"{where}.{k}"))
    for k, typ in _OPTIONAL.items():
        v = e.get(k)
        if v is not None and (not isinstance(v, typ) or isinstance(v, bool) and typ is not bool):
            problems.append(Problem(f"`{k}` has the wrong type ({type(v).__name__})", file=file, line=line, field=f"{where}.{k}"))
    if len(problems) > bad:
        return None
    if e["peak_mib"] < 0 or e["instance_mib"] < 0:
        problems.append(Problem("memory cannot be negative", file=file, line=line, field=f"{where}.peak_mib"))
    if e["outcome"] not in OUTCOMES:
        problems.append(Problem(f"unknown outcome {e['outcome']!r} (one of {', '.join(OUTCOMES)})", file=file, line=line, field=f"{where}.outcome"))
    if not e["how"] or any(h not in HOWS for h in str(e["how"]).split("+")):
        problems.append(Problem(f"unknown measurement {e['how']!r} (one of {', '.join(HOWS)}, joined by +)", file=file, line=line, field=f"{where}.how"))
    if len(problems) > bad:
        return None
    return Measurement(**{k: v for k, v in e.items() if v is not None or k in _OPTIONAL})
