#!/usr/bin/env python
"""ABX phone discriminability of every layer of an upstream through fastabx (laser_fairseq/cli/abx.py; `--help`)."""
from laser_fairseq.cli.abx import main, parse_args  # noqa: F401 (parse_args: tests/test_docs.py)

if __name__ == "__main__":
    main()
