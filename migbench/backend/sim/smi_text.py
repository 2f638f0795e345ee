"""The simulated nvidia-smi's text: pure functions of a simulated host's state, formatted like the real
driver's output (checked line for line against the captures in tests/data/samples/).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from migbench.backend.sim.host import SimGpu, SimState
from migbench.backend.sim.rules import R470, CiProfile, ci_profiles, cuda_driver_version, uses_new_mig_uuids
from migbench.backend.sim.state import ComputeInstance, GpuInstance, ci_remaining
from migbench.catalog import profile_order

# ---------------------------------------------------------------------------------------------
# Formatting (pure functions of a SimState)
# ---------------------------------------------------------------------------------------------


def _gib(mib: int) -> str:
    # nvidia-smi prints memorySizeMB / 1024 with two decimals (4864 -> 4.75, 20096 -> 19.62).
    return f"{mib / 1024:.2f}"


def n2(n: int) -> str:
    """Numbers in the create/destroy lines are right-aligned in two characters: `ID  2`, `GPU  0`."""
    return f"{n:2d}"


def gi_sort_key(st: SimState, gi: GpuInstance) -> tuple:
    """nvidia-smi lists GPU instances by profile (its -lgip order), then by instance id (the captures'
    -lgi, -lci and -dci/-dgi orders)."""
    return (profile_order(st.gi_profile(gi)), gi.id)


def sorted_gis(st: SimState, g: SimGpu) -> list[GpuInstance]:
    return sorted(g.gpu_instances, key=lambda gi: gi_sort_key(st, gi))


def format_L(st: SimState, gpus: Sequence[int] | None = None) -> str:
    """`nvidia-smi -L`. R470+: `  MIG 1g.5gb      Device  0: (UUID: MIG-...)` (profile padded to 11,
    index in 2); before R470: `  MIG 1c.3g.20gb Device 0: (UUID: MIG-GPU-.../1/0)` (docs/mig-facts.md#smi-formats; the
    padding of shorter names before R470 is [U])."""
    lines = []
    new = uses_new_mig_uuids(st.driver_version)
    for i in gpus if gpus is not None else range(len(st.gpus)):
        g = st.gpus[i]
        lines.append(f"GPU {g.index}: {st.product_name} (UUID: {g.uuid})")
        for d in st.mig_devices(g.index):
            if new:
                lines.append(f"  MIG {d.name:<11} Device {d.index:2d}: (UUID: {d.uuid})")
            else:
                lines.append(f"  MIG {d.name} Device {d.index}: (UUID: {d.uuid})")
    return "\n".join(lines) + "\n"


def format_lgip(st: SimState, gpus: Sequence[int]) -> str:
    """`nvidia-smi mig -lgip`: the 79-column table; Free = remaining capacity now, Total = instanceCount."""
    bar = "+" + "-" * 77 + "+"
    out = [
        bar,
        "| GPU instance profiles:" + " " * 54 + "|",
        "| GPU   Name             ID    Instances   Memory     P2P    SM    DEC   ENC  |",
        "|                              Free/Total   GiB              CE    JPEG  OFA  |",
        "|" + "=" * 77 + "|",
    ]
    for i in gpus:
        for p in sorted(st.model.profiles, key=profile_order):
            e = p.engines
            ft = f"{st.remaining_capacity(i, p)}/{p.max_count}"
            out.append(
                f"|{i:>4}  {p.full_name:<16}{p.id:>4}     {ft:<11}{_gib(p.memory_mib or 0):<11}{'No':<7}"
                f"{e.sm or 0:<7}{e.dec or 0:<6}{e.enc or 0:<4}|"
            )
            out.append(f"|{'':60}{e.ce or 0:>2}{'':5}{e.jpeg or 0:<6}{e.ofa or 0:<4}|")
            out.append(bar)
    return "\n".join(out) + "\n"


def format_lgipp(st: SimState, gpus: Sequence[int]) -> str:
    """`nvidia-smi mig -lgipp`: `GPU  0 Profile ID 19 Placements: {0,1,2,3,4,5,6}:1`; one-start profiles
    print the singular `Placement :` (samples)."""
    out = []
    for i in gpus:
        for p in sorted(st.model.profiles, key=profile_order):
            starts = ",".join(str(s) for s in p.starts)
            word = "Placement :" if len(p.starts) == 1 else "Placements:"
            out.append(f"GPU {i:2d} Profile ID {p.id:2d} {word} {{{starts}}}:{p.memory_slices}")
    return "\n".join(out) + "\n"


def _lgi_wide(st: SimState) -> bool:
    """The -lgi name column is 3 characters wider in the A30 (pre-R525) and H100 525.125.06 captures than in
    the User Guide's early A100 capture; the switch is placed at R470 [U]."""
    return st.driver_version >= R470


