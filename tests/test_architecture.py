"""The rules of the layout, checked on the source (so a change that breaks one fails here, with
the file named):
- imports point one way: dashboard -> core; core never imports streamlit or the dashboard;
- only the store package holds SQL (it is the seam behind which another engine could go);
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
