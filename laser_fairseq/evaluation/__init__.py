"""LASER vs its ablations on one upstream: training the variants, measuring them, tabulating mean ± std."""
