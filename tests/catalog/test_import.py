"""`catalog import` checks that a pasted -lgip/-lgipp pair describes one whole GPU (issue 14, item 1): real
cut-off pastes and truncations built from complete captures are refused, or imported with a recorded warning
under --partial; complete captures import as before. Captures: tests/data/samples/ (docs/captures.md)."""

from __future__ import annotations

import json

import pytest
import yaml

from migbench.catalog import Catalog
from migbench.catalog.importer import import_files, paste_problems, rows_from_text
from migbench.errors import InputError
from tests.support import DATA
from tests.support.cli import migbench

SAMPLES = DATA / "samples"
PUBLIC = SAMPLES / "public"


def split(name: str, marker: str) -> tuple[str, str]:
    """(-lgip text, -lgipp text) of a capture that holds both, split at the -lgipp command line."""
    text = (SAMPLES / name).read_text()
    i = text.index(marker)
    return text[:i], text[i:]


NVL_LGIP, NVL_LGIPP = split("h100-nvl_lgip-lgipp_1.txt", "nvidia-smi mig -lgipp")
A30_LGIP, A30_LGIPP = split("a30_lgip-lgipp-lgi_1.txt", "sudo nvidia-smi mig -lgipp")
SCALEWAY_LGIPP = (SAMPLES / "h100-pcie_lgipp-lgi_1.txt").read_text()
GOOGLE_LGIP = (PUBLIC / "h100-sxm5_lgip-elided_1.txt").read_text()  # the cut-off paste of issue 14


def without_rows(lgip: str, *names: str) -> str:
    """An -lgip text with the two-line rows of `names` (and their rules) left out, as a cut page shows it."""
    lines = lgip.splitlines()
    out, skip = [], 0
    for ln in lines:
        if skip:
            skip -= 1
            continue
        if any(f"MIG {n} " in ln for n in names):
            skip = 2
            continue
        out.append(ln)
    return "\n".join(out) + "\n"


def write(tmp_path, lgip: str, lgipp: str) -> tuple[str, str]:
    a, b = tmp_path / "lgip.txt", tmp_path / "lgipp.txt"
    a.write_text(lgip)
    b.write_text(lgipp)
    return str(a), str(b)


@pytest.fixture(autouse=True)
def user_catalog(tmp_path, monkeypatch):
    path = tmp_path / "user-catalog.yaml"
    monkeypatch.setenv("MIGBENCH_CATALOG", str(path))
    from migbench.catalog import default_catalog

    default_catalog.cache_clear()
    yield path
    default_catalog.cache_clear()


def test_complete_captures_have_no_problems_and_import():
    assert paste_problems(NVL_LGIP, NVL_LGIPP) == []
    assert paste_problems(A30_LGIP, A30_LGIPP) == []
    assert len(rows_from_text(NVL_LGIP, NVL_LGIPP)) == 7
    assert len(rows_from_text(A30_LGIP, A30_LGIPP)) == 4


def test_the_google_cloud_elided_h100_paste_is_refused(tmp_path):
    """Guards issue 14 item 1: the Google Cloud page's H100 -lgip (cut with `.......` after 3g.40gb) was imported
    as an 8-memory/3-compute GPU."""
    problems = paste_problems(GOOGLE_LGIP, SCALEWAY_LGIPP)
    text = "\n".join(problems)
    assert "profile ID(s) 0, 5 have placements" in text
    assert "elision line" in text and "'.......'" in text
    assert "no full-GPU profile" in text
    with pytest.raises(InputError) as exc:
        import_files(*write(tmp_path, GOOGLE_LGIP, SCALEWAY_LGIPP), name="My-H100")
    assert "--partial" in (exc.value.hint or "")
    assert any("cut short" in p.message for p in exc.value.problems)


def test_the_cut_off_h100_nvl_paste_of_gpu_operator_900_is_refused():
    # public/h100-nvl_lgip_1.txt stops inside the 2g.24gb row: three profiles and half a row are missing
    problems = paste_problems((PUBLIC / "h100-nvl_lgip_1.txt").read_text(), NVL_LGIPP)
    assert problems[0].startswith("profile ID(s) 0, 5, 9 have placements")
    assert any("stops inside the row of 2g.24gb" in p for p in problems)


def test_truncations_built_from_a_complete_capture_are_refused():
    # -lgip without the 4g and 7g rows (what the issue describes): IDs 5 and 0 only in -lgipp
    cut = without_rows(NVL_LGIP, "4g.47gb", "7g.94gb")
    assert "profile ID(s) 0, 5 have placements" in paste_problems(cut, NVL_LGIPP)[0]
    # both pastes without the full-GPU profile: consistent ids, but no {0}:8 placement
    lgipp = "\n".join(ln for ln in NVL_LGIPP.splitlines() if "Profile ID  0" not in ln)
    assert any("no full-GPU profile" in p for p in paste_problems(without_rows(NVL_LGIP, "7g.94gb"), lgipp))
    # -lgipp cut short: profiles without placements
    short = "\n".join(NVL_LGIPP.splitlines()[:4])
    assert "have no placements" in paste_problems(NVL_LGIP, short)[0]
    # slice totals that cannot hold: eight 1g.12gb on seven compute slices
    bad = NVL_LGIP.replace("19     7/7", "19     8/8")
    assert any("8 x 1g.12gb would need more" in p for p in paste_problems(bad, NVL_LGIPP))


