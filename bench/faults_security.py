"""The security cases of issue 19 (items 9-15), as a hostile local user would try them while root
runs migbench: `python bench/faults_security.py` (or `python bench/faults.py --security`).

As root, it creates an unprivileged user (`mbeve`, with `useradd`; removed at the end when it made
her) whose processes do the planting; root runs migbench's command line. Without root the
cases that need a second user are skipped, and the reason is printed. Then a fuzz pass: random
explicit tags, deep nesting and oversized lists in each loader (sweep, plan, footprints, fleet file,
user catalogue). It prints, per case, the trials and the holes (an attack that worked, or a
traceback / internal error / RecursionError / hang): holes must be 0.

1. **state dir** (item 9): eve owns the state dir's parent (or the state dir itself, with bindings
   copied in); root's `launch` must refuse and run nothing. Her cmd.json in an attempt dir she owns:
   root's shim must not run it, nor append its refusal through her `shim.log` link.
2. **outputs** (item 10): eve plants a FIFO, a link to a victim file, a link to /dev/zero at the
   output path in a shared sticky directory; root's `plan -o`, `report -o`, `schema -o`, `export
   mig-parted -o` must refuse at once (no hang) and leave the victim alone.
3. **export dir** (item 11): root exports into eve's directory; into its own with eve's `nodes` link.
4. **shell quoting** (item 12): values that try to run `touch` in every accepted quoting context.
5. **secrets** (item 13): eve reads root's plan file and k8s export of a sweep with a token.
6. **fuzz** (items 14-15): N inputs per loader; plus the 125,000-value fleet file's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.cli import migbench  # noqa: E402

EVE = "mbeve"
SWEEP = "version: 1\nname: s\ncommand: echo {x}\nparameters: {x: [1, 2]}\nmemory: 1GiB\nfleet: [{node: n1, gpu: A100-SXM4-80GB, count: 1}]\n"
BAD = ("Traceback", "internal error", "RecursionError")


class Tally:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    def add(self, case: str, hole: bool, why: str = "") -> None:
        row = self.rows.setdefault(case, {"trials": 0, "holes": 0, "examples": []})
        row["trials"] += 1
        if hole:
            row["holes"] += 1
            if len(row["examples"]) < 3:
                row["examples"].append(why[:300])


def _eve() -> tuple[tuple[int, int] | None, bool]:
    """(uid, gid) of the hostile user (None without root), and whether useradd made her now."""
    if os.geteuid() != 0:
        return None, False
    import pwd

    made = False
    try:
        pw = pwd.getpwnam(EVE)
    except KeyError:
        p = subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", EVE], capture_output=True, text=True)
        if p.returncode != 0:
            print(f"useradd failed ({p.stderr.strip()}): the cases that need a second user are skipped")
            return None, False
        pw, made = pwd.getpwnam(EVE), True
    return (pw.pw_uid, pw.pw_gid), made


def as_eve(eve: tuple[int, int], argv: list[str], **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(argv, user=eve[0], group=eve[1], extra_groups=[], capture_output=True, text=True, timeout=30, **kw)


def _planned(base: Path) -> Path:
    d = base / "planned"
    d.mkdir()
    os.chmod(base, 0o755)
    os.chmod(d, 0o755)
    (d / "s.yaml").write_text(SWEEP)
    r = migbench("plan", "s.yaml", "-o", "s.plan.yaml", "--no-runs", cwd=d)
    assert r.returncode == 0, r.stderr
    return d


def _bad(r: Any) -> bool:
    return any(b in r.stdout + r.stderr for b in BAD)


# -- 1. state dir -----------------------------------------------------------------------------------


def state_dir_cases(base: Path, eve: tuple[int, int], tally: Tally) -> None:
    from tests.support.launchkit import PY

    shared = base / "shared"
    shared.mkdir(mode=0o1777)
    os.chmod(shared, 0o1777)
    sim = base / "sim"
    r = migbench("sim", "init", str(sim), "--gpu", "A100-SXM4-80GB", "--mig", "on")
    assert r.returncode == 0, r.stderr
    d = base / "planned"
    env = {"MIGBENCH_SIM": str(sim)}
    r = migbench("apply", str(d / "s.plan.yaml"), "--yes", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    bindings = d / "runs" / "s" / "bindings.json"
    for trial, how in enumerate(["parent", "pre-created", "world-writable parent"]):
        root = shared / f"t{trial}"
        if how == "world-writable parent":
            root.mkdir()
            os.chmod(root, 0o777)
            sd = root / "state"
        else:
            as_eve(eve, ["mkdir", "-m", "0777", str(root)])
            sd = root / "state" if how == "parent" else root
        if how == "pre-created":
            shutil.copy(bindings, sd / "bindings.json")
            os.chown(sd / "bindings.json", *eve)
        r = migbench("launch", str(d / "s.plan.yaml"), "--state-dir", str(sd), env=env)
        wrote = [p.name for p in sd.rglob("*") if p.name != "bindings.json"] if sd.exists() else []
        tally.add(
            "1. state dir: launch into eve's",
            r.returncode != 1 or "refusing" not in r.stderr or bool(wrote) or _bad(r),
            f"{how}: rc={r.returncode} wrote={wrote} {r.stderr}",
        )
    # her cmd.json in an attempt directory she owns: root's shim must not run it
    for trial in range(3):
        adir = shared / f"eve-attempt-{trial}" / "run" / "attempt-1"
        as_eve(eve, ["mkdir", "-p", str(adir)])
        pwned = shared / f"pwned-{trial}"
        doc = {"version": 1, "run_id": "run", "attempt": 1, "argv": ["touch", str(pwned)], "env": {}, "workdir": "/", "mig_uuid": ""}
        as_eve(eve, ["sh", "-c", f"cat > {adir}/cmd.json"], input=json.dumps(doc))
        victim = base / f"victim-{trial}"
        victim.write_text("precious\n")
        as_eve(eve, ["ln", "-s", str(victim), str(adir / "shim.log")])  # where the refusing shim logs
        p = subprocess.run([PY, "-m", "migbench.launch.shim", str(adir)], capture_output=True, text=True, timeout=60)
        tally.add("1. state dir: root's shim on eve's cmd.json", pwned.exists() or victim.read_text() != "precious\n", f"rc={p.returncode}")


# -- 2. outputs -------------------------------------------------------------------------------------


def output_cases(base: Path, eve: tuple[int, int] | None, tally: Tally) -> None:
    d = base / "planned"
    shared = base / "out-shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    victim = base / "victim"
    writers = {
        "plan -o": lambda o: ["plan", str(d / "s.yaml"), "-o", str(o), "--no-runs"],
        "report -o": lambda o: ["report", str(d / "s.plan.yaml"), "-o", str(o), "--no-grain"],
        "schema -o": lambda o: ["schema", "-o", str(o)],
        "export mig-parted -o": lambda o: ["export", "mig-parted", str(d / "s.plan.yaml"), "-o", str(o)],
    }
    n = 0
    for name, argv in writers.items():
        for kind in ("fifo", "link to a victim", "link to /dev/zero"):
            n += 1
            victim.write_text("precious\n")
            at = shared / f"o{n}"
            plant = {
                "fifo": ["mkfifo", str(at)],
                "link to a victim": ["ln", "-s", str(victim), str(at)],
                "link to /dev/zero": ["ln", "-s", "/dev/zero", str(at)],
            }[kind]
            (as_eve(eve, plant) if eve else subprocess.run(plant, check=True))
            # a child process: a hang (the old behaviour on a FIFO) is caught by its timeout
            code = f"from tests.support.cli import migbench; r = migbench(*{argv(at)!r}); print(r.returncode); print(r.stderr)"
            try:
                p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
                hole = not p.stdout.startswith("1") or victim.read_text() != "precious\n" or any(b in p.stdout for b in BAD)
                why = p.stdout
            except subprocess.TimeoutExpired:
                hole, why = True, "hung"
            tally.add(f"2. outputs ({'eve plants' if eve else 'planted'})", hole, f"{name} over a {kind}: {why}")


# -- 3. export dir ----------------------------------------------------------------------------------


def export_cases(base: Path, eve: tuple[int, int] | None, tally: Tally) -> None:
    d = base / "planned"
    for engine in ("slurm", "k8s"):
        if eve:
            out = base / f"eve-export-{engine}"
            out.mkdir()
            os.chown(out, *eve)
            r = migbench("export", engine, str(d / "s.plan.yaml"), "-o", str(out))
            tally.add("3. export into eve's directory", r.returncode != 1 or "refusing" not in r.stderr or any(out.iterdir()), r.stderr)
        out = base / f"own-export-{engine}"
        out.mkdir()
        elsewhere = base / f"elsewhere-{engine}"
        elsewhere.mkdir()
        (out / ("nodes" if engine == "slurm" else "jobs")).symlink_to(elsewhere)
        r = migbench("export", engine, str(d / "s.plan.yaml"), "-o", str(out))
        tally.add("3. export: planted subdirectory link", r.returncode != 1 or any(elsewhere.iterdir()) or _bad(r), r.stderr)


# -- 4. shell quoting -------------------------------------------------------------------------------


def quoting_cases(base: Path, tally: Tally) -> None:
    values = ["$(touch pwned)", "`touch pwned`", '"; touch pwned; "', "'; touch pwned; '", "x\ntouch pwned\n", "a\\", '\\"$(touch pwned)\\"']
    contexts = [
        "echo {v}",
        "echo 'a={v}'",
        'echo "a={v}"',
        "echo $(echo {v})",
        'echo "$(echo "{v}")"',
        "echo ok # {v}",
        'f() { echo "$1"; }; f {v}',
        "echo 'a'\"b{v}c\"'d'",
    ]
    for i, ctx in enumerate(contexts):
        d = base / f"q{i}"
        d.mkdir()
        sweep = (
            "version: 1\nname: q\nshell: true\n" + f"command: {json.dumps(ctx)}\nparameters: {{v: {json.dumps(values)}}}\n"
            "memory: 1GiB\nfleet: [{gpu: A30, count: 1}]\n"
        )
        (d / "s.yaml").write_text(sweep)
        r = migbench("plan", "s.yaml", "-o", "s.plan.yaml", "--no-runs", cwd=d)
        if r.returncode != 0:
            tally.add("4. shell quoting", _bad(r), r.stderr)  # refused: fine, unless it crashed
            continue
        from migbench import yamlio

        for run in yamlio.load((d / "s.plan.yaml").read_text())["runs"]:
            work = d / run["id"]
            work.mkdir()
            subprocess.run(run["argv"], cwd=work, capture_output=True, timeout=30)
            tally.add("4. shell quoting", (work / "pwned").exists(), f"{ctx!r} with {run['params']['v']!r}: {run['argv'][2]!r}")


# -- 5. secrets -------------------------------------------------------------------------------------


def secret_cases(base: Path, eve: tuple[int, int], tally: Tally) -> None:
    d = base / "secret"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    token = "tok_" + os.urandom(8).hex()
    (d / "s.yaml").write_text(SWEEP + f"env: {{API_TOKEN: {token}}}\n")
    os.chmod(d / "s.yaml", 0o600)
    old = os.umask(0o022)
    try:
        r = migbench("plan", "s.yaml", "-o", "s.plan.yaml", "--no-runs", cwd=d)
        assert r.returncode == 0, r.stderr
        r = migbench("export", "k8s", "s.plan.yaml", "-o", str(d / "k8s"), cwd=d)
        assert r.returncode == 0, r.stderr
    finally:
        os.umask(old)
    for f in sorted(p for p in d.rglob("*") if p.is_file() and p.name != "s.yaml"):
        got = as_eve(eve, ["cat", str(f)])
        tally.add("5. secrets: eve reads root's plan and export", token in got.stdout, str(f))


# -- 6. fuzz ----------------------------------------------------------------------------------------

TAGS = ["!!int", "!!float", "!!bool", "!!timestamp", "!!str", "!!null", "!!binary", "!!map", "!!seq", "!!set", "!!omap", "!!python/name:os.system"]
SCALARS = ["abc", "0x", "-.inf", ".nan", "1e999", "0o8", "2020-13-45", "", "~", "[", "'", "9" * 400]


def _mutate(text: str, rng: random.Random) -> str:
    lines = text.splitlines()
    roll = rng.random()
    i = rng.randrange(len(lines))
    if roll < 0.5 and ": " in lines[i]:  # an explicit tag on a value
        k, _, v = lines[i].partition(": ")
        v = rng.choice([v, rng.choice(SCALARS)])
        lines[i] = f"{k}: {rng.choice(TAGS)} {v}"
    elif roll < 0.7 and ": " in lines[i]:  # deep nesting
        k, _, _ = lines[i].partition(": ")
        n = rng.choice([50, 99, 101, 300, 500, 2000])
        lines[i] = f"{k}: " + rng.choice(["[" * n + "]" * n, "{a: " * n + "1" + "}" * n])
    elif roll < 0.85 and ": " in lines[i]:  # a big list
        k, _, _ = lines[i].partition(": ")
        lines[i] = f"{k}: [" + ", ".join(["1"] * rng.choice([10, 1000, 60_000])) + "]"
    else:  # anything at all
        lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)] + rng.choice(["&a", "*a", "!!int ", "<<: *a", "? ", "- ", "\t", "{", "]"])
    return "\n".join(lines) + "\n"


def fuzz(base: Path, n: int, seed: int, tally: Tally) -> dict[str, float]:
    rng = random.Random(seed)
    d = base / "planned"
    good = {
        "sweep": (d / "s.yaml").read_text(),
        "plan": (d / "s.plan.yaml").read_text(),
        "footprints": "version: 1\nkind: migbench-footprints\nsweep: s\nsweep_sha256: ''\nmeasurements:\n  - run: s-0\n    group: s\n"
        "    peak_mib: 100\n    instance_mib: 9728\n    outcome: completed\n    how: nvml\n",
        "fleet file": "- node: n1\n  gpu: A100-SXM4-80GB\n  count: 1\n",
        "catalogue": "version: 1\nmodels:\n  X1:\n    same_as: A100-SXM4-80GB\n    architecture: ampere\n    compute_slices: 7\n    memory_slices: 8\n",
    }
    f = base / "fuzz-input.yaml"
    cmd = {
        "sweep": (["plan", str(f), "-o", str(base / "fz.plan.yaml"), "--no-runs"], {}),
        "plan": (["simulate", str(f)], {}),
        "footprints": (["plan", str(d / "s.yaml"), "-o", str(base / "fz.plan.yaml"), "--no-runs", "--footprints", str(f)], {}),
        "fleet file": (["plan", str(d / "s.yaml"), "-o", str(base / "fz.plan.yaml"), "--no-runs", "--fleet-file", str(f)], {}),
        "catalogue": (["catalog"], {"MIGBENCH_CATALOG": str(f)}),
    }
    slowest: dict[str, float] = {}
    for loader, text in good.items():
        for _ in range(n):
            f.write_text(_mutate(text, rng))
            args, env = cmd[loader]
            t0 = time.monotonic()
            r = migbench(*args, env=env, cwd=d)
            slowest[loader] = max(slowest.get(loader, 0.0), time.monotonic() - t0)
            tally.add(f"6. fuzz: {loader}", _bad(r) or r.returncode not in (0, 1, 2), r.stderr[-300:] + f.read_text()[:200])
    from migbench.errors import InputError
    from migbench.sweep import load_fleet_file

    f.write_text("".join(f"- {{node: n{i}, gpu: A30, count: 1}}\n" for i in range(125_000 // 7)))
    t0 = time.monotonic()
    try:
        load_fleet_file(f)
        why = "loaded"
    except InputError as exc:
        why = exc.render()
    took = time.monotonic() - t0
    t0 = time.monotonic()
    r = migbench("plan", str(d / "s.yaml"), "-o", str(base / "fz.plan.yaml"), "--fleet-file", str(f), cwd=d)
    cli = time.monotonic() - t0
    f.write_text("- {node: n1, gpu: A30, count: 1}\n")
    t0 = time.monotonic()
    migbench("plan", str(d / "s.yaml"), "-o", str(base / "fz.plan.yaml"), "--fleet-file", str(f), cwd=d)
    small = time.monotonic() - t0
    from migbench.plan import Plan

    plan_text = (d / "s.plan.yaml").read_text()
    assert "\nlaunch:\n" in plan_text
    f.write_text(plan_text.replace("\nlaunch:\n", "\nlaunch:\n  big: [" + ", ".join(["1"] * 26_000_000) + "]\n", 1))
    t0 = time.monotonic()
    try:
        Plan.load(f)
        plan_why = "loaded"
    except InputError as exc:
        plan_why = exc.render()
    plan_took = time.monotonic() - t0
    tally.add("6. plan with a 26M-item list refused", "more than 1,000,000 items" not in plan_why, plan_why)
    tally.add("6. 125,000-value fleet file refused", "more than 50,000 values" not in why or took > 1.0 or r.returncode != 1, f"{took:.2f} s: {why}")
    return {
        "125k-value fleet file: load_fleet_file refuses it in (s)": round(took, 3),
        "74 MiB plan with a 26M-item list: Plan.load refuses it in (s)": round(plan_took, 3),
        "  `plan --fleet-file` with it, whole command (s)": round(cli, 3),
        "  `plan --fleet-file` with a 1-GPU fleet file, whole command (s)": round(small, 3),
        **{f"slowest {k} input, whole command (s)": round(v, 3) for k, v in slowest.items()},
    }


def run(fuzz_n: int = 200, seed: int = 19, keep: bool = False) -> int:
    t0 = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="migbench-sec-"))
    eve, made_eve = _eve()
    tally = Tally()
    figures: dict[str, float] = {}
    try:
        _planned(base)
        if eve is None:
            print("not root: the state-dir, export-dir and secret cases need a second user (useradd) and are skipped")
        else:
            state_dir_cases(base, eve, tally)
            secret_cases(base, eve, tally)
        output_cases(base, eve, tally)
        export_cases(base, eve, tally)
        quoting_cases(base, tally)
        figures = fuzz(base, fuzz_n, seed, tally)
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
        if made_eve and eve is not None:
            subprocess.run(["userdel", EVE], capture_output=True)
    print(f"{'case':<48} {'trials':>7} {'holes':>6}")
    for case, row in tally.rows.items():
        print(f"{case:<48} {row['trials']:>7} {row['holes']:>6}")
        for ex in row["examples"]:
            print(f"    hole: {ex}")
    total = sum(r["trials"] for r in tally.rows.values())
    holes = sum(r["holes"] for r in tally.rows.values())
    print(f"{'total':<48} {total:>7} {holes:>6}")
    for k, v in figures.items():
        print(f"{k}: {v}")
    print(f"wall time: {time.monotonic() - t0:.0f} s")
    return 1 if holes else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fuzz", type=int, default=200, help="inputs per loader (default 200)")
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    sys.exit(run(args.fuzz, args.seed, args.keep))


if __name__ == "__main__":
    main()
