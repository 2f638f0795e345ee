"""Every command says what it does (`--help`) and the README names it."""

from __future__ import annotations

import re
from typing import Any

from typer.main import get_command

from migbench.cli import app
from tests.support import REPO
from tests.support.cli import migbench

README = (REPO / "README.md").read_text()


def _commands() -> list[tuple[str, Any]]:
    """(name, click command) of every command and sub-command (typer may bring its own click)."""
    out = []
    root: Any = get_command(app)
    for name, cmd in sorted(root.commands.items()):
        out.append((name, cmd))
        if hasattr(cmd, "commands"):
            out.extend((f"{name} {sub}", c) for sub, c in sorted(cmd.commands.items()))
    return out


def test_every_command_has_help_and_is_in_the_readme():
    names = [n for n, _ in _commands()]
    assert {"schema", "doctor", "plan", "sim init"} <= set(names)
    missing_help = [n for n, c in _commands() if not (c.help or c.short_help or "").strip()]
    assert not missing_help, missing_help
    missing = []
    for name, _ in _commands():
        if " " in name:
            group, sub = name.split(" ", 1)
            if not re.search(rf"`migbench {group} [^`]*\b{re.escape(sub)}\b", README):
                missing.append(name)
        elif f"`migbench {name}" not in README:
            missing.append(name)
    assert not missing, f"commands the README does not name: {missing}"


def test_the_new_options_are_in_the_readme_and_their_help():
    for flag in ("--check PLAN", "--capture DIR", "--from CAPTURE", "schema [-o FILE]", "--runs", "--force"):
        assert flag in README, flag
    for args, text in (
        (("plan", "--help"), "--check"),
        (("doctor", "--help"), "--capture"),
        (("sim", "init", "--help"), "--from"),
        (("schema", "--help"), "JSON Schema"),
    ):
        r = migbench(*args, env={"MIGBENCH_WIDTH": "200"})
        assert r.returncode == 0 and text in r.stdout, args
