"""File-system helpers: reading the files a user names (one place for every way that fails),
private state files, atomic writes, and PID locks that cannot be turned against their owner.

## Modes

State files (bindings, checkpoint, launch.db, run directories, their JSON and logs) hold the
sweep's `env:` values, which may be tokens: they are created 0600 and their directories 0700. A
team sharing a state directory sets another mode, by the sweep's `launch.state_mode` (carried by
the plan) or the `MIGBENCH_STATE_MODE` environment variable (which wins), e.g. `0640`: directories
get the matching execute bits (0750). World-writable modes are refused.

## Writes

`write_json_atomic` writes through a temp file made by `mkstemp` (O_EXCL, an unpredictable name,
never a symlink's target), fsyncs it and renames it over the destination: readers never see half
a file, and a crash leaves the old file or the new one. `reserve_file` sets aside space for a
record that must be written even when the disk fills (the shim's `exit.json`).

## Locks

`PidLock` is a non-blocking flock (exclusive, or shared with `shared=True`) on a file opened with
O_NOFOLLOW: a symlink, a directory, a FIFO, a file with other hard links, or (for an exclusive
lock, which writes the owner's PID into it) a file owned by another user is refused, never
truncated. A shared lock only reads, so a root-owned lock file is accepted too.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from migbench.errors import InputError, MigbenchError, Problem, from_os_error

MAX_INPUT_BYTES = 16 * 2**20
"""The default size limit of a file the user names (a sweep, catalogue text): refused before parsing."""


NAMED_FOREIGN_HINT = (
    "migbench runs only commands no other user could have written: read the file, copy it to a file of your own "
    "(`cp FILE mine.yaml`) and give that, or have its owner run it"
)
"""The hint for a file the user named whose commands migbench would run (`read_input(..., named=True)`)."""


def read_input(
    path: str | os.PathLike[str],
    what: str,
    *,
    limit: int = MAX_INPUT_BYTES,
    hint: str | None = None,
    regular: bool = False,
    owned: bool = False,
    named: bool = False,
) -> bytes:
    """The bytes of a file the user named as `what` ("sweep file", "plan file"...), or an `InputError`
    that says which of the usual things is wrong: missing, a directory, unreadable, a special file,
    larger than `limit` (checked before reading; a pipe is read up to the limit). `hint` says how to
    get a good one. `regular`: a file migbench finds by its name (a bench plan, a plan beside its
    sweep, a state file), which must be a regular file: a named pipe planted there is refused
    without waiting for a writer (`open_regular`), not read. `owned` (implies `regular`): a file
    whose content migbench acts on (the plan beside a sweep, whose commands `run` launches) must
    also be one no other user could have written (`foreign_reason`, on the descriptor read):
    else `ForeignFile`. `named`: with `owned`, a file the user named whose commands migbench runs
    (`run`'s and `submit`'s sweep, `launch`'s plan): the hint says how to run it anyway."""
    p = Path(path)
    try:
        with os.fdopen(open_regular(p), "rb") if regular or owned else open(p, "rb") as f:
            st = os.fstat(f.fileno())
            why = foreign_reason(st) if owned else None
            if why is not None:
                raise ForeignFile(
                    f"refusing the {what} {p}: it is {why}, so another user could have written what migbench would act on",
                    hint=NAMED_FOREIGN_HINT
                    if named
                    else "remove it if you did not make it (or keep your files in a directory only you can write), then run the command again",
                )
            if stat.S_ISDIR(st.st_mode):  # pragma: no cover - open() refuses directories on Linux
                raise IsADirectoryError(21, "Is a directory", str(p))
            if stat.S_ISREG(st.st_mode) and st.st_size > limit:
                raise _too_big(p, what, st.st_size, limit)
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise InputError(f"{what} {p} does not exist", hint=hint or "check the path") from None
    except IsADirectoryError:
        raise InputError(f"{p} is a directory, not a {what}", hint=hint or "give the file's path") from None
    except OSError as exc:
        err = from_os_error(exc, f"read the {what}")
        raise InputError(err.message, hint=NOT_REGULAR_HINT if isinstance(exc, NotRegularFile) else err.hint) from None
    if len(data) > limit:
        raise _too_big(p, what, None, limit)
    return data


def read_input_text(
    path: str | os.PathLike[str],
    what: str,
    *,
    limit: int = MAX_INPUT_BYTES,
    hint: str | None = None,
    regular: bool = False,
    owned: bool = False,
    named: bool = False,
) -> str:
    """`read_input` decoded as UTF-8 text; a file that is not text (invalid UTF-8, a NUL byte) is an
    `InputError` naming the line."""
    data = read_input(path, what, limit=limit, hint=hint, regular=regular, owned=owned, named=named)
    return decode_text(data, str(path), what)


class ForeignFile(InputError):
    """What `read_input(..., owned=True)` raises for a file another user could have written."""


def foreign_reason(st: os.stat_result) -> str | None:
    """Why another user could have written the file `st` describes (None when only root, we and our
    group could): owned by someone else, or writable by every user. A group-writable file passes:
    a umask of 002 makes every file so, with the user's own group (its directory is what
    `untrusted_reason` judges)."""
    if st.st_uid not in trusted_uids():
        return f"owned by {describe_user(st.st_uid)}"
    if stat.S_IMODE(st.st_mode) & 0o002:
        return "writable by every user"
    return None


class NotRegularFile(OSError):
    """What `open_regular` raises for a named pipe, socket or device where a regular file belongs."""


def open_regular(path: str | os.PathLike[str]) -> int:
    """A read-only descriptor of the regular file `path` (a file migbench opens by a fixed name), or
    `NotRegularFile` (an OSError) when something else is there. Opened with O_NONBLOCK, so a named
    pipe planted in its place opens at once instead of waiting for a writer, then checked on the
    descriptor itself (fstat), so nothing can be swapped in between. Other OSErrors of the open
    (missing, a directory: IsADirectoryError) propagate."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if stat.S_ISREG(st.st_mode):
        return fd
    os.close(fd)
    raise _not_regular(st, path)


def _not_regular(st: os.stat_result, path: str | os.PathLike[str]) -> OSError:
    if stat.S_ISDIR(st.st_mode):
        return IsADirectoryError(errno.EISDIR, "Is a directory", os.fspath(path))
    kind = "a named pipe (FIFO)" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device"
    return NotRegularFile(errno.EINVAL, f"it is {kind}, not a regular file", os.fspath(path))


NOT_REGULAR_HINT = "migbench reads it only from a regular file, and something else put this one there: remove it and run the command again"


MAX_RECORD_BYTES = 64 * 2**20
"""The most `read_regular` reads of a whole state file (bindings, a checkpoint, a run's records: a
few KiB to a few MiB): a larger one is refused (`RecordTooLarge`), never read into memory whole."""


class RecordTooLarge(OSError):
    """What `read_regular` raises for a file larger than it reads whole (errno EFBIG)."""


def read_regular(path: str | os.PathLike[str], limit: int | None = None, *, most: int = MAX_RECORD_BYTES) -> bytes:
    """The bytes of the regular file `path`, which migbench opens by a fixed name (a state file, a
    run's record): `open_regular`'s rules, OSError as it raises them. `limit`: its first `limit`
    bytes only (a head); without it the whole file, which must be at most `most` bytes, else
    `RecordTooLarge` (an OSError: the callers that take an unreadable record as none do so)."""
    with os.fdopen(open_regular(path), "rb") as f:
        if limit is not None:
            return f.read(limit)
        size = os.fstat(f.fileno()).st_size
        data = f.read(most + 1) if size <= most else b""
        if size > most or len(data) > most:
            have = f"{max(size, len(data)) / 2**20:.0f} MiB"
            raise RecordTooLarge(errno.EFBIG, f"it is too large ({have}; migbench reads at most {most // 2**20} MiB of it)", os.fspath(path))
        return data


COPY_CHUNK = 1 << 20


def copy_tail(path: str | os.PathLike[str], pos: int, out: Any) -> int:
    """Write what the regular file `path` holds past byte `pos` to the binary stream `out`, a chunk
    at a time (a log of many GiB is never held in memory); returns the bytes written. A run's log,
    opened by its fixed name: `open_regular`'s rules (a pipe there is never waited on, a device
    never read), OSError as it raises them."""
    done = 0
    with os.fdopen(open_regular(path), "rb") as f:
        f.seek(pos)
        while data := f.read(COPY_CHUNK):
            out.write(data)
            done += len(data)
    if done:
        out.flush()
    return done


def decode_text(data: bytes, file: str, what: str) -> str:
    """UTF-8 text without NUL bytes, or an `InputError` with the line of the first bad byte."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        prob = Problem(f"not UTF-8 text (byte {exc.start}); is it a binary file?", file, line, None, "save it as UTF-8 text")
        raise InputError(f"{file}: the {what} is not text", problems=[prob]) from None
    nul = text.find("\x00")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        prob = Problem("a NUL byte; is it a binary file?", file, line, None, "remove the NUL character")
        raise InputError(f"{file}: the {what} is not text", problems=[prob])
    return text


def _too_big(p: Path, what: str, size: int | None, limit: int) -> InputError:
    have = f"{size / 2**20:.0f} MiB" if size is not None else "more than that"
    return InputError(
        f"{p} is too large for a {what} ({have}; the limit is {limit // 2**20} MiB)",
        hint="is it the right file? the README lists migbench's input limits",
    )


DEFAULT_STATE_MODE = 0o600
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
"""errnos that mean the file system is full (for callers that stop instead of failing)."""

_configured: int | None = None


def disk_full(path: str | os.PathLike[str], min_free: int = 64 << 10) -> bool:
    """Whether the file system holding `path` has (almost) no space or no inodes left for us."""
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < min_free or (st.f_files > 0 and st.f_favail == 0)


STATE_MODE_ENV = "MIGBENCH_STATE_MODE"
"""Overrides the mode of state files (`parse_state_mode`), as `launch.state_mode` does."""


def parse_state_mode(value: Any) -> int:
    """A state file mode from YAML (`0640` reads as the integer 416) or text (`"0640"`, `"640"`,
    `"0o640"`). Raises ValueError unless the owner can read and write and others cannot write."""
    bad = f"a file mode is an octal number such as 0600 or 0640, not {value!r}"
    if isinstance(value, bool):
        raise ValueError(bad)
    if isinstance(value, int):
        mode = value
    elif isinstance(value, str):
        text = value.strip().lower().removeprefix("0o")
        if not text or len(text) > 4 or any(c not in "01234567" for c in text):
            raise ValueError(bad)
        mode = int(text, 8)
    else:
        raise ValueError(bad)
    if mode < 0 or mode & ~0o777:
        raise ValueError(f"file mode {value!r} has bits beyond 0777")
    mode &= 0o666  # files never get execute bits; directories get them from the read bits
    if mode & 0o600 != 0o600:
        raise ValueError(f"file mode {mode:04o} must let the owner read and write (0600 at least)")
    if mode & 0o002:
        raise ValueError(f"file mode {mode:04o} is world-writable: refused for state that holds the sweep's env values")
    return mode


def configure_state_mode(mode: int | None) -> int:
    """Set the mode of the state files this process creates (None: 0600); returns it. The caller
    has validated it (`migbench.types.parse_state_mode`; `migbench.state.configure_modes` reads
    the plan and the environment)."""
    global _configured
    _configured = DEFAULT_STATE_MODE if mode is None else int(mode) & 0o666
    return _configured


def state_file_mode() -> int:
    return DEFAULT_STATE_MODE if _configured is None else _configured


def state_dir_mode() -> int:
    """The directory mode matching the file mode: each read bit gets its execute bit."""
    m = state_file_mode()
    return m | ((m & 0o444) >> 2)


def make_dirs(path: str | os.PathLike[str]) -> Path:
    """`mkdir -p`; every directory it creates gets the state directory mode."""
    p = Path(path)
    missing = []
    q = p
    while not q.exists() and q != q.parent:
        missing.append(q)
        q = q.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            continue
        os.chmod(d, state_dir_mode())
    return p


def trusted_uids() -> set[int]:
    """Who may own a directory migbench keeps state or writes scripts in: root, this user and, under
    sudo, the user who ran sudo (SUDO_UID, set by sudo: another user cannot change root's
    environment)."""
    me = os.geteuid()
    uids = {0, me}
    if me == 0:
        try:
            uids.add(int(os.environ.get("SUDO_UID", "")))
        except ValueError:
            pass
    return uids


def untrusted_reason(path: str | os.PathLike[str], *, group_ok: bool | None = None) -> str | None:
    """Why another user could change what is at `path` (None when no one but root and us can): the
    rule OpenSSH's StrictModes applies, from / down. Each directory on the way, each symbolic link
    met and the deepest existing component must be owned by root or a `trusted_uids` user, and none
    may be writable by another user: world-writable only with the sticky bit (as /tmp), and
    group-writable only when `group_ok` (default: when the configured state mode lets the group write,
    the team's explicit choice). Components that do not exist yet are ours once made."""
    trusted = trusted_uids()
    if group_ok is None:
        group_ok = bool(state_file_mode() & 0o020)

    def check(q: str, st: os.stat_result, link: bool) -> str | None:
        if st.st_uid not in trusted:
            what = "the symbolic link" if link else "the directory" if stat.S_ISDIR(st.st_mode) else "the file"
            return f"{what} {q} is owned by {describe_user(st.st_uid)}"
        if link or not stat.S_ISDIR(st.st_mode):
            return None
        mode = stat.S_IMODE(st.st_mode)
        sticky = bool(mode & stat.S_ISVTX)
        if mode & 0o002 and not sticky:
            return f"the directory {q} is writable by every user"
        if mode & 0o020 and not group_ok and not sticky and st.st_gid != 0:
            return f"the directory {q} is writable by its group ({describe_group(st.st_gid)})"
        return None

    def walk(p: str, follow: bool) -> str | None:
        cur = "/"
        parts = [x for x in p.split("/") if x]
        seen = 0
        while parts:
            cur = os.path.join(cur, parts.pop(0))
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                return None
            except OSError:
                return None  # unreadable: the open that follows says why
            if stat.S_ISLNK(st.st_mode):
                why = check(cur, st, True)
                if why is not None or not follow:
                    return why
                seen += 1
                if seen > 40:
                    return f"{cur}: too many levels of symbolic links"
                target = os.readlink(cur)
                base = os.path.dirname(cur)
                rest = "/".join(parts)
                return walk(os.path.normpath(os.path.join(base, target, rest)), True)
            why = check(cur, st, False)
            if why is not None:
                return why
        return None

    root = check("/", os.lstat("/"), False)
    return root or walk(os.path.abspath(path), True)


def require_text_path(path: str | os.PathLike[str], what: str) -> None:
    """Refuse `path` as `what` when its name is not UTF-8 text: the launch state (SQLite text, JSON)
    records it, and a launch there died with an internal error once it had started."""
    raw = os.fsencode(path)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        shown = raw.decode("utf-8", "backslashreplace")
        raise MigbenchError(
            f"the {what} {shown} has a name that is not UTF-8 text, which migbench's launch state cannot record",
            hint="rename it (or the directory that holds it) to a UTF-8 name, or give another path",
        ) from None


def require_trusted(path: str | os.PathLike[str], what: str, *, reading: bool = False) -> None:
    """Refuse `path` as `what` (the "state directory", the "export directory") when another user
    could change what is there (`untrusted_reason`): root would otherwise run, or tell an admin to
    run, what that user put there. `reading`: for a command that only reads it (the message says
    so)."""
    why = untrusted_reason(path)
    if why is not None:
        could = "have put there what migbench would read and show" if reading else "replace what migbench writes there"
        raise MigbenchError(
            f"refusing {path} as the {what}: {why}, so another user could {could}",
            hint="use a directory that only you (or root) own and can write, every directory above it too (`chown`/`chmod go-w`), or pick another path",
        )


def output_dir(path: str | os.PathLike[str], what: str, sub: tuple[str, ...] = ()) -> Path:
    """Create (or reuse) the directory `path` that an export writes into, with its subdirectories
    `sub`: refused when another user could change what is there (`require_trusted`: an admin is
    told to run the scripts written there as root), or when `path` or a subdirectory is a
    symbolic link or not a directory (never followed: a planted `nodes -> /etc`), or when it or a
    subdirectory holds a symbolic link or special file (refused before anything is written)."""
    p = Path(path)
    require_trusted(p, what)
    odd: list[str] = []
    for d in (p, *(p / s for s in sub)):  # all checked before anything is made or written: nothing half-done
        try:
            st = os.lstat(d)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise from_os_error(exc, f"use the {what}") from None
        if stat.S_ISLNK(st.st_mode) and d != p:
            raise MigbenchError(
                f"refusing to write into {d}: it is a symbolic link (to {os.readlink(d)}), which migbench never follows inside the {what}",
                hint=f"remove it (`rm {d}`) if you did not make it, then export again",
            )
        if not stat.S_ISDIR(os.stat(d).st_mode):
            raise MigbenchError(f"{d} is not a directory", hint=f"give the {what} a new name or an existing directory")
        with os.scandir(d) as it:
            odd += [e.path for e in it if e.is_symlink() or not (e.is_file(follow_symlinks=False) or e.is_dir(follow_symlinks=False))]
    if odd:
        shown = ", ".join(sorted(odd)[:5]) + (f" and {len(odd) - 5} more" if len(odd) > 5 else "")
        raise MigbenchError(
            f"refusing to write into the {what} {p}: it holds a symbolic link or special file where migbench writes only regular files ({shown})",
            hint="remove them if you did not make them, then export again",
        )
    for d in (p, *(p / s for s in sub)):
        try:
            os.makedirs(d, exist_ok=True)  # a user's directories get the usual modes
        except OSError as exc:
            raise from_os_error(exc, f"create the {what}") from None
    require_trusted(p, what)  # again: in a shared directory another user may have made a part of it in between
    return p


def tighten_dir(path: str | os.PathLike[str]) -> None:
    """Give an existing directory of ours the state directory mode (older versions made them 0755)."""
    try:
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != state_dir_mode():
            os.chmod(path, state_dir_mode())
    except OSError:
        pass


def _write_fd(fd: int, data: bytes) -> None:
    """Every write of this module goes through here (tests inject ENOSPC at this boundary)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def create_private(path: str | os.PathLike[str], flags: int = os.O_WRONLY | os.O_APPEND, mode: int | None = None) -> int:
    """Open `path` for writing, creating it with the state file mode; never through a symlink, and
    only a regular file: a named pipe there is `NotRegularFile`, never waited on for a reader
    (opened with O_NONBLOCK, which is cleared once the descriptor is known to be a file's)."""
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a named pipe no one reads (O_NONBLOCK)
            raise NotRegularFile(errno.EINVAL, "it is a named pipe (FIFO), not a regular file", os.fspath(path)) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(st, path)
        os.set_blocking(fd, True)
        if st.st_uid == os.geteuid() and st.st_size == 0:
            os.fchmod(fd, state_file_mode() if mode is None else mode)
    except OSError:
        os.close(fd)
        raise
    return fd


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None, reserve: Path | None = None) -> None:
    """Write `data` to `path` atomically (see the module's notes), with `mode` (default: the state
    file mode). With `reserve` (made by `reserve_file`), a full disk falls back to writing into the
    reserved space, then renaming it."""
    p = Path(path)
    make_dirs(p.parent)
    try:
        prefix = f".{p.name}." if len(os.fsencode(p.name)) <= 200 else ".migbench."  # a long (but legal) name stays writable
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=p.parent)
    except OSError as exc:
        if reserve is not None and exc.errno in NO_SPACE:
            _write_reserved(p, data, reserve, mode)
            return
        raise
    try:
        try:
            os.fchmod(fd, state_file_mode() if mode is None else mode)
            _write_fd(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, p)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if reserve is not None and exc.errno in NO_SPACE:
            _write_reserved(p, data, reserve, mode)
            return
        raise
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json_atomic(path: str | os.PathLike[str], doc: Any, *, mode: int | None = None, reserve: Path | None = None) -> None:
    write_bytes_atomic(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(), mode=mode, reserve=reserve)


