"""Development tools (mutation testing, ``make mutate``): each module runs as ``python dev/<name>.py`` from the
repository root; tests import them from there (docs/contributing.md)."""
