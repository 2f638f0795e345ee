"""nvidia-smi command lines and parsers of its real output. Pure: no subprocess, no NVML.

Used by the real backend (which runs the commands) and by tests (which feed real captures and the
simulator's output). Parsers accept prompts, comments (`# ` prefixes) and surrounding text, tolerate
both the older and newer column layouts, and return small frozen dataclasses. For `-lgip`/`-lgipp`
use `migbench.catalog.parse_lgip` / `parse_lgipp` (re-exported here).

Formats (see docs/mig-facts.md#smi-formats):
- `-L`: `GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-...)`, MIG lines `  MIG 1g.5gb      Device  0: (UUID: MIG-...)`
  (R470+) or `  MIG 1c.3g.20gb Device 0: (UUID: MIG-GPU-<uuid>/<gi>/<ci>)` (before R470).
- `mig -lgi`: `|   0  MIG 3g.20gb       9        1          4:4     |` (two column widths exist).
- `mig -lci`: `|   0      9       MIG 1g.5gb           0         0          0:1     |` (with or without the
  Placement column).
- create/destroy lines: `Successfully created GPU instance ID  2 on GPU  0 using profile MIG 3g.20gb (ID  9)`,
  `Unable to create a GPU instance on GPU  0 using profile 9: Insufficient Resources`, ...
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from migbench.catalog import parse_lgip, parse_lgipp

__all__ = [
    "parse_lgip",
    "parse_lgipp",
    "SMI",
    "list_gpus_argv",
    "query_gpu_argv",
    "query_argv",
    "set_mig_mode_argv",
    "gpu_reset_argv",
    "list_gpu_instance_profiles_argv",
    "list_gpu_instance_placements_argv",
    "list_gpu_instances_argv",
    "list_compute_instances_argv",
    "list_compute_instance_profiles_argv",
    "create_gpu_instances_argv",
    "create_ci_argv",
    "destroy_ci_argv",
    "destroy_gi_argv",
    "SmiGpu",
    "SmiMigDevice",
    "GpuList",
    "parse_L",
    "LgiRow",
    "parse_lgi",
    "LciRow",
    "parse_lci",
    "parse_query_csv",
    "Query",
    "QueryGpu",
    "parse_q",
    "CreatedGpuInstance",
    "CreatedComputeInstance",
    "SmiFailure",
    "CreateResult",
    "parse_create_lines",
    "DestroyResult",
    "parse_destroy_lines",
    "ModeChange",
    "parse_mig_mode_lines",
    "parse_mig_mode_output",
    "output_has_failure",
    "ResetResult",
    "parse_reset_lines",
    "NOT_FOUND_MESSAGES",
]

SMI = "nvidia-smi"

# ---------------------------------------------------------------------------------------------
# Command lines
# ---------------------------------------------------------------------------------------------


def _ids(gpus: int | Sequence[int] | None) -> list[str]:
    if gpus is None:
        return []
    if isinstance(gpus, int):
        return ["-i", str(gpus)]
    return ["-i", ",".join(str(g) for g in gpus)] if gpus else []


def list_gpus_argv() -> list[str]:
    """`nvidia-smi -L`: GPUs and MIG devices with UUIDs."""
    return [SMI, "-L"]


def query_argv(gpus: int | Sequence[int] | None = None) -> list[str]:
    """`nvidia-smi [-i ..] -q`."""
    return [SMI, *_ids(gpus), "-q"]


def query_gpu_argv(fields: Sequence[str], gpus: int | Sequence[int] | None = None, *, noheader: bool = False, nounits: bool = False) -> list[str]:
    """`nvidia-smi [-i ..] --query-gpu=a,b --format=csv[,noheader][,nounits]`."""
    fmt = ",".join(["csv"] + (["noheader"] if noheader else []) + (["nounits"] if nounits else []))
    return [SMI, *_ids(gpus), f"--query-gpu={','.join(fields)}", f"--format={fmt}"]


def set_mig_mode_argv(gpus: int | Sequence[int] | None, enable: bool) -> list[str]:
    """`nvidia-smi -i 0 -mig 1` (needs root)."""
    return [SMI, *_ids(gpus), "-mig", "1" if enable else "0"]


def gpu_reset_argv(gpus: int | Sequence[int] | None = None) -> list[str]:
    """`nvidia-smi --gpu-reset [-i 0]` (needs root; refused while any client holds the GPU)."""
    return [SMI, "--gpu-reset", *_ids(gpus)]


def list_gpu_instance_profiles_argv(gpu: int | Sequence[int] | None = None) -> list[str]:
    return [SMI, "mig", *_ids(gpu), "-lgip"]


def list_gpu_instance_placements_argv(gpu: int | Sequence[int] | None = None) -> list[str]:
    return [SMI, "mig", *_ids(gpu), "-lgipp"]


def list_gpu_instances_argv(gpu: int | Sequence[int] | None = None) -> list[str]:
    return [SMI, "mig", *_ids(gpu), "-lgi"]


def list_compute_instances_argv(gpu: int | Sequence[int] | None = None, gi: int | None = None) -> list[str]:
    return [SMI, "mig", *_ids(gpu), *(["-gi", str(gi)] if gi is not None else []), "-lci"]


def list_compute_instance_profiles_argv(gpu: int | Sequence[int] | None = None, gi: int | None = None) -> list[str]:
    return [SMI, "mig", *_ids(gpu), *(["-gi", str(gi)] if gi is not None else []), "-lcip"]


def _profile_item(p: int | str | tuple[int | str, int]) -> str:
    if isinstance(p, tuple):
        prof, start = p
        return f"{prof}:{start}"
    return str(p)


def create_gpu_instances_argv(gpu: int | Sequence[int] | None, profile_ids: Sequence[int | str | tuple[int | str, int]], default_ci: bool = True) -> list[str]:
    """`nvidia-smi mig -i 0 -cgi 9,19 -C`. Items are profile ids, names, or `(profile, start)` tuples for the
    `<profile>:<start>` placement syntax ([U, strong] on real nvidia-smi, docs/mig-facts.md#smi-formats)."""
    if not profile_ids:
        raise ValueError("create_gpu_instances_argv needs at least one profile")
    argv = [SMI, "mig", *_ids(gpu), "-cgi", ",".join(_profile_item(p) for p in profile_ids)]
    return argv + (["-C"] if default_ci else [])


def create_ci_argv(gpu: int | Sequence[int] | None, gi: int | str, ci_profile_ids: Sequence[int | str] | None = None) -> list[str]:
    """`nvidia-smi mig -i 0 -gi 2 -cci [0,0]` (no ids: the default CI profile)."""
    argv = [SMI, "mig", *_ids(gpu), "-gi", str(gi), "-cci"]
    if ci_profile_ids:
        argv.append(",".join(str(c) for c in ci_profile_ids))
    return argv


def destroy_ci_argv(gpu: int | Sequence[int] | None = None, gi: int | None = None, ci: int | None = None) -> list[str]:
    """`nvidia-smi mig [-i 0] [-gi 2] [-ci 0] -dci`."""
    return [SMI, "mig", *_ids(gpu), *(["-gi", str(gi)] if gi is not None else []), *(["-ci", str(ci)] if ci is not None else []), "-dci"]


def destroy_gi_argv(gpu: int | Sequence[int] | None = None, gi: int | None = None) -> list[str]:
    """`nvidia-smi mig [-i 0] [-gi 2] -dgi`."""
    return [SMI, "mig", *_ids(gpu), *(["-gi", str(gi)] if gi is not None else []), "-dgi"]


# ---------------------------------------------------------------------------------------------
# -L
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmiGpu:
    index: int
    name: str
    uuid: str


@dataclass(frozen=True)
class SmiMigDevice:
    """A MIG device line of `-L`: `profile` like `1g.5gb` or `1c.3g.20gb`, `device` the per-GPU index."""

    gpu: int
    profile: str
    device: int
    uuid: str

    @property
    def legacy_ids(self) -> tuple[int, int] | None:
        """(GI, CI) encoded in a pre-R470 `MIG-GPU-<uuid>/<gi>/<ci>` UUID, else None."""
        m = re.fullmatch(r"MIG-GPU-[0-9a-fA-F-]+/(\d+)/(\d+)", self.uuid)
        return (int(m.group(1)), int(m.group(2))) if m else None


@dataclass(frozen=True)
class GpuList:
    gpus: tuple[SmiGpu, ...]
    mig_devices: tuple[SmiMigDevice, ...]

    def devices_of(self, gpu: int) -> tuple[SmiMigDevice, ...]:
        return tuple(d for d in self.mig_devices if d.gpu == gpu)


_L_GPU = re.compile(r"^\s*(?:#\s*)?GPU (\d+): (.+?) \(UUID: (GPU-[0-9a-fA-F-]+)\)\s*$")
_L_MIG = re.compile(r"^\s*(?:#\s*)?MIG (\S+)\s+Device\s+(\d+): \(UUID: (MIG-[^)\s]+)\)\s*$")


def parse_L(text: str) -> GpuList:
    """Parse `nvidia-smi -L` (R470+ and pre-R470 forms; comment prefixes and indentation tolerated)."""
    gpus: list[SmiGpu] = []
    devs: list[SmiMigDevice] = []
    for line in text.splitlines():
        m = _L_GPU.match(line)
        if m:
            gpus.append(SmiGpu(int(m.group(1)), m.group(2).strip(), m.group(3)))
            continue
        m = _L_MIG.match(line)
        if m and gpus:
            devs.append(SmiMigDevice(gpus[-1].index, m.group(1), int(m.group(2)), m.group(3)))
    return GpuList(tuple(gpus), tuple(devs))


# ---------------------------------------------------------------------------------------------
# -lgi, -lci
# ---------------------------------------------------------------------------------------------

NOT_FOUND_MESSAGES = ("No GPU instances found", "No compute instances found", "No MIG-enabled devices found")


@dataclass(frozen=True)
class LgiRow:
    """One `-lgi` row: `name` without the `MIG ` prefix; placement in memory slices."""

    gpu: int
    name: str
    profile_id: int
    instance_id: int
    start: int
    size: int


_LGI_ROW = re.compile(r"^\|\s*(\d+)\s+MIG\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+):(\d+)\s*\|$")


def parse_lgi(text: str) -> list[LgiRow]:
    """Parse `nvidia-smi mig -lgi`; `No GPU instances found: ...` gives []."""
    rows = []
    for line in text.splitlines():
        m = _LGI_ROW.match(line.strip())
        if m:
            rows.append(LgiRow(int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4)), int(m.group(5)), int(m.group(6))))
    return rows


