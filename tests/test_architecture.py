"""The architecture's rules that the linters do not check (ARCHITECTURE.md): no import cycle between
migbench's modules (lazy imports included), no module much over 800 lines, and a repo that cites only
itself."""

from __future__ import annotations

import subprocess

import grimp

from tests.support import REPO

MAX_LINES = 850  # "about 800": a module past this is doing two jobs


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


def test_the_repo_cites_no_file_outside_itself():
    pattern = r"\.\./shared|/work/shared|shared/mig|USERS\.md|FACTS\.md|facts-extra"
    out = subprocess.run(["git", "grep", "-n", "-E", pattern, "--", ".", ":!tests/test_architecture.py"], cwd=REPO,
                         capture_output=True, text=True)
    if out.returncode == 128:  # not a git checkout (an sdist): read the files instead
        import re

        hits = [str(p) for p in REPO.rglob("*") if p.is_file() and p.suffix in (".py", ".md", ".yaml", ".txt")
                and ".venv" not in p.parts and p.name != "test_architecture.py" and re.search(pattern, p.read_text(errors="replace"))]
        assert hits == []
    else:
        assert out.stdout == ""


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
