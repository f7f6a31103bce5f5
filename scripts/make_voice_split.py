#!/usr/bin/env python
"""`laser-make-voice-split` (laser_fairseq/cli/make_voice_split.py), run from a checkout."""
from laser_fairseq.cli.make_voice_split import main

if __name__ == "__main__":
    raise SystemExit(main())
