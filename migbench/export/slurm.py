"""`migbench export slurm PLAN -o DIR`: what an admin and a user need to run a plan under Slurm.

    DIR/nodes/<node>.conf   the node's slurm.conf line (Gres=gpu:<type>:<n>,...) and its MIG
                            devices in GRES order (for a hand-written gres.conf)
    DIR/gres.conf           AutoDetect=nvml, with the types each node will detect
    DIR/apply-<node>.sh     the layout, applied on the node before slurmd starts (Slurm never
                            partitions GPUs: https://slurm.schedmd.com/gres.html, "MIG Management")
    DIR/arrays/*.sbatch     one editable batch script per job array: an instance type's tasks (in
                            parts of at most MaxArraySize), each asking --gres=gpu:<type>:1, at most
                            as many at once as the plan has instances of the type, with a --time
                            from the runs' durations; each task runs `migbench exec` (`export.execute`)
    DIR/submit.sh           sbatch of each script, recorded in the state dir (resumable)
    DIR/export.json         what was exported: the plan's hash, arrays, types, nodes

The type names come from `slurm_types` (NVML autodetection's naming, a site's `--type-map`, or with
`--check` the cluster's own, read by `slurmctl.cluster_types`).
"""

from __future__ import annotations

import json
import math
import shlex
import shutil
import sys
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migbench.duration import rate
from migbench.errors import InputError, MigbenchError, UsageError, os_reason
from migbench.export.slurm_types import detected_type, site_type
from migbench.export.tasks import Array, arrays, node_devices
from migbench.fsutil import output_dir, require_trusted, write_text_atomic
from migbench.plan import Plan
from migbench.state import JOBS_FILE as JOBS_FILE  # where submit.sh records the jobs (the state directory's file)
from migbench.state import StateDir, configure_modes

DEFAULT_MAX_ARRAY_SIZE = 1001
"""Slurm's default MaxArraySize (slurm.conf(5)): array indices 0-1000."""


@dataclass
class SlurmExport:
    plan: Plan
    sha256: str
    arrays: list[Array]
    types: dict[str, str]  # array name -> GRES type
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def migbench_command() -> str:
    """How the scripts call migbench: this install's console script, else `python -m migbench`."""
    found = shutil.which("migbench")
    if found and Path(found).parent == Path(sys.executable).parent:
        return shlex.quote(found)
    return f"{shlex.quote(sys.executable)} -m migbench"


def _command_line(mb: str) -> str:
    """The scripts' line that sets `MB`, the migbench command as a bash array: `$MIGBENCH` when set
    (split into words, so `MIGBENCH="python3 -m migbench"` works), else `mb` (shell words, quoted):
    an install whose path holds a space stays one word."""
    return f'if [ -n "${{MIGBENCH:-}}" ]; then read -r -a MB <<< "$MIGBENCH"; else MB=({mb}); fi'


def gres_types(plan: Plan, type_map: Mapping[str, str], chosen: Mapping[str, str] | None = None) -> dict[str, str]:
    """The GRES type of each array: `chosen` (the cluster's, from --check), else the site's map,
    else the name NVML autodetection gives it."""
    out = {}
    for a in arrays(plan):
        out[a.name] = (chosen or {}).get(a.name) or site_type(a.model, a.profile, a.memory_mib, type_map)
    return out


def _broken(text: str) -> bool:
    return any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in text)


def sbatch_path(path: str, pattern: str = "") -> str:
    """`path` followed by the filename `pattern` (its %A, %a kept) as the value of an #SBATCH option:
    in double quotes (sbatch ends an option at a space otherwise, and refuses the rest of the line as
    an invalid directive), `"` escaped with a backslash, and the path's `%` doubled (a `%` starts a
    replacement symbol). A backslash in the path is refused by `_one_line_each` (in a filename
    pattern it turns every replacement off)."""
    return '"' + (path.replace("%", "%%") + pattern).replace('"', '\\"') + '"'


