"""YAML in and out: libyaml's emitter and the pure-Python one give the same bytes, and what is
written reads back as it was."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from migbench import yamlio
from tests.support import REPO

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False)
    | st.text(max_size=160)
    | st.sampled_from(["yes", "no", "null", "~", "1e-5", "0x1f", "08", "3g.40gb@4", "--lr", "a: b", "#x", "'q'", " lead", "é ☃", "ta\tb"])
)
keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,15}", fullmatch=True)  # names: parameters, env, fields
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5), max_leaves=40)
docs = st.dictionaries(keys, values, min_size=1, max_size=6)  # every migbench file is a mapping with named keys


@pytest.mark.slow
@pytest.mark.skipif(not yamlio.C_AVAILABLE, reason="PyYAML was built without libyaml here")
@settings(max_examples=100, deadline=None)
@given(docs)
def test_libyaml_and_pure_python_write_the_same_bytes_and_read_back(doc):
    fast, c, pure = yamlio.dump(doc), yamlio._pyyaml_dump(doc, pure=False), yamlio.dump(doc, pure=True)
    assert fast == c == pure
    assert yamlio.load(fast) == doc == yamlio.load(fast, pure=True)


plan_like = st.fixed_dictionaries(
    {
        "version": st.just(1),
        "runs": st.lists(
            st.fixed_dictionaries(
                {
                    "id": st.from_regex(r"[a-z]{1,8}-[0-9a-f]{10}", fullmatch=True),
                    "argv": st.lists(st.text(max_size=30) | st.sampled_from(["python", "--lr", "1e-4", "true", "a b", "x: y", "'", "-"]), max_size=6),
                    "env": st.dictionaries(keys, st.text(max_size=30), max_size=3),
                    "params": st.dictionaries(keys, scalars, max_size=3),
                    "wave": st.none() | st.integers(0, 9),
                }
            ),
            max_size=6,
        ),
        "warnings": st.lists(st.text(max_size=300), max_size=3),
    }
)


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(plan_like)
def test_the_fast_writer_writes_plan_shaped_documents_as_pyyaml_does(doc):
    assert yamlio.dump(doc) == yamlio.dump(doc, pure=True)


def test_a_plan_file_is_written_as_pyyaml_wrote_it():
    """The fast path changes no byte of a plan file (the example plans are byte-identical)."""
    import yaml

    from migbench.planner import SolveOptions, make_plan
    from migbench.sweep import load_sweep
    from migbench.workflows import fleet_for

    sweep = load_sweep(REPO / "sweeps" / "phase2-ablations.yaml")
    plan = make_plan(sweep, fleet_for(sweep, None)[0], SolveOptions(time_limit_s=1.0))
    assert plan.to_yaml() == yaml.safe_dump(plan.to_dict(), sort_keys=False, width=100, allow_unicode=True)


@pytest.mark.parametrize("pure", [True, False], ids=["pure", "libyaml"])
def test_a_key_given_twice_is_refused_at_the_second_and_a_merge_may_still_override(pure: bool) -> None:
    with pytest.raises(yaml.constructor.ConstructorError) as exc:
        yamlio.load("a: 1\nb:\n  c: 2\n  c: 3\n", pure=pure)
    assert exc.value.problem_mark is not None and exc.value.problem_mark.line + 1 == 4
    assert "duplicate key 'c' (first at line 3)" in str(exc.value)
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key 'a'"):
        yamlio.load("{a: 1, a: 2}", pure=pure)  # on one line too
    doc = "base: &b {a: 1, b: 2}\nmid: &m {<<: *b, a: 3}\ntop: {<<: *m, b: 4}\n"
    assert yamlio.load(doc, pure=pure) == yaml.safe_load(doc)  # merges read as PyYAML reads them
    assert yamlio.load("a: 1\n'1': x\n1: y\n", pure=pure) == {"a": 1, "1": "x", 1: "y"}  # a string and an int differ
