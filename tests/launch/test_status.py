"""The read side on a damaged state: `status`, `logs` and `stop` say what is wrong with launch.db and
how to recover, never a traceback."""

from __future__ import annotations

import pytest

from tests.support.cli import migbench


@pytest.mark.parametrize(
    "content, says", [(b"", "is empty"), (b"SQLite format 3\x00" + b"\x13" * 4000, "is damaged"), (b"not a database at all" * 50, "is damaged")]
)
def test_status_logs_and_stop_on_a_damaged_launch_db_say_so(tmp_path, content, says):
    """Guards: `status` on an empty or corrupt launch.db was a traceback (no such table: runs /
    DatabaseError: malformed), and the hint for a corrupt db spoke of permissions and free space."""
    (tmp_path / "launch.db").write_bytes(content)
    for args in (["status"], ["logs", "r-1"], ["stop"]):
        res = migbench(*args, "--state-dir", str(tmp_path))
        assert res.returncode == 1, (args, res.stdout, res.stderr)
        assert says in res.stderr and "rebuilds the runs' states from their directories" in res.stderr, res.stderr
        assert "Traceback" not in res.stderr + res.stdout and "permissions" not in res.stderr
