"""The simulated nvidia-smi's text: pure functions of a simulated host's state, formatted like the real
driver's output (checked line for line against the captures in tests/data/samples/).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from migbench.backend.sim.host import SimGpu, SimState
from migbench.backend.sim.rules import (
    R470,
    CiProfile,
    bar1_mib,
    ci_profiles,
    cuda_driver_version,
    power_cap_w,
    uses_new_mig_uuids,
)
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


def _lgip_wide(st: SimState) -> bool:
    """`-lgip` is 81 columns (name column 2 wider) on the drivers of the GB200 production, RTX PRO 6000 and
    570.169/580.126.09 pastes, 79 on the older ones up to 560.35.03 and on the B200/GB200 pastes of early 2025
    (docs/fidelity-findings.md#text-differences); the switch is placed at R570 [U]."""
    return st.driver_version >= (570,)


def format_lgip(st: SimState, gpus: Sequence[int]) -> str:
    """`nvidia-smi mig -lgip`: the 79- or 81-column table; Free = remaining capacity now, Total = instanceCount."""
    wide = _lgip_wide(st)
    w, nw = (81, 18) if wide else (79, 16)
    bar = "+" + "-" * (w - 2) + "+"
    pad = " " * (nw - 16)
    out = [
        bar,
        "| GPU instance profiles:" + " " * (w - 25) + "|",
        f"| GPU   Name           {pad}  ID    Instances   Memory     P2P    SM    DEC   ENC  |",
        f"|                      {pad}        Free/Total   GiB              CE    JPEG  OFA  |",
        "|" + "=" * (w - 2) + "|",
    ]
    for i in gpus:
        for p in sorted(st.model.profiles, key=profile_order):
            e = p.engines
            ft = f"{st.remaining_capacity(i, p)}/{p.max_count}"
            out.append(f"|{i:>4}  {p.full_name:<{nw}}{p.id:>4}     {ft:<11}{_gib(p.memory_mib or 0):<11}{'No':<7}{e.sm or 0:<7}{e.dec or 0:<6}{e.enc or 0:<4}|")
            out.append(f"|{'':{nw + 44}}{e.ce or 0:>2}{'':5}{e.jpeg or 0:<6}{e.ofa or 0:<4}|")
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


def _lgi_width(st: SimState) -> int:
    """The -lgi frame: 54 columns in the User Guide's early A100 capture, 57 in the A30 (pre-R525), 510.47.03 and
    525.125.06 captures, 59 (name column 2 wider) in the 570.169 [U] and 580.126.09 [U] pastes. The switches are
    placed at R470 and R570 [U]."""
    if st.driver_version >= (570,):
        return 59
    return 57 if st.driver_version >= R470 else 54


def format_lgi(st: SimState, rows: Sequence[tuple[int, GpuInstance]]) -> str:
    """`nvidia-smi mig -lgi` for (gpu, GI) rows in display order."""
    w = _lgi_width(st)
    nw = {59: 19, 57: 17, 54: 14}[w]
    bar = "+" + "-" * (w - 2) + "+"
    gap = " " * (nw - 14)
    head = [
        "| GPU instances:" + " " * (w - 17) + "|",
        f"| GPU   Name          {gap}Profile  Instance   Placement  |",
        f"|                     {gap}  ID       ID       Start:Size |",
    ]
    out = [bar, *head, "|" + "=" * (w - 2) + "|"]
    for gpu, gi in rows:
        name = st.gi_profile(gi).full_name
        out.append(f"|{gpu:>4}  {name:<{nw}}{gi.profile_id:>5}{gi.id:>9}{f'{gi.start}:{gi.size}':>13}{'':5}|")
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
                f"|{gpu:>4}{gi.id:>7}       {'MIG ' + cp.name:<17}{cp.id:>5}{star}     {ft:<14}{cp.sm or 0:<10}{e.dec or 0:<6}{e.enc or 0:<6}{e.ofa or 0:<4}|"
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


QUERY_FIELDS = ("index", "count", "name", "uuid", "pci.bus_id", "driver_version", "mig.mode.current", "mig.mode.pending", "memory.total")


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


@dataclass(frozen=True)
class _Layout:
    """One generation of the plain `nvidia-smi` text (docs/fidelity-findings.md#text-differences)."""

    width: int  # 79, 89 or 91
    bar1: bool  # a BAR1-Usage row under each MIG device (510.47.03 onward; not in the User Guide's early capture)
    plus_rule: bool  # R580: the rule under the version line is `+---+`, not `|---|`
    shared: bool  # R580 MIG-devices headers "Shared Memory-Usage" / "Shared BAR1-Usage" [U]
    wide_pid: bool  # R570+: the Processes PID column 6 wider [U: one 570.169 paste]


def _layout(st: SimState) -> _Layout:
    """79 columns up to R525 (510.47.03, 525.125.06), 89 on R535 (535.104.05, 535.216.01), 91 from R550 (550.54.14,
    560.35.03, 570.169, 580.119.02). Branch boundaries between those releases are [U]."""
    v = st.driver_version
    width = 79 if v < (530,) else 89 if v < (550,) else 91
    return _Layout(width, v >= (510,), v >= (580,), v >= (580,), v >= (570,))


def _name_field(name: str, width: int) -> str:
    """Product names are cut to 15 + `...` in the 79-column layout (`NVIDIA A100-PCI...`) and to 24 + `...` in
    the wider ones (`NVIDIA RTX PRO 6000 Blac...`); the cut-off lengths are from those captures [U between]."""
    keep, limit = (15, 18) if width == 79 else (24, 27)
    return name if len(name) <= limit else name[:keep] + "..."


def _gpu_rows(st: SimState, lay: _Layout, g: SimGpu) -> list[str]:
    """The three rows of one GPU in the GPU table."""
    idx = g.index
    name = _name_field(st.product_name, lay.width)
    cap = power_cap_w(st.model_key)
    if g.mig_current:
        used = sum(st.gi_used_mib(g.index, gi) for gi in g.gpu_instances)
    else:
        used = st.used_memory_mib(g.index)
    total = st.gpu_memory_mib(g.index)
    ecc, util, mode = ("On", "N/A", "Enabled") if g.mig_current else ("0", "0%", "Disabled")
    temp, perf, watts = "33C", "P0", 60  # [U] display only
    if lay.width == 79:
        f1 = f"{idx:>4}  {name:<18}  {'On':<5}"
        f2 = f" {g.bus_id} Off "
        mem = f"{f'{used}MiB':>10} / {f'{total}MiB':>8} " if st.privileged or not g.mig_current else f"{'N/A':>21} "
        p1 = f" N/A{temp:>6}{perf:>6}{f'{watts}W':>7} / {cap}W "
    else:
        f1 = f"{idx:>4}  {name:<31}{'On':<4}"
        power = f"{watts}W / {cap}W" if lay.width == 89 else f"{watts}W / {cap:>4}W"
        p1 = f" N/A{temp:>6}{perf:>6}{power:>24} "
        if lay.width == 89:
            f2 = f" {g.bus_id} Off "
            mem = f"{f'{used}MiB':>10} / {f'{total}MiB':>8} " if st.privileged or not g.mig_current else f"{'N/A':>21} "
        else:
            f2 = f"   {g.bus_id} Off "
            mem = f"{f'{used}MiB':>11} / {f'{total}MiB':>9} " if st.privileged or not g.mig_current else f"{'N/A':>21}   "
    blank1 = " " * len(f1)
    return [
        f"|{f1}|{f2}|{ecc:>21} |",
        f"|{p1}|{mem}|{util:>8}      Default |",
        f"|{blank1}|{' ' * len(f2)}|{mode:>21} |",
    ]


def _gpu_table(st: SimState, lay: _Layout, gpus: Sequence[int]) -> list[str]:
    w = lay.width
    cuda = cuda_driver_version(st.driver_version)
    cv = f"{cuda // 1000}.{(cuda % 1000) // 10}"
    d = st.driver
    if w == 79:
        head = f"| NVIDIA-SMI {d:<13}Driver Version: {d:<13}CUDA Version: {cv:<9}|"
        cols = [
            "| GPU  Name        Persistence-M| Bus-Id        Disp.A | Volatile Uncorr. ECC |",
            "| Fan  Temp  Perf  Pwr:Usage/Cap|         Memory-Usage | GPU-Util  Compute M. |",
            "|                               |                      |               MIG M. |",
        ]
        f = (31, 22, 22)
    else:
        head = f"| NVIDIA-SMI {d:<23}Driver Version: {d:<{13 if w == 89 else 15}}CUDA Version: {cv:<9}|"
        b = "" if w == 89 else "  "
        cols = [
            f"| GPU  Name                 Persistence-M | Bus-Id        {b}Disp.A | Volatile Uncorr. ECC |",
            f"| Fan  Temp   Perf          Pwr:Usage/Cap |         {b}Memory-Usage | GPU-Util  Compute M. |",
            f"|                                         |                      {b}|               MIG M. |",
        ]
        f = (41, 22 if w == 89 else 24, 22)
    dashes = "+".join("-" * n for n in f)
    rule = f"+{dashes}+" if lay.plus_rule else f"|{dashes}+"
    out = ["+" + "-" * (w - 2) + "+", head, rule, *cols, "|" + "+".join("=" * n for n in f) + "|"]
    for i in gpus:
        out += _gpu_rows(st, lay, st.gpus[i])
        out.append(f"+{dashes}+")
    return out


def _mig_table(st: SimState, lay: _Layout, gpus: Sequence[int]) -> list[str]:
    w = lay.width
    mw = {79: 22, 89: 32, 91: 34}[w]
    sep = f"+------------------+{'-' * mw}+-----------+-----------------------+"
    if w == 79:
        mem_h, bar1_h = "         Memory-Usage ", ("           BAR1-Usage " if lay.bar1 else " " * 22)
        shared = ["         Shared        ", " CE  ENC  DEC  OFA  JPG"]
    else:
        pre = "Shared " if lay.shared else ""
        mem_h = f"{pre + 'Memory-Usage':>{mw - 1}} "
        bar1_h = f"{pre + 'BAR1-Usage':>{mw - 1}} "
        shared = ["      Shared           ", " CE ENC DEC OFA JPG    "] if w == 89 else ["        Shared         ", " CE ENC  DEC  OFA  JPG "]
    out = [
        "+" + "-" * (w - 2) + "+",
        "| MIG devices:" + " " * (w - 15) + "|",
        sep,
        f"| GPU  GI  CI  MIG |{mem_h}|        Vol|{shared[0]}|",
        f"|      ID  ID  Dev |{bar1_h}| SM     Unc|{shared[1]}|",
        f"|                  |{' ' * mw}|        ECC|                       |",
        f"|==================+{'=' * mw}+===========+=======================|",
    ]
    devs = [d for i in gpus for d in st.mig_devices(i)]
    if not devs:
        return out + ["|  No MIG devices found" + " " * (w - 24) + "|", "+" + "-" * (w - 2) + "+"]
    for d in devs:
        e = d.ci_profile.engines
        g = st.gpus[d.gpu]
        gi = g.gi(d.gi_id)
        used = st.gi_used_mib(d.gpu, gi) if gi is not None else 0
        bar1 = bar1_mib(st.model, d.gi_profile.memory_slices)
        if w == 79:
            mem = f"{f'{used}MiB':>10} / {f'{d.memory_mib}MiB':>8} "
            b1 = f"{'0MiB':>10} / {f'{bar1}MiB':>8} "
        elif w == 89:
            mem = f"{f'{used}MiB':>19} / {f'{d.memory_mib}MiB':>8}  "
            b1 = f"{'0MiB':>19} / {f'{bar1}MiB':>8}  "
        else:
            mem = f"{f'{used}MiB':>19} / {f'{d.memory_mib}MiB':>8}    "
            b1 = f"{'0MiB':>19} / {f'{bar1}MiB':>8}    " if lay.shared else f"{'0MiB':>21} / {f'{bar1}MiB':>8}  "
        out.append(
            f"|{d.gpu:>3}{d.gi_id:>5}{d.ci_id:>4}{d.index:>4}  |{mem}| {d.ci_profile.sm or 0:<8}0 |"
            f"{e.ce or 0:>3}{e.enc or 0:>4}{e.dec or 0:>5}{e.ofa or 0:>5}{e.jpeg or 0:>5} |"
        )
        if lay.bar1:
            out.append(f"|                  |{b1}|           |                       |")
        out.append(sep)
    return out


_PROCESS_HEADS = {
    # (width, wide PID column) -> the two header lines, from the captures
    (79, False): (
        "|  GPU   GI   CI        PID   Type   Process name                  GPU Memory |",
        "|        ID   ID                                                   Usage      |",
    ),
    (89, False): (
        "|  GPU   GI   CI        PID   Type   Process name                            GPU Memory |",
        "|        ID   ID                                                             Usage      |",
    ),
    (91, False): (
        "|  GPU   GI   CI        PID   Type   Process name                              GPU Memory |",
        "|        ID   ID                                                               Usage      |",
    ),
    (91, True): (
        "|  GPU   GI   CI              PID   Type   Process name                        GPU Memory |",
        "|        ID   ID                                                               Usage      |",
    ),
}


def _process_table(st: SimState, lay: _Layout, gpus: Sequence[int]) -> list[str]:
    """Process rows follow the header's columns: the R535 rows (MIG and non-MIG) are from a capture [U:
    provenance unresolved], the others are [U]."""
    w = lay.width
    pid_w = 17 if lay.wide_pid else 11
    field = w - 39 - (pid_w - 11)  # process name + memory
    mem_w = 10 if w == 79 else 12
    name_w = field - mem_w
    out = [
        "+" + "-" * (w - 2) + "+",
        "| Processes:" + " " * (w - 13) + "|",
        *_PROCESS_HEADS[(w, lay.wide_pid)],
        "|" + "=" * (w - 2) + "|",
    ]
    procs = [p for i in gpus for p in st.processes_on(i)]
    if not procs:
        out.append("|  No running processes found" + " " * (w - 30) + "|")
    for p in procs:
        name = p.name if len(p.name) <= name_w else "..." + p.name[-(name_w - 3) :]
        if p.gi is None or p.ci is None:
            ids = f"{'N/A':>6}{'N/A':>5}{p.pid:>{pid_w - 1}}" if w != 79 else f"{'N/A':>5}{'N/A':>5}{p.pid:>{pid_w}}"
        else:
            ids = f"{p.gi:>5}{p.ci:>5}{p.pid:>{pid_w}}"
        out.append(f"|{p.gpu:>5}{ids}{'C':>7}   {name:<{name_w}}{f'{p.used_memory_mib}MiB':>{mem_w}} |")
    out.append("+" + "-" * (w - 2) + "+")
    return out


def format_main(st: SimState, gpus: Sequence[int], now: float | None = None) -> str:
    """Plain `nvidia-smi`: the timestamp, the GPU table, the "MIG devices:" block (when a GPU is in MIG mode) and
    "Processes:", in the layout of the host's driver (`_layout`; checked line for line against the captures in
    tests/data/samples/). Memory used on a MIG device is the driver's idle use of its GPU instance (by driver,
    [U] where inferred) plus the simulated processes on it; the parent GPU shows the sum over its instances
    (`N/A` for an unprivileged caller, as in containers)."""
    lay = _layout(st)
    out = [time.strftime("%a %b %e %H:%M:%S %Y", time.localtime(now))]
    out += _gpu_table(st, lay, gpus)
    out.append("")
    if any(st.gpus[i].mig_current for i in gpus):
        out += _mig_table(st, lay, gpus)
        out.append("")
    out += _process_table(st, lay, gpus)
    return "\n".join(out) + "\n"
