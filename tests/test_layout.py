"""The code's seams: no import cycles, the API and Flower import no worker code, the client installs alone."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = ("api", "settings", "tasks", "stack", "bench", "deploy", "client")


def module_name(path: Path) -> str:
    """inferq's name of a file of the repository (setup.cfg maps the repository to the inferq package)."""
    parts = ["inferq", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    files = [p for p in ROOT.glob("*.py")] + [p for d in PACKAGE_DIRS for p in (ROOT / d).rglob("*.py")]
    return {module_name(p): p for p in files}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules a file imports, anywhere in it (functions included).

    ``from pkg import name`` counts as importing pkg.name when that is a module, else pkg.
    """
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in modules else node.module)
    return {name for name in found if name in modules}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
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

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_among_the_projects_modules():
    modules = project_modules()
    graph = {name: imports_of(path, modules) - {name} for name, path in modules.items()}
    assert cycles(graph) == []


def test_the_cycle_finder_does_find_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def loaded_after(code: str) -> set[str]:
    """The top-level module names a fresh interpreter has loaded after running code."""
    probe = code + "\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "REDIS_URL": "redis://127.0.0.1:1/0"}, cwd="/")
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


@pytest.mark.parametrize("what,code", [
    ("the API", "from inferq.api import create_app; create_app()"),
    ("Flower's app", "from inferq.celery_app import app; app.loader.import_default_modules(); app.conf.broker_url"),
])
def test_only_workers_import_worker_code(what, code):
    loaded = loaded_after(code)
    assert not {m for m in loaded if m.startswith("inferq.tasks")}, f"{what} imports the workers' code"
    assert not loaded & {"torch", "transformers", "onnxruntime"}, f"{what} imports a model library"


def test_the_api_publishes_without_celery():
    # It pushes each job's message itself (api/publisher.py, wire.classify_envelope).
    loaded = loaded_after("from inferq.api import create_app; create_app()")
    assert not loaded & {"celery", "kombu"}


def test_the_client_imports_neither_flask_celery_nor_a_model_library():
    loaded = loaded_after("from inferq.client import cli; cli.parser()")
    assert not loaded & {"flask", "celery", "kombu", "torch", "transformers", "onnxruntime"}
