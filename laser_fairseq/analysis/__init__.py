"""Layer-wise analysis of HuBERT / WavLM upstreams: where input detail, voice and content live.

- ``measures``   the four measures as pure functions on arrays (CKA, DTW invariance, voice probe, retrieval)
- ``utterances`` manifest entries with their voice / sentence ids from side files
- ``features``   per-layer frames of an utterance and of its perturbed copy, log-mel frames
- ``layerwise``  the measures for every layer of one upstream
- ``report``     CSV, markdown, PNG plots and a JSON summary

The command line is ``scripts/analyze_layers.py``; README.md ("Layer-wise analysis") explains how to read the results.
"""
