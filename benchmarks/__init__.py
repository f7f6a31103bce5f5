"""The project's benchmarks (``make bench``): each module runs as ``python benchmarks/<name>.py`` and writes
``results/<name>.json`` when given ``--out``; tests import them from the repository root (docs/scripts.md)."""
