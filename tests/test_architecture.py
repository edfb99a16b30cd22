"""The rules of the layout, checked on the source (so a change that breaks one fails here, with
the file named):
- imports point one way: dashboard -> core; core never imports streamlit or the dashboard;
- inside core, down one stack: leaves (values, redact) <- errors <- config <- catalog <- store,
  blobs, fal <- photos <- batches, evaluation, export, models <- commands; nothing imports upward;
- the module graph has no cycle, counting imports inside functions and under TYPE_CHECKING;
- only the store package holds SQL (it is the seam behind which another engine could go), and it
  imports nothing of batches, photos, evaluation or the fal client;
- a page never starts a process, parses a log or talks SQL: it calls core's services."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SQL = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER|PRAGMA|BEGIN|COMMIT|ROLLBACK|WITH)\b")


def _sources(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _sql_strings(tree: ast.AST) -> list[str]:
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if SQL.match(node.value):
                found.append(node.value[:60])
        elif isinstance(node, ast.JoinedStr):
            head = node.values[0] if node.values else None
            if isinstance(head, ast.Constant) and isinstance(head.value, str) and SQL.match(head.value):
                found.append(head.value[:60])
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its source (top level, inside
    functions, under TYPE_CHECKING): `from pkg import sub` counts as an import of `pkg.sub`."""
    modules = {_module_name(p): p for p in _sources("core")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    deps.add(full if full in modules else base)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


GRAPH = _graph()
LEAVES = ("core.values", "core.rows", "core.redact", "core._imports", "core._surface")
STACK = [LEAVES, ("core.errors",), ("core.config", "core.processes"), ("core.catalog", "core.access"),
         ("core.store", "core.blobs", "core.fal"), ("core.photos",),
         ("core.batches", "core.evaluation", "core.export", "core.models"), ("core.commands", "core.cli", "core.__main__", "core")]


def _rank(module: str) -> int:
    best = None
    for rank, tops in enumerate(STACK):
        for top in tops:
            if (module == top or module.startswith(top + ".")) and (best is None or len(top) > best[1]):
                best = (rank, len(top))
    assert best is not None, f"{module} has no place in the stack: add its package to STACK"
    return best[0]


def test_the_module_graph_has_no_cycle():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:   # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down_the_stack(module):
    up = sorted(d for d in GRAPH[module] if _rank(d) > _rank(module))
    assert not up, f"{module} imports {up}, above it in the stack"


@pytest.mark.parametrize("leaf", ["core.values", "core.rows", "core.redact"])
def test_the_leaves_import_nothing_of_the_project(leaf):
    assert not GRAPH[leaf] - {"core._imports"}, f"{leaf} imports {sorted(GRAPH[leaf])}"


def test_errors_imports_only_leaves():
    assert GRAPH["core.errors"] <= set(LEAVES), f"core.errors imports {sorted(GRAPH['core.errors'])}"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith("core.store")))
def test_the_store_imports_nothing_of_the_services(module):
    bad = sorted(d for d in GRAPH[module]
                 if d.split(".")[1] in ("batches", "photos", "evaluation", "export", "fal", "commands"))
    assert not bad, f"{module} imports {bad}"


def test_the_graph_sees_every_kind_of_import():
    """The rules above are only as good as the graph: it must see imports inside functions and
    under TYPE_CHECKING, and the sibling a `from package import module` names."""
    assert "core.store.db" in GRAPH["core.store.store"]
    assert "core.photos.references" in GRAPH["core.batches.service"]          # inside a function
    assert "core.batches.schedule" in GRAPH["core.batches.service"]           # under TYPE_CHECKING


@pytest.mark.parametrize("path", _sources("core"), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_never_imports_streamlit_or_the_dashboard(path):
    bad = {m for m in _imports(ast.parse(path.read_text())) if m.split(".")[0] in ("streamlit", "dashboard")}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", [p for p in _sources("core") + _sources("dashboard")
                                  if "core/store" not in p.as_posix()], ids=lambda p: str(p.relative_to(ROOT)))
def test_sql_lives_only_in_the_store_package(path):
    tree = ast.parse(path.read_text())
    assert not _sql_strings(tree), f"{path.relative_to(ROOT)} holds SQL: {_sql_strings(tree)}"
    engines = {m for m in _imports(tree) if m.split(".")[0] in ("sqlite3", "sqlite_utils")}
    assert not engines, f"{path.relative_to(ROOT)} imports {sorted(engines)}: SQLite stays behind the Store"
    calls = [n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and n.func.attr in ("execute", "executemany", "executescript", "insert_all", "upsert_all")]
    assert not calls, f"{path.relative_to(ROOT)} talks to the database directly: {calls}"


@pytest.mark.parametrize("path", _sources("dashboard"), ids=lambda p: str(p.relative_to(ROOT)))
def test_pages_start_no_process_and_parse_no_log(path):
    tree = ast.parse(path.read_text())
    assert not _imports(tree) & {"subprocess", "core.processes"}, f"{path.relative_to(ROOT)} starts processes"
    opens = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
             and n.func.id == "open"]
    assert not opens, f"{path.relative_to(ROOT)} opens files (a log?): ask core instead"


LONG_BY_NATURE = {"core/batches/schedule.py", "core/store/migrations.py"}   # one job each (README)


@pytest.mark.parametrize("path", _sources("core") + _sources("dashboard"), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_a_room_with_several_tenants(path):
    """A module over 500 lines is split by responsibility, except the scheduler and the
    migrations list, whose length is their one job."""
    name = path.relative_to(ROOT).as_posix()
    lines = len(path.read_text().splitlines())
    assert name in LONG_BY_NATURE or lines <= 500, f"{name} has {lines} lines: split it by responsibility"
