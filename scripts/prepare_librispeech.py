#!/usr/bin/env python
"""`laser-prepare-librispeech` (laser_fairseq/cli/prepare_librispeech.py), run from a checkout."""
from laser_fairseq.cli.prepare_librispeech import main

if __name__ == "__main__":
    raise SystemExit(main())