def sbatch_arg(arg: str) -> str:
    """One `--sbatch-arg` as an #SBATCH line's words: `--option=value` with white space (or a `"`) in
    its value gets the value in double quotes, `"` escaped (sbatch ends an option at a space and
    refuses the rest of the line as an invalid directive); any other form, or a value quoted
    already, is written as given (`--partition gpu` is an option and its value)."""
    opt, eq, value = arg.partition("=")
    quoted = len(value) >= 2 and value[0] == value[-1] == '"'  # quoted for sbatch already: as given
    if not eq or not opt.startswith("-") or quoted or not any(c.isspace() or c == '"' for c in value):
        return arg
    return f'{opt}="' + value.replace('"', '\\"') + '"'


def _one_line_each(plan_abs: str, sd: str, mb: str, sbatch_args: Sequence[str]) -> None:
    """Refuse what would break a line of the scripts: each #SBATCH line ends at a line break, and
    the line after it runs as a command (a state directory below a directory whose name holds one
    made `#SBATCH --output=` end there)."""
    for what, path in (("the plan's path", plan_abs), ("the state directory", sd), ("the migbench command", mb)):
        if _broken(path):
            raise InputError(
                f"{what} {path!r} holds a line break or a control character: it cannot go into a batch script",
                hint="move the plan (or --state-dir) to a directory whose path is one line of text",
            )
    if "\\" in sd:
        raise InputError(
            f"the state directory {sd!r} holds a backslash: the batch scripts' `#SBATCH --output=` would lose its %A_%a "
            "(a backslash turns off sbatch's filename patterns)",
            hint="move the plan (or --state-dir) to a directory whose path has no backslash",
        )
    for arg in sbatch_args:
        if _broken(arg):
            raise UsageError(f"--sbatch-arg {arg!r} holds a line break or a control character", hint="give one sbatch option per --sbatch-arg")


def write(
    plan: Plan,
    out: Path,
    *,
    sha256: str,
    type_map: Mapping[str, str],
    chosen: Mapping[str, str] | None = None,
    sbatch_args: Sequence[str] = (),
    state_dir: StateDir,
    command: str | None = None,
    max_array_size: int = DEFAULT_MAX_ARRAY_SIZE,
    max_array_from: str = "",
) -> SlurmExport:
    """Write the export into `out` (created; files of an earlier export are replaced). Arrays longer
    than `max_array_size` (the cluster's MaxArraySize; `max_array_from` says where it came from) are
    submitted in parts."""
    if not plan.path:
        raise InputError("the plan has no file", hint="save it first (`migbench plan -o PLAN`)")
    arrs = arrays(plan)
    if not any(a.tasks for a in arrs):
        raise MigbenchError(f"plan {plan.name} places no run: nothing to submit", hint="check the plan's `unplaced` list")
    types = gres_types(plan, type_map, chosen)
    exp = SlurmExport(plan, sha256, arrs, types)
    mb = command or migbench_command()
    plan_abs = str(Path(plan.path).resolve())
    sd = state_dir.resolve()
    _one_line_each(plan_abs, str(sd), mb, sbatch_args)
    configure_modes(plan)  # before the trust check: a team's `state_mode: 0660` lets the group write the directory
    # the tasks' logs (#SBATCH --output), submit.sh's record of the jobs and the parsed plan go there
    require_trusted(sd, "state directory")
    nodes = plan.nodes()
    output_dir(out, "export directory", ("arrays", "nodes") if nodes else ("arrays",))  # its apply-<node>.sh runs as root
    if not nodes:
        exp.notes.append(
            "the plan's fleet names no nodes: no nodes/*.conf or apply-*.sh written (add `node:` to each fleet entry, or --fleet-file, and plan again)"
        )
    else:
        (out / "nodes").mkdir(exist_ok=True)
        for node in nodes:
            exp.files.append(_write(out / "nodes" / f"{node}.conf", node_conf(plan, node, arrs, types, type_map)))
            exp.files.append(_write(out / f"apply-{node}.sh", apply_script(plan, node, plan_abs, mb, arrs, types), exe=True))
        exp.files.append(_write(out / "gres.conf", gres_conf(plan, arrs, types)))
    (out / "arrays").mkdir(exist_ok=True)
    for old in (out / "arrays").glob("*.sbatch"):  # an earlier export's parts
        old.unlink()
    for a in arrs:
        parts = chunks(a, max_array_size)
        for k, (off, n) in enumerate(parts):
            text = array_script(plan, a, types[a.name], off, n, plan_abs, str(sd), sha256, mb, sbatch_args)
            exp.files.append(_write(out / script_name(a, k, len(parts)), text, exe=True))
        if len(parts) > 1:
            exp.notes.append(
                f"{a.name}: {len(a.tasks)} tasks exceed MaxArraySize {max_array_size} ({max_array_from}): "
                f"submitted as {len(parts)} job arrays, each after the previous one"
            )
        if task_time_s(plan, a) is None:
            exp.notes.append(f"{a.name}: no --time (a run has no `duration` or `timeout`): the partition's default time limit applies")
    exp.files.append(_write(out / "submit.sh", submit_script(plan, arrs, types, str(sd), sha256, max_array_size), exe=True))
    doc = _export_doc(plan_abs, sha256, str(sd), nodes, arrs, types, max_array_size, max_array_from)
    exp.files.append(_write(out / "export.json", json.dumps(doc, indent=2) + "\n"))
    from migbench.export.execute import save_parsed_plan

    try:  # beside the launch state: each array task reads it instead of parsing the YAML
        save_parsed_plan(plan, sd, sha256)
    except (OSError, UnicodeDecodeError) as exc:
        why = os_reason(exc) if isinstance(exc, OSError) else "the plan file is not UTF-8"
        exp.notes.append(f"could not leave the parsed plan in {sd} ({why}): each array task will parse the plan file itself")
    shared = [a for a in arrs if types[a.name] in [types[b.name] for b in arrs if b is not a]]
    if shared:
        exp.notes.append(
            "Slurm cannot tell apart "
            + ", ".join(f"{a.profile} ({a.model})" for a in shared)
            + f": they share GRES type {types[shared[0].name]} (the type names only GPU-instance slices and memory)"
        )
    return exp


