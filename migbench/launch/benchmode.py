"""The launcher as the host's bench (issue 21): admission by the living scheduler instead of fixed
queues, submissions adopted while it runs, and idle slices re-cut between starts.

`BenchAdmission` is the `Admission` of a bench plan (`launch.bench`): every submitted run waits
with no instance (its queue `ANYWHERE`) until a decision (`launch.living.decide`) starts it somewhere; the
rows of runs that started keep the instance they ran on. An OOM is retried with the memory it
needs, wherever the next decision finds (or cuts) room for it. Runs no longer submitted are
cancelled when they have not started.

`BenchDriver` is the bench's part of the launcher, made by the supervisor for a bench plan (and only
then: this module loads the planner): it takes the submissions in the inbox (`adopt`), asks the
living scheduler at each decision and makes the re-cuts it returns before any start (`recut`:
apply's reconcile on those GPUs only, its checkpoint and rollback; a busy instance is never
destroyed), and keeps the layouts over time in the launch state (`layouts` in the meta table, a
JSON list of `[t, gpu, "profile@start + ..."]`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from migbench.apply import apply_plan
from migbench.apply.recovery import ApplyInterrupted
from migbench.backend.select import live_models, open_backend, read_host_if_available
from migbench.catalog.model import GpuModel
from migbench.errors import MigbenchError, os_reason
from migbench.fsutil import NO_SPACE, write_json_atomic
from migbench.launch.admission import Admission
from migbench.launch.bench import REFUSED, inbox_problem, mark_adopted, merge, read_submission, submissions
from migbench.launch.keeper import Trouble
from migbench.launch.living import Live, Pending, decide, layouts_of, recut_plan
from migbench.launch.options import crash_point
from migbench.launch.procs import read_json
from migbench.launch.store import ACTIVE_STATES, ANYWHERE, Queue, RunRow, Store, instance_ref
from migbench.plan import Plan
from migbench.planner import FleetGpu, FleetSpec, build_fleet
from migbench.planner.grow import instances_on
from migbench.planner.recut import Decision, Recut, RecutSettings
from migbench.types import Layout

CANCELLED = "cancelled: no longer in its sweep"


def fleet_of(plan: Plan) -> list[FleetGpu]:
    """The plan's GPUs, by their index in the plan, with their models (the host's live profile
    tables where NVML has them)."""
    fleet = build_fleet([FleetSpec(g.model, 1, g.driver, g.node) for g in plan.fleet], live=live_models())
    return [replace(fg, index=pg.gpu) for pg, fg in zip(plan.fleet, fleet)]


def models_of(plan: Plan) -> dict[int, GpuModel]:
    return {g.index: g.model for g in fleet_of(plan)}


def settings_of(plan: Plan) -> RecutSettings:
    return RecutSettings(compute_basis=plan.duration_model.compute_basis, interference=plan.duration_model.interference)


WITHDRAWN_NAME = "withdrawn.json"  # in the bench's state directory: `BenchAdmission.load_withdrawn`


def _ids(doc: object) -> set[str]:
    return {x for x in doc if isinstance(x, str)} if isinstance(doc, list) else set()


class BenchAdmission(Admission):
    """The bench's admission (see the module's notes)."""

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.models: dict[int, GpuModel] = {}
        self.settings = RecutSettings()
        self.plan: Plan | None = None
        self.withdrawn: set[str] | None = None  # runs no longer in their sweep, left to end (`bench.merge`)
        self.withdrawn_file: Path | None = None  # their second record, beside launch.db (`BenchDriver`)

    def load_withdrawn(self) -> set[str]:
        """The runs no longer in their sweep that the bench plan keeps until they end: launch.db's
        meta `withdrawn` and its second record `withdrawn.json` together (a launch.db lost and
        rebuilt from the run directories has no meta: the run must still never start again), each a
        JSON list; what is not in that form is taken as none."""
        if self.withdrawn is None:
            try:
                doc = json.loads(self.journal.store.meta("withdrawn") or "[]")
            except ValueError:
                doc = []
            self.withdrawn = _ids(doc)
            if self.withdrawn_file is not None:
                self.withdrawn |= _ids((read_json(self.withdrawn_file) or {}).get("withdrawn"))
        return self.withdrawn

    def admit(self, plan: Plan, now: float) -> list[RunRow]:
        """Bring the rows to the bench plan: a new run waits (arrived `now`), a stored one keeps its
        state, a waiting run the plan no longer has (or keeps only until it ends) is cancelled."""
        withdrawn = self.load_withdrawn()
        self.plan_runs = {r.id: r for r in plan.runs}
        self.inst = {i.key: i for i in plan.instances}
        self.default_retries = plan.launch.retries
        self.models = self.models or models_of(plan)
        self.settings = settings_of(plan)
        self.plan = plan
        self.touched = None
        rows = self.journal.rows
        changed: list[RunRow] = []
        for n, r in enumerate(plan.runs):
            row = rows.get(r.id)
            if row is None:
                row = RunRow(id=r.id, ord=n, grp=r.group, state="queued", queue=ANYWHERE, memory_mib=r.memory_mib, need_mib=r.memory_mib, queued_at=now)
            else:
                row.ord, row.grp = n, r.group
                if row.state == "queued":
                    row.queue, row.need_mib, row.memory_mib = ANYWHERE, max(row.need_mib, r.memory_mib), r.memory_mib
                elif row.state == "abandoned":
                    row.state, row.last_error, row.queue = "queued", None, ANYWHERE
            rows[r.id] = row
            changed.append(row)
        for rid, row in rows.items():
            if (rid not in self.plan_runs or rid in withdrawn) and row.state in ("queued", "interrupted"):
                row.state, row.last_error = "abandoned", CANCELLED
                changed.append(row)
        return changed

    def in_plan(self, row: RunRow) -> bool:
        return row.id in self.plan_runs and row.id not in self.load_withdrawn()

    def queued(self) -> list[RunRow]:
        return [r for r in self.journal.rows.values() if r.state == "queued" and self.in_plan(r)]

    def decide(self, now: float, running: Iterable[tuple[str, str]], held: Iterable[str] = ()) -> Decision:
        """The living scheduler's decision now (`launch.living.decide`), given the running runs
        (run id, instance) and the instances other launches hold."""
        self.touched = []
        rows = self.journal.rows
        live = []
        for rid, key in running:
            row, pr = rows[rid], self.plan_runs.get(rid)
            if pr is not None and key in self.inst:
                live.append(Live(key, replace(pr.demand(), memory_mib=row.need_mib), (row.start_at or now) - self.t0))
        pending = []
        for row in sorted(self.queued(), key=lambda r: r.ord):
            pr = self.plan_runs[row.id]
            if row.not_before is None or row.not_before <= now:
                pending.append(Pending(replace(pr.demand(), memory_mib=row.need_mib), max(0.0, (row.queued_at or now) - self.t0)))
        assert self.plan is not None, "admit the bench plan first"
        return decide(now - self.t0, self.plan, self.models, live, pending, self.settings, held)

    def placed(self, rid: str, key: str) -> None:
        """A decision starts `rid` on `key`: its row names the instance."""
        row = self.journal.rows[rid]
        row.home = row.queue = instance_ref(key)
        self.journal.mark(rid)

    def escalate(self, row: RunRow, need_mib: int, failed_on: str, running: Iterable[tuple[str, str]]) -> Queue | None:
        """After an OOM: anywhere with the memory it needs (a decision cuts it) when some profile
        of a GPU of the bench holds it, else None."""
        biggest = max((p.memory_mib or 0 for m in self.models.values() for p in m.profiles), default=0)
        return ANYWHERE if need_mib <= biggest else None

    def move(self, row: RunRow, target: Queue, need_mib: int) -> None:
        row.state, row.queue, row.need_mib, row.not_before = "queued", ANYWHERE, need_mib, None
        self.touched = None

    def where(self, target: Queue) -> str:
        return "an instance the bench finds or cuts for it" if target is ANYWHERE else super().where(target)

    def booked(self, rows: Iterable[RunRow]) -> list[RunRow]:
        """The rows whose instances the launch register books: only running ones (a waiting run has none)."""
        return [r for r in rows if r.state in ACTIVE_STATES]

    def use(self, plan: Plan) -> None:
        """The bench plan after a re-cut: its instances (the runs are the same)."""
        self.plan = plan
        self.inst = {i.key: i for i in plan.instances}


def layouts_doc(history: list[list], now: float, layouts: Mapping[int, Layout]) -> str:
    """The layouts over time with the GPUs of `layouts` as they are at `now` appended (a JSON list
    of `[t, gpu, "profile@start + ..."]`, one entry per change)."""
    last: dict[int, str] = {}
    for _, gpu, text in history:
        last[int(gpu)] = text
    out = list(history)
    for gpu, lay in sorted(layouts.items()):
        text = " + ".join(str(p) for p in lay)
        if last.get(gpu) != text:
            out.append([round(now, 3), gpu, text])
    return json.dumps(out)


def read_layouts(doc: str | None) -> list[list]:
    """The `layouts` meta entry's changes, each `[t, gpu, text]`; what is not in that form is left out
    (a damaged entry: the bench launcher died on it with a traceback at its start)."""
    try:
        out = json.loads(doc or "[]")
    except ValueError:
        return []
    return [x for x in out if _layout_change(x)] if isinstance(out, list) else []


def _layout_change(x: Any) -> bool:
    return isinstance(x, list) and len(x) == 3 and isinstance(x[0], (int, float)) and isinstance(x[1], int) and isinstance(x[2], str)


class BenchDriver:
    """The bench's part of one launcher (see the module's notes). It works on the supervisor's parts
    (its journal, devices, children, keeper, stops) and keeps the supervisor's plan the bench plan."""

    def __init__(self, sup: Any):
        self.sup = sup
        self.admission = BenchAdmission(sup.journal, lend=sup.opts.lend, unbound=sup.devices.unbound)
        self.admission.withdrawn_file = Path(sup.sd) / WITHDRAWN_NAME
        self._inbox_refused: str | None = None  # why the inbox is not read (said once)
        self._others: set[str] = set()  # the instances other launches held at the last decision
        self._failures = 0  # re-cuts not made in a row
        self._retry_at: float | None = None  # when to decide again after a re-cut was not made

    @property
    def dir(self) -> Path:
        """The bench's directory (its plan's): its inbox is there."""
        return Path(self.sup.plan.path or ".").resolve().parent

    def say(self, text: str) -> None:
        self.sup.say(text)

    def tick(self, others_changed: bool) -> None:
        """Between its own events: when runs wait and the instances other launches hold have changed
        (one let an instance go; `others_changed`: the register may say so), decide again; and
        after a backoff, try a re-cut that failed again."""
        if not self.admission.queued():
            return
        if self._retry_at is not None and time.time() >= self._retry_at:
            self._retry_at = None  # a re-cut failed: try again
            self.admission.reconsider_all()
        if not others_changed:
            return
        others = self.sup.devices.held_by_others()
        if others != self._others:
            self._others = others
            self.admission.reconsider_all()

    def submitted(self) -> bool:
        return bool(submissions(self.dir))

    def waiting(self) -> bool:
        """Whether the bench must not end yet though nothing runs: a sweep was submitted since the
        last pass, or a re-cut that failed is to be tried again."""
        return self.submitted() or (self._retry_at is not None and bool(self.admission.queued()))

    def _failed(self) -> None:
        """A re-cut was not made: the next decision comes after a backoff (2, 4, ... 60 s)."""
        self._failures += 1
        self._retry_at = time.time() + min(60.0, 2.0**self._failures)

    def record_layouts(self, st: Store, now: float) -> None:
        """The layouts as the bench starts (into `st`'s meta)."""
        st.set_meta("layouts", layouts_doc(read_layouts(st.meta("layouts")), now - self.admission.t0, layouts_of(self.sup.plan)))

    def adopt(self) -> None:
        """Sweeps submitted since the last pass join the bench (`bench.merge`): the bench plan is
        rewritten, new runs wait, runs no longer submitted are cancelled when not started."""
        waiting = submissions(self.dir)
        if not waiting:
            return
        why = inbox_problem(self.dir)
        if why is not None:
            if why != self._inbox_refused:
                self.say(f"{why}: no submission is taken (`chmod go-w` it, or give the bench a directory of your own)")
                self._inbox_refused = why
            return
        self._inbox_refused = None
        sup = self.sup
        for path in waiting:
            try:
                sub = read_submission(path)
            except MigbenchError as exc:
                why = "; ".join([exc.message, *map(str, exc.problems)])
                mark_adopted(path, f"{REFUSED}{why}")
                self.say(f"submission {path.name} refused: {why}")
                continue
            plan, merged = merge(sup.plan, sub, {rid: r.state for rid, r in sup.rows.items()}, {rid for rid, r in sup.rows.items() if r.attempt})
            before = self.admission.load_withdrawn()
            withdrawn = (before - {r.id for r in sub.runs} | set(merged.withdrawn)) & {r.id for r in plan.runs}
            if withdrawn != before:  # recorded first: a run the plan keeps only until it ends is never started again
                trouble = self._record_withdrawn(withdrawn)
                if trouble is not None:
                    self.say(f"cannot take submission {path.name} now: {trouble.message}; it stays in the inbox")
                    return
            try:
                plan.save(sup.plan_file)
            except (MigbenchError, OSError) as exc:
                if withdrawn != before:
                    self._record_withdrawn(before)
                self.say(f"cannot take submission {path.name} now: {getattr(exc, 'message', exc)}; it stays in the inbox")
                return
            sup.plan = plan
            self.admission.withdrawn = withdrawn
            for row in self.admission.admit(plan, time.time()):
                sup.journal.mark(row.id)
            sup.journal.flush()
            mark_adopted(path, merged.summary())
            self.say(merged.summary())

    def _record_withdrawn(self, ids: set[str]) -> Trouble | None:
        """Write the runs the bench plan keeps only until they end (`BenchAdmission.load_withdrawn`);
        the keeper's trouble, or None."""
        doc = json.dumps(sorted(ids))
        trouble = self.sup.keeper.write(lambda st: st.set_meta("withdrawn", doc))
        if trouble is not None:
            return trouble
        second = self.admission.withdrawn_file
        try:  # the second record: a launch.db lost later must not make a withdrawn run start again
            if second is not None:
                write_json_atomic(second, {"withdrawn": sorted(ids)})
        except OSError as exc:
            return Trouble(exc.errno in NO_SPACE, f"cannot write {second}: {os_reason(exc)}")
        return None

    def decision(self, now: float) -> list[tuple[str, str]]:
        """The living scheduler's starts now, after the re-cuts it decided are made (runs whose GPU
        could not be re-cut wait for the next decision)."""
        sup = self.sup
        if set(self.admission.inst) & sup.devices.unbound:
            self.resync()  # something else re-cut the host under the bench (an apply, a `run` beside it)
        self._others = sup.devices.held_by_others()
        dec = self.admission.decide(now, sup.children.placed(), self._others)
        failed = self.recut(dec.recuts) if dec.recuts else set()
        starts = []
        for st in dec.starts:
            key = f"{st.gpu}:{st.placement}"
            if st.gpu not in failed and key in self.admission.inst:
                self.admission.placed(st.run, key)
                starts.append((st.run, key))
        return starts

    def resync(self) -> None:
        """The bench plan's instances brought to the host's layout as it is (bound by an apply that
        changes nothing): instances another apply destroyed are forgotten, those it made are taken
        in. An instance with a live run of the bench is never in question (the host has it)."""
        sup, adm = self.sup, self.admission
        host = read_host_if_available()
        if host is None:
            return
        instances = instances_on(adm.models, host.layouts(), adm.settings.compute_basis, keep=sup.plan.instances)
        plan = replace(sup.plan, instances=instances)
        before, after = {i.ref for i in sup.plan.instances}, {i.ref for i in instances}
        changed = sorted({ref.gpu for ref in before ^ after})
        if not changed:
            return
        try:
            apply_plan(plan, open_backend(), gpus=changed, confirm=None, state_dir=sup.sd)
        except MigbenchError as exc:
            self.say(f"cannot take the host's layout of GPU(s) {changed} into the bench: {exc.message}")
            return
        self._took(plan)
        self.say(f"GPU(s) {', '.join(map(str, changed))} were re-cut outside the bench: it takes them as they are now")

    def _took(self, plan: Plan) -> list[str]:
        """The host has `plan`'s instances now (this bench re-cut it, or took it as it found it):
        the launcher works from it, binds its instances (returns those left unbound), records the
        layouts and rewrites the bench plan. A bench plan that cannot be written (a full disk) is
        said: the host has the layout, and the next bench takes it from the host."""
        sup = self.sup
        sup.plan = plan
        self.admission.use(plan)
        left = sup.devices.rebind(i.key for i in plan.instances)
        self._record(plan)
        try:
            plan.save(sup.plan_file)
        except (MigbenchError, OSError) as exc:
            self.say(f"cannot rewrite the bench plan {sup.plan_file}: {getattr(exc, 'message', exc)}; the bench goes on from the host's layout")
        return left

    def _record(self, plan: Plan) -> None:
        t = time.time() - self.admission.t0
        trouble = self.sup.keeper.write(lambda st: st.set_meta("layouts", layouts_doc(read_layouts(st.meta("layouts")), t, layouts_of(plan))))
        if trouble is not None:
            self.say(f"cannot record the layouts: {trouble.message}")

    def recut(self, recuts: Sequence[Recut]) -> set[int]:
        """Make the re-cuts (apply's reconcile of those GPUs, with its checkpoint and rollback;
        never an instance with a live run): the bench plan, the bindings and the layouts' history
        follow. Returns the GPUs that could not be re-cut."""
        sup, adm = self.sup, self.admission
        gpus = sorted({rc.gpu for rc in recuts})
        busy = {a.instance for a in sup.active.values()}
        try:
            plan = recut_plan(sup.plan, recuts, adm.models, busy, adm.settings)
        except ValueError as exc:
            self.say(f"re-cut of GPU(s) {gpus} not made: {exc}")
            self._failed()
            return set(gpus)
        plan.path = sup.plan.path
        sup.devices.sync(adm.booked(sup.rows.values()))  # the instances to destroy are idle: not booked
        crash_point("before-recut")
        try:
            apply_plan(plan, open_backend(), gpus=gpus, confirm=None, state_dir=sup.sd.named())  # the launcher's own: hints name it
        except ApplyInterrupted as exc:
            sup.stops.signals.append(exc.signum)  # rolled back; the stop it asked for follows
            self.say(f"re-cut of GPU(s) {gpus} interrupted by a signal and rolled back")
            self._failed()
            return set(gpus)
        except MigbenchError as exc:
            self.say(f"re-cut of GPU(s) {gpus} not made: {exc.message}")
            self.resync()  # the host may not be what the bench thinks (instances made beside it)
            self._failed()
            return set(gpus)
        self._failures = 0
        crash_point("after-recut")
        left = self._took(plan)
        for rc in recuts:
            lay = " + ".join(str(p) for p in layouts_of(plan)[rc.gpu]) or "no instance"
            self.say(f"re-cut GPU {rc.gpu} to {lay} (destroyed {', '.join(map(str, rc.destroy)) or 'none'}; no run was on them)")
        if left:
            self.say(f"instances {', '.join(left)} are not bound after the re-cut: no run starts there")
        return set()
