"""The simulated `nvidia-smi` (console script `migbench-nvidia-smi`), printing the real text.

The host is the state directory in `$MIGBENCH_SIM`. Formats are copied from real captures
(`tests/data/samples/`, indexed in `docs/captures.md`; summarised in `docs/mig-facts.md#smi-formats`):
the 79-column `-lgip` frame, the `-lgipp` lines (`ID  9`, singular `Placement :`), the `-lgi`, `-lci`,
`-lcip` tables, the create/destroy lines with their right-aligned two-character numbers (`ID  2`,
`GPU  0`), the `-mig`, `--gpu-reset`, `-L`, `-q` and `--query-gpu` texts, and the plain `nvidia-smi` in the
layout of the host's driver (79, 89 or 91 columns; `-lgip` 79/81 and `-lgi` 54/57/59 columns by driver). Where no capture exists the text
follows the nearest real pattern and is marked [U] at the place it is produced.

Exit status: 0 on success; on failure nvidia-smi's documented return values by NVML error: 2 invalid
argument, 3 not supported, 4 insufficient permissions, 6 not found, 9 driver not loaded, 255 anything else
(in-use, insufficient resources...). Which code nvidia-smi returns for each message is [U] except 255 for a
refused reset (a mig-manager log shows "error resetting all GPUs: exit status 255").

Supported: `-L`, `-q [-i]`, `--query-gpu=... --format=csv[,noheader][,nounits]`, `-i <index|bus id|uuid>[,..]`,
`-mig 0|1`, `-r/--gpu-reset`, `mig -lgip|-lgipp|-lgi|-lci|-lcip|-cgi <list> [-C]|-cci [<list>]|-dci|-dgi` with
`-i`, `-gi`, `-ci`, and the bare `nvidia-smi` (GPU table, "MIG devices:" with BAR1 rows, "Processes:"; fan,
temperature and power are fixed display values [U]).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from migbench.backend.sim.errors import (
    DRIVER_NOT_LOADED,
    IN_USE,
    INVALID_ARGUMENT,
    NO_PERMISSION,
    NOT_FOUND,
    NOT_SUPPORTED,
    SUCCESS,
    error_string,
)
from migbench.backend.sim.host import SimError, SimGpu, SimHost, SimState
from migbench.backend.sim.rules import CiProfile, ci_profiles
from migbench.backend.sim.smi_text import (
    QUERY_ALIASES,
    QUERY_FIELDS,
    ci_profile_of,
    format_L,
    format_lci,
    format_lcip,
    format_lgi,
    format_lgip,
    format_lgipp,
    format_main,
    format_q,
    format_query,
    n2,
    sorted_gis,
)
from migbench.backend.sim.state import ComputeInstance, GpuInstance
from migbench.catalog import Profile
from migbench.errors import MigbenchError

NO_ENV_MESSAGE = "migbench-nvidia-smi: set MIGBENCH_SIM=<state dir> (created with `migbench sim init`)"
INVALID_COMBINATION = "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help."

_EXIT_BY_CODE = {
    INVALID_ARGUMENT: 2,
    NOT_SUPPORTED: 3,
    NO_PERMISSION: 4,
    NOT_FOUND: 6,
    DRIVER_NOT_LOADED: 9,
}


def exit_status(code: int) -> int:
    """nvidia-smi's return value for an NVML error code [U per message; see the module docstring]."""
    return _EXIT_BY_CODE.get(code, 255)


class _Usage(Exception):
    """The command line is not something nvidia-smi accepts."""


# ---------------------------------------------------------------------------------------------
# Argument parsing
# ---------------------------------------------------------------------------------------------


@dataclass
class _Args:
    ids: list[str] | None = None
    list_gpus: bool = False
    query: bool = False
    display: str | None = None
    query_gpu: list[str] | None = None
    fmt: list[str] | None = None
    mig_mode: str | None = None
    reset: bool = False
    help: bool = False
    mig: bool = False
    # mig subcommand
    gi: list[int] | None = None
    ci: list[int] | None = None
    actions: list[str] = field(default_factory=list)
    cgi: str | None = None
    cci: str | None = None
    default_ci: bool = False


