#!/usr/bin/env python
"""`laser-alignments-to-frame-labels` (laser_fairseq/cli/alignments_to_frame_labels.py), run from a checkout."""
from laser_fairseq.cli.alignments_to_frame_labels import main

if __name__ == "__main__":
    raise SystemExit(main())
