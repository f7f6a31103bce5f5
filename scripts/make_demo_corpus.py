#!/usr/bin/env python
"""`laser-make-demo-corpus` (laser_fairseq/cli/make_demo_corpus.py), run from a checkout."""
from laser_fairseq.cli.make_demo_corpus import main, parse_args  # noqa: F401 (parse_args: the docs check reads it)

if __name__ == "__main__":
    raise SystemExit(main())
