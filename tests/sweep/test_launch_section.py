"""The sweep's `launch:` section: where the state goes, who may read it, what a run's environment is."""

from __future__ import annotations

import pytest

from migbench.errors import InputError
from migbench.sweep import load_sweep_text

BASE = """
version: 1
name: s
launch: {LAUNCH}
command: python3 train.py --seed {seed}
parameters: {seed: [0, 1]}
memory: 1GiB
"""


def _launch(text: str):  # type: ignore[no-untyped-def]
    return load_sweep_text(BASE.replace("{LAUNCH}", text)).launch


def test_env_passthrough_and_state_mode_reach_the_launch_settings():
    s = _launch("{env_passthrough: [PATH, HOME, 'LC_*'], state_mode: 0640}")
    assert s.env_passthrough == ("PATH", "HOME", "LC_*") and s.state_mode == 0o640
    assert _launch("{state_mode: '0600'}").state_mode == 0o600
    assert _launch("{}").env_passthrough is None and _launch("{}").state_mode is None


@pytest.mark.parametrize(
    "launch, words",
    [
        ("{log_dir: ../..}", "climbs out"),
        ("{log_dir: 'runs/../../x'}", "climbs out"),
        ("{env_passthrough: PATH}", "list of variable names"),
        ("{env_passthrough: ['A B']}", "not a variable name"),
        ("{state_mode: 0666}", "world-writable"),
        ("{state_mode: 0400}", "owner read and write"),
    ],
)
def test_bad_launch_settings_are_reported_with_their_line(launch, words):
    """Guards: `launch.log_dir: ../..` in a sweep moved the state out of the plan's directory."""
    with pytest.raises(InputError) as ei:
        _launch(launch)
    (p,) = ei.value.problems
    assert words in p.message and p.line == 4
