#!/usr/bin/env python
"""Layer-wise analysis of a HuBERT / WavLM upstream (laser_fairseq/cli/analyze_layers.py; `--help`)."""
from laser_fairseq.cli.analyze_layers import main, parse_args  # noqa: F401 (parse_args: tests/test_docs.py)

if __name__ == "__main__":
    main()
