"""Every file argument of every command, given every kind of bad file: exit 1 or 2, `Error:` first,
no traceback, no internal error, and nothing written (issue 10, item 1).

The kinds are what a user's shell hands over by mistake: a directory, a missing path, an unreadable
file, a symbolic-link loop, a path under a file, binary bytes, an empty file, a huge (sparse) file,
text that is not YAML, YAML of the wrong shape, a device. Outputs get their own kinds (a directory,
a path under a file, an existing file that is not a plan, a read-only directory). `N_CASES` is the
number of (argument, kind) pairs tried.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import DATA
from tests.support.cli import migbench
from tests.support.fsfault import refusals, tree

SWEEP = """version: 1
name: tiny
fleet: [{gpu: A100-SXM4-80GB, count: 1}]
command: python3 -c pass --lr {lr}
parameters: {lr: [0.1, 0.2]}
memory: 4GiB
"""
LGIP, LGIPP = DATA / "samples" / "a100-40gb_lgip_1.txt", DATA / "samples" / "a100-40gb_lgipp_1.txt"

# -- bad inputs ---------------------------------------------------------------------------------


def _make(kind: str, p: Path) -> None:
    if kind == "directory":
        p.mkdir()
    elif kind in ("missing", "device"):
        pass
    elif kind == "symlink-loop":
        p.symlink_to(p.name)
    elif kind == "under-a-file":
        pass  # the path is <file>/x: see _path
    elif kind == "binary":
        p.write_bytes(bytes(range(256)) * 8)
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "huge":
        with open(p, "wb") as f:
            f.truncate(300 * 2**20)  # sparse: larger than every input limit, costs no memory
    elif kind == "not-yaml":
        p.write_text("key: [unclosed\n  - : :\n\t tab\n")
    elif kind == "yaml-list":
        p.write_text("- 1\n- 2\n")
    elif kind == "yaml-scalar":
        p.write_text("just a sentence\n")
    elif kind == "latin1":
        p.write_bytes("name: caf\xe9\n".encode("latin-1"))
    elif kind == "unreadable":
        p.write_text(SWEEP)
    else:  # pragma: no cover
        raise AssertionError(kind)


INPUT_KINDS = [
    "directory",
    "missing",
    "unreadable",
    "symlink-loop",
    "under-a-file",
    "binary",
    "empty",
    "huge",
    "not-yaml",
    "yaml-list",
    "yaml-scalar",
    "latin1",
    "device",
]

# -- the commands that read a file the user names ---------------------------------------------
# Each target is (name, argv builder); the builder gets the bad path and the good files.

Target = tuple[str, Callable[[str, dict[str, str]], tuple[list[str], dict[str, str]]]]

INPUT_TARGETS: list[Target] = [
    ("estimate SWEEP", lambda f, g: (["estimate", f], {})),
    ("plan SWEEP", lambda f, g: (["plan", f, "-o", "out.plan.yaml"], {})),
    ("plan --fleet-file", lambda f, g: (["plan", g["sweep"], "--fleet-file", f, "-o", "out.plan.yaml"], {})),
    ("run SWEEP", lambda f, g: (["run", f], {})),
    ("apply PLAN", lambda f, g: (["apply", f, "--yes"], g["sim"])),
    ("apply --dry-run PLAN", lambda f, g: (["apply", "--dry-run", f], g["sim"])),
    ("check PLAN", lambda f, g: (["check", f], g["sim"])),
    ("launch PLAN", lambda f, g: (["launch", f], g["sim"])),
    ("launch --dry-run PLAN", lambda f, g: (["launch", "--dry-run", f], {})),
    ("simulate PLAN", lambda f, g: (["simulate", f], {})),
    ("simulate --compare PLAN", lambda f, g: (["simulate", "--compare", f], {})),
    ("status PLAN", lambda f, g: (["status", f], {})),
    ("logs RUN PLAN", lambda f, g: (["logs", "tiny-0", f], {})),
    ("stop PLAN", lambda f, g: (["stop", f], {})),
    ("plan --check PLAN", lambda f, g: (["plan", g["sweep"], "--check", f], {})),
    ("report PLAN", lambda f, g: (["report", f, "-o", "r.html", "--no-grain"], {})),
    ("grain SWEEP", lambda f, g: (["grain", f], {})),
    ("exec PLAN", lambda f, g: (["exec", f, "--array", "a", "--index", "0", "--dry-run"], {})),
    ("exec --device-map", lambda f, g: (["exec", g["plan"], "--array", "a", "--index", "0", "--device-map", f, "--dry-run"], {})),
    ("export slurm PLAN", lambda f, g: (["export", "slurm", f, "-o", "out"], {})),
    ("export slurm --type-map-file", lambda f, g: (["export", "slurm", g["plan"], "--type-map-file", f, "-o", "out"], {})),
    ("export k8s PLAN", lambda f, g: (["export", "k8s", f, "-o", "out"], {})),
    ("export mig-parted PLAN", lambda f, g: (["export", "mig-parted", f, "-o", "out"], {})),
    ("sim init --from DIR", lambda f, g: (["sim", "init", "newsim", "--from", f], {})),
    ("catalog import LGIP", lambda f, g: (["catalog", "import", f, g["lgipp"], "--name", "X1", "--partial"], {"MIGBENCH_CATALOG": g["cat"]})),
    ("catalog import LGIPP", lambda f, g: (["catalog", "import", g["lgip"], f, "--name", "X1", "--partial"], {"MIGBENCH_CATALOG": g["cat"]})),
    ("MIGBENCH_CATALOG catalog", lambda f, g: (["catalog"], {"MIGBENCH_CATALOG": f})),
    ("MIGBENCH_CATALOG plan", lambda f, g: (["plan", g["sweep"], "-o", "out.plan.yaml"], {"MIGBENCH_CATALOG": f})),
    ("MIGBENCH_CATALOG catalog import", lambda f, g: (["catalog", "import", g["lgip"], g["lgipp"], "--name", "X1", "--partial"], {"MIGBENCH_CATALOG": f})),
]

# Kinds that are a fine (empty or new) path for some targets, or that the target never opens.
FINE = {
    ("MIGBENCH_CATALOG catalog", "missing"),
    ("MIGBENCH_CATALOG plan", "missing"),
    ("MIGBENCH_CATALOG catalog", "under-a-file"),
    ("MIGBENCH_CATALOG plan", "under-a-file"),
    ("MIGBENCH_CATALOG catalog import", "missing"),  # a new user catalogue is written there: not a bad input
    ("MIGBENCH_CATALOG catalog", "empty"),
    ("MIGBENCH_CATALOG plan", "empty"),  # an empty user catalogue adds nothing
    ("MIGBENCH_CATALOG catalog import", "empty"),
    ("MIGBENCH_CATALOG catalog", "device"),
    ("MIGBENCH_CATALOG plan", "device"),
    ("MIGBENCH_CATALOG catalog import", "device"),  # written through /dev/null, as `plan -o /dev/null`
}

# -- outputs and directories the user names ----------------------------------------------------
OUTPUT_KINDS = ["directory", "under-a-file", "not-a-plan", "binary", "read-only-dir", "own-sweep"]
OUTPUT_TARGETS: list[Target] = [
    ("plan -o OUT", lambda f, g: (["plan", g["sweep"], "-o", f], {})),
    ("sim init DIR", lambda f, g: (["sim", "init", f, "--gpu", "A30"], {})),
    ("sim show DIR", lambda f, g: (["sim", "show", f], {})),
    ("MIGBENCH_SIM apply --dry-run", lambda f, g: (["apply", "--dry-run", g["plan"]], {"MIGBENCH_SIM": f})),
    ("stop --state-dir", lambda f, g: (["stop", "--state-dir", f], {})),
    ("logs --state-dir", lambda f, g: (["logs", "tiny-0", "--state-dir", f], {})),
    ("report -o OUT", lambda f, g: (["report", g["plan"], "-o", f, "--no-grain"], {})),
    ("doctor --capture DIR", lambda f, g: (["doctor", "--capture", f], g["sim"])),
    ("export slurm -o DIR", lambda f, g: (["export", "slurm", g["plan"], "-o", f], {})),
    ("sim reboot --state", lambda f, g: (["sim", "reboot", "--state", f], {})),
    ("sim nvidia-smi --state", lambda f, g: (["sim", "nvidia-smi", "--state", f, "-L"], {})),
]
OUTPUT_FINE = {
    ("sim init DIR", "directory"),  # an existing directory is where a host is created
    ("doctor --capture DIR", "directory"),
    ("export slurm -o DIR", "directory"),  # they write into it
    ("report -o OUT", "not-a-plan"),
    ("report -o OUT", "binary"),  # a report replaces the file it is told to write
}

CASES = [(t, k) for t in INPUT_TARGETS for k in INPUT_KINDS if (t[0], k) not in FINE]
OUT_CASES = [(t, k) for t in OUTPUT_TARGETS for k in OUTPUT_KINDS if (t[0], k) not in OUTPUT_FINE and not (k == "own-sweep" and t[0] != "plan -o OUT")]
N_CASES = len(CASES) + len(OUT_CASES)
QUICK = ("directory", "binary")  # in the quick loop; the other kinds carry the slow mark (~0.1 s a case)


def _params(cases: list[tuple[Target, str]]) -> list:  # type: ignore[type-arg]
    return [pytest.param(t, k, id=f"{t[0]}-{k}", marks=() if k in QUICK else pytest.mark.slow) for t, k in cases]


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A good sweep, its plan, a simulated host, the -lgip/-lgipp texts, an (absent) user catalogue."""
    d = tmp_path_factory.mktemp("fuzz-good")
    (d / "tiny.yaml").write_text(SWEEP)
    r = migbench("plan", "tiny.yaml", "-o", "tiny.plan.yaml", "--no-runs", cwd=d)
    assert r.returncode == 0, r.stderr
    r = migbench("sim", "init", str(d / "sim"), "--gpu", "A100-SXM4-80GB", "--mig", "on")
    assert r.returncode == 0, r.stderr
    return {
        "sweep": str(d / "tiny.yaml"),
        "plan": str(d / "tiny.plan.yaml"),
        "sim": {"MIGBENCH_SIM": str(d / "sim")},
        "lgip": str(LGIP),
        "lgipp": str(LGIPP),
        "cat": str(d / "user-catalog.yaml"),
        "dir": d,
    }


