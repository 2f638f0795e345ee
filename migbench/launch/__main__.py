"""`python -m migbench.launch PLAN [--state-dir DIR] [--drain] [--no-lend] [--force] [--resume-unknown]`: the
supervisor in the foreground, without the typer CLI (what `migbench launch --detach` starts)."""

from __future__ import annotations

import argparse
import sys

from migbench.errors import MigbenchError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m migbench.launch")
    ap.add_argument("plan")
    ap.add_argument("--state-dir")
    ap.add_argument("--drain", action="store_true")
    ap.add_argument("--no-lend", action="store_true")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--resume-unknown", action="store_true")
    args = ap.parse_args(argv)
    from migbench.launch.options import LaunchOptions
    from migbench.launch.supervisor import launch
    from migbench.plan import Plan
    from migbench.state import StateDir

    try:
        plan = Plan.load(args.plan, regular=True, runs=True)  # its commands run: one another user could have written is refused
        sd = StateDir.of(plan, args.state_dir)
        res = launch(plan, LaunchOptions(state_dir=sd, drain=args.drain, lend=not args.no_lend, force=args.force, resume_unknown=args.resume_unknown))
    except MigbenchError as err:
        print(err.render(), file=sys.stderr)
        return err.exit_code
    return res.exit_code


if __name__ == "__main__":
    sys.exit(main())
