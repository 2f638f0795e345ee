"""The architecture's rules that the linters do not check (ARCHITECTURE.md): no import cycle between
migbench's modules (lazy imports included), no module much over 800 lines, no function over 80 lines,
and a repo that cites only itself. (The complexity limit, C901 at 15, is ruff's: pyproject.toml.)"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import grimp

from tests.support import REPO

MAX_LINES = 850  # "about 800": a module past this is doing two jobs
MAX_FUNCTION_LINES = 80  # from `def` to the last line, decorators not counted

# The functions still over MAX_FUNCTION_LINES ("path:Qualified.name"). This list can only shrink: an
# entry that is no longer long fails the test too, so it is taken off when its function is split.
LONG_FUNCTIONS_ALLOWED: set[str] = set()


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root) & modules)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child) & modules))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_no_import_cycle_between_modules_lazy_imports_included():
    graph = grimp.build_graph("migbench", include_external_packages=False)
    # a package's __init__ re-exports its modules; an import of `migbench.x.y` is an edge to y, so
    # cycles through re-exports would show here too
    assert _cycles(graph, set(graph.modules)) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for m in ("a", "b", "c"):
        graph.add_module(m)
    graph.add_import(importer="a", imported="b")
    graph.add_import(importer="b", imported="c")
    graph.add_import(importer="c", imported="a")
    assert _cycles(graph, {"a", "b", "c"}) == [["a", "b", "c"]]


def test_no_module_is_much_over_800_lines():
    big = {str(p.relative_to(REPO)): n for p in (REPO / "migbench").rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert big == {}


def _long_functions(path: str, source: str, limit: int = MAX_FUNCTION_LINES) -> dict[str, int]:
    """The functions and methods in `source` (the file `path`) over `limit` lines, as
    "path:Qualified.name" -> lines (end_lineno - lineno + 1: the decorators are not counted)."""
    out: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef) and (n := (child.end_lineno or child.lineno) - child.lineno + 1) > limit:
                    out[f"{path}:{name}"] = n
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return out


def test_no_function_is_over_80_lines():
    long: dict[str, int] = {}
    for p in sorted((REPO / "migbench").rglob("*.py")):
        long |= _long_functions(str(p.relative_to(REPO)), p.read_text())
    new = {k: n for k, n in long.items() if k not in LONG_FUNCTIONS_ALLOWED}
    assert new == {}, f"split these into helpers (at most {MAX_FUNCTION_LINES} lines each)"
    assert LONG_FUNCTIONS_ALLOWED - long.keys() == set(), "no longer long: take them off LONG_FUNCTIONS_ALLOWED"


def test_a_long_function_is_found():
    """The check above can fail: a method over the limit is named by its class, and the decorator
    lines do not count."""
    source = "class A:\n    @staticmethod\n    def f():\n        a = 1\n        b = 2\n        return a + b\n\n\ndef g():\n    def h():\n        return 1\n\n    return h\n"
    assert _long_functions("m.py", source, limit=3) == {"m.py:A.f": 4, "m.py:g": 5}
    assert _long_functions("m.py", source, limit=1) == {"m.py:A.f": 4, "m.py:g": 5, "m.py:g.h": 2}
    assert _long_functions("m.py", source, limit=5) == {}


_TEXT = (".py", ".md", ".yaml", ".yml", ".txt", ".toml", ".cfg", ".sh")
_NOTE = re.compile(r"[A-Z][A-Z0-9_-]*\.md\b")  # a notes file named the way README.md is
_UP = re.compile(r"(?<![.\w])(?:\.\./)+[\w.-][\w./-]*")  # a relative path that climbs


def _tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True)
    if out.returncode == 0:  # a checkout; else (an sdist) every file below the repo
        files = [REPO / f for f in out.stdout.split("\0") if f]
    else:
        files = [p for p in REPO.rglob("*") if ".venv" not in p.parts and ".git" not in p.parts]
    return [p for p in files if p.suffix in _TEXT and p.is_file() and p.name != "test_architecture.py"]  # its examples


def _citations_outside(path: Path, text: str, names: set[str]) -> list[str]:
    """What `text` (the file `path`) cites that the repo does not hold: a notes file (`NAME.md`)
    the repo has no file of that name for, unless it is part of a URL or a `repo:path` citation; and
    a relative path that climbs out of the repo from the file's folder. Test files keep climbing
    paths on purpose (hostile input), so only their notes-file names count."""
    hits = []
    for line_no, line in enumerate(text.splitlines(), 1):
        for token in line.split():
            for m in _NOTE.finditer(token):
                if ":" not in token[: m.start()] and m.group() not in names:
                    hits.append(f"{path.relative_to(REPO)}:{line_no}: {m.group()}")
        if path.relative_to(REPO).parts[0] == "tests":
            continue
        for m in _UP.finditer(line):
            target = (path.parent / m.group()).resolve()
            if target != REPO and REPO not in target.parents:
                hits.append(f"{path.relative_to(REPO)}:{line_no}: {m.group()}")
    return hits


def test_the_repo_cites_no_file_outside_itself():
    files = _tracked_text_files()
    names = {p.name for p in files} | {p.name for p in REPO.rglob("*.md") if ".venv" not in p.parts}
    hits = [h for p in files for h in _citations_outside(p, p.read_text(errors="replace"), names)]
    assert hits == [], "cite docs/ (and the public sources there) instead:\n" + "\n".join(hits)


def test_a_citation_outside_the_repo_is_found():
    """The check above can fail: a notes file the repo lacks and a path out of it are found, while a
    public `repo:path` citation, a URL and the repo's own files are not."""
    names = {"README.md", "mig-facts.md"}
    text = "see ../../workshop/notes.txt and NOTES.md\nsee docs/mig-facts.md, README.md, acme/tool:docs/DESIGN.md, https://x.org/GUIDE.md\n"
    hits = _citations_outside(REPO / "docs" / "x.md", text, names)
    assert hits == ["docs/x.md:1: NOTES.md", "docs/x.md:1: ../../workshop/notes.txt"]


def test_the_command_line_starts_without_the_core():
    """Regression: `migbench --help` once imported OR-Tools, the simulator and the launcher (0.4-3 s)."""
    import sys

    code = (
        "import sys, migbench.cli.app; heavy = ('ortools', 'pynvml', 'psutil', 'sqlite3', 'migbench.planner', "
        "'migbench.backend.sim', 'migbench.launch.supervisor', 'migbench.apply'); "
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"