@dataclass(frozen=True)
class LciRow:
    """One `-lci` row. `start`/`size` are compute slices within the GI (None in the older layout)."""

    gpu: int
    gpu_instance_id: int
    name: str
    profile_id: int
    instance_id: int
    start: int | None
    size: int | None


_LCI_ROW = re.compile(r"^\|\s*(\d+)\s+(\d+)\s+MIG\s+(\S+)\s+(\d+)\s+(\d+)(?:\s+(\d+):(\d+))?\s*\|$")


def parse_lci(text: str) -> list[LciRow]:
    """Parse `nvidia-smi mig -lci` in both layouts (with and without `Placement Start:Size`)."""
    rows = []
    for line in text.splitlines():
        m = _LCI_ROW.match(line.strip().lstrip("#").strip())
        if m:
            start = int(m.group(6)) if m.group(6) is not None else None
            size = int(m.group(7)) if m.group(7) is not None else None
            rows.append(LciRow(int(m.group(1)), int(m.group(2)), m.group(3), int(m.group(4)), int(m.group(5)), start, size))
    return rows


# ---------------------------------------------------------------------------------------------
# -q
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryGpu:
    """One GPU of `nvidia-smi -q` (what migbench reads of it; None where the text does not say)."""

    bus_id: str | None
    product_name: str | None
    uuid: str | None
    mig_current: bool | None
    mig_pending: bool | None


