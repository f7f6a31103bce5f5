#!/usr/bin/env python
"""`laser-pretrain-hubert` (laser_fairseq/cli/pretrain_hubert.py), run from a checkout."""
from laser_fairseq.cli.pretrain_hubert import main

if __name__ == "__main__":
    raise SystemExit(main())
