"""Slurm GRES type names for MIG devices: what Slurm's NVML autodetection calls them, a site's own
names, and the names a running cluster declares.

With `AutoDetect=nvml` Slurm names each MIG device after its GPU and its rounded memory, not after
the NVIDIA profile (Slurm 22.05 `src/plugins/gpu/nvml/gpu_nvml.c`, `_get_system_gpu_list_nvml` and
`_handle_mig`, tag slurm-22-05-8-1):

- the GPU's NVML name, lower-cased with spaces made `_` (`gpu_common_underscorify_tolower`), cut at
  its first `-`: "NVIDIA A100-SXM4-80GB" -> `nvidia_a100`, "NVIDIA A100 80GB PCIe" ->
  `nvidia_a100_80gb_pcie`, "NVIDIA H100 NVL" -> `nvidia_h100_nvl`;
- then `_<GPU-instance slices>g.<roundl(memorySizeMB / 1024)>gb` from the MIG device's attributes.

So an A100 40GB `1g.5gb` (4864 MiB) is `nvidia_a100_1g.5gb` (seen in NVIDIA/deepops#1214), and an
A100 80GB `3g.40gb` whose driver reports 40192 MiB is `nvidia_a100_3g.39gb`: a site that declares
`Type=3g.40gb` drains the node (NVIDIA/mig-parted#31). The compute-instance size is not in the name
(every CI of a 3g GI gets the same type) and neither is `+me`. A slurm.conf type "should match or be
a substring of the value that is detected" (gres.conf(5), Type; https://slurm.schedmd.com/gres.html,
"MIG Management"), and `--gres` must use the type slurm.conf declares.

The memory migbench rounds is the plan's (the catalogue's per-driver observation, or the live NVML
table the plan was made with): a driver that reports other sizes gives other names [U]. Hence
`--type-map` (a site's names) and `export slurm --check` (the cluster's names, read with
`scontrol show node`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from migbench.catalog import default_catalog
from migbench.errors import InputError, UsageError
from migbench.fsutil import read_input_text

TYPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
"""A GRES type as slurm.conf accepts it in `Gres=gpu:<type>:<n>` (no ':', ',', '(' or space)."""


def nvml_prefix(nvml_name: str) -> str:
    """The GPU part of a detected MIG type: "NVIDIA A100-SXM4-80GB" -> `nvidia_a100`."""
    s = nvml_name.strip().lower().replace(" ", "_")
    return s.split("-", 1)[0]


def round_gb(memory_mib: int) -> int:
    """C's roundl(MiB / 1024): halves away from zero (9728 MiB = 9.5 -> 10)."""
    return int(math.floor(memory_mib / 1024 + 0.5))


def profile_slices(profile: str) -> int:
    m = re.match(r"(?:\d+c\.)?(\d+)g\.", profile)
    return int(m.group(1)) if m else 0


def nominal_gb(profile: str) -> int | None:
    m = re.match(r"(?:\d+c\.)?\d+g\.(\d+)gb", profile)
    return int(m.group(1)) if m else None


def model_nvml_name(model: str) -> str:
    """The NVML product name of a catalogue model (its first `names:` entry), else the key."""
    cat = default_catalog()
    key = cat.find_key(model)
    if key is not None:
        names = [n for n in cat.specs[key].get("names", []) if str(n).upper().startswith("NVIDIA")]
        if names:
            return str(names[0])
    return model


def detected_type(model: str, profile: str, memory_mib: int) -> str:
    """The type Slurm's NVML autodetection gives a MIG device of `profile` on `model` with
    `memory_mib`: `nvidia_a100_3g.39gb`."""
    return f"{nvml_prefix(model_nvml_name(model))}_{profile_slices(profile)}g.{round_gb(memory_mib)}gb"