def _export_doc(
    plan_abs: str,
    sha256: str,
    state_dir: str,
    nodes: list[str],
    arrs: list[Array],
    types: Mapping[str, str],
    max_array_size: int,
    max_array_from: str,
) -> dict[str, Any]:
    """export.json: what was exported, from which plan, for which nodes and arrays."""
    return {
        "version": 1,
        "kind": "migbench-export-slurm",
        "plan": plan_abs,
        "plan_sha256": sha256,
        "state_dir": state_dir,
        "nodes": nodes,
        "max_array_size": max_array_size,
        "max_array_size_from": max_array_from,
        "arrays": [
            {
                "name": a.name,
                "model": a.model,
                "profile": a.profile,
                "gres_type": types[a.name],
                "instances": a.count,
                "parts": len(chunks(a, max_array_size)),
                "per_node": a.per_node,
                "tasks": len(a.tasks),
                "runs": sum(len(t.runs) for t in a.tasks),
            }
            for a in arrs
        ],
    }


def _write(path: Path, text: str, *, exe: bool = False) -> Path:
    return write_text_atomic(path, text, mode=0o755 if exe else 0o644, raw_names=True)  # a script names the directories as they are


def node_gres(plan: Plan, node: str, arrs: Sequence[Array], types: Mapping[str, str]) -> list[tuple[str, int]]:
    """[(GRES type, count)] of a node, in array order (types shared by several arrays summed)."""
    out: dict[str, int] = {}
    for a in arrs:
        n = a.per_node.get(node, 0)
        if n:
            out[types[a.name]] = out.get(types[a.name], 0) + n
    return list(out.items())


