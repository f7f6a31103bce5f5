#!/usr/bin/env python
"""`laser-run-demo` (laser_fairseq/cli/run_demo.py), run from a checkout: what `make demo` runs."""
from laser_fairseq.cli.run_demo import main, parse_args  # noqa: F401 (parse_args: the docs check reads it)
# Until scripts/gpu_check.py and tests/laser_runs.py import them from laser_fairseq.demo (issue 26):
from laser_fairseq.demo import demo_train_command, logged_values  # noqa: F401,E402

if __name__ == "__main__":
    main()