def matches(site_type: str, model: str, profile: str, memory_mib: int) -> bool:
    """Whether a site's type can be what slurmd detects for this MIG device: a substring of a
    detected name that keeps the `<g>g.<gb>gb` part, with the rounded or the nominal memory."""
    g = profile_slices(profile)
    prefix = nvml_prefix(model_nvml_name(model))
    for gb in {round_gb(memory_mib), nominal_gb(profile)}:
        if gb is None:
            continue
        tail = f"{g}g.{gb}gb"
        if tail in site_type and site_type in f"{prefix}_{tail}":
            return True
    return False


# -- a site's own names ------------------------------------------------------------------------


def parse_type_map(items: Iterable[str] = (), file: Path | None = None) -> dict[str, str]:
    """`--type-map PROFILE=TYPE[,...]` (or `MODEL:PROFILE=TYPE`) and `--type-map-file` (a YAML
    mapping of the same keys to types). Later entries win; the option wins over the file."""
    out: dict[str, str] = {}
    if file is not None:
        text = read_input_text(file, "type-map file", hint="a YAML mapping, e.g. `3g.40gb: a100_3g.39gb`")
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError(f"--type-map-file {file}: cannot read it ({exc})", hint="a YAML mapping, e.g. `3g.40gb: a100_3g.39gb`") from None
        if not isinstance(doc, dict):
            raise InputError(f"--type-map-file {file}: expected a mapping of profile to Slurm type", hint="e.g. `3g.40gb: a100_3g.39gb`")
        for k, v in doc.items():
            out[str(k)] = _check_type(str(v), f"--type-map-file {file}")
    for item in items:
        for part in (p.strip() for p in item.split(",") if p.strip()):
            key, eq, val = part.partition("=")
            if not eq or not key.strip():
                raise UsageError(f"--type-map {part!r}: expected PROFILE=TYPE or MODEL:PROFILE=TYPE", hint="e.g. --type-map 3g.40gb=a100_3g.39gb")
            out[key.strip()] = _check_type(val.strip(), "--type-map")
    return out


def _check_type(t: str, where: str) -> str:
    if not TYPE_RE.fullmatch(t):
        raise UsageError(f"{where}: {t!r} is not a GRES type slurm.conf accepts", hint="letters, digits, '_', '.', '+', '-'")
    return t


def site_type(model: str, profile: str, memory_mib: int, type_map: Mapping[str, str]) -> str:
    """The type to write for (model, profile): the site's mapping (`MODEL:PROFILE`, then
    `PROFILE`), else the name NVML autodetection gives it."""
    return type_map.get(f"{model}:{profile}") or type_map.get(profile) or detected_type(model, profile, memory_mib)


# -- a running cluster's names -----------------------------------------------------------------


@dataclass(frozen=True)
class ClusterNode:
    name: str
    state: str
    gres: dict[str, int]  # GPU GRES type -> count ("" for an untyped gpu:N)


_KV = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/.]*)=(.*?)(?=\s+[A-Za-z][A-Za-z0-9_:/.]*=|\s*$)")
_GRES = re.compile(r"(?:^|,)([A-Za-z0-9_]+):(?:([^:,()]+):)?(\d+)(?:\([^)]*\))?")


def parse_gres(text: str) -> dict[str, int]:
    """`gpu:1g.10gb:4(S:0-31),gpu:3g.40gb:1` -> {"1g.10gb": 4, "3g.40gb": 1} (GPU GRES only)."""
    out: dict[str, int] = {}
    if not text or text == "(null)":
        return out
    for m in _GRES.finditer(text):
        if m.group(1) != "gpu":
            continue
        t = m.group(2) or ""
        out[t] = out.get(t, 0) + int(m.group(3))
    return out


def parse_scontrol_nodes(text: str) -> dict[str, ClusterNode]:
    """`scontrol -o show node` output -> {node: ClusterNode}."""
    nodes = {}
    for line in text.splitlines():
        kv = {m.group(1): m.group(2) for m in _KV.finditer(line)}
        name = kv.get("NodeName")
        if name:
            nodes[name] = ClusterNode(name, kv.get("State", ""), parse_gres(kv.get("Gres", "")))
    return nodes
