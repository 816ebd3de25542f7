"""The tree says the architecture (issue 23): a folder per role, imports one way only.

    protocol  <-  nodes  <-  orchestrator (the node)  <-  inspect  <-  cluster  <-  sim  <-  lab  <-  serve  <-  cli

A module may import its own layer and the layers to its left, never one to its right: the node
that runs in the orchestrator's process imports none of the tools, and no tool below the command
line knows the command line. Every import counts, the ones inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

from ..docblocks import ROOT

LAYERS = ["protocol", "nodes", "orchestrator", "orchestrator.inspect", "orchestrator.cluster", "orchestrator.sim",
          "orchestrator.lab", "orchestrator.serve", "orchestrator.cli"]
MAX_LINES = 420  # "about 400": a module past it is probably two
# "about 60" (issue 32): a function past it, from its def to its last line, nested ones in it
# included, is probably two
MAX_FUNCTION_LINES = 60


def layer(module: str) -> int:
    """The rank of the layer `module` belongs to (its longest matching prefix)."""
    best = -1
    for rank, name in enumerate(LAYERS):
        if module == name or module.startswith(name + "."):
            best = rank if best < 0 or len(name) > len(LAYERS[best]) else best
    return best


def modules() -> dict[str, Path]:
    found = {}
    for top in ("protocol", "nodes", "orchestrator"):
        for path in (ROOT / top).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(module: str, path: Path) -> list[tuple[str, int]]:
    """Every module `module` imports (absolute names), with its line."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, node.lineno))
            out += [(f"{target}.{alias.name}", node.lineno) for alias in node.names]  # a submodule by name
    return out


def test_imports_run_one_way_from_the_command_line_down_to_the_protocol():
    known = modules()
    wrong = []
    for module, path in known.items():
        own = layer(module)
        for target, line in imports(module, path):
            if target in known and layer(target) > own:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target} ({LAYERS[layer(target)]}, above "
                             f"{LAYERS[own]})")
    assert wrong == [], "\n".join(wrong)


def test_the_orchestrator_node_is_the_top_of_its_folder_and_the_tools_are_in_folders_by_role():
    top = sorted(p.stem for p in (ROOT / "orchestrator").glob("*.py"))
    assert top == ["__init__", "__main__", "core", "faults", "journal", "move", "move_paging", "move_rollback",
                   "move_state", "move_steps", "netns", "node", "processes"], top
    assert sorted(p.name for p in (ROOT / "orchestrator").iterdir() if p.is_dir() and p.name != "__pycache__") == \
        ["cli", "cluster", "inspect", "lab", "serve", "sim"]


def test_no_module_is_two():
    long = {str(p.relative_to(ROOT)): n for p in modules().values() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}, long


def test_no_function_is_two():
    long = []
    for path in modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                    (n := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert long == [], "\n".join(long)