@dataclass(frozen=True)
class Query:
    driver: str | None
    gpus: tuple[QueryGpu, ...]


_Q_KV = re.compile(r"^(\s*)([A-Za-z][A-Za-z0-9 ./()-]*?)\s*:\s*(.*?)\s*$")
_Q_GPU = re.compile(r"^GPU\s+([0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f])\s*$")


def parse_q(text: str) -> Query:
    """Parse `nvidia-smi -q` (all of it, or an excerpt): the driver version and, per GPU block
    (`GPU 00000000:07:00.0`), Product Name, GPU UUID and the MIG Mode block's Current / Pending.
    An excerpt without a `GPU <bus id>` line counts as one GPU. Unknown keys are ignored."""
    driver: str | None = None
    gpus: list[dict[str, object]] = []
    in_mig = False
    for raw in text.splitlines():
        line = raw.rstrip()
        m = _Q_GPU.match(line.strip())
        if m and not line.startswith(" "):
            gpus.append({"bus_id": m.group(1)})
            in_mig = False
            continue
        if line.strip() == "MIG Mode":
            in_mig = True
            continue
        kv = _Q_KV.match(line)
        if not kv:
            continue
        indent, key, value = len(kv.group(1)), kv.group(2).strip(), kv.group(3).strip()
        if key == "Driver Version" and indent == 0:
            driver = value
            continue
        if in_mig and key in ("Current", "Pending"):
            if not gpus:
                gpus.append({})
            gpus[-1]["mig_" + key.lower()] = {"Enabled": True, "Disabled": False}.get(value)
            continue
        in_mig = False
        if key in ("Product Name", "GPU UUID") and indent > 0:
            if not gpus:
                gpus.append({})
            gpus[-1]["product_name" if key == "Product Name" else "uuid"] = value
    return Query(
        driver,
        tuple(
            QueryGpu(g.get("bus_id"), g.get("product_name"), g.get("uuid"), g.get("mig_current"), g.get("mig_pending"))  # type: ignore[arg-type]
            for g in gpus
        ),
    )


