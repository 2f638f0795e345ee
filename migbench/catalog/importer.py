"""Profile tables from text or NVML: `nvidia-smi mig -lgip` / `-lgipp` parsers and `model_from_rows`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from migbench.catalog.model import (
    DriverVersion,
    Engines,
    GpuModel,
    Profile,
    compute_slices_of,
    parse_driver,
    profile_order,
    variant_of,
)
from migbench.errors import InputError, MigbenchError, Problem, UsageError
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
    compute_slices: int | None = None,
    unverified: Sequence[str] = (),
) -> GpuModel:
    """Build a GpuModel from a live profile table. Geometry comes from the placements themselves:
    memory slices = max(start + size), compute slices = the largest profile's compute slices (or
    `compute_slices` when the caller knows the table lacks the full-GPU profile)."""
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
                variant=variant_of(r.name),
            )
        )
    mem_slices = max(max(p.starts, default=0) + p.memory_slices for p in profiles)
    compute = compute_slices or max(p.compute_slices for p in profiles)
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
        unverified=tuple(unverified),
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
    row1 = re.compile(r"^\|\s*(\d+)\s+MIG\s+(\S+)\s+(\d+)\s+(\d+)/(\d+)\s+([0-9.]+)\s+(Yes|No)\s+(\d+)\s+(\d+)\s+(\d+)\s*\|")
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


_ELISION = re.compile(r"^\s*(?:\|\s*)?(?:\.{3,}|…)")


def paste_problems(lgip: str, lgipp: str, *, gpu: int = 0, lgip_file: str = "lgip", lgipp_file: str = "lgipp") -> list[str]:
    """Why a pasted `-lgip`/`-lgipp` pair does not describe one whole GPU ([] when it does).

    A web page's table cut with `.......` or a copy that stops mid-table still parses, and taking the geometry
    from what is left builds the wrong GPU (an 8-memory/3-compute H100 from an `-lgip` that stops at 3g.40gb).
    The checks: every profile id of one text is in the other; the full-GPU profile (placement `{0}:N` over
    all N memory slices the `-lgipp` uses) is present; each profile fits the GPU (size and compute within the
    full profile's, `max x size` within the memory slices, `max x compute` within the compute slices, no more
    memory than the full profile); no elision marks or half rows in the `-lgip` table.
    """
    tables = parse_lgip(lgip, file=lgip_file)
    places = parse_lgipp(lgipp, file=lgipp_file)
    rows = tables.get(gpu, [])
    pl = places.get(gpu, {})
    problems: list[str] = []
    if not rows:
        return [f"{lgip_file} has no profiles for GPU {gpu} (GPUs present: {sorted(tables)})"]
    if not pl:
        return [f"{lgipp_file} has no placements for GPU {gpu} (GPUs present: {sorted(places)})"]
    ids = {r.id for r in rows}
    only_lgipp = sorted(set(pl) - ids)
    only_lgip = sorted(ids - set(pl))
    if only_lgipp:
        problems.append(
            f"profile ID(s) {', '.join(map(str, only_lgipp))} have placements in {lgipp_file} but no row in {lgip_file}: the -lgip paste is cut short"
        )
    if only_lgip:
        names = ", ".join(f"{r.name} (ID {r.id})" for r in rows if r.id in only_lgip)
        problems.append(f"{names} have no placements in {lgipp_file}: the -lgipp paste is cut short")
    elided = [ln.strip() for ln in lgip.splitlines() if _ELISION.match(ln)]
    if elided:
        problems.append(f"{lgip_file} contains {len(elided)} elision line(s) ({elided[0]!r}): rows were left out")
    half = [r.name for r in rows if r.engines.ce is None]
    if half:
        problems.append(f"{lgip_file} stops inside the row of {', '.join(half)} (its second line is missing)")
    n_mem = max(max(starts, default=0) + size for starts, size in pl.values())
    full = [r for r in rows if r.id in pl and pl[r.id] == ((0,), n_mem)]
    if not full:
        problems.append(
            f"no full-GPU profile: nothing in both pastes has the placement {{0}}:{n_mem} over all "
            f"{n_mem} memory slices, so the GPU's compute slices are unknown"
        )
        return problems
    f = max(full, key=lambda r: r.compute_slices)
    for r in rows:
        if r.id not in pl:
            continue
        starts, size = pl[r.id]
        if r.compute_slices > f.compute_slices or size > n_mem:
            problems.append(f"{r.name} is larger than the full-GPU profile {f.name}")
        if r.max_count * size > n_mem or r.max_count * r.compute_slices > f.compute_slices:
            problems.append(f"{r.max_count} x {r.name} would need more than the GPU's {n_mem} memory / {f.compute_slices} compute slices")
        if r.max_count > len(starts):
            problems.append(f"{r.name} allows {r.max_count} instances but has only {len(starts)} placements")
        if r.memory_mib > f.memory_mib:
            problems.append(f"{r.name} has more memory than the full-GPU profile {f.name}")
    return problems


def rows_from_text(lgip: str, lgipp: str, *, gpu: int = 0, lgip_file: str = "lgip", lgipp_file: str = "lgipp", partial: bool = False) -> list[ProfileRow]:
    """Join -lgip and -lgipp text for one GPU into complete rows. A paste that does not describe the whole GPU
    (`paste_problems`) is refused; with `partial` the profiles present in both are returned."""
    problems = paste_problems(lgip, lgipp, gpu=gpu, lgip_file=lgip_file, lgipp_file=lgipp_file)
    if problems and not partial:
        raise InputError(
            "the -lgip and -lgipp texts do not describe one whole GPU",
            hint="paste the complete output of `nvidia-smi mig -lgip` and `nvidia-smi mig -lgipp` of one GPU and "
            "driver; `catalog import --partial` imports what is there with a recorded warning",
            problems=[Problem(p, file=lgip_file) for p in problems],
        )
    tables = parse_lgip(lgip, file=lgip_file)
    places = parse_lgipp(lgipp, file=lgipp_file).get(gpu, {})
    rows = [replace(r, starts=places[r.id][0], memory_slices=places[r.id][1]) for r in tables.get(gpu, []) if r.id in places]
    if not rows:
        raise InputError(f"{lgip_file} and {lgipp_file} share no profile for GPU {gpu}", hint="capture both from the same GPU and driver")
    return rows


# Compute slices of a GPU whose paste lacks the full-GPU profile, by its memory slices: every catalogue model
# with 8 memory slices has 7 compute slices, every one with 4 has 4 (docs/mig-facts.md#slot-model) [D].
_COMPUTE_BY_MEMORY_SLICES = {8: 7, 4: 4}


def import_files(
    lgip_file: str | Path,
    lgipp_file: str | Path,
    *,
    name: str,
    driver: str | None = None,
    architecture: str = "unknown",
    gpu: int = 0,
    partial: bool = False,
    force: bool = False,
) -> tuple[GpuModel, Path]:
    """`migbench catalog import`: build a model from saved `nvidia-smi mig -lgip` and `-lgipp` text and store it
    in the user catalogue under `name` (a known model keeps its names and facts). Returns the model and the
    catalogue file. A paste that does not describe a whole GPU is refused; with `partial` it is imported and
    every problem is recorded in the model's `unverified` list as `partial import: ...` (plans warn).
    Replacing a model the catalogue already has (built-in or imported) needs `force`: a typo in `--name`
    must not silently shadow a sourced built-in table."""
    from migbench.catalog.store import default_catalog, name_problem, save_user_model, spec_from_model

    if (bad := name_problem(name)) is not None:
        shown = name if len(name) <= 60 else name[:57] + "..."
        raise UsageError(f"--name {shown!r}: {bad}", hint="e.g. --name H100-NVL; use the NVML product name from `nvidia-smi -L`")
    known = default_catalog().find_key(name)
    if known is not None and not force:
        origin = default_catalog().origins.get(known, "builtin")
        what = "a built-in model" if origin == "builtin" else "a model you imported"
        raise InputError(
            f"{name!r} is {what} ({known}); importing would replace its profile table",
            hint="pass --force to replace it, or choose another --name for the new GPU",
        )

    texts = []
    for f, what in ((lgip_file, "`nvidia-smi mig -lgip` text file"), (lgipp_file, "`nvidia-smi mig -lgipp` text file")):
        data = read_input(f, what, hint="save the output of `nvidia-smi mig -lgip` and `-lgipp` to files")
        texts.append(data.decode("utf-8", errors="replace"))
    problems = paste_problems(texts[0], texts[1], gpu=gpu, lgip_file=str(lgip_file), lgipp_file=str(lgipp_file))
    rows = rows_from_text(texts[0], texts[1], gpu=gpu, lgip_file=str(lgip_file), lgipp_file=str(lgipp_file), partial=partial)
    cat = default_catalog()
    base_key = cat.find_key(name)
    base = cat.model(base_key) if base_key else None
    drv = parse_driver(driver) if driver else None
    notes = [f"partial import: {p}" for p in problems]
    compute = None
    if problems:
        places = parse_lgipp(texts[1], file=str(lgipp_file)).get(gpu, {})
        n_mem = max(max(s, default=0) + z for s, z in places.values())
        present = max(r.compute_slices for r in rows)
        compute = base.compute_slices if base else _COMPUTE_BY_MEMORY_SLICES.get(n_mem, present)
        notes.append(
            f"partial import: {compute} compute slices taken from "
            + ("the catalogue's " + base.key if base else f"the {n_mem}-memory-slice models of the catalogue")
            + f", not from the paste (its largest profile has {present})"
        )
    model = model_from_rows(
        base_key or name,
        rows,
        names=[name] if base is None else list(base.names),
        architecture=architecture,
        driver=drv,
        origin="user",
        memory_source="nvidia-smi -lgip text",
        base=base,
        compute_slices=compute,
        unverified=notes,
    )
    geometry = model.check([])  # geometry sanity: an empty layout is always legal
    if geometry:
        raise InputError(
            f"the pasted tables do not describe a usable GPU: {'; '.join(geometry)}",
            hint="paste the complete output of `nvidia-smi mig -lgip` and `nvidia-smi mig -lgipp` of one GPU",
        )
    spec = spec_from_model(model, driver_label=driver, sources=[f"imported from {lgip_file} and {lgipp_file}"])
    return model, save_user_model(model.key, spec)
