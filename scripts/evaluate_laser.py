#!/usr/bin/env python
"""What LASER does to one upstream (laser_fairseq/cli/evaluate_laser.py; `--help`)."""
from laser_fairseq.cli.evaluate_laser import main, parse_args  # noqa: F401 (parse_args: tests/test_docs.py)

if __name__ == "__main__":
    main()