def format_lgi(st: SimState, rows: Sequence[tuple[int, GpuInstance]]) -> str:
    """`nvidia-smi mig -lgi` for (gpu, GI) rows in display order."""
    wide = _lgi_wide(st)
    w = 57 if wide else 54
    bar = "+" + "-" * (w - 2) + "+"
    if wide:
        head = [
            "| GPU instances:" + " " * (w - 17) + "|",
            "| GPU   Name             Profile  Instance   Placement  |",
            "|                          ID       ID       Start:Size |",
        ]
    else:
        head = [
            "| GPU instances:" + " " * (w - 17) + "|",
            "| GPU   Name          Profile  Instance   Placement  |",
            "|                       ID       ID       Start:Size |",
        ]
    out = [bar, *head, "|" + "=" * (w - 2) + "|"]
    for gpu, gi in rows:
        name = st.gi_profile(gi).full_name
        nw, pw = (17, 5) if wide else (14, 5)
        out.append(f"|{gpu:>4}  {name:<{nw}}{gi.profile_id:>{pw}}{gi.id:>9}{f'{gi.start}:{gi.size}':>13}{'':5}|")
        out.append(bar)
    return "\n".join(out) + "\n"


def _lci_placement(st: SimState) -> bool:
    """-lci has a Placement column in the newer layout; the older one (openpbs comment) has none. The
    switch is placed at R470 [U]."""
    return st.driver_version >= R470


def format_lci(st: SimState, rows: Sequence[tuple[int, GpuInstance, ComputeInstance]]) -> str:
    """`nvidia-smi mig -lci` (docs/mig-facts.md#smi-formats, both layouts)."""
    placement = _lci_placement(st)
    w = 70 if placement else 57
    bar = "+" + "-" * (w - 2) + "+"
    if placement:
        head = [
            "| Compute instances:" + " " * (w - 21) + "|",
            "| GPU     GPU       Name             Profile   Instance   Placement  |",
            "|       Instance                       ID        ID       Start:Size |",
            "|         ID" + " " * (w - 13) + "|",
        ]
    else:
        head = [
            "| Compute instances:" + " " * (w - 21) + "|",
            "| GPU     GPU       Name             Profile   Instance |",
            "|       Instance                       ID        ID     |",
            "|         ID" + " " * (w - 13) + "|",
        ]
    out = [bar, *head, "|" + "=" * (w - 2) + "|"]
    for gpu, gi, ci in rows:
        cp = ci_profile_of(st, gi, ci.profile_id)
        name = f"MIG {cp.name}"
        row = f"|{gpu:>4}{gi.id:>7}       {name:<17}{ci.profile_id:>5}{ci.id:>10}"
        row += f"{f'{ci.start}:{ci.size}':>13}{'':5}|" if placement else "     |"
        out.append(row)
        out.append(bar)
    return "\n".join(out) + "\n"


def ci_profile_of(st: SimState, gi: GpuInstance, ci_profile_id: int) -> CiProfile:
    return next(c for c in ci_profiles(st.model, st.gi_profile(gi)) if c.id == ci_profile_id)


