"""Profile tables from text or NVML: `nvidia-smi mig -lgip` / `-lgipp` parsers and `model_from_rows`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from migbench.catalog.model import DriverVersion, Engines, GpuModel, Profile, compute_slices_of, parse_driver, profile_order
from migbench.errors import InputError, MigbenchError, Problem
from migbench.fsutil import read_input


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


def import_files(
    lgip_file: str | Path, lgipp_file: str | Path, *, name: str, driver: str | None = None, architecture: str = "unknown", gpu: int = 0
) -> tuple[GpuModel, Path]:
    """`migbench catalog import`: build a model from saved `nvidia-smi mig -lgip` and `-lgipp` text
    and store it in the user catalogue under `name` (a known model keeps its names and facts).
    Returns the model and the catalogue file."""
    from migbench.catalog.store import default_catalog, save_user_model, spec_from_model

    texts = []
    for f, what in ((lgip_file, "`nvidia-smi mig -lgip` text file"), (lgipp_file, "`nvidia-smi mig -lgipp` text file")):
        data = read_input(f, what, hint="save the output of `nvidia-smi mig -lgip` and `-lgipp` to files")
        texts.append(data.decode("utf-8", errors="replace"))
    rows = rows_from_text(texts[0], texts[1], gpu=gpu, lgip_file=str(lgip_file), lgipp_file=str(lgipp_file))
    cat = default_catalog()
    base_key = cat.find_key(name)
    base = cat.model(base_key) if base_key else None
    drv = parse_driver(driver) if driver else None
    model = model_from_rows(
        base_key or name, rows, names=[name] if base is None else list(base.names), architecture=architecture,
        driver=drv, origin="user", memory_source="nvidia-smi -lgip text", base=base,
    )
    problems = model.check([])  # geometry sanity: an empty layout is always legal
    if problems:
        raise InputError(
            f"the pasted tables do not describe a usable GPU: {'; '.join(problems)}",
            hint="paste the complete output of `nvidia-smi mig -lgip` and `nvidia-smi mig -lgipp` of one GPU",
        )
    spec = spec_from_model(model, driver_label=driver, sources=[f"imported from {lgip_file} and {lgipp_file}"])
    return model, save_user_model(model.key, spec)