RESERVE_BYTES = 4096


def reserve_file(path: str | os.PathLike[str], size: int = RESERVE_BYTES) -> None:
    """Set aside `size` bytes at `path` (a new file) for a record that must be written even on a
    full disk. Raises OSError (ENOSPC) when the space is not there now."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, state_file_mode())
        _write_fd(fd, b" " * size)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)


def _write_reserved(path: Path, data: bytes, reserve: Path, mode: int | None) -> None:
    """Overwrite the reserved file's own bytes (no new blocks), pad with whitespace (JSON allows
    it), then rename it to `path`."""
    fd = os.open(reserve, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if len(data) > size:
            raise OSError(errno.ENOSPC, f"no space left for {path.name} and the record exceeds its {size}-byte reserve", str(path))
        if mode is not None:
            os.fchmod(fd, mode)
        _write_fd(fd, data + b" " * (size - len(data)))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(reserve, path)


def umask() -> int:
    """This process's umask, read without changing it (Linux), else the usual 022."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _is_dev_null(st: os.stat_result) -> bool:
    try:
        null = os.stat(os.devnull)
    except OSError:  # pragma: no cover - every Linux has /dev/null
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == null.st_rdev


def output_problem(path: str | os.PathLike[str]) -> str | None:
    """Why migbench will not write a user's document at `path` (None: a regular file, a new name, or
    /dev/null). A symbolic link, a directory, a FIFO, a device or a socket there is refused: a
    planted FIFO would hang the writer or hand another user its contents, a link or a device would
    send the text somewhere the user did not name."""
    try:
        st = os.lstat(path)
    except OSError:
        return None  # a new name (or one the write itself will explain)
    m = st.st_mode
    if stat.S_ISREG(m) or _is_dev_null(st):
        return None
    if stat.S_ISLNK(m):
        return "is a symbolic link (migbench writes only to a regular file or a new name, never through a link)"
    if stat.S_ISDIR(m):
        return "is a directory"
    kind = "a named pipe (FIFO)" if stat.S_ISFIFO(m) else "a socket" if stat.S_ISSOCK(m) else "a device"
    return f"is {kind}, not a regular file (migbench writes only to a regular file or a new name)"