# ---------------------------------------------------------------------------------------------
# --query-gpu
# ---------------------------------------------------------------------------------------------


def parse_query_csv(text: str, fields: Sequence[str] | None = None) -> list[dict[str, str | None]]:
    """Parse `--query-gpu=... --format=csv[...]` output into one dict per GPU, keyed by field name (units
    such as ` [MiB]` stripped from the header). With `noheader` output pass the queried `fields`. Values
    `[N/A]`, `N/A` and `[Not Supported]` become None; a trailing unit (` MiB`) is kept as printed."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return []
    if fields is None:
        keys = [re.sub(r"\s*\[[^\]]*\]$", "", h.strip()) for h in lines[0].split(",")]
        body = lines[1:]
    else:
        keys = list(fields)
        first = [re.sub(r"\s*\[[^\]]*\]$", "", h.strip()) for h in lines[0].split(",")]
        body = lines[1:] if first == keys else lines
    out = []
    for ln in body:
        vals = [v.strip() for v in ln.split(", ")]
        if len(vals) != len(keys):
            vals = [v.strip() for v in ln.split(",")]
        if len(vals) != len(keys):
            raise ValueError(f"query line has {len(vals)} values for {len(keys)} fields: {ln!r}")
        out.append({k: (None if v in ("[N/A]", "N/A", "[Not Supported]") else v) for k, v in zip(keys, vals)})
    return out


# ---------------------------------------------------------------------------------------------
# Create / destroy lines
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreatedGpuInstance:
    gpu: int
    gpu_instance_id: int
    profile_name: str  # "3g.20gb" (without "MIG ")
    profile_id: int


@dataclass(frozen=True)
class CreatedComputeInstance:
    gpu: int
    gpu_instance_id: int
    compute_instance_id: int
    profile_name: str
    profile_id: int


@dataclass(frozen=True)
class SmiFailure:
    """An `Unable to ...` line: `action` e.g. "create a GPU instance", `reason` e.g. "Insufficient Resources".
    `profile` is the profile text the line names (create lines), ids where the line has them."""

    action: str
    gpu: int | None
    gpu_instance_id: int | None
    compute_instance_id: int | None
    profile: str | None
    reason: str
    line: str


@dataclass(frozen=True)
class CreateResult:
    """What `-cgi`/`-cci` output says. `gpu_instances` / `compute_instances` are the created ids in order
    (the common single-GPU use); the `*_lines` fields carry GPU, profile and parent ids for each."""

    gpu_instances: tuple[int, ...]
    compute_instances: tuple[int, ...]
    gpu_instance_lines: tuple[CreatedGpuInstance, ...]
    compute_instance_lines: tuple[CreatedComputeInstance, ...]
    failures: tuple[SmiFailure, ...]
    summary_reason: str | None  # from `Failed to create ...: <reason>`

    @property
    def ok(self) -> bool:
        return not self.failures and self.summary_reason is None


_CREATED_GI = re.compile(r"Successfully created GPU instance ID\s+(\d+) on GPU\s+(\d+) using profile MIG (\S+) \(ID\s+(\d+)\)", re.I)
_CREATED_CI = re.compile(
    r"Successfully created compute instance ID\s+(\d+) on GPU\s+(\d+) GPU instance ID\s+(\d+) using profile "
    r"MIG (\S+) \(ID\s+(\d+)\)",
    re.I,
)
_UNABLE_CREATE_GI = re.compile(r"Unable to create a GPU instance on GPU\s+(\d+) using profile (.+?): (.+)$", re.I)
_UNABLE_CREATE_CI = re.compile(
    r"Unable to create a compute instance on GPU\s+(\d+) GPU instance ID\s+(\d+) using (?:default )?profile"
    r"(?: (.+?))?: (.+)$",
    re.I,
)
_FAILED = re.compile(r"Failed to (create|destroy) (GPU|compute) instances: (.+)$", re.I)
_DESTROYED_CI = re.compile(r"Successfully destroyed compute instance ID\s+(\d+) from GPU\s+(\d+) GPU instance ID\s+(\d+)", re.I)
_DESTROYED_GI = re.compile(r"Successfully destroyed GPU instance ID\s+(\d+) from GPU\s+(\d+)", re.I)
_UNABLE_DESTROY_CI = re.compile(r"Unable to destroy compute instance ID\s+(\d+) from GPU\s+(\d+) GPU instance ID\s+(\d+): (.+)$", re.I)
_UNABLE_DESTROY_GI = re.compile(r"Unable to destroy GPU instance ID\s+(\d+) from GPU\s+(\d+): (.+)$", re.I)


def parse_create_lines(text: str) -> CreateResult:
    """Parse the output of `mig -cgi ... [-C]` / `mig -cci ...`."""
    gis, cis, fails = [], [], []
    summary = None
    for raw in text.splitlines():
        line = raw.strip()
        if m := _CREATED_GI.search(line):
            gis.append(CreatedGpuInstance(int(m.group(2)), int(m.group(1)), m.group(3), int(m.group(4))))
        elif m := _CREATED_CI.search(line):
            cis.append(CreatedComputeInstance(int(m.group(2)), int(m.group(3)), int(m.group(1)), m.group(4), int(m.group(5))))
        elif m := _UNABLE_CREATE_GI.search(line):
            fails.append(SmiFailure("create a GPU instance", int(m.group(1)), None, None, m.group(2), m.group(3), line))
        elif m := _UNABLE_CREATE_CI.search(line):
            fails.append(SmiFailure("create a compute instance", int(m.group(1)), int(m.group(2)), None, m.group(3), m.group(4), line))
        elif (m := _FAILED.search(line)) and m.group(1).lower() == "create":
            summary = m.group(3)
    return CreateResult(tuple(g.gpu_instance_id for g in gis), tuple(c.compute_instance_id for c in cis), tuple(gis), tuple(cis), tuple(fails), summary)


@dataclass(frozen=True)
class DestroyResult:
    compute_instances: tuple[tuple[int, int, int], ...]  # (gpu, gi, ci)
    gpu_instances: tuple[tuple[int, int], ...]  # (gpu, gi)
    failures: tuple[SmiFailure, ...]
    summary_reason: str | None
    not_found: bool  # "No GPU/compute instances found: Not Found"

    @property
    def ok(self) -> bool:
        return not self.failures and self.summary_reason is None


def parse_destroy_lines(text: str) -> DestroyResult:
    """Parse the output of `mig -dci` / `mig -dgi` (the lower-cased DCGM#95 paste included)."""
    cis, gis, fails = [], [], []
    summary = None
    not_found = False
    for raw in text.splitlines():
        line = raw.strip()
        if m := _DESTROYED_CI.search(line):
            cis.append((int(m.group(2)), int(m.group(3)), int(m.group(1))))
        elif m := _DESTROYED_GI.search(line):
            gis.append((int(m.group(2)), int(m.group(1))))
        elif m := _UNABLE_DESTROY_CI.search(line):
            fails.append(SmiFailure("destroy compute instance", int(m.group(2)), int(m.group(3)), int(m.group(1)), None, m.group(4), line))
        elif m := _UNABLE_DESTROY_GI.search(line):
            fails.append(SmiFailure("destroy GPU instance", int(m.group(2)), int(m.group(1)), None, None, m.group(3), line))
        elif (m := _FAILED.search(line)) and m.group(1).lower() == "destroy":
            summary = m.group(3)
        elif line.startswith(NOT_FOUND_MESSAGES):
            not_found = True
    return DestroyResult(tuple(cis), tuple(gis), tuple(fails), summary, not_found)


# ---------------------------------------------------------------------------------------------
# -mig and --gpu-reset
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModeChange:
    """One GPU's outcome of `-mig 0|1`: `applied` (the mode changed now), or `pending` with the `reason`
    nvidia-smi gave ("In use by another client", "Not Supported"), or refused (`applied` and `pending`
    False, `reason` set)."""

    bus_id: str
    enable: bool
    applied: bool
    pending: bool
    reason: str | None


_MODE_DONE = re.compile(r"^(Enabled|Disabled) MIG Mode for GPU (\S+)$")
_MODE_PENDING = re.compile(r"^Warning: MIG mode is in pending (enable|disable) state for GPU ([0-9A-Fa-f:.]+):(.+)$")
_MODE_UNABLE = re.compile(r"^Unable to (enable|disable) MIG Mode for GPU (\S+): (.+)$")


def parse_mig_mode_lines(text: str) -> list[ModeChange]:
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if m := _MODE_DONE.match(line):
            out.append(ModeChange(m.group(2), m.group(1) == "Enabled", True, False, None))
        elif m := _MODE_PENDING.match(line):
            out.append(ModeChange(m.group(2), m.group(1) == "enable", False, True, m.group(3).strip()))
        elif m := _MODE_UNABLE.match(line):
            out.append(ModeChange(m.group(2), m.group(1) == "enable", False, False, m.group(3).strip()))
    return out


def parse_mig_mode_output(text: str) -> ModeChange:
    """The outcome of a single-GPU `-i N -mig 0|1`: its ModeChange, or (no recognised line) a refused
    change whose `reason` is the last line printed."""
    changes = parse_mig_mode_lines(text)
    if changes:
        return changes[0]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return ModeChange("", False, False, False, lines[-1] if lines else "no output")


_FAILURE_LINES = re.compile(
    r"^(Unable to |Failed to |The following GPUs could not be reset|No GPU instances found|"
    r"No compute instances found|No MIG-enabled devices found|No devices were found|Invalid combination|"
    r"Resetting GPU \S+ is not supported|GPU \S+ is currently in use by another process)",
    re.I,
)


def output_has_failure(text: str) -> bool:
    """Whether nvidia-smi output reports a failure (an `Unable to`/`Failed to` line, a refused reset, a
    `No ... found` answer, a usage error), whatever its exit status was."""
    return any(_FAILURE_LINES.match(ln.strip()) for ln in text.splitlines())


@dataclass(frozen=True)
class ResetResult:
    """`--gpu-reset` outcome: bus ids reset, and {bus id: reason} for those that were not."""

    reset: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]

    @property
    def ok(self) -> bool:
        return bool(self.reset) and not self.failed


