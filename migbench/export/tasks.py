"""The plan as work for a batch engine: arrays of tasks, one array per instance type.

An engine that schedules by resource type (Slurm GRES, Kubernetes extended resources) starts a task
on *any* free instance of the type, not on the one the plan chose; what the plan guarantees still
holds: the instance has the profile (memory, compute) the runs were sized for, and no more tasks of
a type run at once than the plan has instances of it.

A *task* is the runs that run together on one instance: each planned instance's queue (wave order)
is cut, in order, into groups whose runs fit alongside each other (the duration model's sharing
rule: memory sum and every run's `max_runs_per_instance`). Without sharing a task is one run. A
task's runs start together and the task ends when the last one does.

Tasks are ordered by when the plan starts their first run (wave, estimated start, instance order),
so an engine that starts array tasks in index order follows the plan's order. Everything here is a
function of the plan file alone: `export` and `exec` (on a compute node) derive the same arrays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from migbench.duration import Demand, Slot, fits_alongside
from migbench.errors import InputError
from migbench.plan import Plan, PlanInstance, PlanRun


@dataclass(frozen=True)
class Task:
    index: int
    runs: tuple[str, ...]  # run ids, in the plan's order
    instance: str  # the plan instance key the plan put them on (any of the type will do)
    node: str | None


@dataclass(frozen=True)
class Array:
    """All tasks of one instance type. `count` is how many instances of the type the plan has (the
    most tasks that may run at once); `per_node` splits it by node."""

    name: str
    model: str
    profile: str
    memory_mib: int
    count: int
    per_node: dict[str, int]
    tasks: tuple[Task, ...]

    @property
    def nodes(self) -> list[str]:
        return list(self.per_node)

    def task(self, index: int) -> Task:
        if not 0 <= index < len(self.tasks):
            last = f"0-{len(self.tasks) - 1}" if self.tasks else "none"
            raise InputError(
                f"index {index} maps to no run: array {self.name} has {len(self.tasks)} task(s) ({last})",
                hint="the index is the array task id the engine gives (SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX); was the plan changed after it was exported?",
            )
        return self.tasks[index]


def array_name(model: str, profile: str) -> str:
    """`a100-sxm4-80gb-1g-10gb`: a DNS-1123 label (lower case, digits, '-'), usable as a job name
    and a Kubernetes name."""
    return re.sub(r"[^a-z0-9]+", "-", f"{model}-{profile}".lower()).strip("-")


def colocated(inst: PlanInstance, runs: dict[str, PlanRun]) -> list[tuple[str, ...]]:
    """The instance's queue cut into groups that run together (see the module's docstring)."""
    slot = Slot(inst.key, int(inst.memory_mib), float(inst.compute or 1.0), inst.profile)
    groups: list[tuple[str, ...]] = []
    cur: list[Demand] = []
    for rid in inst.runs:
        d = runs[rid].demand()
        if cur and not fits_alongside(d, cur, slot):
            groups.append(tuple(j.id for j in cur))
            cur = []
        cur.append(d)
    if cur:
        groups.append(tuple(j.id for j in cur))
    return groups


def arrays(plan: Plan) -> list[Array]:
    """The plan's arrays, in the order their types first appear in the plan (deterministic)."""
    runs = {r.id: r for r in plan.runs}
    model_of = {g.gpu: g.model for g in plan.fleet}
    node_of = {g.gpu: g.node for g in plan.fleet}
    order = {i.key: n for n, i in enumerate(plan.instances)}
    by_type: dict[tuple[str, str], list[PlanInstance]] = {}
    for inst in plan.instances:
        by_type.setdefault((model_of[inst.gpu], inst.profile), []).append(inst)
    out = []
    for (model, profile), insts in by_type.items():
        pending = []
        for inst in insts:
            for pos, group in enumerate(colocated(inst, runs)):
                first = runs[group[0]]
                key = (first.wave or 0, first.est_start_s or 0.0, order[inst.key], pos)
                pending.append((key, group, inst))
        pending.sort(key=lambda p: p[0])
        per_node: dict[str, int] = {}
        for inst in insts:
            n = node_of[inst.gpu]
            if n is not None:
                per_node[n] = per_node.get(n, 0) + 1
        tasks = tuple(Task(k, group, inst.key, node_of[inst.gpu]) for k, (_, group, inst) in enumerate(pending))
        out.append(Array(array_name(model, profile), model, profile, max(i.memory_mib for i in insts), len(insts), per_node, tasks))
    names = [a.name for a in out]
    if len(set(names)) != len(names):  # two model keys that differ only in case or punctuation
        raise InputError(
            "two instance types of the plan get the same array name: " + ", ".join(sorted(names)), hint="rename one of the GPU models in the catalogue"
        )
    return out


def find_array(plan: Plan, name: str) -> Array:
    arrs = arrays(plan)
    for a in arrs:
        if a.name == name:
            return a
    raise InputError(f"the plan has no array {name!r}", hint="its arrays: " + (", ".join(a.name for a in arrs) or "none (no placed runs)"))


def node_devices(plan: Plan, node: str | None) -> list[PlanInstance]:
    """A node's MIG instances in GRES order: by type in the order the plan's arrays list them,
    then in plan order (GPU, start). A hand-written gres.conf (AutoDetect=off) that lists the
    node's MIG devices in this order makes GRES index k the k-th; `exec` reads an index so."""
    model_of = {g.gpu: g.model for g in plan.fleet}
    on = {g.gpu for g in plan.fleet if g.node == node}
    types: dict[tuple[str, str], list[PlanInstance]] = {}
    for i in plan.instances:
        types.setdefault((model_of[i.gpu], i.profile), [])
        if i.gpu in on:
            types[(model_of[i.gpu], i.profile)].append(i)
    return [i for insts in types.values() for i in insts]