_TOP_VALUE = {"-i": "ids", "--id": "ids", "-mig": "mig_mode", "--multi-instance-gpu": "mig_mode", "-d": "display", "--display": "display"}
_MIG_ACTIONS = {
    "-lgip": "lgip",
    "--list-gpu-instance-profiles": "lgip",
    "-lgipp": "lgipp",
    "--list-gpu-instance-possible-placements": "lgipp",
    "-lgi": "lgi",
    "--list-gpu-instances": "lgi",
    "-lci": "lci",
    "--list-compute-instances": "lci",
    "-lcip": "lcip",
    "--list-compute-instance-profiles": "lcip",
    "-dci": "dci",
    "--destroy-compute-instance": "dci",
    "-dgi": "dgi",
    "--destroy-gpu-instance": "dgi",
}


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise _Usage(text) from None


def _parse(argv: Sequence[str]) -> _Args:
    a = _Args()
    it = list(argv)
    i = 0

    def value() -> str:
        nonlocal i
        if i + 1 >= len(it):
            raise _Usage(it[i])
        i += 1
        return it[i]

    def has_value() -> bool:
        return i + 1 < len(it) and not it[i + 1].startswith("-")

    while i < len(it):
        tok = it[i]
        if a.mig:
            _mig_option(a, tok, value, has_value)
        elif tok == "mig" and i == 0:
            a.mig = True
        else:
            _top_option(a, tok, value)
        i += 1
    return a


def _mig_option(a: _Args, tok: str, value: Callable[[], str], has_value: Callable[[], bool]) -> None:
    """One option of `nvidia-smi mig ...` into `a` (`value()` takes the option's argument)."""
    if tok in ("-i", "--id"):
        a.ids = [x for x in value().split(",") if x]
    elif tok in ("-gi", "--gpu-instance-id"):
        a.gi = _ints(value())
    elif tok in ("-ci", "--compute-instance-id"):
        a.ci = _ints(value())
    elif tok in _MIG_ACTIONS:
        a.actions.append(_MIG_ACTIONS[tok])
    elif tok in ("-cgi", "--create-gpu-instance"):
        a.actions.append("cgi")
        a.cgi = value()
    elif tok in ("-cci", "--create-compute-instance"):
        a.actions.append("cci")
        if has_value():
            a.cci = value()
    elif tok in ("-C", "--default-compute-instance"):
        a.default_ci = True
    elif tok in ("-h", "--help"):
        a.help = True
    else:
        raise _Usage(tok)


def _top_option(a: _Args, tok: str, value: Callable[[], str]) -> None:
    """One option of plain `nvidia-smi ...` into `a` (`value()` takes the option's argument)."""
    if tok in _TOP_VALUE:
        v = value()
        if _TOP_VALUE[tok] == "ids":
            a.ids = [x for x in v.split(",") if x]
        else:
            setattr(a, _TOP_VALUE[tok], v)
    elif tok in ("-L", "--list-gpus"):
        a.list_gpus = True
    elif tok in ("-q", "--query"):
        a.query = True
    elif tok in ("-r", "--gpu-reset"):
        a.reset = True
    elif tok in ("-h", "--help"):
        a.help = True
    elif tok.startswith("--query-gpu"):
        v = tok.split("=", 1)[1] if "=" in tok else value()
        a.query_gpu = [f.strip() for f in v.split(",") if f.strip()]
    elif tok.startswith("--format"):
        v = tok.split("=", 1)[1] if "=" in tok else value()
        a.fmt = [f.strip() for f in v.split(",") if f.strip()]
    else:
        raise _Usage(tok)


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


class _Out:
    def __init__(self, stream: TextIO):
        self.stream = stream

    def line(self, text: str = "") -> None:
        self.stream.write(text + "\n")

    def text(self, text: str) -> None:
        self.stream.write(text)


def _select_gpus(st: SimState, ids: list[str] | None) -> list[int]:
    """-i items: index, PCI bus id (`00000000:07:00.0` or `07:00.0`) or GPU UUID."""
    if not ids:
        return list(range(len(st.gpus)))
    out: list[int] = []
    for item in ids:
        t = item.strip()
        g: SimGpu | None = None
        if t.isdigit():
            g = st.gpus[int(t)] if int(t) < len(st.gpus) else None
        elif t.upper().startswith("GPU-"):
            g = st.gpu_by_uuid(t)
        elif ":" in t:
            g = st.gpu_by_bus_id(t)
        if g is None:
            raise SimError(NOT_FOUND, "No devices were found")
        if g.index not in out:
            out.append(g.index)
    return out


