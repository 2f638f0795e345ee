"""The runs' rows in the launcher's memory and their way into `launch.db`.

Every part of the launcher changes runs through the `Journal`: it changes a row in `rows`, marks it
(`mark`), records an attempt's end (`end`) or a change of the launcher's own row (`update`); `flush`
writes all of that in one transaction per wake-up. When a write fails because the disk is full, the
changes stay here and the next flush retries them, and no run starts any more (`halt`); when
`launch.db` was deleted or damaged under the launcher, the journal re-creates it from memory
(`state_lost`).

## When the state cannot be written

A full disk stops new starts (with the reason) while running runs finish; their outcomes are kept
(the shim writes `exit.json` into space reserved before the start; the launcher keeps what sqlite
could not write in memory and retries). A state directory deleted or damaged under a running
launcher is noticed, said, and re-created from the launcher's memory; no new run starts. Both end
with exit code 1 and the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from migbench.launch.keeper import Keeper
from migbench.launch.store import AttemptEnd, RunRow, Store


class Journal:
    """`rows` (run id -> its row, as the launcher knows it) and what is not written yet. `restate`
    writes what a re-created database needs besides the runs (its meta and the launcher's row,
    given why the launch halted)."""

    def __init__(self, keeper: Keeper, say: Callable[[str], None], restate: Callable[[Store, str | None], None] | None = None):
        self.keeper = keeper
        self.say = say
        self.restate = restate
        self.rows: dict[str, RunRow] = {}
        self.dirty: set[str] = set()
        self.ended: list[AttemptEnd] = []
        self.launcher_updates: dict[str, Any] = {}
        self.halted: str | None = None  # why no run starts any more (full disk, lost state, unbound instances)

    @property
    def store(self) -> Store:
        assert self.keeper.store is not None
        return self.keeper.store

    def mark(self, run_id: str) -> None:
        """Run `run_id`'s row changed: the next flush writes it."""
        self.dirty.add(run_id)

    def end(self, row: RunRow, outcome: str, error: str | None) -> None:
        """Record how the row's current attempt ended (as the row now says)."""
        self.ended.append(AttemptEnd.of(row, outcome, error))
        self.dirty.add(row.id)

    def update(self, **fields: Any) -> None:
        """Change the launcher's own row at the next flush."""
        self.launcher_updates.update(fields)

    @property
    def pending(self) -> bool:
        return bool(self.dirty or self.ended or self.launcher_updates)

    def flush(self) -> None:
        if not self.pending:
            return
        rows = [self.rows[r] for r in sorted(self.dirty)]
        ended, updates = list(self.ended), dict(self.launcher_updates)

        def write(st: Store) -> None:
            st.save_runs(rows)
            for end in ended:
                st.end_attempt(end)
            if updates:
                st.set_launcher(**updates)

        trouble = self.keeper.write(write)
        if trouble is not None and trouble.full:
            self.halt(f"{trouble.message}: stopped starting runs (running runs finish; what could not be written is kept and retried)")
            return
        if trouble is not None:
            self.state_lost(trouble.message)
        self.dirty.clear()
        self.ended.clear()
        self.launcher_updates.clear()

    def halt(self, reason: str) -> None:
        """Start nothing more (running runs go on), say why once; the launch ends with exit code 1."""
        if self.halted is None:
            self.halted = reason
            self.say(reason)
            self.launcher_updates.update(stop_reason=reason)

    def state_lost(self, why: str) -> None:
        """The database was deleted or damaged under us: say so, start nothing more, and write the
        state again from memory, so `status` still shows it."""
        self.halt(f"{why}: starting no new runs; running runs finish")

        def fill(st: Store) -> None:
            if self.restate is not None:
                self.restate(st, self.halted)
            st.save_runs(self.rows.values())
            for row in self.rows.values():
                if row.attempt:
                    st.begin_attempt(row)
            for end in self.ended:
                st.end_attempt(end)

        problem = self.keeper.recreate(fill)
        if problem is None:
            self.say(f"re-created {self.keeper.db} from the launcher's memory")
        else:
            self.say(f"could not re-create the state ({problem}); each run's outcome stays in its exit.json")