def test_partial_import_records_a_loud_warning_and_keeps_the_real_geometry(tmp_path, user_catalog):
    model, path = import_files(*write(tmp_path, GOOGLE_LGIP, SCALEWAY_LGIPP), name="My-H100", partial=True)
    assert (model.memory_slices, model.compute_slices) == (8, 7)  # not the 8/3 GPU of the bug
    assert [p.name for p in model.profiles] == ["1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb"]
    notes = [u for u in model.unverified if u.startswith("partial import:")]
    assert any("cut short" in n for n in notes) and any("7 compute slices" in n for n in notes)
    stored = yaml.safe_load(path.read_text())["models"]["My-H100"]
    assert [u for u in stored["unverified"] if u.startswith("partial import:")] == notes
    # the stored model plans with a warning that names the partial import
    reloaded = Catalog.load(user_path=path).model("My-H100")
    assert reloaded.compute_slices == 7 and any(u.startswith("partial import:") for u in reloaded.unverified)


@pytest.mark.slow
def test_cli_refuses_then_imports_with_partial(tmp_path, user_catalog):
    # --force: the paste replaces the built-in H100-SXM5-80GB, which catalog import refuses without it
    lgip, lgipp = write(tmp_path, GOOGLE_LGIP, SCALEWAY_LGIPP)
    env = {"MIGBENCH_CATALOG": str(user_catalog)}
    r = migbench("catalog", "import", lgip, lgipp, "--name", "H100-SXM5-80GB", env=env)
    assert r.returncode == 1 and "built-in model" in r.stderr and "--force" in r.stderr  # a built-in name needs --force first
    r = migbench("catalog", "import", lgip, lgipp, "--name", "H100-SXM5-80GB", "--force", env=env)
    assert r.returncode == 1 and "do not describe one whole GPU" in r.stderr and "--partial" in r.stderr
    assert not user_catalog.exists()
    r = migbench("catalog", "import", lgip, lgipp, "--name", "H100-SXM5-80GB", "--force", "--partial", "--json", env=env)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["profiles"] == 5 and any("cut short" in w for w in doc["warnings"])
    r = migbench("catalog", "import", lgip, lgipp, "--name", "H100-SXM5-80GB", "--force", "--partial", env=env)
    assert "WARNING: partial import:" in r.stdout and "7 compute slices taken from the catalogue's H100-SXM5-80GB" in r.stdout


@pytest.mark.parametrize("name", ["A\ntouch /tmp/owned #", "", " H100", "\u202eX", "Q" * 101])
def test_a_model_name_that_is_not_one_short_line_is_refused(tmp_path, user_catalog, name):
    """Regression: `catalog import --name` stored any text: a name with a line break (which the
    plan and `export slurm`'s scripts then carried), an empty one, one of 5,000 characters (every
    `migbench catalog` table as wide) or with a bidi override. It is a usage error, nothing is
    stored; a user catalogue holding such a key is an error at its line."""
    from migbench.errors import UsageError

    with pytest.raises(UsageError):
        import_files(*write(tmp_path, NVL_LGIP, NVL_LGIPP), name=name)
    assert not user_catalog.exists()
    import_files(*write(tmp_path, NVL_LGIP, NVL_LGIPP), name="Mine-NVL")
    doc = yaml.safe_load(user_catalog.read_text())
    doc["models"][name] = doc["models"]["Mine-NVL"]
    user_catalog.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError) as ei:
        Catalog.load(user_path=user_catalog)
    assert any(p.field == f"models.{name}" for p in ei.value.problems), ei.value.problems


@pytest.mark.parametrize("name", ["3g.40gb_custom", "big", "1g.10gb.me", "3G.40GB"])
def test_a_user_profile_name_plans_could_not_read_back_is_refused_at_its_line(tmp_path, user_catalog, name):
    """Regression: the catalogue took any profile name that began like one (`3g.40gb_custom`), and
    the plans made with it named instances that `InstanceRef.parse` refuses: the plan could not be
    read back. Such a name is now an error at its field, with the form expected."""
    import_files(*write(tmp_path, NVL_LGIP, NVL_LGIPP), name="Mine-NVL")
    doc = yaml.safe_load(user_catalog.read_text())
    prof = doc["models"]["Mine-NVL"]["profiles"][0]
    prof["name"] = name
    user_catalog.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError) as ei:
        Catalog.load(user_path=user_catalog)
    bad = [p for p in ei.value.problems if p.field == "models.Mine-NVL.profiles[0].name"]
    assert bad and "is not a MIG profile name" in bad[0].message, ei.value.problems