HELP = (
    """NVIDIA System Management Interface (simulated by migbench; state in $MIGBENCH_SIM)

    nvidia-smi [-i <id>] [-L | -q | --query-gpu=<fields> --format=csv[,noheader][,nounits]]
    nvidia-smi [-i <id>] -mig 0|1
    nvidia-smi [-i <id>] -r | --gpu-reset
    nvidia-smi mig [-i <id>] -lgip | -lgipp | -lgi | -lci [-gi N] | -lcip [-gi N]
    nvidia-smi mig [-i <id>] -cgi <profile[:start]>[,...] [-C]
    nvidia-smi mig [-i <id>] [-gi N] -cci [<ci profile>[,...]]
    nvidia-smi mig [-i <id>] [-gi N] [-ci N] -dci
    nvidia-smi mig [-i <id>] [-gi N] -dgi

--query-gpu fields: """
    + ", ".join(QUERY_FIELDS)
    + "\n"
)


def main(argv: Sequence[str], stdout: TextIO | None = None, stderr: TextIO | None = None, *, state_dir: str | os.PathLike[str] | None) -> int:
    """Run the simulated nvidia-smi of the host in `state_dir` with `argv`; returns the exit status.
    (`migbench.backend.select.simulated_nvidia_smi` is its command-line entry point.)"""
    args = list(argv)
    out = _Out(stdout or sys.stdout)
    err = stderr or sys.stderr
    if not state_dir:
        err.write(NO_ENV_MESSAGE + "\n")
        return 9
    host = SimHost(state_dir)
    if not host.exists():
        err.write(f"migbench-nvidia-smi: no simulated host in {state_dir} (create one with `migbench sim init`)\n")
        return 9
    try:
        a = _parse(args)
    except _Usage:
        out.line(INVALID_COMBINATION)
        return 2
    try:
        return _dispatch(host, a, out)
    except _Usage:
        out.line(INVALID_COMBINATION)
        return 2
    except SimError as exc:
        if exc.message == "No devices were found":  # [U] wording for an -i that matches no GPU
            out.line("No devices were found")
            return 6
        err.write(f"migbench-nvidia-smi: {exc.message}\n")
        return exit_status(exc.code)
    except MigbenchError as exc:  # e.g. a damaged state file
        err.write(f"migbench-nvidia-smi: {exc.message}\n" + (f"hint: {exc.hint}\n" if exc.hint else ""))
        return 255


def _dispatch(host: SimHost, a: _Args, out: _Out) -> int:
    if a.help:
        out.text(HELP)
        return 0
    st = host.read()
    gpus = _select_gpus(st, a.ids)
    if a.mig:
        return _mig(host, st, gpus, a, out)
    chosen = [bool(a.list_gpus), bool(a.query), a.query_gpu is not None, a.mig_mode is not None, a.reset]
    if sum(chosen) > 1:
        raise _Usage("several actions")
    if a.list_gpus:
        out.text(format_L(st, gpus if a.ids else None))
        return 0
    if a.query:
        if a.display:
            out.line(f"migbench-nvidia-smi: -d {a.display} is not simulated; run -q without -d")
            return 2
        out.text(format_q(st, gpus))
        return 0
    if a.query_gpu is not None:
        return _query_gpu(st, gpus, a, out)
    if a.mig_mode is not None:
        return _set_mig(host, st, gpus, a.mig_mode, out)
    if a.reset:
        return _reset(host, st, gpus, bool(a.ids), out)
    if a.fmt is not None or a.display is not None:
        raise _Usage("format without query")
    out.text(format_main(st, gpus))
    return 0


def _query_gpu(st: SimState, gpus: list[int], a: _Args, out: _Out) -> int:
    fmt = a.fmt or []
    if not fmt or fmt[0] != "csv" or any(f not in ("csv", "noheader", "nounits") for f in fmt):
        out.line(
            f"\"{','.join(fmt)}\" is not a valid format. Please run 'nvidia-smi -h' for help." if fmt else INVALID_COMBINATION
        )  # [U] wording for a bad --format
        return 2
    for f in a.query_gpu or []:
        if QUERY_ALIASES.get(f, f) not in QUERY_FIELDS:
            out.line(f'Field "{f}" is not a valid field to query.')  # [U] wording
            return 2
    out.text(format_query(st, gpus, a.query_gpu or [], "noheader" in fmt, "nounits" in fmt))
    return 0


