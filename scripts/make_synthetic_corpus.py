#!/usr/bin/env python
"""`laser-make-synthetic-corpus` (laser_fairseq/cli/make_synthetic_corpus.py), run from a checkout."""
from laser_fairseq.cli.make_synthetic_corpus import main

if __name__ == "__main__":
    raise SystemExit(main())