_RESET_OK = re.compile(r"^GPU (\S+) was successfully reset\.$")
_RESET_UNSUPPORTED = re.compile(r"^Resetting GPU (\S+) is not supported\.$")
_RESET_BUSY = re.compile(r"^GPU (\S+) is currently in use by another process\.$")
_RESET_LIST = re.compile(r"^GPU ([0-9A-Fa-f:.]+): (.+)$")
_RESET_BUSY_NEW = re.compile(r"^Unable to reset GPU (\S+) because it's being used by some other process")
_RESET_UNABLE = re.compile(r"^Unable to reset GPU (\S+): (.+)$")


def parse_reset_lines(text: str) -> ResetResult:
    ok, failed = [], []
    in_list = False
    for raw in text.splitlines():
        line = raw.strip()
        if m := _RESET_OK.match(line):
            ok.append(m.group(1))
        elif m := _RESET_UNSUPPORTED.match(line):
            failed.append((m.group(1), "Not Supported"))
        elif m := _RESET_BUSY.match(line):
            failed.append((m.group(1), "In use by another client"))
        elif m := _RESET_BUSY_NEW.match(line):
            failed.append((m.group(1), "In use by another client"))
        elif m := _RESET_UNABLE.match(line):
            failed.append((m.group(1), m.group(2)))
        elif line.startswith("The following GPUs could not be reset"):
            in_list = True
        elif in_list and (m := _RESET_LIST.match(line)):
            failed.append((m.group(1), m.group(2).strip()))
    return ResetResult(tuple(ok), tuple(failed))
