"""A simulated host built from a real host's captures (`migbench sim init DIR --from CAPTURE`), so CI
can dry-run `apply` against *that* box without a GPU.

A capture is a directory of nvidia-smi text (`migbench doctor --capture` writes one; the file
names are `backend.capture.CAPTURE_FILES`) and optionally `nvml.json`. What each part gives:

- `-L` (or `-q`, or nvml.json): how many GPUs, their product name and UUIDs, the MIG device UUIDs;
- `-q` (or nvml.json): the driver version, MIG mode current / pending, bus ids;
- nvml.json's `profiles`: the profile table as NVML reported it (memory exact, so a plan made on the
  simulated host is byte-identical to one made on the real host); else `-lgip` + `-lgipp`, read by
  the catalogue's importer (memory to 0.01 GiB); else the built-in catalogue's table for the
  product name;
- `-lgi`: GPU instances with their ids and placements; `-lci`: compute instances with their ids,
  profiles and placements (without `-lci`, each MIG device of `-L` is taken as its GPU instance's
  full compute instance);
- nvml.json's `clients`: the processes that held each GPU, kept as the simulator's clients.

Everything is checked against the model (legal placements, known profile ids); a capture that
contradicts itself is an error naming the file. Guesses are returned as notes for the user.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migbench.backend.capture import CAPTURE_FILES, NVML_FILE
from migbench.backend.sim.host import SimHost, create_host
from migbench.backend.sim.rules import ci_profiles, full_driver, newest_driver
from migbench.backend.sim.state import ComputeInstance, GpuInstance, SimGpu, SimState, bus_id_of, gpu_uuid_of, mig_uuid_of
from migbench.backend.smi import LciRow, LgiRow, parse_L, parse_lci, parse_lgi, parse_q
from migbench.catalog import (
    Catalog,
    Engines,
    GpuModel,
    Placement,
    ProfileRow,
    default_catalog,
    model_from_rows,
    model_from_spec,
    parse_driver,
    rows_from_text,
    spec_from_model,
)
from migbench.errors import InputError, MigbenchError
from migbench.fsutil import read_input

_PID_SUFFIX = re.compile(r"\s*\(PID \d+\)$")


@dataclass
class Capture:
    """The parts of a capture directory that were present, parsed."""

    dir: Path
    texts: dict[str, str] = field(default_factory=dict)
    nvml: dict[str, Any] = field(default_factory=dict)

    def text(self, name: str) -> str | None:
        return self.texts.get(name)

    def path(self, name: str) -> str:
        return str(self.dir / name)


def read_capture(directory: str | Path) -> Capture:
    d = Path(directory)
    if not d.is_dir():
        raise InputError(f"{d} is not a capture directory", hint="write one on the GPU host with `migbench doctor --capture DIR`")
    cap = Capture(d)
    hint = "capture again with `migbench doctor --capture DIR`"
    for name in CAPTURE_FILES:
        p = d / name
        if p.is_file():
            cap.texts[name] = read_input(p, "capture file", hint=hint, regular=True).decode(errors="replace")
    p = d / NVML_FILE
    if p.is_file():
        try:
            doc = json.loads(read_input(p, "capture file", hint=hint, regular=True).decode(errors="replace"))
        except ValueError as exc:
            raise InputError(f"{p}: not valid JSON ({exc})", hint="capture again with `migbench doctor --capture DIR`") from None
        if isinstance(doc, dict) and "error" not in doc:
            cap.nvml = doc
    if not cap.texts and not cap.nvml:
        raise InputError(
            f"{d} holds no capture: none of {', '.join([*CAPTURE_FILES, NVML_FILE])}",
            hint="write one on the GPU host with `migbench doctor --capture DIR`",
        )
    return cap


def host_from_capture(
    capture_dir: str | Path,
    state_dir: str | Path,
    *,
    driver: str | None = None,
    privileged: bool = True,
    vm: bool = False,
    seed: int = 0,
) -> tuple[SimHost, list[str]]:
    """Create the simulated host in `state_dir` from the capture in `capture_dir`. Returns the host
    and notes on what the capture did not say and was assumed."""
    cap = read_capture(capture_dir)
    notes: list[str] = []
    L = parse_L(cap.text("nvidia-smi-L.txt") or "")
    q = parse_q(cap.text("nvidia-smi-q.txt") or "")
    ngpus = [g for g in cap.nvml.get("gpus", []) if isinstance(g, dict)]
    count = max(len(L.gpus), len(q.gpus), len(ngpus))
    if count == 0:
        raise InputError(f"{cap.dir}: the capture names no GPU", hint="it needs `nvidia-smi -L`, `-q` or nvml.json")
    names = [g.name for g in L.gpus] or [g.product_name for g in q.gpus if g.product_name] or [str(g.get("name")) for g in ngpus]
    if len(set(names)) > 1:
        raise InputError(
            f"{cap.dir}: the capture holds several GPU models ({', '.join(sorted(set(names)))})",
            hint="a simulated host holds one model: capture (or keep) the GPUs of one model",
        )
    name = names[0] if names else None

    cat = default_catalog()
    key = cat.find_key(name) if name else None
    drv = _driver(cap, driver or q.driver or cap.nvml.get("driver"), name, key, cat, notes)
    model, spec = _model(cap, name, key, drv, notes)

    gpus: list[SimGpu] = []
    for i in range(count):
        lg = L.gpus[i] if i < len(L.gpus) else None
        qg = q.gpus[i] if i < len(q.gpus) else None
        ng = ngpus[i] if i < len(ngpus) else {}
        uuid = (lg.uuid if lg else None) or (qg.uuid if qg else None) or ng.get("uuid") or gpu_uuid_of(seed, model.key, i)
        bus = (qg.bus_id if qg else None) or ng.get("bus_id") or bus_id_of(i, vm)
        clients = sorted({_PID_SUFFIX.sub("", str(c)) for c in ng.get("clients", [])})
        gpus.append(SimGpu(index=i, uuid=str(uuid), bus_id=str(bus), mig_current=False, mig_pending=False, clients=clients))
    st = SimState(model_key=model.key, driver=drv, seed=seed, vm=vm, privileged=privileged, gpus=gpus, model_spec=spec)

    lgi = parse_lgi(cap.text("mig-lgi.txt") or "")
    lci_text = cap.text("mig-lci.txt")
    lci = parse_lci(lci_text or "")
    for g in gpus:
        qg = q.gpus[g.index] if g.index < len(q.gpus) else None
        ng = ngpus[g.index] if g.index < len(ngpus) else {}
        mine = [r for r in lgi if r.gpu == g.index]
        cur = qg.mig_current if qg and qg.mig_current is not None else ng.get("mig_current")
        pend = qg.mig_pending if qg and qg.mig_pending is not None else ng.get("mig_pending")
        if cur is None:
            cur = bool(mine or L.devices_of(g.index))
            notes.append(
                f"GPU {g.index}: the capture does not say its MIG mode (no -q): taken as "
                f"{'enabled (it has instances)' if cur else 'disabled (no instance listed)'}"
            )
        g.mig_current, g.mig_pending = bool(cur), bool(cur if pend is None else pend)
        if mine and not g.mig_current:
            raise InputError(
                f"{cap.path('mig-lgi.txt')}: GPU {g.index} lists GPU instances but MIG mode is disabled", hint="capture -q and -lgi of the same moment"
            )
        g.gpu_instances = _instances(cap, st, g, mine)
        cis = [r for r in lci if r.gpu == g.index]
        if lci_text is not None and (cis or not mine or "No compute instances found" in lci_text):
            _compute_instances(cap, st, g, cis)
        elif mine:
            _compute_instances_from_L(cap, st, g, L.devices_of(g.index), notes)
        _mig_uuids(st, g, L.devices_of(g.index), notes)
    return create_host(state_dir, st), notes


def _driver(cap: Capture, drv_text: Any, name: str | None, key: str | None, cat: Catalog, notes: list[str]) -> str:
    """The driver to simulate: the one given or captured, else the newest the catalogue knows for the model."""
    if drv_text:
        return full_driver(str(drv_text))
    if key is not None:
        drv = newest_driver(cat, key)
        notes.append(
            f"the capture does not say the driver (no -q, no nvml.json): simulating {drv}, the newest the catalogue knows for {key}; pass --driver to choose"
        )
        return drv
    raise InputError(
        f"{cap.dir}: the capture does not say the driver and the catalogue does not know {name!r}",
        hint="pass --driver VERSION (as `nvidia-smi -q` prints it)",
    )


def _model(cap: Capture, name: str | None, key: str | None, drv: str, notes: list[str]) -> tuple[GpuModel, dict[str, Any] | None]:
    """The profile table: the capture's -lgip/-lgipp through the catalogue importer, else the
    catalogue's model for the product name. Returns (model, its spec for the host, or None)."""
    cat = default_catalog()
    base = cat.model(key, drv) if key else None
    lgip, lgipp = cap.text("mig-lgip.txt"), cap.text("mig-lgipp.txt")
    why = "no -lgip/-lgipp in the capture"
    table = next((g.get("profiles") for g in cap.nvml.get("gpus", []) if isinstance(g, dict) and g.get("profiles")), None)
    if table:  # NVML's own table: memory exact, so plans made here match plans made on the host
        try:
            rows = [
                ProfileRow(
                    name=str(r["name"]),
                    id=int(r["id"]),
                    compute_slices=int(r["compute_slices"]),
                    max_count=int(r["max_count"]),
                    memory_mib=int(r["memory_mib"]),
                    starts=tuple(int(x) for x in r["starts"]),
                    memory_slices=int(r["memory_slices"]),
                    engines=Engines(**{k: r.get("engines", {}).get(k) for k in ("sm", "ce", "dec", "enc", "jpeg", "ofa")}),
                )
                for r in table
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{cap.path(NVML_FILE)}: malformed profile table ({exc})", hint="capture again with `migbench doctor --capture DIR`") from None
        return _captured_model(cap, rows, name, key, base, drv, "NVML memorySizeMB of the captured host")
    if lgip and lgipp:
        try:
            from migbench.catalog import parse_lgip

            gpu = min(parse_lgip(lgip, file=cap.path("mig-lgip.txt")))
            rows = rows_from_text(lgip, lgipp, gpu=gpu, lgip_file=cap.path("mig-lgip.txt"), lgipp_file=cap.path("mig-lgipp.txt"))
        except MigbenchError as exc:
            why = f"the capture's -lgip/-lgipp could not be read ({exc.message})"
        else:
            return _captured_model(cap, rows, name, key, base, drv, "nvidia-smi -lgip text of the captured host")
    if base is None:
        raise InputError(
            f"{cap.dir}: {why}, and the catalogue does not know {name!r}",
            hint="capture as root (`sudo migbench doctor --capture DIR`) so -lgip and -lgipp are listed",
        )
    notes.append(f"{why}: the profile table is the built-in catalogue's {base.key} for driver {drv}")
    return base, None


def _captured_model(
    cap: Capture, rows: list[ProfileRow], name: str | None, key: str | None, base: GpuModel | None, drv: str, source: str
) -> tuple[GpuModel, dict[str, Any]]:
    model = model_from_rows(
        key or (name or "captured-gpu").replace("NVIDIA ", "").replace(" ", "-"),
        rows,
        names=[name] if name and base is None else [],
        driver=parse_driver(drv),
        origin="capture",
        memory_source=source,
        base=base,
    )
    problems = model.check([])
    if problems:
        raise InputError(
            f"{cap.dir}: the captured profile table does not describe a usable GPU: {'; '.join(problems)}", hint="capture -lgip and -lgipp of the same GPU"
        )
    spec = spec_from_model(model, driver_label=drv, sources=[f"captured: {cap.dir}"])
    if key is not None:  # what the tables do not show: the driver's rules, the whole GPU's memory
        raw = default_catalog().specs[key]
        spec.update({k: raw[k] for k in ("rules", "memory_total_mib") if k in raw})
    for p in spec["profiles"]:
        p["memory_mib"][0]["note"] = source
    if source.startswith("NVML"):
        spec["unverified"] = []  # the driver's own table, as the host reported it
    return model_from_spec(model.key, spec, drv, origin="capture"), spec


def _instances(cap: Capture, st: SimState, g: SimGpu, rows: list[LgiRow]) -> list[GpuInstance]:
    model = st.model
    out: list[GpuInstance] = []
    for r in rows:
        try:
            prof = model.profile_by_id(r.profile_id)
        except MigbenchError:
            raise InputError(
                f"{cap.path('mig-lgi.txt')}: GPU {g.index} GPU instance {r.instance_id} has profile id {r.profile_id}, which {model.key} does not have"
            ) from None
        if prof.name != r.name or r.start not in prof.starts or r.size != prof.memory_slices:
            raise InputError(
                f"{cap.path('mig-lgi.txt')}: GPU {g.index} GPU instance {r.instance_id} ({r.name} at "
                f"{r.start}:{r.size}) is not a placement of {model.key}'s profile {r.profile_id} "
                f"({prof.name}, {{{','.join(map(str, prof.starts))}}}:{prof.memory_slices})"
            )
        if any(x.id == r.instance_id for x in out):
            raise InputError(f"{cap.path('mig-lgi.txt')}: GPU {g.index} lists GPU instance {r.instance_id} twice")
        st.serial += 1
        out.append(GpuInstance(id=r.instance_id, profile_id=prof.id, start=r.start, size=prof.memory_slices, serial=st.serial))
    problems = model.check([Placement(model.profile_by_id(x.profile_id).name, x.start) for x in out])
    if problems:
        raise InputError(f"{cap.path('mig-lgi.txt')}: GPU {g.index}'s instances are not a legal layout: {'; '.join(problems)}")
    return sorted(out, key=lambda x: x.id)


def _compute_instances(cap: Capture, st: SimState, g: SimGpu, rows: list[LciRow]) -> None:
    for r in rows:
        gi = g.gi(r.gpu_instance_id)
        if gi is None:
            raise InputError(
                f"{cap.path('mig-lci.txt')}: compute instance {r.instance_id} is in GPU instance {r.gpu_instance_id}, which -lgi does not list on GPU {g.index}"
            )
        cps = {c.id: c for c in ci_profiles(st.model, st.gi_profile(gi))}
        cp = cps.get(r.profile_id)
        if cp is None:
            raise InputError(f"{cap.path('mig-lci.txt')}: GPU instance {gi.id} ({st.gi_profile(gi).name}) has no compute instance profile {r.profile_id}")
        used = {s for c in gi.compute_instances for s in range(c.start, c.start + c.size)}
        start = r.start if r.start is not None else next((s for s in cp.starts if not set(range(s, s + cp.slices)) & used), None)
        if start is None or start not in cp.starts or set(range(start, start + cp.slices)) & used:
            raise InputError(f"{cap.path('mig-lci.txt')}: compute instance {r.instance_id} of GPU instance {gi.id} does not fit at {start} ({cp.name})")
        st.serial += 1
        gi.compute_instances.append(ComputeInstance(id=r.instance_id, profile_id=cp.id, start=start, size=cp.slices, uuid="", serial=st.serial))
        gi.compute_instances.sort(key=lambda c: c.id)


def _compute_instances_from_L(cap: Capture, st: SimState, g: SimGpu, devices: tuple[Any, ...], notes: list[str]) -> None:
    """No -lci: each `-L` MIG device is a GPU instance's full compute instance, in GPU-instance id
    order (the order `-L` numbers devices in)."""
    gis = sorted(g.gpu_instances, key=lambda x: x.id)
    names = [st.gi_profile(gi).name for gi in gis]
    if [d.profile for d in devices] != names:
        notes.append(f"GPU {g.index}: no -lci in the capture and -L's MIG devices do not match -lgi's instances: the GPU instances have no compute instance")
        return
    notes.append(f"GPU {g.index}: no -lci in the capture: each MIG device of -L is taken as its GPU instance's full compute instance")
    for gi in gis:
        cp = next(c for c in ci_profiles(st.model, st.gi_profile(gi)) if c.is_default)
        st.serial += 1
        gi.compute_instances = [ComputeInstance(id=0, profile_id=cp.id, start=0, size=cp.slices, uuid="", serial=st.serial)]


def _mig_uuids(st: SimState, g: SimGpu, devices: tuple[Any, ...], notes: list[str]) -> None:
    """The MIG device UUIDs `-L` listed, in device order (GI id, CI id), where the capture agrees
    with itself; else new ones (as the simulator makes them)."""
    cis = [(gi, ci) for gi in sorted(g.gpu_instances, key=lambda x: x.id) for ci in sorted(gi.compute_instances, key=lambda c: c.id)]
    if not cis:
        return
    cps = {(gi.id, ci.id): next(c for c in ci_profiles(st.model, st.gi_profile(gi)) if c.id == ci.profile_id).name for gi, ci in cis}
    same = [d.profile for d in devices] == [cps[(gi.id, ci.id)] for gi, ci in cis]
    if devices and not same:
        notes.append(
            f"GPU {g.index}: -L lists {len(devices)} MIG device(s) that do not match the {len(cis)} compute "
            "instance(s) of -lgi/-lci (captured at another moment?): their MIG uuids are new"
        )
    for n, (gi, ci) in enumerate(cis):
        ci.uuid = devices[n].uuid if same else mig_uuid_of(st, g, gi.id, ci.id, ci.serial)