def write_text_atomic(path: str | os.PathLike[str], text: str, what: str | None = None, *, mode: int | None = None, raw_names: bool = False) -> Path:
    """Write a user's document (a plan, a report, a CI recipe) atomically (see the module's notes):
    with `mode`, else the mode the file has when it is ours (its permission bits), else the usual
    one for a new file (0666 less the umask), not the state mode. Every writer of a path the user names goes through here: only a regular
    file or a new name is written (the temp file is renamed over it); a symbolic link, directory,
    FIFO, device or socket is refused (`output_problem`; /dev/null alone is written through). Any
    failure (a read-only directory, a name too long, a full disk, an interrupt) leaves the old file
    and no temp file, and raises the OSError, or, given `what` (the "plan file"), an `Error:` that
    says what could not be written and why.

    Text is written as UTF-8. A file or directory name that is not UTF-8 reaches the text as Python
    decodes such names (its bad bytes as lone surrogates): with `raw_names` (a shell script, a page)
    those bytes are written back as they are, so the text names the same file; otherwise (a file
    migbench or another tool reads back as UTF-8) it is an `Error:` that names the line."""
    p = Path(path)
    why = output_problem(p)
    if why is not None:
        doc = what or "file"
        raise MigbenchError(f"cannot write the {doc} {p}: it {why}", hint=f"give the {doc}'s name: a regular file or a new one")
    data = encode_text(text, p, what or "file", raw_names=raw_names)
    try:
        if p.exists() and not p.is_file():  # /dev/null
            with open(p, "wb") as f:
                f.write(data)
            return p
        if mode is None:
            mode = 0o666 & ~umask()
            try:
                st = os.stat(p)
                if st.st_uid == os.geteuid():  # never the mode of a file another user put there (world-writable)
                    mode = stat.S_IMODE(st.st_mode) & 0o777  # a document is never set-uid
            except OSError:
                pass
        p.parent.mkdir(parents=True, exist_ok=True)  # a user's directories get the usual modes
        write_bytes_atomic(p, data, mode=mode)
    except OSError as exc:
        failed = os.path.abspath(os.fsdecode(exc.filename)) if exc.filename is not None else None
        if failed is not None and os.path.dirname(failed) == os.path.abspath(p.parent) and failed != os.path.abspath(p):
            exc.filename, exc.filename2 = os.fspath(p), None  # its temp file beside it: a name the user never gave
        if what is None:
            raise
        raise from_os_error(exc, f"write the {what}") from None
    return p