def _set_mig(host: SimHost, st: SimState, gpus: list[int], mode: str, out: _Out) -> int:
    """`-mig 0|1`: texts from docs/mig-facts.md#mode-reset-persistence and #errors,
    samples/a100-40gb_mig-enable-pending-vm_1.txt, samples/err_mig-enable-pending_in-use_dgx_1.txt and
    samples/h100-pcie_dci-dgi-mig0_1.txt."""
    if mode not in ("0", "1", "ENABLED", "DISABLED", "Enabled", "Disabled"):
        raise _Usage(mode)
    enable = mode in ("1", "ENABLED", "Enabled")
    word = "enable" if enable else "disable"
    worst = 0
    for i in gpus:
        bus = st.gpus[i].bus_id
        try:
            status = host.set_mig_mode(i, enable)
        except SimError as exc:
            # [U] wording of a refused call (unprivileged, GPU instances still present)
            out.line(f"Unable to {word} MIG Mode for GPU {bus}: {exc.reason}")
            worst = worst or exit_status(exc.code)
            continue
        if status == SUCCESS:
            out.line(f"{'Enabled' if enable else 'Disabled'} MIG Mode for GPU {bus}")
        elif not st.model.mode_change_needs_reset:
            # Hopper+ refusing because processes run: [U] no capture; nearest real pattern.
            out.line(f"Unable to {word} MIG Mode for GPU {bus}: {error_string(status)}")
            worst = worst or exit_status(status)
        elif status == IN_USE:
            out.line(f"Warning: MIG mode is in pending {word} state for GPU {bus}:{error_string(status)}")
            out.line(
                f"{bus} is currently being used by one or more other processes (e.g. CUDA application or a "
                "monitoring application such as another instance of nvidia-smi). Please first kill all "
                "processes using the device and retry the command or reboot the system to make MIG mode effective."
            )
        else:
            out.line(f"Warning: MIG mode is in pending {word} state for GPU {bus}:{error_string(status)}")
            out.line(f"Reboot the system or try nvidia-smi --gpu-reset to make MIG mode effective on GPU {bus}")
    if worst:
        return worst
    out.line("All done.")
    return 0


_IN_USE_ONE = (
    "1 device is currently being used by one or more other processes (e.g., Fabric Manager, CUDA application, "
    "graphics application such as an X server, or a monitoring application such as another instance of "
    "nvidia-smi). Please first kill all processes using this device and all compute applications running in "
    "the system."
)
_IN_USE_MANY = (
    "{n} devices are currently being used by one or more other processes (e.g., Fabric Manager, CUDA "
    "application, graphics application such as an X server, or a monitoring application such as another "
    "instance of nvidia-smi). Please first kill all processes using these devices and all compute applications "
    "running in the system."
)


def _reset(host: SimHost, st: SimState, gpus: list[int], explicit: bool, out: _Out) -> int:
    """`-r/--gpu-reset`. One GPU: `GPU <bus> was successfully reset.` / `Resetting GPU <bus> is not
    supported.` / `GPU <bus> is currently in use by another process.` + the "1 device..." paragraph.
    Several: all or none; `The following GPUs could not be reset:` with one `  GPU <bus>: <reason>` line each
    (real pastes in the index: mig-manager logs, Yandex Cloud docs, a PyTorch note)."""
    if not st.privileged:
        for i in gpus:
            out.line(f"Unable to reset GPU {st.gpus[i].bus_id}: Insufficient Permissions")  # [U] wording
        return exit_status(NO_PERMISSION)
    blockers = {i: host.reset_blocker(st, i) for i in gpus}
    failed = {i: e for i, e in blockers.items() if e is not None}
    if not failed:
        try:
            host.reset(gpus)
        except SimError as exc:  # an injected fault, or the host changed since the read
            failed = {gpus[0]: exc}
    if not failed:
        for i in gpus:
            out.line(f"GPU {st.gpus[i].bus_id} was successfully reset.")
        # No "All done." after a successful reset: the one attributable capture ends right after this line
        # (NVIDIA/gpu-operator#118, public/a100_mig-disable-pending-gpu-reset_1.txt); only an unattributed paste
        # shows one ([U], unknown-gpu_gpu-reset_1.txt).
        return 0
    if len(gpus) == 1:
        i, err = next(iter(failed.items()))
        bus = st.gpus[i].bus_id
        if err.code == NOT_SUPPORTED:
            out.line(f"Resetting GPU {bus} is not supported.")
        elif err.code == IN_USE:
            out.line(f"GPU {bus} is currently in use by another process.")
            out.line("")
            out.line(_IN_USE_ONE)
        else:
            out.line(f"Unable to reset GPU {bus}: {err.reason}")  # [U] wording
        return exit_status(err.code)
    out.line("The following GPUs could not be reset:")
    for i in sorted(failed):
        out.line(f"  GPU {st.gpus[i].bus_id}: {failed[i].reason}")
    busy = sum(1 for e in failed.values() if e.code == IN_USE)
    if busy:
        out.line("")
        out.line(_IN_USE_ONE if busy == 1 else _IN_USE_MANY.format(n=busy))
    return 255


