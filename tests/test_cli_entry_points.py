"""pyproject ``[project.scripts]``: every console command's target imports and is a ``main(argv=None)``, and
``python scripts/<name>.py`` runs the same ``main`` as ``laser-<name>``."""

import ast
import importlib
import importlib.util
import inspect
import os
import tomllib
from laser_fairseq.checkout import REPO


def console_commands() -> dict:
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as handle:
        return tomllib.load(handle)["project"]["scripts"]


def target_problem(command: str, target: str):
    """Why ``target`` (``module:function``) is not a console command's ``main(argv=None)``, or None."""
    module_name, _, function = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        return f"{command}: {module_name} does not import ({error})"
    main = getattr(module, function, None)
    if not callable(main):
        return f"{command}: {module_name} has no {function}()"
    if list(inspect.signature(main).parameters) != ["argv"]:
        return f"{command}: {target} takes {list(inspect.signature(main).parameters)}, not (argv=None)"
    return None


def test_every_console_command_target_imports():
    problems = [target_problem(command, target) for command, target in sorted(console_commands().items())]
    problems = [problem for problem in problems if problem]
    assert not problems, "missing or broken console command targets:\n" + "\n".join(problems)


def test_console_commands_are_named_after_their_module():
    for command, target in console_commands().items():
        module_name = target.partition(":")[0]
        assert module_name.startswith("laser_fairseq.cli.")
        assert command == "laser-" + module_name.rsplit(".", 1)[1].replace("_", "-")


def test_a_script_of_a_console_command_is_a_shim_of_its_main():
    """scripts/<name>.py of a laser_fairseq.cli module imports that module's main and only runs it."""
    shims = 0
    for target in console_commands().values():
        module_name = target.partition(":")[0]
        path = os.path.join(REPO, "scripts", module_name.rsplit(".", 1)[1] + ".py")
        if not os.path.exists(path) or importlib.util.find_spec(module_name) is None:
            continue  # the command's front door has not moved into laser_fairseq/cli yet
        tree = ast.parse(open(path, encoding="utf-8").read())
        imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
        assert [node.module for node in imports] == [module_name], path  # one import, of its front door
        assert "main" in [alias.name for alias in imports[0].names], path
        assert len([node for node in tree.body if not isinstance(node, ast.Expr)]) == 2, path  # import + __main__ guard
        shims += 1
    assert shims >= 8
