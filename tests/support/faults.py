"""Fault injection shared by the tests and `bench/faults.py`."""

from __future__ import annotations

import errno
import os

from migbench import fsutil


def full_disk(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A full file system at fsutil's write boundary, faithfully enough: a write that would grow a
    file fails with ENOSPC; overwriting bytes a file already has succeeds (as on ext4/xfs/tmpfs)."""
    real = fsutil._write_fd

    def write(fd: int, data: bytes) -> None:
        if os.lseek(fd, 0, os.SEEK_CUR) + len(data) > os.fstat(fd).st_size:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    monkeypatch.setattr(fsutil, "_write_fd", write)
