"""The shape of the code, checked: one recorder, services free of the web framework, packages that
import each other in one direction, imports at the top of modules.

A package is a directory of dispatchd (``dispatchd.channels.hotline``); a module directly under
``dispatchd/`` (``dispatchd.cli``) is a node of its own.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dispatchd"


def modules() -> Iterator[tuple[str, Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        yield name, path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def is_http_edge(path: Path) -> bool:
    """web/, the api modules of each capability and the servers of the device ports know HTTP."""
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] == "web" or path.name == "api.py" or path.name.endswith("_server.py")


def node_of(module: str, path: Path) -> str:
    """The package a module belongs to (a top-level module is its own node)."""
    rel = path.relative_to(PACKAGE)
    if len(rel.parts) == 1:
        return module
    return "dispatchd." + ".".join(rel.parts[:-1])


def imported(tree: ast.Module, module: str, path: Path) -> Iterator[tuple[str, ast.stmt, bool]]:
    """(module imported, statement, at top level) for every import of a dispatchd module."""
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node, id(node) in top
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if path.name != "__init__.py":
                    base = base[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, node, id(node) in top
            for alias in node.names:
                yield f"{target}.{alias.name}", node, id(node) in top


def resolve(name: str, known: dict[str, Path]) -> str | None:
    """The dispatchd module an import names (the longest known prefix)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def test_only_the_store_writes_the_audit_log_and_the_outbox() -> None:
    """No module outside dispatchd/store/ inserts into, updates or deletes from audit_log or outbox."""
    write = re.compile(
        r"(INSERT\s+INTO|UPDATE|DELETE\s+FROM|COPY|TRUNCATE)\s+(audit_log|outbox)\b", re.IGNORECASE
    )
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for _, path, _ in modules()
        if path.relative_to(PACKAGE).parts[0] != "store"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if write.search(line)
    ]
    assert offenders == []


def test_services_do_not_know_the_web_framework() -> None:
    """Outside web/, the api modules and the port servers nothing imports aiohttp's web layer (its
    HTTP client is another matter), takes the aiohttp application, or raises an HTTP error."""
    offenders: list[str] = []
    for _, path, tree in modules():
        if is_http_edge(path):
            continue
        where = str(path.relative_to(ROOT))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "aiohttp":
                names = {a.name for a in node.names}
                if node.module.startswith("aiohttp.web") or names & {"web", "WSMsgType", "web_request"}:
                    offenders.append(f"{where}:{node.lineno} imports {node.module}")
            elif isinstance(node, ast.Import) and any(a.name.startswith("aiohttp.web") for a in node.names):
                offenders.append(f"{where}:{node.lineno} imports aiohttp.web")
            elif isinstance(node, ast.Attribute) and ast.unparse(node).startswith("aiohttp.web"):
                offenders.append(f"{where}:{node.lineno} uses aiohttp.web")
            elif isinstance(node, ast.arg) and node.annotation is not None:
                if "Application" in ast.unparse(node.annotation):
                    offenders.append(f"{where}:{node.lineno} takes the application ({node.arg})")
            elif isinstance(node, ast.Raise) and node.exc is not None:
                text = ast.unparse(node.exc)
                if re.match(r"(web\.HTTP|ApiError\b|HTTP[A-Z]\w*\()", text):
                    offenders.append(f"{where}:{node.lineno} raises {text[:40]}")
            elif isinstance(node, ast.ImportFrom) and node.module == "dispatchd.web.errors":
                offenders.append(f"{where}:{node.lineno} imports the HTTP errors")
    assert offenders == []


def test_packages_import_each_other_in_one_direction() -> None:
    """The graph of imports between dispatchd's packages has no cycle."""
    found = list(modules())
    known = {name: path for name, path, _ in found}
    graph: dict[str, set[str]] = {}
    for name, path, tree in found:
        here = node_of(name, path)
        graph.setdefault(here, set())
        for target, _, _ in imported(tree, name, path):
            resolved = resolve(target, known)
            if resolved is None:
                continue
            there = node_of(resolved, known[resolved])
            if there != here:
                graph[here].add(there)

    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == []


def test_imports_inside_functions_say_why() -> None:
    """An import written inside a function has a comment on its line or the line above saying why."""
    offenders: list[str] = []
    for name, path, tree in modules():
        lines = path.read_text(encoding="utf-8").splitlines()
        for _, node, at_top in imported(tree, name, path):
            if at_top or isinstance(getattr(node, "_seen", None), bool):
                continue
            node._seen = True  # type: ignore[attr-defined]  # one report per statement
            if _inside_type_checking(tree, node):
                continue
            line = lines[node.lineno - 1]
            above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
            if "#" not in line and not above.startswith("#"):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {line.strip()}")
    assert offenders == []


def _inside_type_checking(tree: ast.Module, target: ast.stmt) -> bool:
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            if any(child is target for child in ast.walk(node)):
                return True
    return False