def _path(kind: str, work: Path) -> Path:
    if kind == "under-a-file":
        (work / "afile").write_text("x")
        return work / "afile" / "x"
    if kind == "device":
        return Path("/dev/null")
    return work / "bad"


def _check(r, before: dict, after: dict) -> None:  # type: ignore[no-untyped-def]
    assert r.returncode in (1, 2), (r.returncode, r.stdout[-500:], r.stderr)
    assert r.stderr.startswith("Error: "), r.stderr
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    assert "internal error" not in r.stderr, r.stderr
    assert after == before, "something was written"


@pytest.mark.parametrize("target,kind", _params(CASES))
def test_a_bad_input_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, good: dict, target: Target, kind: str) -> None:
    work = tmp_path
    with refusals(monkeypatch) as fs:
        p = _path(kind, work)
        _make(kind, p)
        if kind == "unreadable":
            fs.unreadable(p)
        args, env = target[1](str(p), good)
        before, good_before = tree(work), tree(good["dir"])
        r = migbench(*args, cwd=work, env=env)
        _check(r, before, tree(work))
        assert tree(good["dir"]) == good_before


@pytest.mark.parametrize("target,kind", _params(OUT_CASES))
def test_a_bad_output_or_directory_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, good: dict, target: Target, kind: str) -> None:
    work = tmp_path
    with refusals(monkeypatch) as fs:
        if kind == "directory":
            p = work / "d"
            p.mkdir()
        elif kind == "under-a-file":
            p = _path(kind, work)
        elif kind == "not-a-plan":
            p = work / "notes.txt"
            p.write_text("my notes\n")
        elif kind == "binary":
            p = work / "data.bin"
            p.write_bytes(bytes(range(256)))
        elif kind == "read-only-dir":
            ro = work / "ro"
            ro.mkdir()
            fs.readonly(ro)
            p = ro / "x"
        else:  # own-sweep
            p = work / "tiny.yaml"
            p.write_text(SWEEP)
        args, env = target[1](str(p), good)
        if kind == "own-sweep":
            args[1] = str(p)
        before, good_before = tree(work), tree(good["dir"])
        r = migbench(*args, cwd=work, env=env)
        _check(r, before, tree(work))
        assert tree(good["dir"]) == good_before


def test_the_fuzz_tries_enough_bad_inputs() -> None:
    """The count the issue asks for: every command's file arguments, every kind (see the module doc)."""
    assert N_CASES >= 200, N_CASES
