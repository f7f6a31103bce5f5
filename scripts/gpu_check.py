#!/usr/bin/env python
"""`laser-gpu-check` (laser_fairseq/cli/gpu_check.py), run from a checkout."""
from laser_fairseq.cli.gpu_check import main, parse_args  # noqa: F401 (parse_args: the docs check reads it)

if __name__ == "__main__":
    main()
