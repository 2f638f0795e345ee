"""A run that fails with a usage error in its first seconds is not retried (its retries would fail the same way)."""

from __future__ import annotations

import pytest

from tests.support.launchkit import PY

SWEEP = f"""
version: 1
name: usage
launch: {{retries: 2, backoff: 60}}
groups:
  - name: bad
    command: [{PY}, -c, "import sys; sys.exit(2)", "{{x}}"]
    parameters: {{x: [1]}}
    memory: 2GiB
  - name: other
    command: [{PY}, -c, "import sys; sys.exit(3)", "{{x}}"]
    parameters: {{x: [1]}}
    memory: 2GiB
    retries: 0
"""


@pytest.mark.slow
def test_exit_2_in_the_first_seconds_is_not_retried(rig):
    """Issue 22 item 8: a Hydra/argparse usage error (exit 2) was retried twice, 60 s apart."""
    r = rig(SWEEP)
    rc, out = r.launch(cli=True, timeout=60)
    assert rc != 0, out
    rows = r.rows()
    bad = next(v for k, v in rows.items() if k.startswith("bad-"))
    assert (bad["state"], bad["attempt"]) == ("failed", 1), bad
    assert "usage error" in bad["last_error"] and "not retried" in bad["last_error"]
    other = next(v for k, v in rows.items() if k.startswith("other-"))
    assert other["state"] == "failed" and "usage error" not in other["last_error"]
