#!/usr/bin/env python
"""SUPERB phone recognition of an upstream through s3prl's recipe (laser_fairseq/cli/superb_pr.py; `--help`)."""
from laser_fairseq.cli.superb_pr import main, parse_args  # noqa: F401 (parse_args: tests/test_docs.py)

if __name__ == "__main__":
    main()