def format_lcip(st: SimState, rows: Sequence[tuple[int, GpuInstance]]) -> str:
    """`nvidia-smi mig -lcip`: one block of rows per GI (docs/mig-facts.md#compute-instances layout); `*` marks the
    default profile; Free/Total = remaining/instanceCount."""
    w = 88
    bar = "+" + "-" * (w - 2) + "+"
    out = [
        bar,
        "| Compute instance profiles:" + " " * (w - 29) + "|",
        "| GPU     GPU       Name             Profile  Instances   Exclusive       Shared       |",
        "|       Instance                       ID     Free/Total     SM       DEC   ENC   OFA  |",
        "|         ID                                                          CE    JPEG       |",
        "|" + "=" * (w - 2) + "|",
    ]
    for gpu, gi in rows:
        for cp in ci_profiles(st.model, st.gi_profile(gi)):
            e = cp.engines
            ft = f"{ci_remaining(gi, cp)}/{cp.max_count}"
            star = "*" if cp.is_default else " "
            out.append(
                f"|{gpu:>4}{gi.id:>7}       {'MIG ' + cp.name:<17}{cp.id:>5}{star}     {ft:<14}"
                f"{cp.sm or 0:<10}{e.dec or 0:<6}{e.enc or 0:<6}{e.ofa or 0:<4}|"
            )
            out.append(f"|{'':70}{e.ce or 0:<6}{e.jpeg or 0:<6}{'':4}|")
            out.append(bar)
    return "\n".join(out) + "\n"


# --query-gpu fields: name -> (header, unit, getter). Aliases map to the canonical name.
QUERY_ALIASES = {
    "gpu_name": "name",
    "gpu_uuid": "uuid",
    "gpu_bus_id": "pci.bus_id",
    "mig.mode": "mig.mode.current",
}


def _query_value(st: SimState, g: SimGpu, field: str) -> tuple[str, str | None]:
    """(value text, unit) of one --query-gpu field; "[N/A]" where the simulator does not know it."""
    if field == "index":
        return str(g.index), None
    if field == "count":
        return str(len(st.gpus)), None
    if field == "name":
        return st.product_name, None
    if field == "uuid":
        return g.uuid, None
    if field == "pci.bus_id":
        return g.bus_id, None
    if field == "driver_version":
        return st.driver, None
    if field == "mig.mode.current":
        return ("Enabled" if g.mig_current else "Disabled"), None
    if field == "mig.mode.pending":
        return ("Enabled" if g.mig_pending else "Disabled"), None
    if field == "memory.total":
        total = st.model.memory_total_mib
        return (str(total) if total else "[N/A]"), "MiB"
    raise KeyError(field)


QUERY_FIELDS = ("index", "count", "name", "uuid", "pci.bus_id", "driver_version", "mig.mode.current",
                "mig.mode.pending", "memory.total")


def format_query(st: SimState, gpus: Sequence[int], fields: Sequence[str], noheader: bool, nounits: bool) -> str:
    """`--query-gpu=a,b --format=csv[,noheader][,nounits]`: header `a, b` (units in brackets, e.g.
    `memory.total [MiB]`, kept with nounits [U]), values joined with `, ` (docs/mig-facts.md#smi-formats)."""
    canon = [QUERY_ALIASES.get(f, f) for f in fields]
    out = []
    if not noheader:
        heads = []
        for f, c in zip(fields, canon):
            unit = _query_value(st, st.gpus[0], c)[1]
            heads.append(f"{f} [{unit}]" if unit else f)
        out.append(", ".join(heads))
    for i in gpus:
        vals = []
        for c in canon:
            v, unit = _query_value(st, st.gpus[i], c)
            vals.append(f"{v} {unit}" if unit and not nounits and v != "[N/A]" else v)
        out.append(", ".join(vals))
    return "\n".join(out) + "\n"


