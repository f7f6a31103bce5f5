#!/usr/bin/env python
"""`laser-compare-pretraining` (laser_fairseq/cli/compare_pretraining.py), run from a checkout."""
from laser_fairseq.cli.compare_pretraining import main

if __name__ == "__main__":
    raise SystemExit(main())