def encode_text(text: str, path: Path, what: str, *, raw_names: bool = False) -> bytes:
    """`text` as UTF-8 for the `what` at `path` (see `write_text_atomic`'s `raw_names`), or an
    `Error:` naming the line that holds a name that is not UTF-8."""
    try:
        return text.encode("utf-8", "surrogateescape" if raw_names else "strict")
    except UnicodeEncodeError as exc:
        line = text.count("\n", 0, exc.start) + 1
        start = text.rfind("\n", 0, exc.start) + 1
        end = text.find("\n", exc.start)
        shown = text[start : end if end >= 0 else len(text)].strip()[:160]
        shown = shown.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise MigbenchError(
            f"cannot write the {what} {path}: line {line} would hold a name that is not UTF-8 ({shown})",
            hint="rename that file or directory to a UTF-8 name (or work from another directory); nothing was written",
        ) from None


def describe_group(gid: int) -> str:
    """`name (gid N)`, or `gid N` where the name is unknown."""
    try:
        import grp

        return f"{grp.getgrgid(gid).gr_name} (gid {gid})"
    except (KeyError, ImportError):
        return f"gid {gid}"


def describe_user(uid: int) -> str:
    """`name (uid N)`, or `uid N` where the name is unknown."""
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (KeyError, ImportError):
        return f"uid {uid}"
