"""The host's register of live launches: which launcher runs which plan, from which state directory,
bound to which MIG instances.

- One launch per plan per host, whatever its state directory: a plan is the same when its file (the
  resolved path) or its content (sha256) is.
- An instance bound to a live launch (a run of it runs there or is queued there) is handed to no other
  launch, and `apply` of any plan refuses to destroy or re-cut it. Another launch whose runs are
  queued there too is booked without it: its runs there wait until the holder lets it go (its last
  run there ended and nothing of it is queued there), and then it binds it (`update`).

One file per live launcher in `launches_dir()` (`<id>.json`, written atomically, mode 0644 so the
launches of every user are seen): the plan's file, name and sha256, the state directory, the
launcher's PID and process start time, and the MIG uuids (with their plan instance keys) it is bound
to. An entry whose process is gone, or whose PID now names another process (PID reuse), is stale:
ignored, and removed by the next launcher that books. Booking (read, check, write) is done under the
register's lock (`.lock`, exclusive); readers (`apply`) read the entries without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import psutil

from migbench.errors import MigbenchError, os_reason
from migbench.fsutil import read_regular, write_json_atomic
from migbench.pidlock import PidLock
from migbench.plancheck import MAX_PLAN_BYTES

ENTRY_MODE = 0o644
DIR_MODE = 0o755


class LaunchConflict(MigbenchError):
    """The plan already runs on this host, or an instance it needs is bound to another live launch."""


class BookingDoc(TypedDict):
    """A register entry's file (`Booking.doc`; `Booking.of` reads one back, checking each field).
    `instances`: MIG uuid -> plan instance key; `processes`: [PID, start time] pairs."""

    version: int
    id: str
    pid: int
    create_time: float | None
    plan_file: str
    plan_name: str
    plan_sha256: str
    state_dir: str
    instances: dict[str, str]
    started_at: float
    processes: list[list[float | None]]


@dataclass
class Booking:
    """One live launcher's entry."""

    id: str
    pid: int
    create_time: float | None
    plan_file: str
    plan_name: str
    plan_sha256: str
    state_dir: str
    instances: dict[str, str] = field(default_factory=dict)  # MIG uuid -> plan instance key
    started_at: float = 0.0
    processes: list[tuple[int, float | None]] = field(default_factory=list)  # (PID, start time) of its runs' shims and runs

    def doc(self) -> BookingDoc:
        return {
            "version": 1,
            "id": self.id,
            "pid": self.pid,
            "create_time": self.create_time,
            "plan_file": self.plan_file,
            "plan_name": self.plan_name,
            "plan_sha256": self.plan_sha256,
            "state_dir": self.state_dir,
            "instances": dict(sorted(self.instances.items())),
            "started_at": self.started_at,
            "processes": [list(p) for p in self.processes],
        }

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> Booking | None:
        try:
            inst = doc.get("instances") or {}
            return cls(
                id=str(doc["id"]),
                pid=int(doc["pid"]),
                create_time=None if doc.get("create_time") is None else float(doc["create_time"]),
                plan_file=str(doc["plan_file"]),
                plan_name=str(doc.get("plan_name") or ""),
                plan_sha256=str(doc.get("plan_sha256") or ""),
                state_dir=str(doc["state_dir"]),
                instances={str(k): str(v) for k, v in inst.items()},
                started_at=float(doc.get("started_at") or 0.0),
                processes=[(int(p[0]), None if p[1] is None else float(p[1])) for p in doc.get("processes") or []],
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None

    def launcher_alive(self) -> bool:
        """Its launcher still runs (same PID, same process start time)."""
        return _alive(self.pid, self.create_time)

    def alive(self) -> bool:
        """Its launcher runs, or (a launcher killed with kill -9) one of its runs still does."""
        return self.launcher_alive() or any(_alive(pid, ct) for pid, ct in self.processes)

    def same_plan(self, plan_file: str, sha256: str) -> bool:
        return self.plan_file == plan_file or (bool(sha256) and self.plan_sha256 == sha256)

    def who(self) -> str:
        """`the launch of PLAN (launcher PID n, state dir S)`."""
        dead = "" if self.launcher_alive() else " (gone; its runs still run)"
        return f"the launch of {self.plan_file} (launcher PID {self.pid}{dead}, state dir {self.state_dir})"


class RegisterLock(PidLock):
    error_type = MigbenchError
    dir_mode = DIR_MODE

    def busy_error(self) -> MigbenchError:  # pragma: no cover - taken blocking
        return MigbenchError(f"the launch register's lock {self.path} is busy (PID {self.holder()})")


class Register:
    """The register in `directory` (`backend.select.launches_dir()`)."""

    def __init__(self, directory: str | os.PathLike[str]):
        self.dir = Path(directory)

    # -- reading -----------------------------------------------------------------------------------
    def _check_dir(self) -> bool:
        """False when there is no register yet; raises when the directory is not one to trust."""
        try:
            st = os.lstat(self.dir)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise self._problem(os_reason(exc)) from None
        if not stat.S_ISDIR(st.st_mode):
            raise self._problem("it is not a directory (a symbolic link?)")
        if st.st_uid not in (0, os.geteuid()):
            raise self._problem(f"it is owned by uid {st.st_uid}, neither root nor this user")
        if stat.S_IMODE(st.st_mode) & 0o022:
            raise self._problem("other users may write into it")
        return True

    def _problem(self, why: str) -> MigbenchError:
        return MigbenchError(
            f"cannot use the host's launch register {self.dir}: {why}",
            hint=f"remove it (`sudo rm -r {self.dir}`) if no migbench launcher runs; migbench re-creates it",
        )

    def entries(self, *, stale: list[Path] | None = None) -> list[Booking]:
        """The live launches (stale entries are skipped, and listed in `stale` when given)."""
        if not self._check_dir():
            return []
        out = []
        for p in sorted(self.dir.glob("*.json")):
            doc = _read_entry(p)
            b = Booking.of(doc) if doc is not None else None
            if b is None or not b.alive():
                if stale is not None and b is not None:
                    stale.append(p)
                continue
            out.append(b)
        return out

    # -- booking -----------------------------------------------------------------------------------
    def book(self, plan_file: str, plan_name: str, sha256: str, state_dir: str, instances: Mapping[str, str]) -> tuple[Booking, dict[str, Booking]]:
        """Enter this process's launch, bound to `instances` (MIG uuid -> key) but those another live
        launch is bound to; returns the entry and those left out (key -> the other launch). Raises
        when the plan is already launched on this host."""
        me = Booking(
            id=f"{os.getpid()}-{secrets.token_hex(4)}",
            pid=os.getpid(),
            create_time=_create_time(os.getpid()),
            plan_file=plan_file,
            plan_name=plan_name,
            plan_sha256=sha256,
            state_dir=state_dir,
            instances=dict(instances),
            started_at=time.time(),
        )
        with self._locked():
            stale: list[Path] = []
            others = []
            for b in self.entries(stale=stale):
                if b.state_dir == state_dir and not b.launcher_alive():
                    stale.append(self.dir / f"{b.id}.json")  # its launcher died: this launch takes its runs over
                else:
                    others.append(b)
            refuse_same_plan(others, plan_file, sha256)
            held = {u: b for b in others for u in b.instances}
            refused = {key: held[u] for u, key in instances.items() if u in held}
            me.instances = {u: key for u, key in instances.items() if u not in held}
            for p in stale:
                _unlink(p)
            self._write(me)
        return me, refused

    def update(self, me: Booking, instances: Mapping[str, str], processes: list[tuple[int, float | None]] | None = None) -> dict[str, Booking]:
        """Bind `me` to `instances` now (and record its runs' `processes`). An instance newly wanted
        that another live launch is bound to is left out; returns those (key -> the other launch)."""
        refused: dict[str, Booking] = {}
        with self._locked():
            held = {u: b for b in self.entries() if b.id != me.id for u in b.instances}
            new = {}
            for u, key in instances.items():
                if u not in me.instances and u in held:
                    refused[key] = held[u]
                else:
                    new[u] = key
            procs = me.processes if processes is None else sorted(processes)
            if new != me.instances or procs != me.processes:
                me.instances, me.processes = new, procs
                self._write(me)
        return refused

    def release(self, me: Booking) -> None:
        _unlink(self.dir / f"{me.id}.json")

    def _write(self, b: Booking) -> None:
        try:
            write_json_atomic(self.dir / f"{b.id}.json", b.doc(), mode=ENTRY_MODE)
        except OSError as exc:
            raise MigbenchError(
                f"cannot write the host's launch register {self.dir}: {os_reason(exc)}",
                hint="free space on that file system (or check its permissions), then launch again; nothing was started",
            ) from None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        if not self.dir.exists():
            try:
                os.makedirs(self.dir, DIR_MODE, exist_ok=True)
                os.chmod(self.dir, DIR_MODE)
            except OSError as exc:
                raise self._problem(os_reason(exc)) from None
        self._check_dir()
        lock = RegisterLock(self.dir / ".lock")
        lock.acquire(blocking=True)
        try:
            yield
        finally:
            lock.release()


def refuse_same_plan(others: Iterable[Booking], plan_file: str, sha256: str) -> None:
    """Raise when one of the live launches `others` runs this plan (its file or its content)."""
    for b in others:
        if b.same_plan(plan_file, sha256):
            how = "" if b.plan_file == plan_file else f" (the same plan, as {b.plan_file})"
            if not b.launcher_alive():
                raise LaunchConflict(
                    f"plan {plan_file} is already running on this host{how}: its launcher (PID {b.pid}) is gone but its runs "
                    f"still run, from state dir {b.state_dir}",
                    hint=f"launch it again from that state directory to adopt them: `migbench launch {b.plan_file} --state-dir "
                    f"{b.state_dir}`; one launch per plan per host",
                )
            raise LaunchConflict(
                f"plan {plan_file} is already running on this host{how}: launcher PID {b.pid}, state dir {b.state_dir}",
                hint=f"one launch per plan per host, whatever its state directory: watch it with `migbench status {b.plan_file} "
                f"--state-dir {b.state_dir}`, stop it with `migbench stop {b.plan_file} --state-dir {b.state_dir}`",
            )


def held_by_others(others: Iterable[Booking], instances: Mapping[str, str]) -> dict[str, Booking]:
    """The instances of `instances` (MIG uuid -> key) another live launch is bound to (key -> it)."""
    held = {u: b for b in others for u in b.instances}
    return {key: held[u] for u, key in sorted(instances.items(), key=lambda kv: kv[1]) if u in held}


def refuse_running(register: Register, plan_file: str | os.PathLike[str]) -> None:
    """Raise `LaunchConflict` when a live launch on this host runs the plan file `plan_file` (or one
    with the same content). A register that cannot be read refuses nothing."""
    p = Path(plan_file).resolve()
    try:
        sha = hashlib.sha256(read_regular(p, most=MAX_PLAN_BYTES)).hexdigest()
    except OSError:
        sha = ""
    try:
        others = register.entries()
    except MigbenchError:
        return
    refuse_same_plan(others, str(p), sha)


def booked_problems(register: Register, wanted: Mapping[str, str]) -> list[str]:
    """For `apply`: one line per instance of `wanted` (MIG uuid -> what apply would do to it) that a
    live launch is bound to."""
    out = []
    for b in register.entries():
        for u, what in sorted(wanted.items(), key=lambda kv: kv[1]):
            if u in b.instances:
                out.append(f"{what}: bound to {b.who()} (its instance {b.instances[u]}, {u})")
    return out


def _read_entry(p: Path) -> dict[str, Any] | None:
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # the directory is writable by its owner (root or us) only
            return None
        doc = json.loads(os.read(fd, 1 << 20) or b"null")
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    return doc if isinstance(doc, dict) else None


def _unlink(p: Path) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def _alive(pid: int, create_time: float | None) -> bool:
    """`pid` runs (not a zombie) and started at `create_time` (a reused PID is another process)."""
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(p.create_time() - create_time) < 0.05
    except (psutil.Error, ProcessLookupError):
        return False


def _create_time(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None