def format_q(st: SimState, gpus: Sequence[int], now: float | None = None) -> str:
    """`nvidia-smi -q`, the parts the simulator knows: header, Product Name, MIG Mode block, GPU UUID.
    Key column 42 wide before R580, 55 from R580 (docs/mig-facts.md#smi-formats: 42 from a real paste,
    55 [U])."""
    w = 55 if st.driver_version >= (580,) else 42

    def kv(indent: int, key: str, value: str) -> str:
        return " " * indent + f"{key:<{w - indent}}: {value}"

    cuda = cuda_driver_version(st.driver_version)
    ts = time.strftime("%a %b %e %H:%M:%S %Y", time.localtime(now))
    out = [
        "",
        "==============NVSMI LOG==============",
        "",
        kv(0, "Timestamp", ts),
        kv(0, "Driver Version", st.driver),
        kv(0, "CUDA Version", f"{cuda // 1000}.{(cuda % 1000) // 10}"),
        "",
        kv(0, "Attached GPUs", str(len(st.gpus))),
    ]
    for n, i in enumerate(gpus):
        g = st.gpus[i]
        if n:
            out.append("")
        out += [
            f"GPU {g.bus_id}",
            kv(4, "Product Name", st.product_name),
            "    MIG Mode",
            kv(8, "Current", "Enabled" if g.mig_current else "Disabled"),
            kv(8, "Pending", "Enabled" if g.mig_pending else "Disabled"),
            kv(4, "GPU UUID", g.uuid),
        ]
    return "\n".join(out) + "\n\n"


def format_main(st: SimState, gpus: Sequence[int]) -> str:
    """The "MIG devices:" and "Processes:" blocks of plain `nvidia-smi` in the 79-column layout of
    samples/a100-40gb_cgi-C-lgi_1.txt. Memory used is the sum of the simulated processes on the GI (real
    drivers show a few MiB more). Process rows follow the header's columns [U: no capture with a process]."""
    bar = "+" + "-" * 77 + "+"
    sep = "+------------------+----------------------+-----------+-----------------------+"
    out: list[str] = []
    devs = [d for i in gpus for d in st.mig_devices(i)]
    if any(st.gpus[i].mig_current for i in gpus):
        out += [
            bar,
            "| MIG devices:" + " " * 64 + "|",
            sep,
            "| GPU  GI  CI  MIG |         Memory-Usage |        Vol|         Shared        |",
            "|      ID  ID  Dev |                      | SM     Unc| CE  ENC  DEC  OFA  JPG|",
            "|                  |                      |        ECC|                       |",
            "|==================+======================+===========+=======================|",
        ]
        if not devs:
            out += ["|  No MIG devices found" + " " * 55 + "|", bar]
        for d in devs:
            e = d.ci_profile.engines
            used = st.used_memory_mib(d.gpu, d.gi_id)
            out.append(
                f"|{d.gpu:>3}{d.gi_id:>5}{d.ci_id:>4}{d.index:>4}  |{used:>7}MiB / {d.memory_mib:>5}MiB | "
                f"{d.ci_profile.sm or 0:<8}0 |"
                f"{e.ce or 0:>3}{e.enc or 0:>4}{e.dec or 0:>5}{e.ofa or 0:>5}{e.jpeg or 0:>5} |"
            )
            out.append(sep)
        out.append("")
    out += [
        bar,
        "| Processes:" + " " * 66 + "|",
        "|  GPU   GI   CI        PID   Type   Process name                  GPU Memory |",
        "|        ID   ID                                                   Usage      |",
        "|" + "=" * 77 + "|",
    ]
    procs = [p for i in gpus for p in st.processes_on(i)]
    if not procs:
        out.append("|  No running processes found" + " " * 49 + "|")
    for p in procs:
        gi = "N/A" if p.gi is None else str(p.gi)
        ci = "N/A" if p.ci is None else str(p.ci)
        name = p.name if len(p.name) <= 30 else "..." + p.name[-27:]
        out.append(f"|{p.gpu:>5}{gi:>5}{ci:>5}{p.pid:>11}{'C':>7}   {name:<30}{f'{p.used_memory_mib}MiB':>10} |")
    out.append(bar)
    return "\n".join(out) + "\n"