# -- mig subcommand ------------------------------------------------------------------------------------


def _mig(host: SimHost, st: SimState, gpus: list[int], a: _Args, out: _Out) -> int:
    if a.help:
        out.text(HELP)
        return 0
    if len(a.actions) != 1:
        raise _Usage("one mig action")
    action = a.actions[0]
    if a.default_ci and action != "cgi":
        raise _Usage("-C without -cgi")
    if a.ci is not None and action not in ("dci", "lci"):
        raise _Usage("-ci")
    if a.gi is not None and action in ("lgip", "lgipp", "cgi"):
        raise _Usage("-gi")
    mig_gpus = [i for i in gpus if st.gpus[i].mig_current]
    if not mig_gpus:
        out.line("No MIG-enabled devices found.")  # [U] (docs/mig-facts.md#errors: seen only in a script)
        return 6
    return {
        "lgip": _lgip,
        "lgipp": _lgipp,
        "lgi": _lgi,
        "lci": _lci,
        "lcip": _lcip,
        "cgi": _cgi,
        "cci": _cci,
        "dci": _dci,
        "dgi": _dgi,
    }[action](host, st, mig_gpus, a, out)


def _no_permission(out: _Out, what: str, extra: str | None = None) -> int:
    out.line(f"Failed to display {what}: Insufficient Permissions")
    if extra:
        out.line(extra)
    return exit_status(NO_PERMISSION)


def _lgip(host: SimHost, st: SimState, gpus: list[int], a: _Args, out: _Out) -> int:
    if not st.privileged:  # [U] wording (pattern of the -lgi/-lci refusals)
        return _no_permission(out, "GPU instance profiles")
    out.text(format_lgip(st, gpus))
    return 0


def _lgipp(host: SimHost, st: SimState, gpus: list[int], a: _Args, out: _Out) -> int:
    if not st.privileged:  # [U] wording
        return _no_permission(out, "GPU instance possible placements")
    out.text(format_lgipp(st, gpus))
    return 0


def _gi_rows(st: SimState, gpus: list[int], gi_filter: list[int] | None) -> list[tuple[int, GpuInstance]]:
    rows = []
    for i in gpus:
        for gi in sorted_gis(st, st.gpus[i]):
            if gi_filter is None or gi.id in gi_filter:
                rows.append((i, gi))
    return rows


def _lgi(host: SimHost, st: SimState, gpus: list[int], a: _Args, out: _Out) -> int:
    if not st.privileged:  # docs/mig-facts.md#errors [P]
        return _no_permission(out, "GPU instances", "No GPU instances found: Insufficient Permissions")
    rows = _gi_rows(st, gpus, a.gi)
    if not rows:
        out.line("No GPU instances found: Not Found")
        return exit_status(NOT_FOUND)
    out.text(format_lgi(st, rows))
    return 0


def _ci_rows(st: SimState, gpus: list[int], gi_filter: list[int] | None, ci_filter: list[int] | None) -> list[tuple[int, GpuInstance, ComputeInstance]]:
    rows = []
    for i, gi in _gi_rows(st, gpus, gi_filter):
        for ci in sorted(gi.compute_instances, key=lambda c: c.id):
            if ci_filter is None or ci.id in ci_filter:
                rows.append((i, gi, ci))
    return rows


