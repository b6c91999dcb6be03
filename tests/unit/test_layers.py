"""The package's import graph has no cycles: every module can be read, and
tested, on top of what it imports, and a change low down is seen by what is
above it only."""

import ast
from pathlib import Path

import bootc_box

PACKAGE = Path(bootc_box.__file__).parent


def imports(path: Path) -> set[str]:
    """The bootc_box modules `path` imports, at any depth of its code."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "bootc_box":
                names |= {alias.name for alias in node.names}
            elif node.module.startswith("bootc_box."):
                names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("bootc_box.")}
    return names


def import_graph() -> dict[str, set[str]]:
    modules = {p.stem: p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return {name: imports(path) & modules.keys() for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        for imported in sorted(graph[name]):
            if cycle := visit(imported, [*path, name]):
                return cycle
        done.add(name)
        return None

    for name in sorted(graph):
        if cycle := visit(name, []):
            return cycle
    return None


def test_the_cycle_finder_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_module_imports_itself_back() -> None:
    graph = import_graph()
    assert len(graph) > 40, "the package's modules were found"
    assert find_cycle(graph) is None


def imported_by(graph: dict[str, set[str]], name: str) -> set[str]:
    """Every module `name` imports, directly or through others."""
    found: set[str] = set()
    todo = [name]
    while todo:
        for imported in graph[todo.pop()] - found:
            found.add(imported)
            todo.append(imported)
    return found


def test_commands_that_only_look_do_not_sit_on_the_boot_stack() -> None:
    graph = import_graph()
    # list, inspect, ssh, stop, rm, logs; cp; cache ls/prune; images.
    for command in ("manage", "transfer", "cache", "bootable"):
        assert "launch" not in imported_by(graph, command), command
    assert "launch" in imported_by(graph, "cli")
