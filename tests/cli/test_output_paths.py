"""Issue 19 item 10: every command that writes a path the user names (`plan -o`, `report -o`,
`export mig-parted -o`, `schema -o`, the user catalogue) writes a temp file next to it and renames
it over a regular file or a new name only; a FIFO, a device, a symbolic link or a directory there is
refused with a clear error and left as it was (a planted FIFO hung root's `report`; a link to a
block device had HTML written onto it)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.support.cli import migbench

SWEEP = "version: 1\nname: s\ncommand: echo {x}\nparameters: {x: [1, 2]}\nmemory: 1GiB\nfleet: [{gpu: A30, count: 1}]\n"

WRITERS = {
    "plan -o": lambda d, out: ["plan", str(d / "s.yaml"), "-o", str(out), "--no-runs"],
    "report -o": lambda d, out: ["report", str(d / "s.plan.yaml"), "-o", str(out), "--no-grain"],
    "export mig-parted -o": lambda d, out: ["export", "mig-parted", str(d / "s.plan.yaml"), "-o", str(out)],
    "schema -o": lambda d, out: ["schema", "-o", str(out)],
}


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("outputs")
    (d / "s.yaml").write_text(SWEEP)
    r = migbench("plan", "s.yaml", "-o", "s.plan.yaml", "--no-runs", cwd=d)
    assert r.returncode == 0, r.stderr
    return d


def _plant(kind: str, at: Path, victim: Path) -> None:
    if kind == "fifo":
        os.mkfifo(at)
    elif kind == "symlink":
        at.symlink_to(victim)
    elif kind == "dangling-symlink":
        at.symlink_to(victim.with_name("not-there-yet"))
    elif kind == "device":
        if os.geteuid() != 0:
            pytest.skip("mknod needs root")
        z = os.stat("/dev/zero")
        os.mknod(at, 0o666 | stat.S_IFCHR, z.st_rdev)
    elif kind == "directory":
        at.mkdir()


@pytest.mark.parametrize("writer", list(WRITERS))
@pytest.mark.parametrize("kind", ["fifo", "symlink", "dangling-symlink", "device", "directory"])
def test_a_special_file_at_an_output_path_is_refused_and_left_alone(planned, tmp_path, writer, kind):
    """Guards issue 19 item 10: open(p, "w") on a planted FIFO hung the writer; on a link it wrote
    where the link pointed."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    out = tmp_path / "out"
    _plant(kind, out, victim)
    before = os.lstat(out)
    r = migbench(*WRITERS[writer](planned, out), cwd=planned)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith("Error: ") and "Traceback" not in r.stderr and str(out) in r.stderr, r.stderr
    after = os.lstat(out)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode), "left as it was"
    assert victim.read_text() == "precious\n"
    assert not victim.with_name("not-there-yet").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no temp file left"


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_regular_file_is_replaced_by_rename(planned, tmp_path, writer):
    """Guards issue 19 item 10: the good case stays good: the old file is replaced (a new inode), mode kept."""
    out = tmp_path / "out"
    old = OLD.get(writer, "kind: migbench-plan\n")  # `plan -o` replaces only a plan, `schema -o` only a schema
    out.write_text(old)
    os.chmod(out, 0o640)
    ino = out.stat().st_ino
    r = migbench(*WRITERS[writer](planned, out), cwd=planned)
    assert r.returncode == 0, r.stderr
    assert out.read_text() != old and out.stat().st_ino != ino and stat.S_IMODE(out.stat().st_mode) == 0o640


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
@pytest.mark.parametrize("writer", list(WRITERS))
def test_an_output_never_takes_the_mode_of_a_file_another_user_planted_there(planned, tmp_path, writer):
    """Guards: an output replaced by rename kept the mode of the file it replaced, whoever owned it:
    another user who made the plan's name world-writable (and set-uid) in a shared sticky directory
    got the user's plan written there as the user's, still world-writable, and edited its commands
    before the user launched it."""
    out = tmp_path / "out"
    out.write_text(OLD.get(writer, "kind: migbench-plan\n"))
    os.chown(out, 12345, 12345)
    os.chmod(out, 0o6777)
    old = os.umask(0o022)
    try:
        r = migbench(*WRITERS[writer](planned, out), cwd=planned)
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr
    st = out.stat()
    assert st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == 0o644, oct(st.st_mode)
    os.chmod(out, 0o600)  # one's own file keeps its mode
    assert migbench(*WRITERS[writer](planned, out), cwd=planned).returncode == 0 and stat.S_IMODE(out.stat().st_mode) == 0o600


