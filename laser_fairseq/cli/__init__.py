"""Front doors of the user commands: one module a command, each ``parse_args(argv)`` + ``main(argv=None)``
that validates the arguments and makes one call into the package.

Each runs as a console command (``laser-<name>``, pyproject ``[project.scripts]``) and as
``python scripts/<name>.py`` (a shim that imports ``main``); docs/scripts.md lists them.
"""
