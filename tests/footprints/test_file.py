"""The footprints file: round trip, merge, and clear errors for a corrupt or foreign file."""

from __future__ import annotations

import pytest

from migbench.errors import InputError
from migbench.footprints import Footprints, Measurement, load_footprints


def m(run: str = "g-1", peak: int = 1000, **kw) -> Measurement:  # type: ignore[no-untyped-def]
    base = dict(
        run=run,
        group="g",
        params={"batch": 8},
        peak_mib=peak,
        how="nvml-process+run-report",
        outcome="stopped",
        gpu_model="A100-SXM4-80GB",
        profile="1g.10gb",
        instance_mib=9728,
        driver="550.54.15",
        date="2025-01-01T00:00:00Z",
        probe_s=1.5,
    )
    base.update(kw)
    return Measurement(**base)


def test_round_trip_is_exact_and_deterministic(tmp_path):
    fp = Footprints("s", "abc", [m("g-2", 2000, samples=30, sample_s=0.05, reported_peak_mib=1990), m("g-1")])
    p = fp.save(tmp_path / "f.yaml")
    back = load_footprints(p)
    assert back.sweep == "s" and back.sweep_sha256 == "abc"
    assert sorted(back.measurements, key=lambda x: x.run) == sorted(fp.measurements, key=lambda x: x.run)
    again = tmp_path / "g.yaml"
    back.save(again)
    assert again.read_bytes() == p.read_bytes()
    assert [x.run for x in back.measurements] == ["g-1", "g-2"]  # sorted by group, run


def test_merge_replaces_the_same_run():
    fp = Footprints("s", "", [m("g-1", 1000), m("g-2", 2000)]).merged([m("g-2", 2500), m("g-3", 3000)])
    assert {x.run: x.peak_mib for x in fp.measurements} == {"g-1": 1000, "g-2": 2500, "g-3": 3000}


@pytest.mark.parametrize(
    ("text", "fragment", "field"),
    [
        ("kind: migbench-plan\nversion: 1\n", "not a migbench footprints file", None),
        ("kind: migbench-footprints\nversion: 7\nsweep: s\nmeasurements: []\n", "version 7", None),
        ("kind: migbench-footprints\nversion: 1\nsweep: s\nmeasurements: [{run: g-1}\n", "not valid YAML", None),
        ("kind: migbench-footprints\nversion: 1\nsweep: s\nmeasurements:\n  - {run: g-1, group: g}\n", "missing `peak_mib`", "measurements[0].peak_mib"),
    ],
)
def test_a_corrupt_file_is_a_clear_error(tmp_path, text, fragment, field):
    p = tmp_path / "f.yaml"
    p.write_text(text)
    with pytest.raises(InputError) as info:
        load_footprints(p)
    err = info.value
    assert str(p) in err.message
    assert fragment in err.render()
    if field:
        assert any(pr.field == field and pr.line == 5 for pr in err.problems)


def test_bad_values_are_each_reported_with_their_line(tmp_path):
    fp = Footprints("s", "", [m("g-1"), m("g-2")]).save(tmp_path / "f.yaml")
    text = fp.read_text().replace("peak_mib: 1000", "peak_mib: lots", 1).replace("outcome: stopped", "outcome: exploded", 2)
    fp.write_text(text + "- run: g-3\n")
    with pytest.raises(InputError) as info:
        load_footprints(fp)
    fields = sorted(str(p.field) for p in info.value.problems)
    assert "measurements[0].peak_mib" in fields and "measurements[1].outcome" in fields and "measurements[2].group" in fields
    assert all(p.line for p in info.value.problems)


def test_missing_file_and_a_directory(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_footprints(tmp_path / "nope.yaml")
    with pytest.raises(InputError, match="is a directory, not a footprints file"):
        load_footprints(tmp_path)
    with pytest.raises(InputError, match="is a directory"):
        Footprints("s").save(tmp_path)