def node_conf(plan: Plan, node: str, arrs: Sequence[Array], types: Mapping[str, str], type_map: Mapping[str, str]) -> str:
    gres = ",".join(f"gpu:{t}:{n}" for t, n in node_gres(plan, node, arrs, types))
    name_of = {(a.model, a.profile): types[a.name] for a in arrs}
    model_of = {g.gpu: g.model for g in plan.fleet}
    local = {g.gpu: k for k, g in enumerate(plan.node_gpus(node))}
    lines = [
        f"# Node {node} of plan {plan.name}: its MIG devices in Slurm (written by `migbench export slurm`).",
        f"# Configure MIG on it first (../apply-{node}.sh), then start slurmd: Slurm does not partition GPUs.",
        "#",
        "# slurm.conf: keep the node's own CPUs=, RealMemory=, ... and set Gres= to this (with GresTypes=gpu):",
        f"NodeName={node} Gres={gres}",
        "#",
        "# gres.conf: AutoDetect=nvml (../gres.conf). The types are what Slurm's NVML detection names these",
        "# devices: <GPU name cut at its first '-'>_<GPU-instance slices>g.<memory rounded to GiB>gb, not the",
        '# NVIDIA profile (src/plugins/gpu/nvml/gpu_nvml.c, _handle_mig; gres.conf(5), Type: "should match or',
        '# be a substring of the value that is detected"). Check with `slurmd -G` on the node; if it names them',
        "# otherwise, export again with --type-map PROFILE=TYPE, or with --check against the running cluster.",
        "#",
        "# Without NVML (AutoDetect=off, a hand-written gres.conf), list the MIG devices in this order, one",
        "# MultipleFiles= line each (/dev/nvidiaN plus its two /dev/nvidia-caps files): GRES index k is then the",
        "# k-th, which is what `migbench exec` assumes when a job gets an index instead of a MIG uuid.",
    ]
    for k, inst in enumerate(node_devices(plan, node)):
        t = name_of[(model_of[inst.gpu], inst.profile)]
        lines.append(f"#   {k}: GPU {local[inst.gpu]} {inst.profile}@{inst.start}  Type={t}")
    return "\n".join(lines) + "\n"


def gres_conf(plan: Plan, arrs: Sequence[Array], types: Mapping[str, str]) -> str:
    lines = [
        f"# gres.conf for the nodes of plan {plan.name} (written by `migbench export slurm`).",
        "# Slurm reads the MIG devices from NVML; each node must be MIG-configured before slurmd starts",
        "# (apply-<node>.sh). slurm.conf needs GresTypes=gpu and each node's Gres= from nodes/<node>.conf.",
        "AutoDetect=nvml",
    ]
    model_of = {g.gpu: g.model for g in plan.fleet}
    for node in plan.nodes():
        det: dict[str, int] = {}
        for inst in node_devices(plan, node):
            d = detected_type(model_of[inst.gpu], inst.profile, inst.memory_mib)
            det[d] = det.get(d, 0) + 1
        lines.append(
            f"# {node}: slurmd -G should show "
            + ", ".join(f"{n} x {d}" for d, n in det.items())
            + "; slurm.conf declares "
            + ",".join(f"gpu:{t}:{n}" for t, n in node_gres(plan, node, arrs, types))
        )
    return "\n".join(lines) + "\n"


def apply_script(plan: Plan, node: str, plan_abs: str, mb: str, arrs: Sequence[Array], types: Mapping[str, str]) -> str:
    gres = ",".join(f"gpu:{t}:{n}" for t, n in node_gres(plan, node, arrs, types))
    p = shlex.quote(plan_abs)
    return f"""#!/usr/bin/env bash
# Configure node {node}'s MIG layout for plan {plan.name}, as root, before slurmd starts: Slurm
# expects MIG devices to exist already and never partitions GPUs itself
# (https://slurm.schedmd.com/gres.html, "MIG Management"). Idempotent: a second run changes nothing.
# Run it from slurmd's unit, e.g. a drop-in with ExecStartPre=$(realpath apply-{node}.sh), or by hand
# with slurmd stopped (or the node drained), then restart slurmd. The node then offers {gres}.
set -euo pipefail
{_command_line(mb)}
"${{MB[@]}}" apply {p} --node {shlex.quote(node)} --yes
"${{MB[@]}}" check {p} --node {shlex.quote(node)}
"""


