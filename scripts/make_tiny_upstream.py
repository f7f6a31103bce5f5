#!/usr/bin/env python
"""`laser-make-tiny-upstream` (laser_fairseq/cli/make_tiny_upstream.py), run from a checkout."""
from laser_fairseq.cli.make_tiny_upstream import main

if __name__ == "__main__":
    raise SystemExit(main())