OLD = {"schema -o": '{\n  "$id": "https://migbench.invalid/schema/sweep-v0.json"\n}\n'}


def test_schema_o_never_replaces_a_file_migbench_did_not_write_unless_forced(planned, tmp_path):
    """Guards: `migbench schema -o FILE` replaced whatever FILE was (a sweep file given by mistake)
    without asking; it replaces a schema or key tables it wrote, an empty file, or anything with
    --force (as `plan -o` does with a plan)."""
    sweep = tmp_path / "s.yaml"
    sweep.write_text(SWEEP)
    r = migbench("schema", "-o", str(sweep))
    assert r.returncode == 1 and "is not a schema migbench wrote; refusing to replace it" in r.stderr and "--force" in r.stderr, r.stderr
    assert sweep.read_text() == SWEEP
    for args in (
        ["schema", "-o", str(tmp_path / "k.md"), "--markdown"],
        ["schema", "-o", str(tmp_path / "k.md"), "--markdown"],
        ["schema", "-o", str(tmp_path / "k.md")],
    ):
        r = migbench(*args)  # new, then its own key tables, then its own output again as JSON
        assert r.returncode == 0, r.stderr
    r = migbench("schema", "-o", str(sweep), "--force")
    assert r.returncode == 0 and sweep.read_text().startswith("{"), r.stderr


def test_the_user_catalogue_is_never_written_through_a_link(planned, tmp_path):
    """Guards issue 19 item 10: `catalog import` wrote the user catalogue through a planted link."""
    from tests.support import DATA

    lgip, lgipp = DATA / "samples" / "a100-40gb_lgip_1.txt", DATA / "samples" / "a100-40gb_lgipp_1.txt"
    victim = tmp_path / "victim"
    victim.write_text("version: 1\nmodels: {}\n")  # a catalogue, or the import stops before writing
    cat = tmp_path / "cat.yaml"
    cat.symlink_to(victim)
    r = migbench("catalog", "import", str(lgip), str(lgipp), "--name", "X1", "--partial", env={"MIGBENCH_CATALOG": str(cat)})
    assert r.returncode == 1 and "symbolic link" in r.stderr, r.stdout + r.stderr
    assert victim.read_text() == "version: 1\nmodels: {}\n" and cat.is_symlink()


@pytest.mark.parametrize("target", ["s.plan.yaml", "s.yaml"])
def test_a_report_never_replaces_its_plan_or_the_plans_sweep_file(tmp_path: Path, target: str):
    """Guards: `report PLAN -o PLAN` (or -o the sweep file) replaced the file with the HTML page,
    exit 0; every later command on the plan failed ("not valid YAML")."""
    (tmp_path / "s.yaml").write_text(SWEEP)
    assert migbench("plan", "s.yaml", "-o", "s.plan.yaml", "--no-runs", cwd=tmp_path).returncode == 0
    before = (tmp_path / target).read_bytes()
    r = migbench("report", "s.plan.yaml", "-o", f"./{target}", "--no-grain", cwd=tmp_path)
    assert r.returncode == 1 and "refusing to write the report over" in r.stderr and "Hint:" in r.stderr, r.stdout + r.stderr
    assert (tmp_path / target).read_bytes() == before


def test_export_mig_parted_never_replaces_its_plan(tmp_path: Path):
    """Guards: `export mig-parted PLAN -o PLAN` replaced the plan with the config, exit 0."""
    (tmp_path / "s.yaml").write_text(SWEEP)
    assert migbench("plan", "s.yaml", "-o", "s.plan.yaml", "--no-runs", cwd=tmp_path).returncode == 0
    before = (tmp_path / "s.plan.yaml").read_bytes()
    r = migbench("export", "mig-parted", "s.plan.yaml", "-o", "s.plan.yaml", cwd=tmp_path)
    assert r.returncode == 1 and "refusing to write the mig-parted config over the plan" in r.stderr and "Hint:" in r.stderr, r.stdout + r.stderr
    assert (tmp_path / "s.plan.yaml").read_bytes() == before
