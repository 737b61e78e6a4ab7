"""The structure holds: every module imports on its own (no import cycles hiding behind import
order), views never import the runtime, and the example plugin uses only `gateway.sdk`."""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gateway", "drivers", "simulators")


def modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__main__" or "_pb2" in parts[-1]:
                continue
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def top_level_imports(path: Path) -> set[str]:
    """Modules imported at module level (imports inside functions are deferred on purpose);
    `from package import module` depends on the module, not on the package."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                is_module = (ROOT / submodule.replace(".", "/")).with_suffix(".py").exists()
                found.add(submodule if is_module else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_every_module_imports_on_its_own() -> None:
    script = ("import importlib, sys\nfor name in sys.argv[1:]:\n"
              "    importlib.import_module(name)\n")
    def import_alone(name: str) -> tuple[str, subprocess.CompletedProcess[str]]:
        return name, subprocess.run([sys.executable, "-c", script, name], capture_output=True,
                                    text=True, timeout=120, cwd=ROOT)

    # A fresh interpreter per module, so that import order cannot hide a cycle.
    with ThreadPoolExecutor(4) as pool:
        for name, result in pool.map(import_alone, modules()):
            assert result.returncode == 0, f"{name}: {result.stderr[-2000:]}"


def test_no_module_level_import_cycles() -> None:
    own = set(modules())
    graph = {name: {m for m in top_level_imports(ROOT / (name.replace(".", "/") + ".py"))
                    if m in own} if (ROOT / (name.replace(".", "/") + ".py")).exists()
             else set() for name in own}
    for name, path in ((n, ROOT / n.replace(".", "/") / "__init__.py") for n in own):
        if path.exists():
            graph[name] = {m for m in top_level_imports(path) if m in own}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> None:
        if node in done:
            return
        assert node not in visiting, "import cycle: " + " -> ".join([*visiting, node])
        visiting.append(node)
        for child in sorted(graph.get(node, ())):
            visit(child)
        visiting.pop()
        done.add(node)

    for name in sorted(graph):
        visit(name)


def test_views_do_not_import_the_runtime() -> None:
    for view in ("gateway/http_server.py", "gateway/http_access.py", "gateway/live.py",
                 "gateway/state.py"):
        source = (ROOT / view).read_text()
        assert "gateway.runtime" not in source, view


@pytest.mark.parametrize("module", ["__init__.py", "jsonl_sink.py"])
def test_the_example_plugins_import_only_the_sdk(module: str) -> None:
    source = ROOT / "examples" / "gateway-hoststats" / "gateway_hoststats" / module
    gateway_imports = {m for m in top_level_imports(source)
                       if m.split(".")[0] in PACKAGES}
    assert gateway_imports == {"gateway.sdk"}
