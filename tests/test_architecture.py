"""The package's layers, as docs/architecture.md draws them, checked from the source.

Every ``import`` of a wq_redis module counts, at any depth (inside functions too), except
under ``if TYPE_CHECKING:``.  A layer imports only itself and the layers it may use, and
no set of modules imports itself around a cycle.
"""

from __future__ import annotations

import ast
import os
import pathlib
import re
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "wq_redis"

# layer -> the layers it may import besides itself
ALLOWED = {
    "protocol": set(),
    "client": {"protocol"},
    "worker": {"protocol"},
    "worker.child": {"protocol"},
    # batch systems' command lines (submit, status, remove): knows nothing of queues or Redis
    "batch": set(),
    "embedded": {"protocol", "client", "worker", "batch"},
    "ops": {"protocol", "client", "worker", "embedded", "batch"},
    # TaskVine's names over the same engine: a facade like the package's own (its Manager is
    # embedded's WorkQueue, for the embedded Redis); never imported by the engine's layers
    "vine": {"protocol", "client", "embedded"},
    "": {"protocol", "client", "worker", "embedded", "ops", "batch"},  # the package's facade (__init__, __main__)
}


def _module_name(path: pathlib.Path) -> tuple[str, bool]:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and re.fullmatch(r"(typing\.)?TYPE_CHECKING", ast.unparse(node.test)):
            skipped.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return skipped


def _resolve(name: str) -> str:
    """The wq_redis module a dotted name refers to (a name imported from a module is that module)."""
    while name and not (
        (PACKAGE.parent / name.replace(".", "/")).with_suffix(".py").exists()
        or (PACKAGE.parent / name.replace(".", "/")).is_dir()
    ):
        name = name.rpartition(".")[0]
    return name


def imports_of(path: pathlib.Path) -> set[str]:
    """The wq_redis modules ``path`` imports, at every depth but ``TYPE_CHECKING``."""
    module, is_package = _module_name(path)
    package = module if is_package else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    skipped = _type_checking_nodes(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(_resolve(alias.name) for alias in node.names if alias.name.split(".")[0] == "wq_redis")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "wq_redis":
                continue
            for alias in node.names:
                found.add(_resolve(f"{source}.{alias.name}"))
    found.discard(module)
    return found


def graph() -> dict[str, set[str]]:
    return {_module_name(path)[0]: imports_of(path) for path in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str:
    parts = module.split(".")[1:]
    if parts[:2] == ["worker", "child"]:
        return "worker.child"
    return parts[0] if len(parts) > 1 or (parts and (PACKAGE / parts[0]).is_dir()) else ""


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def violations(edges: dict[str, set[str]]) -> list[str]:
    out = []
    for module, targets in sorted(edges.items()):
        source = layer_of(module)
        for target in sorted(targets):
            to = layer_of(target)
            if to == source or to in ALLOWED[source]:
                continue
            if source == "worker" and to == "worker.child":
                continue  # the worker starts its child and speaks its messages
            out.append(f"{module} ({source or 'facade'}) imports {target} ({to or 'facade'})")
    return out


def test_every_module_belongs_to_a_layer():
    flat = [m for m in graph() if layer_of(m) == "" and m not in ("wq_redis", "wq_redis.__main__")]
    assert flat == [], f"modules outside the layers: {flat}"


def test_imports_follow_the_layers():
    assert violations(graph()) == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_checker_sees_imports_inside_functions_and_ignores_type_checking(tmp_path, monkeypatch):
    fake = tmp_path / "wq_redis"
    (fake / "protocol").mkdir(parents=True)
    (fake / "client").mkdir()
    for name in ("__init__.py", "protocol/__init__.py", "client/__init__.py", "client/queue.py"):
        (fake / name).write_text("")
    (fake / "protocol" / "store.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ..client import queue\n"
        "def later():\n    from ..client.queue import WorkQueue\n"
    )
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    edges = graph()
    assert edges["wq_redis.protocol.store"] == {"wq_redis.client.queue"}
    assert violations(edges) == ["wq_redis.protocol.store (protocol) imports wq_redis.client.queue (client)"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("layer", ["protocol", "client", "worker", "embedded", "ops", "vine", "batch"])
def test_each_layer_is_a_package(layer):
    assert (PACKAGE / layer / "__init__.py").is_file()


def test_a_warm_child_imports_only_what_running_a_task_needs():
    """``python -m wq_redis.worker.child`` (the import, not the serving): the child package
    and the protocol modules a call needs; no client API, no worker module, no redis-py
    (its fast lane imports that on first use), no CLI or metrics libraries."""
    probe = (
        "import runpy, sys; sys.argv = ['child']; "
        "runpy.run_module('wq_redis.worker.child', run_name='probe'); "
        "print(' '.join(sorted(sys.modules)))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")])}
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env)
    modules = set(loaded.stdout.split())
    ours = {m for m in modules if m.startswith("wq_redis.")}
    assert "wq_redis.worker.child.process" in ours
    outside = {m for m in ours if not m.startswith(("wq_redis.worker.child", "wq_redis.protocol."))}
    assert outside == {"wq_redis.protocol", "wq_redis.worker"}  # the packages they live in
    assert modules.isdisjoint({"wq_redis.worker.child.lane", "redis", "click", "rich", "prometheus_client", "psutil"})
