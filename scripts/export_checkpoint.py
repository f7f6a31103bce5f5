#!/usr/bin/env python
"""Export a LASER training checkpoint in its upstream's original format: laser_fairseq/cli/export_checkpoint.py."""
from laser_fairseq.cli.export_checkpoint import main, parse_args  # noqa: F401 (parse_args: tests/test_docs.py)

if __name__ == "__main__":
    main()
