"""mig-parted configs from a plan, mig-parted's own config rules, and what its counts lose.

`nvidia-mig-parted apply -f config.yaml -c NAME` (on bare metal, or the GPU Operator's MIG manager
when a node is labelled `nvidia.com/mig.config=NAME`) configures a node's GPUs from a named config:
a list of entries, each giving GPU indices (`devices`), `mig-enabled` and `mig-devices` (profile ->
count). A plan becomes one config per node, with every GPU of the node listed (a GPU no entry names
keeps its old mode and instances).

mig-parted takes **counts, not placements**: it creates the instances without a placement and the
driver picks where each goes. When a GPU's counts fit several legal layouts, the GPU may end up with
another layout than the plan's; `placement_warnings` says which GPUs and what that can cost (free
slices that no longer fit a profile the plan's layout keeps room for). `migbench apply PLAN --node
NODE` is the placement-exact alternative.

`validate` ports mig-parted's config checks (NVIDIA/mig-parted `api/spec/v1/spec.go`: `Spec` and
`MigConfigSpec` UnmarshalJSON; `pkg/types/mig_config.go`: `MigConfig.AssertValidFormat`; the profile
syntax from go-nvlib `pkg/nvlib/device/mig_profile.go`: `parseMigProfile`, vendored by mig-parted),
so an export is checked without the Go binary.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from functools import lru_cache
from typing import Any

import yaml

from migbench.catalog import default_catalog
from migbench.plan import Plan
from migbench.types import Placement

LABEL_VALUE_RE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")


def config_name(plan: Plan, node: str | None) -> str:
    """`migbench-<node>` (or `migbench-<sweep>` for a plan without nodes): a Kubernetes label value
    (at most 63 characters; a longer name is cut and keeps a hash of the whole)."""
    name = f"migbench-{node or plan.name}"
    if len(name) > 63:
        name = name[:52].rstrip("-_.") + "-" + hashlib.sha256(name.encode()).hexdigest()[:10]
    return name


def gpu_counts(plan: Plan, gpu: int) -> dict[str, int]:
    return dict(sorted(Counter(i.profile for i in plan.instances_of(gpu)).items()))


def node_entries(plan: Plan, node: str | None) -> list[dict[str, Any]]:
    """One entry per distinct set of counts, naming every GPU of the node (local indices)."""
    gpus = plan.node_gpus(node) if node else list(plan.fleet)
    groups: dict[tuple[tuple[str, int], ...], list[int]] = {}
    for k, g in enumerate(gpus):
        groups.setdefault(tuple(gpu_counts(plan, g.gpu).items()), []).append(k)
    return [{"devices": devices, "mig-enabled": True, "mig-devices": dict(counts)} for counts, devices in groups.items()]


def config(plan: Plan) -> dict[str, Any]:
    configs: dict[str, Any] = {"all-disabled": [{"devices": "all", "mig-enabled": False}]}
    targets: list[str | None] = list(plan.nodes()) or [None]
    for node in targets:
        configs[config_name(plan, node)] = node_entries(plan, node)
    return {"version": "v1", "mig-configs": configs}


class _FlowLists(yaml.SafeDumper):
    pass


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(isinstance(x, int) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_FlowLists.add_representer(list, _represent_list)


def config_text(plan: Plan) -> str:
    head = [
        f"# mig-parted config for plan {plan.name} (written by `migbench export mig-parted`).",
        "# Apply on a node: nvidia-mig-parted apply -f THIS_FILE -c "
        + config_name(plan, plan.nodes()[0] if plan.nodes() else None)
        + ("  (each node its own -c migbench-<node>)" if plan.nodes() else ""),
        "# mig-parted takes counts, not placements: the driver chooses where each instance goes. For the",
        "# plan's exact placements use `migbench apply PLAN" + (" --node NODE" if plan.nodes() else "") + "` instead.",
    ]
    return "\n".join(head) + "\n" + yaml.dump(config(plan), Dumper=_FlowLists, sort_keys=False, width=120)


# -- counts versus placements ------------------------------------------------------------------


@lru_cache(maxsize=256)
def _layouts_with(model_key: str, counts: tuple[tuple[str, int], ...]) -> tuple[tuple[Placement, ...], ...]:
    model = default_catalog().model(model_key)
    want = dict(counts)
    return tuple(lay for lay in model.layouts(sorted(want), maximal=False) if Counter(p.profile for p in lay) == want)


def _room(model_key: str, layout: tuple[Placement, ...]) -> set[str]:
    """Profiles of the model that still fit beside `layout`."""
    model = default_catalog().model(model_key)
    return {p.name for p in model.plain_profiles() if any(model.is_legal([*layout, Placement(p.name, s)]) for s in p.starts)}


def placement_warnings(plan: Plan) -> list[str]:
    """For each GPU whose counts fit more than one legal layout: what mig-parted may build instead."""
    out = []
    for g in plan.fleet:
        counts = tuple(gpu_counts(plan, g.gpu).items())
        if not counts:
            continue
        mine = plan.layout(g.gpu)
        try:
            alts = [lay for lay in _layouts_with(g.model, counts) if tuple(sorted(lay, key=_key)) != tuple(sorted(mine, key=_key))]
        except Exception:  # noqa: BLE001 - a model the catalogue lacks: nothing to compare with
            continue
        if not alts:
            continue
        where = f"GPU {g.gpu}" + (f" ({g.node} GPU {[x.gpu for x in plan.node_gpus(g.node)].index(g.gpu)})" if g.node else "")
        room = _room(g.model, mine)
        lost = None
        for alt in alts:
            gone = sorted(room - _room(g.model, alt))
            if gone:
                lost = (alt, gone)
                break
        shown = lost[0] if lost else alts[0]
        text = (
            f"{where}: mig-parted gets counts ({', '.join(f'{n} x {p}' for p, n in counts)}), which fit {len(alts) + 1} layouts; "
            f"the driver may build {_fmt(shown)} instead of the plan's {_fmt(mine)}"
        )
        if lost:
            text += f", and then {' or '.join(lost[1])} no longer fit{'s' if len(lost[1]) == 1 else ''} in the free slices"
        else:
            text += "; the runs are unaffected (they ask by profile), but free slices and later re-cuts differ"
        out.append(text + f". Placement-exact: migbench apply PLAN{' --node ' + g.node if g.node else ''}")
    return out


def _key(p: Placement) -> tuple[int, str]:
    return (p.start, p.profile)


def _fmt(layout: tuple[Placement, ...] | list[Placement]) -> str:
    return " ".join(str(p) for p in sorted(layout, key=_key))


# -- mig-parted's config rules -----------------------------------------------------------------

_ATTR_CHARS = re.compile(r"[A-Za-z0-9.]+")


def profile_error(p: Any) -> str | None:
    """go-nvlib parseMigProfile: `[<c>c.]<g>g.<gb>gb[+attr,...|-attr,...]`; None when valid."""
    if not isinstance(p, str) or p == "":
        return "profile is the empty string"
    plus, minus = p.split("+", 1), p.split("-", 1)
    if len(plus) == 2 and len(minus) == 2:
        return f"profile '{p}' contains both '+/-' attributes"
    parts = plus if len(plus) == 2 else minus
    fields = parts[0].split(".", 2)
    names = {3: ("c", "g", "gb"), 2: ("g", "gb")}.get(len(fields))
    if names is None:
        return f"cannot parse fields of '{p}': parsed wrong number of fields, expected 2 or 3"
    for text, suffix in zip(fields, names):
        if text.strip() != text:
            return f"cannot parse fields of '{p}': leading or trailing spaces on '%d{suffix}'"
        if not text.endswith(suffix):
            return f"cannot parse fields of '{p}': missing '{suffix}' from '%d{suffix}'"
        if not re.fullmatch(r"[+-]?\d+", text[: -len(suffix)]):
            return f"cannot parse fields of '{p}': malformed number in '%d{suffix}'"
    return _attributes_error(p, parts[1]) if len(parts) == 2 else None


def _attributes_error(p: str, attrs: str) -> str | None:
    """The attribute list after the `+`/`-` of profile `p`; None when valid."""
    seen: set[str] = set()
    for a in attrs.split(","):
        if a in seen:
            return f"cannot parse attributes of '{p}': non unique attribute in list"
        if a == "":
            return f"cannot parse attributes of '{p}': empty attribute in list"
        if a.strip() != a:
            return f"cannot parse attributes of '{p}': leading or trailing spaces in attribute"
        if a[0].isdigit():
            return f"cannot parse attributes of '{p}': attribute begins with a number"
        if a[0] == "." or a[-1] == ".":
            return f"cannot parse attributes of '{p}': attribute begins/ends with a dot"
        if not _ATTR_CHARS.fullmatch(a):
            return f"cannot parse attributes of '{p}': non alpha-numeric character or digit in attribute"
        seen.add(a)
    return None


def validate(doc: Any) -> list[str]:
    """Every error mig-parted's loader would report for this config document; [] when it loads."""
    if isinstance(doc, str):
        doc = yaml.safe_load(doc)
    if not isinstance(doc, dict):
        return ["the config is not a mapping"]
    if "version" not in doc and doc:
        return ["unable to parse with missing 'version' field"]
    if doc.get("version") != "v1":
        return [f"unknown version: {doc.get('version')}"]
    errs = [f"unexpected field: {k}" for k in doc if k not in ("version", "mig-configs")]
    if "mig-configs" not in doc:
        return errs
    configs = doc["mig-configs"]
    if not isinstance(configs, dict) or not configs:
        return [*errs, "at least one entry in 'mig-configs' is required"]
    for name, entries in configs.items():
        if not isinstance(entries, list) or not entries:
            errs.append(f"at least one entry in '{name}' is required")
            continue
        for i, e in enumerate(entries):
            errs += [f"{name}[{i}]: {m}" for m in _entry_errors(e)]
    return errs


