#!/usr/bin/env python
"""Export a LASER training checkpoint in its upstream's original format: laser_fairseq/cli/export_checkpoint.py."""
from laser_fairseq.cli.export_checkpoint import main

if __name__ == "__main__":
    main()
