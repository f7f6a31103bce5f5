#!/usr/bin/env python
"""`laser-make-demo-corpus` (laser_fairseq/cli/make_demo_corpus.py), run from a checkout."""
from laser_fairseq.cli.make_demo_corpus import main

if __name__ == "__main__":
    raise SystemExit(main())