def chunks(a: Array, max_array_size: int) -> list[tuple[int, int]]:
    """[(offset, tasks)] of an array cut so that no Slurm array index reaches `max_array_size`
    (Slurm's MaxArraySize: the largest index is one less; default 1001)."""
    n = len(a.tasks)
    return [(off, min(max_array_size, n - off)) for off in range(0, n, max_array_size)]


def task_time_s(plan: Plan, a: Array) -> float | None:
    """The longest a task of the array may take under the duration model's worst case: its runs
    start together and share the instance for their whole length (the slowest rate the sharing
    rule gives them), so a run takes duration / rate(all the task's runs); a run's `timeout` (plus
    the stop grace) caps that, and stands for a missing duration. None when a run has neither."""
    runs = {r.id: r for r in plan.runs}
    inst = {i.key: i for i in plan.instances}
    grace = float(plan.launch.stop_grace_s)
    worst = 0.0
    for t in a.tasks:
        demands = [runs[rid].demand() for rid in t.runs]
        share = rate(demands, float(inst[t.instance].compute or 1.0), plan.duration_model.interference)
        for d in demands:
            limit = runs[d.id].timeout_s
            took = d.duration_s / share if d.duration_s is not None else None
            if limit is not None:
                took = min(took, limit + grace) if took is not None else limit + grace
            if took is None:
                return None
            worst = max(worst, took)
    return worst


TIME_FACTOR = 1.25
TIME_MARGIN_S = 600.0
"""--time = the worst-case task time x 1.25 + 10 minutes (start-up, the plan read, the shim), in whole minutes."""


def slurm_time(seconds: float) -> str:
    """Slurm's D-HH:MM:SS, rounded up to the minute."""
    minutes = math.ceil(round(seconds * TIME_FACTOR + TIME_MARGIN_S) / 60)  # to the second first: the plan rounds compute shares
    d, rest = divmod(minutes, 24 * 60)
    return f"{d}-{rest // 60:02d}:{rest % 60:02d}:00"


def array_script(plan: Plan, a: Array, gres: str, offset: int, n: int, plan_abs: str, sd: str, sha256: str, mb: str, sbatch_args: Sequence[str]) -> str:
    """One editable batch script per job array (a part of an instance type's tasks)."""
    t = task_time_s(plan, a)
    q = shlex.quote
    lines = [
        "#!/usr/bin/env bash",
        f"# Sweep {plan.name}: tasks {offset}-{offset + n - 1} of {a.name} ({a.profile} on {a.model}), as Slurm array indices 0-{n - 1}.",
        "# Each task asks one GPU GRES of its type and runs `migbench exec` (its run, or the runs that share an",
        f"# instance in the plan, together); %{a.count} keeps at most the plan's count of the type running at once.",
        "# submit.sh submits it (options given to submit.sh or sbatch override these lines); edit freely.",
        f"#SBATCH --job-name={q(f'mb-{plan.name}-{a.name}')}",
        f"#SBATCH --array=0-{n - 1}%{a.count}",
        f"#SBATCH --gres=gpu:{gres}:1",
        f"#SBATCH --output={sbatch_path(sd, f'/slurm/{a.name}-%A_%a.out')}",
    ]
    if any(arg.startswith(("--time", "-t")) for arg in sbatch_args):
        lines.append("# --time: from --sbatch-arg")
    elif t is None:
        lines.append("# no --time: a run of this type has no `duration` or `timeout`, so the partition's default limit applies")
    else:
        lines.append(f"# --time: the longest task under the duration model's worst case ({t / 3600:.2f} h) x {TIME_FACTOR} + {TIME_MARGIN_S / 60:.0f} min")
        lines.append(f"#SBATCH --time={slurm_time(t)}")
    lines += [f"#SBATCH {sbatch_arg(arg)}" for arg in sbatch_args]
    lines += [
        _command_line(mb),
        f'exec "${{MB[@]}}" exec {q(plan_abs)} --array {a.name} --index-offset {offset} --sha256 {sha256} --state-dir {q(sd)}',
    ]
    return "\n".join(lines) + "\n"


