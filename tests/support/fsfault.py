"""File-system refusals as an unprivileged user meets them, also when the tests run as root.

`chmod` does not stop root, and CI containers often run as root; so `readonly(dir)` and
`unreadable(file)` set the mode *and* make this process's file calls refuse what the kernel would
refuse a normal user there (EACCES): creating, replacing or removing entries in a read-only
directory, opening an unreadable file. Everything else goes through untouched.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


class Refusals:
    """The directories no entry may be created in, and the files that may not be opened."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.dirs: set[Path] = set()
        self.files: set[Path] = set()
        self._mp = monkeypatch
        self._installed = False

    def readonly(self, d: Path) -> Path:
        d.chmod(0o555)
        self.dirs.add(d.resolve())
        self._install()
        return d

    def unreadable(self, f: Path) -> Path:
        f.chmod(0o000)
        self.files.add(f.resolve())
        self._install()
        return f

    def restore(self) -> None:
        for d in self.dirs:
            d.chmod(0o755)
        for f in self.files:
            f.chmod(0o644)

    # -- the checks ------------------------------------------------------------------------------
    def _in_readonly(self, path: Any) -> bool:
        try:
            p = Path(os.fsdecode(path))
        except TypeError:
            return False
        parent = (p.parent if p.is_absolute() else (Path.cwd() / p).parent).resolve()
        return parent in self.dirs

    def _unreadable(self, path: Any) -> bool:
        try:
            return Path(os.fsdecode(path)).resolve() in self.files
        except TypeError:
            return False

    def _deny(self, path: Any) -> OSError:
        return PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))

    def _install(self) -> None:
        if self._installed or os.geteuid() != 0:  # an unprivileged user meets the real refusals
            return
        self._installed = True
        real_open, real_os_open = builtins.open, os.open
        real = {name: getattr(os, name) for name in ("mkdir", "replace", "rename", "unlink", "rmdir")}

        def fake_open(file: Any, mode: str = "r", *a: Any, **kw: Any) -> Any:
            if not isinstance(file, int):
                if self._unreadable(file):
                    raise self._deny(file)
                creates = any(c in mode for c in "wax") and not Path(os.fsdecode(file)).exists()
                if creates and self._in_readonly(file):
                    raise self._deny(file)
            return real_open(file, mode, *a, **kw)

        def fake_os_open(path: Any, flags: int, *a: Any, **kw: Any) -> int:
            creates = flags & os.O_CREAT and not Path(os.fsdecode(path)).exists()
            if self._unreadable(path) or (creates and self._in_readonly(path)):
                raise self._deny(path)
            return real_os_open(path, flags, *a, **kw)

        def guard(name: str):  # type: ignore[no-untyped-def]
            def call(*args: Any, **kw: Any) -> Any:
                if any(self._in_readonly(a) for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))):
                    raise self._deny(args[0])
                return real[name](*args, **kw)

            return call

        self._mp.setattr(builtins, "open", fake_open)
        self._mp.setattr(io, "open", fake_open)
        self._mp.setattr(os, "open", fake_os_open)
        for name in real:
            self._mp.setattr(os, name, guard(name))


@contextlib.contextmanager
def refusals(monkeypatch: pytest.MonkeyPatch) -> Iterator[Refusals]:
    r = Refusals(monkeypatch)
    try:
        yield r
    finally:
        r.restore()


def tree(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every entry under `root` with its kind, size and mtime: compare two to see that nothing was
    written."""
    out: dict[str, tuple[str, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            kind = "l" if p.is_symlink() else "d" if p.is_dir() else "f"
            out[str(p.relative_to(root))] = (kind, st.st_size if kind == "f" else 0, st.st_mtime_ns if kind == "f" else 0)
    return out
