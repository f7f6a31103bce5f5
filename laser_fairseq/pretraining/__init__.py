"""Iterative / progressive HuBERT pretraining on fairseq's own ``hubert_pretraining`` task and ``hubert`` model.

- ``schedule``         the schedule YAML: iterations (targets, clusters, updates, warm start), validated
- ``stamps``           stage stamps: skip finished stages, resume interrupted ones, refuse changed settings
- ``run_data``         the run's copy of the corpus manifests (absolute audio roots) and side files
- ``features``         MFCC / HuBERT-layer frame features dumped in shards (fairseq's simple_kmeans layout)
- ``kmeans``           MiniBatchKMeans on a sample, frame labels, ``dict.km.txt``
- ``cluster_quality``  phone purity, cluster purity, PNMI of the targets against frame phone labels
- ``training``         the fairseq-hydra-train command, warm-start init, resume, the final checkpoint
- ``layer_analysis``   the layer analysis of every iteration's model and of a random model
- ``report``           summary.json, markdown, CSV, PNG; schedule comparisons
- ``driver``           the stages of a schedule in order

The command line is ``scripts/pretrain_hubert.py``; examples/hubert_pretraining/README.md documents it.
"""
