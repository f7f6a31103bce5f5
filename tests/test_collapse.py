"""Collapse indicators against known answers and a brute-force reference."""

import math

import numpy as np
import pytest

from laser_fairseq.analysis.collapse import effective_rank, mean_pairwise_cosine


def brute_force_mean_cosine(frames):
    units = frames / np.linalg.norm(frames, axis=1, keepdims=True)
    similarities = units @ units.T
    n = len(frames)
    return (similarities.sum() - np.trace(similarities)) / (n * (n - 1))


def test_mean_cosine_equals_brute_force():
    frames = np.random.default_rng(0).normal(size=(50, 7)) + 0.5
    assert mean_pairwise_cosine(frames) == pytest.approx(brute_force_mean_cosine(frames), abs=1e-12)


def test_mean_cosine_known_answers():
    same_direction = np.outer(np.arange(1, 6), [3.0, -1.0, 2.0])
    assert mean_pairwise_cosine(same_direction) == pytest.approx(1.0)
    assert mean_pairwise_cosine(np.eye(6)) == pytest.approx(0.0, abs=1e-15)
    opposite = np.array([[1.0, 0.0], [-1.0, 0.0]])
    assert mean_pairwise_cosine(opposite) == pytest.approx(-1.0)
    # a zero frame counts as cosine 0 with the others
    assert mean_pairwise_cosine(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])) == pytest.approx(2 / 6)


def test_effective_rank_known_answers():
    rng = np.random.default_rng(1)
    line = np.outer(rng.normal(size=200), rng.normal(size=16))
    assert effective_rank(line) == pytest.approx(1.0, abs=1e-6)
    # k orthogonal directions of equal spread: +-1 on each axis of a k-dim subspace
    k = 5
    basis = np.linalg.qr(rng.normal(size=(16, k)))[0].T  # (k, 16) orthonormal rows
    frames = np.concatenate([basis, -basis]) * 3.0
    assert effective_rank(frames) == pytest.approx(k, rel=1e-9)
    assert math.isnan(effective_rank(np.ones((4, 3))))


def test_effective_rank_matches_svd_of_centred_frames():
    frames = np.random.default_rng(2).normal(size=(40, 6)) * np.array([5, 4, 3, 2, 1, 0.5])
    singular = np.linalg.svd(frames - frames.mean(axis=0), compute_uv=False)
    p = singular / singular.sum()
    assert effective_rank(frames) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-9)


@pytest.mark.parametrize("measure", [mean_pairwise_cosine, effective_rank])
def test_bad_shapes_are_refused(measure):
    with pytest.raises(ValueError, match="N >= 2"):
        measure(np.ones((1, 3)))
    with pytest.raises(ValueError, match="N >= 2"):
        measure(np.ones(3))