def _entry_errors(e: Any) -> list[str]:
    if not isinstance(e, dict):
        return ["an entry is not a mapping"]
    errs = [f"missing required field: {r}" for r in ("devices", "mig-enabled") if r not in e]
    errs += [f"unexpected field: {k}" for k in e if k not in ("device-filter", "devices", "mig-enabled", "mig-devices")]
    d = e.get("devices")
    if "devices" in e and not (d == "all" or (isinstance(d, list) and all(type(x) is int for x in d))):
        errs.append(f"invalid 'devices': {d!r} (\"all\" or a list of ints)")
    f = e.get("device-filter")
    if f is not None and not (isinstance(f, str) or (isinstance(f, list) and all(isinstance(x, str) for x in f))):
        errs.append(f"invalid 'device-filter': {f!r}")
    enabled = e.get("mig-enabled")
    if "mig-enabled" in e and type(enabled) is not bool:
        errs.append("'mig-enabled' is not a bool")
    md = e.get("mig-devices")
    if md is not None:
        if not isinstance(md, dict):
            errs.append("'mig-devices' is not a mapping")
        else:
            for p, n in md.items():
                pe = profile_error(p)
                if pe:
                    errs.append(f"error validating values in 'mig-devices' field: invalid format for '{p}': {pe}")
                if type(n) is not int or n < 0:
                    errs.append(f"invalid count for '{p}': {n!r}")
            if md and all(type(n) is int and n == 0 for n in md.values()):
                errs.append("error validating values in 'mig-devices' field: all counts for all MigProfiles are 0")
    if enabled is True and md is None:
        errs.append("missing required field 'mig-devices' when 'mig-enabled' is true")
    if enabled is False and md:
        errs.append("MIG devices included when 'mig-enabled' is false")
    return errs
