"""The import graph of laser_fairseq/ (read with ast, nothing imported): no cycle between package modules, no
package module importing a script, a benchmark or a dev tool; no ``sys.path`` manipulation in the repository's
Python files; scripts/*.py are short front doors.

Every ``import`` counts, at module level or inside a function: a function-local import that closes a cycle
still ties the two modules together (each needs the other to do its job), it only hides the cycle from the
interpreter until the call. Imports of third-party libraries (the optional, lazily imported dependencies
among them) never make a cycle here, since only edges between package modules are followed.

An import of ``a.b.c`` is an edge to ``a.b.c`` (not to the packages ``a`` and ``a.b`` Python initialises on
the way); ``from a.b import name`` is an edge to ``a.b.name`` when that is a module, else to ``a.b``.
"""

from __future__ import annotations

import ast
import os
import subprocess
from typing import Dict, Iterator, List, Optional, Set
from laser_fairseq.checkout import REPO


PACKAGE = "laser_fairseq"
TOOL_FOLDERS = ("scripts", "benchmarks", "dev")
SCRIPT_LINES = 150


def package_modules() -> Dict[str, str]:
    """Dotted module name -> file, for every module of the package (``pkg/__init__.py`` is ``pkg``)."""
    modules = {}
    for root, folders, files in os.walk(os.path.join(REPO, PACKAGE)):
        folders[:] = sorted(folder for folder in folders if folder != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                parts = os.path.relpath(os.path.join(root, name), REPO)[:-3].split(os.sep)
                modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = os.path.join(root, name)
    return modules


def imported_names(path: str, module: str, is_package: bool, modules=()) -> Iterator[str]:
    """Absolute dotted names the import statements of ``path`` (module ``module``) import: ``from a import b``
    gives ``a.b`` when that is one of ``modules``, else ``a``."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            for alias in node.names:
                yield f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in modules else prefix


def import_graph() -> Dict[str, Set[str]]:
    """Package module -> the package modules it imports."""
    modules = package_modules()
    return {module: {name for name in imported_names(path, module, path.endswith("__init__.py"), modules)
                     if name in modules and name != module}
            for module, path in modules.items()}


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found = []

    def visit(node: str):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def repository_python_files() -> List[str]:
    """The .py files git tracks or would track (untracked, not ignored), relative to the repository."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split()
    return sorted(path for path in set(listed) if os.path.exists(os.path.join(REPO, path)))


def sys_path_changes(path: str) -> List[int]:
    """Lines of ``path`` that change ``sys.path`` (a call of one of its methods, or an assignment to it)."""
    tree = ast.parse(open(os.path.join(REPO, path), encoding="utf-8").read(), path)

    def is_sys_path(node) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name)
                and node.value.id == "sys")

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and is_sys_path(node.func.value):
            if node.func.attr in ("insert", "append", "extend", "remove", "pop", "clear", "__setitem__"):
                lines.append(node.lineno)
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if is_sys_path(target) or (isinstance(target, ast.Subscript) and is_sys_path(target.value)):
                    lines.append(node.lineno)
    return sorted(lines)


def script_problem(path: str) -> Optional[str]:
    lines = len(open(os.path.join(REPO, path), encoding="utf-8").read().splitlines())
    return f"{path}: {lines} lines (at most {SCRIPT_LINES}: argument parsing and a call into the package)" \
        if lines > SCRIPT_LINES else None


# ------------------------------------------------------------------------------------------------ the graph


def test_no_import_cycle_between_package_modules():
    found = cycles(import_graph())
    assert not found, "import cycles (each a set of modules that import each other):\n" + "\n".join(
        " <-> ".join(component) for component in found)


def test_no_package_module_imports_a_script_a_benchmark_or_a_dev_tool():
    tools = {name[:-3] for folder in TOOL_FOLDERS for name in os.listdir(os.path.join(REPO, folder))
             if name.endswith(".py")} | set(TOOL_FOLDERS)
    problems = []
    for module, path in package_modules().items():
        for name in imported_names(path, module, path.endswith("__init__.py")):
            if name.split(".")[0] in tools - {"__init__"}:
                problems.append(f"{os.path.relpath(path, REPO)}: imports {name}")
    assert not problems, "\n".join(sorted(set(problems)))


def test_the_graph_reader_finds_cycles_and_resolves_relative_imports(tmp_path):
    """The checks above could pass by reading nothing: a known graph and known imports."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    source = tmp_path / "m.py"
    source.write_text("from ..data.manifest import read_manifest\nfrom . import files\n"
                      "def f():\n    import laser_fairseq.losses.soft_dtw\n")
    names = set(imported_names(str(source), "laser_fairseq.analysis.m", False, {"laser_fairseq.analysis.files"}))
    assert names == {"laser_fairseq.data.manifest", "laser_fairseq.analysis.files", "laser_fairseq.losses.soft_dtw"}
    graph = import_graph()
    assert "laser_fairseq.data.manifest" in graph["laser_fairseq.cli.absolute_manifests"]
    assert "laser_fairseq.files" in graph["laser_fairseq.data.voice_split"]


# ------------------------------------------------------------------------------------------------ sys.path


def test_no_python_file_changes_sys_path():
    problems = [f"{path}:{line}" for path in repository_python_files()
                for line in sys_path_changes(path)]
    assert not problems, "sys.path changed (the package is installed; tests import it as is):\n" + "\n".join(problems)


def test_the_sys_path_reader_sees_every_form(tmp_path):
    (tmp_path / "x.py").write_text("import sys\nsys.path.insert(0, 'a')\nsys.path.append('b')\n"
                                   "sys.path = ['c']\nsys.path[0:0] = ['d']\nprint(sys.path)\n")
    assert sys_path_changes(str(tmp_path / "x.py")) == [2, 3, 4, 5]


# ------------------------------------------------------------------------------------------------ scripts


def test_scripts_and_their_front_doors_are_short():
    """scripts/NAME.py (the shims) and laser_fairseq/cli/NAME.py (the front doors they call) parse and call."""
    scripts = [f"{folder}/{name}" for folder in ("scripts", "laser_fairseq/cli")
               for name in sorted(os.listdir(os.path.join(REPO, folder))) if name.endswith(".py")]
    assert len(scripts) > 2 * 10
    problems = [script_problem(path) for path in scripts]
    assert not [problem for problem in problems if problem], "\n".join(filter(None, problems))


def module_constants(path: str, name: str) -> List[int]:
    """Lines of ``path`` that assign the module-level name ``name``."""
    tree = ast.parse(open(os.path.join(REPO, path), encoding="utf-8").read(), path)
    return [node.lineno for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name) and target.id == name]


def test_the_repository_root_has_one_home():
    """REPO (the checkout's root) is defined in laser_fairseq/checkout.py only; everything else imports it."""
    homes = [f"{path}:{line}" for path in repository_python_files() for line in module_constants(path, "REPO")]
    assert homes == ["laser_fairseq/checkout.py:7"]
