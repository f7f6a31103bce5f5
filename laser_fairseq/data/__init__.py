"""Manifests, audio checks, perturbations and the paired dataset of the ``laser`` task."""
