"""The sweep loader against hostile files: YAML shapes built from the schema's keys with wrong
values, and byte-level mutations of the repo's sweeps. Every input loads or is an InputError."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from migbench.errors import InputError
from migbench.sweep import load_sweep_text
from tests.support.fuzz import check_sweep_text, sweep_texts


def test_a_character_yaml_forbids_is_an_input_error_with_its_line():
    """Guards: a control character (say \\x13) in a sweep file raised yaml.reader.ReaderError, a traceback."""
    with pytest.raises(InputError) as ei:
        load_sweep_text("version: 1\nname: s\n# a comment with \x13 in it\n")
    (p,) = ei.value.problems
    assert p.line == 3 and "U+0013" in p.message


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(text=sweep_texts)
def test_fuzzed_sweep_files_load_or_are_input_errors(text):
    check_sweep_text(text)