def _lci(host: SimHost, st: SimState, gpus: list[int], a: _Args, out: _Out) -> int:
    if not st.privileged:  # Project-HAMi/HAMi#1044 [V]
        return _no_permission(out, "compute instances")
    rows = _ci_rows(st, gpus, a.gi, a.ci)
    if not rows:
        out.line("No compute instances found: Not Found")
        return exit_status(NOT_FOUND)
    out.text(format_lci(st, rows))
    return 0


def _lcip(host: SimHost, st: SimState, gpus: list[int], a: _Args, out: _Out) -> int:
    if not st.privileged:  # [U] wording
        return _no_permission(out, "compute instance profiles")
    rows = _gi_rows(st, gpus, a.gi)
    if not rows:
        out.line("No GPU instances found: Not Found")  # [U]
        return exit_status(NOT_FOUND)
    out.text(format_lcip(st, rows))
    return 0


def _resolve_gi_profile(st: SimState, token: str) -> tuple[Profile | None, int | None]:
    """A -cgi item -> (profile or None if unknown, explicit start or None). Items: `9`, `3g.20gb`,
    `MIG 3g.20gb`, and `<profile>:<start>` (placement syntax [U, strong]: docs/mig-facts.md#smi-formats;
    not in NVIDIA's own help text as read)."""
    t = token.strip()
    start: int | None = None
    if ":" in t:
        t, s = t.rsplit(":", 1)
        if not s.strip().isdigit():
            return None, None
        start = int(s)
    name = t.strip()
    if name.upper().startswith("MIG "):
        name = name[4:].strip()
    for p in st.model.profiles:
        if (name.isdigit() and p.id == int(name)) or p.name == name:
            return p, start
    return None, start


def _cgi(host: SimHost, st: SimState, gpus: list[int], a: _Args, out: _Out) -> int:
    """`-cgi <list> [-C]`: one line per created GI (and CI); on the first failure the `Unable to create a
    GPU instance ...` and `Failed to create GPU instances: <reason>` lines (samples), then stop [U: whether
    nvidia-smi goes on with later items is unknown]."""
    items = [x for x in (a.cgi or "").split(",") if x.strip()]
    if not items:
        raise _Usage("-cgi needs profiles")

    def fail(gpu: int, label: str, reason: str, code: int) -> int:
        out.line(f"Unable to create a GPU instance on GPU {n2(gpu)} using profile {label}: {reason}")
        out.line(f"Failed to create GPU instances: {reason}")
        return exit_status(code)

    for gpu in gpus:
        for item in items:
            prof, start = _resolve_gi_profile(st, item)
            if prof is None:
                return fail(gpu, item.strip(), error_string(INVALID_ARGUMENT), INVALID_ARGUMENT)
            try:
                gi = host.create_gpu_instance(gpu, prof.id, start=start)
            except SimError as exc:
                return fail(gpu, str(prof.id), exc.reason, exc.code)
            out.line(f"Successfully created GPU instance ID {n2(gi.id)} on GPU {n2(gpu)} using profile {prof.full_name} (ID {n2(prof.id)})")
            if a.default_ci:
                try:
                    ci = host.create_compute_instance(gpu, gi.id)
                except SimError as exc:
                    out.line(
                        f"Unable to create a compute instance on GPU {n2(gpu)} GPU instance ID {n2(gi.id)} using default profile: {exc.reason}"
                    )  # [U] wording
                    out.line(f"Failed to create compute instances: {exc.reason}")
                    return exit_status(exc.code)
                cp = ci_profile_of(host.read(), gi, ci.profile_id)
                out.line(
                    f"Successfully created compute instance ID {n2(ci.id)} on GPU {n2(gpu)} GPU instance ID "
                    f"{n2(gi.id)} using profile MIG {cp.name} (ID {n2(cp.id)})"
                )
    return 0


def _resolve_ci_profile(st: SimState, gi: GpuInstance, token: str) -> CiProfile | None:
    t = token.strip()
    if t.upper().startswith("MIG "):
        t = t[4:].strip()
    for cp in ci_profiles(st.model, st.gi_profile(gi)):
        if (t.isdigit() and cp.id == int(t)) or cp.name == t:
            return cp
    return None


