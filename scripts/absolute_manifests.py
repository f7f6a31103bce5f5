#!/usr/bin/env python
"""`laser-absolute-manifests` (laser_fairseq/cli/absolute_manifests.py), run from a checkout."""
from laser_fairseq.cli.absolute_manifests import main

if __name__ == "__main__":
    raise SystemExit(main())
