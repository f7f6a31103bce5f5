"""Layer-wise analysis of HuBERT / WavLM upstreams: where input detail, voice and content live.

- ``measures``     the four original measures as pure functions on arrays (CKA, DTW invariance, voice probe,
                   retrieval)
- ``phone_probe``  the phone probe (LDA from streamed statistics), frame accuracy, phone error rate
- ``utterances``   manifest entries with their voice / sentence ids from side files
- ``phone_labels`` frame phone labels of a manifest (``{split}.phn``, ``dict.phn.txt``) and the probe's data
- ``alignments``   forced-aligner output (TextGrid, CTM-like text) -> frame phone labels
- ``features``     per-layer frames of an utterance and of its perturbed copy, log-mel frames
- ``layerwise``    the measures for every layer of one upstream
- ``report``       CSV, markdown, PNG plots and a JSON summary
- ``run``          one analysis run: checkpoint A (and B) on the same utterances, and its output files
- ``collapse``     two collapse indicators of one layer's frames (mean pairwise cosine, effective rank)
- ``abx_fastabx``  the thin layer over fastabx: item files and the triphone ABX task
- ``abx``          ABX within / across voices of every layer of an upstream and of its inputs
- ``abx_run``      one ABX run folder (``abx.json``)

The command lines are ``scripts/analyze_layers.py`` and ``scripts/abx.py``; docs/analysis.md explains how to read the results,
docs/phone_probe.md the phone probe and ``scripts/alignments_to_frame_labels.py``.
"""
