#!/usr/bin/env python
"""`laser-run-demo` (laser_fairseq/cli/run_demo.py), run from a checkout: what `make demo` runs."""
from laser_fairseq.cli.run_demo import main, parse_args  # noqa: F401 (parse_args: the docs check reads it)

if __name__ == "__main__":
    main()