def script_name(a: Array, part: int, parts: int) -> str:
    return f"arrays/{a.name}.sbatch" if parts == 1 else f"arrays/{a.name}.part{part + 1}.sbatch"


def submit_script(plan: Plan, arrs: Sequence[Array], types: Mapping[str, str], sd: str, sha256: str, max_array_size: int) -> str:
    total = sum(len(t.runs) for a in arrs for t in a.tasks)
    lines = [
        "#!/usr/bin/env bash",
        f"# Submit sweep {plan.name} to Slurm: {total} runs as {sum(len(a.tasks) for a in arrs)} tasks, one job array per",
        f"# script in arrays/ (one per MIG instance type, cut in parts of at most {max_array_size} tasks for MaxArraySize;",
        "# a type's parts run one after the other, --dependency=afterany, so its count of instances is never exceeded).",
        "# Extra sbatch options go after the script and override the scripts' #SBATCH lines:",
        "#   ./submit.sh --partition gpu --account myproj --time 1-0",
        "# Resumable: each submitted job is recorded in the state dir's slurm/jobs.tsv; when an sbatch fails, this stops and",
        "# says what went in, and running it again submits only what is missing (MIGBENCH_RESUBMIT=1 submits all again).",
        "# Then: migbench status PLAN, migbench logs RUN PLAN, migbench stop PLAN.",
        "set -uo pipefail",
        'HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)',
        f"STATE={shlex.quote(sd)}",
        f"SHA256={sha256}",
        f'JOBS="$STATE/{JOBS_FILE}"',
        'mkdir -p "$STATE/slurm" || exit 1',
        'if [ "${MIGBENCH_RESUBMIT:-0}" != 1 ] && [ -f "$JOBS" ] && head -n 1 "$JOBS" | grep -q "$SHA256"; then',
        '  echo "resuming: $(grep -vc \'^#\' "$JOBS") job(s) already submitted, listed in $JOBS"',
        "else",
        '  printf \'# plan\\t%s\\t%s\\n\' "$SHA256" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$JOBS" || exit 1',
        "fi",
        """job_of() { awk -F'\\t' -v s="$1" '!/^#/ && $6 == s {j = $2} END {print j}' "$JOBS"; }""",
        "submit() {  # SCRIPT ARRAY OFFSET TASKS GRES_TYPE AFTER_SCRIPT [sbatch options]",
        "  local script=$1 array=$2 offset=$3 n=$4 type=$5 after=$6 out dep=()",
        "  shift 6",
        '  if [ -n "$(job_of "$script")" ]; then echo "already submitted: $script (job $(job_of "$script"))"; return 0; fi',
        '  if [ -n "$after" ]; then dep=(--dependency="afterany:$(job_of "$after")"); fi',
        '  if ! out=$(sbatch --parsable "${dep[@]}" "$@" "$HERE/$script"); then',
        '    echo "submit.sh: sbatch $script failed (its error is above); submitted so far:" >&2',
        """    grep -v '^#' "$JOBS" | cut -f 2,6 >&2""",
        '    echo "fix the cause and run submit.sh again: it submits only what is missing" >&2',
        "    exit 1",
        "  fi",
        '  printf \'%s\\t%s\\t%s\\t%s\\t%s\\t%s\\n\' "$array" "${out%%;*}" "$n" "$type" "$offset" "$script" >> "$JOBS"',
        '  echo "submitted $script: job ${out%%;*}, $n task(s) on gpu:$type"',
        "}",
    ]
    for a in arrs:
        parts = chunks(a, max_array_size)
        for k, (off, n) in enumerate(parts):
            after = script_name(a, k - 1, len(parts)) if k else "''"
            lines.append(f'submit {script_name(a, k, len(parts))} {a.name} {off} {n} {shlex.quote(types[a.name])} {after} "$@"')
    return "\n".join(lines) + "\n"