def _cci(host: SimHost, st: SimState, gpus: list[int], a: _Args, out: _Out) -> int:
    """`[-gi N] -cci [<list>]`: no list = the default (`*`) CI profile (docs/mig-facts.md#compute-instances).
    Success line as in docs/mig-facts.md#smi-formats; the failure lines follow the -cgi pattern [U]."""
    items: list[str | None] = [x for x in (a.cci or "").split(",") if x.strip()] or [None]
    rows = _gi_rows(st, gpus, a.gi)
    if not rows:
        out.line("No GPU instances found: Not Found")  # [U]
        return exit_status(NOT_FOUND)
    for gpu, gi in rows:
        for item in items:
            cur = host.read()
            g = cur.gpus[gpu].gi(gi.id)
            if g is None:
                continue
            if item is None:
                cp = next(c for c in ci_profiles(cur.model, cur.gi_profile(g)) if c.is_default)
            else:
                found = _resolve_ci_profile(cur, g, item)
                if found is None:
                    reason = error_string(INVALID_ARGUMENT)
                    out.line(f"Unable to create a compute instance on GPU {n2(gpu)} GPU instance ID {n2(gi.id)} using profile {item.strip()}: {reason}")
                    out.line(f"Failed to create compute instances: {reason}")
                    return exit_status(INVALID_ARGUMENT)
                cp = found
            try:
                ci = host.create_compute_instance(gpu, gi.id, cp.id)
            except SimError as exc:
                out.line(f"Unable to create a compute instance on GPU {n2(gpu)} GPU instance ID {n2(gi.id)} using profile {cp.id}: {exc.reason}")
                out.line(f"Failed to create compute instances: {exc.reason}")
                return exit_status(exc.code)
            out.line(
                f"Successfully created compute instance ID {n2(ci.id)} on GPU {n2(gpu)} GPU instance ID "
                f"{n2(gi.id)} using profile MIG {cp.name} (ID {n2(cp.id)})"
            )
    return 0


def _dci(host: SimHost, st: SimState, gpus: list[int], a: _Args, out: _Out) -> int:
    """`-dci`: `Successfully destroyed compute instance ID  0 from GPU  0 GPU instance ID  7` per CI, in -lgi
    order (docs/mig-facts.md#smi-formats); a busy CI prints `Unable to destroy compute instance ID ...: In use by
    another client` and `Failed to destroy compute instances: ...` (NVIDIA/DCGM#95, capitalised like the GI
    variant) and stops [U]."""
    if not st.privileged:
        out.line("Failed to destroy compute instances: Insufficient Permissions")  # [U]
        return exit_status(NO_PERMISSION)
    rows = _ci_rows(st, gpus, a.gi, a.ci)
    if not rows:
        out.line("No compute instances found: Not Found")  # [U] for -dci
        return exit_status(NOT_FOUND)
    for gpu, gi, ci in rows:
        try:
            host.destroy_compute_instance(gpu, gi.id, ci.id)
        except SimError as exc:
            out.line(f"Unable to destroy compute instance ID {n2(ci.id)} from GPU {n2(gpu)} GPU instance ID {n2(gi.id)}: {exc.reason}")
            out.line(f"Failed to destroy compute instances: {exc.reason}")
            return exit_status(exc.code)
        out.line(f"Successfully destroyed compute instance ID {n2(ci.id)} from GPU {n2(gpu)} GPU instance ID {n2(gi.id)}")
    return 0


def _dgi(host: SimHost, st: SimState, gpus: list[int], a: _Args, out: _Out) -> int:
    """`-dgi`: `Successfully destroyed GPU instance ID  7 from GPU  0`; busy: `Unable to destroy GPU instance
    ID  1 from GPU  0: In use by another client` + `Failed to destroy GPU instances: ...`
    (docs/mig-facts.md#smi-formats, docs/mig-facts.md#errors), then stop [U]."""
    if not st.privileged:
        out.line("Failed to destroy GPU instances: Insufficient Permissions")  # [U]
        return exit_status(NO_PERMISSION)
    rows = _gi_rows(st, gpus, a.gi)
    if not rows:
        out.line("No GPU instances found: Not Found")
        return exit_status(NOT_FOUND)
    for gpu, gi in rows:
        try:
            host.destroy_gpu_instance(gpu, gi.id)
        except SimError as exc:
            out.line(f"Unable to destroy GPU instance ID {n2(gi.id)} from GPU {n2(gpu)}: {exc.reason}")
            out.line(f"Failed to destroy GPU instances: {exc.reason}")
            return exit_status(exc.code)
        out.line(f"Successfully destroyed GPU instance ID {n2(gi.id)} from GPU {n2(gpu)}")
    return 0
