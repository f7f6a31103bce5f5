"""The four layer-wise measures, as pure functions on arrays.

Shapes: a *sequence* is one utterance's frames, ``(T, C)``; *pooled frames* are the frames of many
utterances stacked, ``(N, C)``; *pooled vectors* are one mean-pooled ``(C,)`` vector per utterance stacked
into ``(U, C)``. Label lists (voice ids, sentence ids) have one entry per utterance.

- :func:`linear_cka` -- input likeness: linear CKA between a layer's frames and the log-mel frames;
- :func:`aligned_cosine_similarity` -- perturbation invariance: mean cosine similarity along the hard-DTW
  path between an utterance and its perturbed copy;
- :func:`voice_probe` -- voice information: accuracy of a ridge probe of the voice id on mean-pooled
  vectors, cross-validated with folds made of whole sentences (no sentence is in both train and test);
- :func:`cross_voice_retrieval` -- content: mean average precision of finding the same sentence spoken by
  other voices, ranked by length-normalised DTW cosine distance.

Everything is computed in float64 except the frame similarity matrices of the retrieval (float32 inputs
stay float32 there; the DTW sums run in float64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence

import numba
import numpy as np
from scipy.special import gammaln

# ----------------------------------------------------------------------------------------------------------
# input likeness: linear CKA


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019) between paired rows of ``x`` (n, p) and ``y`` (n, q), in [0, 1].

    CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) with column-centred Xc, Yc. It is 1 when one
    representation is an orthogonal transform and/or isotropic scaling of the other (plus a shift), and
    near 0 (a bias of order p*q/n^2 remains) for independent random features. NaN if either input is
    constant (no variance to compare).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka needs (n, p) and (n, q) arrays with the same n, got {x.shape}, {y.shape}")
    if x.shape[0] < 2:
        raise ValueError("linear_cka needs at least 2 rows")
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    self_x = np.linalg.norm(x.T @ x)
    self_y = np.linalg.norm(y.T @ y)
    if self_x == 0.0 or self_y == 0.0:
        return math.nan
    return float(np.linalg.norm(y.T @ x) ** 2 / (self_x * self_y))


# ----------------------------------------------------------------------------------------------------------
# hard DTW on cosine distance


@dataclass(frozen=True)
class DtwAlignment:
    total_cost: float  # sum of the cosine distances on the optimal path
    path_length: int  # number of cells on that path (max(n, m) <= length <= n + m - 1)

    @property
    def mean_cost(self) -> float:
        """Length-normalised DTW distance: the mean cosine distance along the optimal path."""
        return self.total_cost / self.path_length


@numba.njit(cache=True, nogil=True)
def _dtw_on_similarity(similarity, col_start, col_stop):  # pragma: no cover - compiled
    """Hard DTW over the cost 1 - similarity[:, col_start:col_stop]; returns (total cost, path length).

    Steps (i-1, j-1), (i-1, j), (i, j-1); the path runs from (0, 0) to (n-1, m-1). Among equal-cost
    predecessors the diagonal is preferred, then (i-1, j), then (i, j-1). Two rows of the DP are kept.
    """
    n = similarity.shape[0]
    m = col_stop - col_start
    previous_cost = np.empty(m, dtype=np.float64)
    previous_length = np.empty(m, dtype=np.int64)
    current_cost = np.empty(m, dtype=np.float64)
    current_length = np.empty(m, dtype=np.int64)
    for i in range(n):
        for j in range(m):
            cell = 1.0 - np.float64(similarity[i, col_start + j])
            if i == 0 and j == 0:
                best_cost = 0.0
                best_length = 0
            elif i == 0:
                best_cost = current_cost[j - 1]
                best_length = current_length[j - 1]
            elif j == 0:
                best_cost = previous_cost[j]
                best_length = previous_length[j]
            else:
                best_cost = previous_cost[j - 1]
                best_length = previous_length[j - 1]
                if previous_cost[j] < best_cost:
                    best_cost = previous_cost[j]
                    best_length = previous_length[j]
                if current_cost[j - 1] < best_cost:
                    best_cost = current_cost[j - 1]
                    best_length = current_length[j - 1]
            current_cost[j] = best_cost + cell
            current_length[j] = best_length + 1
        previous_cost, current_cost = current_cost, previous_cost
        previous_length, current_length = current_length, previous_length
    return previous_cost[m - 1], previous_length[m - 1]


@numba.njit(cache=True, nogil=True)
def _dtw_many(similarity, starts, stops, total_costs, path_lengths):  # pragma: no cover - compiled
    for k in range(starts.shape[0]):
        total_costs[k], path_lengths[k] = _dtw_on_similarity(similarity, starts[k], stops[k])


def unit_frames(frames: np.ndarray, dtype=np.float64) -> np.ndarray:
    """(T, C) frames scaled to unit L2 norm (all-zero frames stay zero: cosine 0 with everything)."""
    frames = np.asarray(frames, dtype=dtype)
    norms = np.linalg.norm(frames, axis=-1, keepdims=True)
    return frames / np.maximum(norms, np.finfo(dtype).tiny)


def cosine_similarity_matrix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n, C), (m, C) -> (n, m) float64 cosine similarities."""
    return unit_frames(x) @ unit_frames(y).T


def dtw_cosine(x: np.ndarray, y: np.ndarray) -> DtwAlignment:
    """Hard DTW between (n, C) and (m, C) frame sequences with cost = 1 - cosine similarity."""
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or not len(x) or not len(y):
        raise ValueError(f"dtw_cosine needs non-empty (n, C) and (m, C) sequences, got {x.shape}, {y.shape}")
    similarity = np.ascontiguousarray(cosine_similarity_matrix(x, y))
    total, length = _dtw_on_similarity(similarity, 0, similarity.shape[1])
    return DtwAlignment(float(total), int(length))


def aligned_cosine_similarity(x: np.ndarray, y: np.ndarray) -> float:
    """Perturbation invariance of one utterance: mean cosine similarity of the DTW-aligned frames.

    ``x`` (n, C) are the frames of the utterance, ``y`` (m, C) those of its perturbed copy. 1 when every
    aligned pair points the same way (e.g. ``y`` is ``x`` itself, or ``x`` with frames repeated).
    """
    return 1.0 - dtw_cosine(x, y).mean_cost


# ----------------------------------------------------------------------------------------------------------
# voice information: grouped cross-validated ridge probe

DEFAULT_RIDGE_STRENGTHS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)  # times the number of features


@dataclass(frozen=True)
class ProbeResult:
    accuracy: float  # fraction of utterances whose voice was predicted correctly, over all outer test folds
    chance: float  # expected accuracy of guessing with the training folds' voice frequencies
    folds: int  # number of outer folds (groups of held-out sentences)


def voice_probe(
    pooled: np.ndarray,
    voices: Sequence[str],
    sentences: Sequence[str],
    max_folds: int = 5,
    strengths: Sequence[float] = DEFAULT_RIDGE_STRENGTHS,
) -> ProbeResult:
    """Cross-validated accuracy of a linear (ridge, one-vs-rest) probe of the voice from (U, C) vectors.

    Folds hold out whole sentences (every utterance of a sentence is in the same fold), so the probe is
    always tested on sentences it never saw: it cannot reach above chance by recognising the words.
    Features are standardised with the training fold's mean and deviation; the ridge strength is chosen
    per outer fold by an inner sentence-grouped cross-validation on the training fold alone.
    Needs at least 2 sentences and 2 voices.
    """
    pooled = np.asarray(pooled, dtype=np.float64)
    voices = np.asarray(voices)
    sentences = np.asarray(sentences)
    _check_labels(pooled, voices, sentences)
    if len(set(sentences.tolist())) < 2 or len(set(voices.tolist())) < 2:
        raise ValueError("voice_probe needs at least 2 sentences and 2 voices")
    folds = sentence_folds(sentences, max_folds)
    correct = 0
    expected_by_guessing = 0.0
    for fold in range(folds.max() + 1):
        train, test = folds != fold, folds == fold
        strength = _choose_strength(pooled[train], voices[train], sentences[train], max_folds, strengths)
        predicted = _fit_predict_ridge(pooled[train], voices[train], pooled[test], strength)
        correct += int(np.sum(predicted == voices[test]))
        expected_by_guessing += _guessing_hits(voices[train], voices[test])
    return ProbeResult(correct / len(voices), expected_by_guessing / len(voices), int(folds.max() + 1))


def sentence_folds(sentences: np.ndarray, max_folds: int) -> np.ndarray:
    """(U,) fold index per utterance: sentences in order of first appearance go round-robin into folds."""
    unique = list(dict.fromkeys(sentences.tolist()))
    count = min(max_folds, len(unique))
    fold_of = {sentence: position % count for position, sentence in enumerate(unique)}
    return np.array([fold_of[s] for s in sentences.tolist()], dtype=np.int64)


def _check_labels(pooled: np.ndarray, voices: np.ndarray, sentences: np.ndarray):
    if pooled.ndim != 2 or len(voices) != len(pooled) or len(sentences) != len(pooled):
        raise ValueError(
            f"need (U, C) vectors with U voice and U sentence ids, got {pooled.shape}, {len(voices)}, "
            f"{len(sentences)}"
        )


def _choose_strength(x, voices, sentences, max_folds, strengths) -> float:
    """The ridge strength with the best inner grouped-CV accuracy (ties: the strongest); middle if 1 group."""
    if len(set(sentences.tolist())) < 2:
        return float(strengths[len(strengths) // 2])
    folds = sentence_folds(sentences, min(max_folds, 3))
    scores = []
    for strength in strengths:
        hits = 0
        for fold in range(folds.max() + 1):
            train, test = folds != fold, folds == fold
            hits += int(np.sum(_fit_predict_ridge(x[train], voices[train], x[test], strength) == voices[test]))
        scores.append(hits)
    best = max(scores)
    return float(max(s for s, score in zip(strengths, scores) if score == best))


def _fit_predict_ridge(x_train, y_train, x_test, strength: float) -> np.ndarray:
    """One-vs-rest ridge regression on one-hot targets with standardised features; argmax prediction.

    ``strength`` is multiplied by the number of features (standardised features have squared norm ~C).
    Solved in the dual (U x U system), so cost does not grow with C beyond the Gram matrix.
    """
    classes = np.array(sorted(set(y_train.tolist())))
    mean = x_train.mean(axis=0)
    scale = x_train.std(axis=0)
    scale[scale == 0] = 1.0
    train = (x_train - mean) / scale
    test = (x_test - mean) / scale
    targets = (y_train[:, None] == classes[None, :]).astype(np.float64)
    target_mean = targets.mean(axis=0)
    gram = train @ train.T
    regularised = gram + strength * train.shape[1] * np.eye(len(train))
    dual = np.linalg.solve(regularised, targets - target_mean)
    scores = test @ (train.T @ dual) + target_mean
    return classes[np.argmax(scores, axis=1)]


def _guessing_hits(train_labels: np.ndarray, test_labels: np.ndarray) -> float:
    """Expected number of correct test guesses when guessing labels at the training frequencies."""
    values, counts = np.unique(train_labels, return_counts=True)
    frequency = dict(zip(values.tolist(), (counts / counts.sum()).tolist()))
    return float(sum(frequency.get(label, 0.0) for label in test_labels.tolist()))


# ----------------------------------------------------------------------------------------------------------
# content: cross-voice retrieval

TIE_TOLERANCE = 1e-9  # distances closer than this are ties (DTW sums of equal costs differ by rounding)


@dataclass(frozen=True)
class RetrievalResult:
    mean_average_precision: float
    chance: float  # the same mean over queries for a random ranking (all distances tied)
    queries: int  # queries with at least one relevant utterance


def cross_voice_retrieval(
    sequences: Sequence[np.ndarray], voices: Sequence[str], sentences: Sequence[str]
) -> RetrievalResult:
    """Mean average precision of finding the same sentence in other voices by DTW distance.

    ``sequences``: one (T_u, C) array per utterance. For each query utterance the candidates are all
    utterances by a *different voice* (so the query itself and its own voice's utterances are left out:
    a representation that only knows the voice then ranks at chance); relevant candidates are those of
    the same sentence. Candidates are ranked by the length-normalised DTW cosine distance (mean cosine
    distance along the optimal path). Tied distances are scored by the exact expected AP over random
    orders of the tied candidates, so a collapsed representation (all distances equal) scores chance.
    Queries without any relevant candidate are skipped; raises ValueError if no query is left.
    """
    voices = np.asarray(voices)
    sentences = np.asarray(sentences)
    if not (len(sequences) == len(voices) == len(sentences)):
        raise ValueError(f"got {len(sequences)} sequences, {len(voices)} voices, {len(sentences)} sentences")
    distances = pairwise_dtw_distances(sequences, voices[:, None] != voices[None, :])
    ap_values, chance_values = [], []
    for query in range(len(sequences)):
        candidates = voices != voices[query]
        relevant = sentences[candidates] == sentences[query]
        if not relevant.any():
            continue
        ap_values.append(expected_average_precision(distances[query, candidates], relevant))
        chance_values.append(expected_average_precision(np.zeros(int(candidates.sum())), relevant))
    if not ap_values:
        raise ValueError("no query has the same sentence spoken by another voice")
    return RetrievalResult(float(np.mean(ap_values)), float(np.mean(chance_values)), len(ap_values))


def pairwise_dtw_distances(sequences: Sequence[np.ndarray], needed: np.ndarray) -> np.ndarray:
    """(U, U) length-normalised DTW cosine distances for the pairs where the bool matrix ``needed`` is True.

    Symmetric (computed once per unordered pair); entries not needed are NaN. Each row's similarities
    to all later utterances come from one matmul of unit-norm frames.
    """
    count = len(sequences)
    unit = [np.ascontiguousarray(unit_frames(seq, np.float32)) for seq in sequences]
    lengths = np.array([len(seq) for seq in unit], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    stacked = np.concatenate(unit, axis=0)
    distances = np.full((count, count), np.nan)
    for row in range(count):
        columns = np.flatnonzero(needed[row, row + 1 :]) + row + 1
        if not len(columns):
            continue
        first = offsets[row + 1]
        similarity = np.ascontiguousarray(unit[row] @ stacked[first:].T)
        starts = offsets[columns] - first
        stops = offsets[columns + 1] - first
        totals = np.empty(len(columns))
        path_lengths = np.empty(len(columns), dtype=np.int64)
        _dtw_many(similarity, starts, stops, totals, path_lengths)
        distances[row, columns] = distances[columns, row] = totals / path_lengths
    return distances


def expected_average_precision(distances: np.ndarray, relevant: np.ndarray) -> float:
    """Average precision of ranking by ascending distance, averaged exactly over orders of tied items.

    AP = mean over relevant items of (relevant items ranked at or above it) / (its rank). Within a tie
    group of n items with r relevant, preceded by A items of which B relevant, the k-th relevant item of
    the group sits at group position p with probability C(p-1, k-1) C(n-p, r-k) / C(n, r).
    """
    distances = np.asarray(distances, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    total_relevant = int(relevant.sum())
    if total_relevant == 0:
        raise ValueError("average precision needs at least one relevant item")
    order = np.argsort(distances, kind="stable")
    sorted_distances, sorted_relevant = distances[order], relevant[order]
    before, relevant_before, precision_sum = 0, 0, 0.0
    for start, stop in _tie_groups(sorted_distances):
        size = stop - start
        relevant_here = int(sorted_relevant[start:stop].sum())
        precision_sum += _expected_precision_sum(size, relevant_here, before, relevant_before)
        before += size
        relevant_before += relevant_here
    return precision_sum / total_relevant


def _tie_groups(sorted_distances: np.ndarray) -> List[tuple]:
    """(start, stop) index ranges of runs of sorted distances within TIE_TOLERANCE of the run's first."""
    groups, start = [], 0
    for index in range(1, len(sorted_distances) + 1):
        if index == len(sorted_distances) or sorted_distances[index] - sorted_distances[start] > TIE_TOLERANCE:
            groups.append((start, index))
            start = index
    return groups


def _expected_precision_sum(size: int, relevant: int, before: int, relevant_before: int) -> float:
    """Expected sum of precision-at-rank over the relevant items of one randomly ordered tie group."""
    if relevant == 0:
        return 0.0
    if relevant == size:
        return float(sum((relevant_before + k) / (before + k) for k in range(1, size + 1)))
    positions = np.arange(1, size + 1)
    total = 0.0
    for k in range(1, relevant + 1):
        log_probability = (
            _log_comb(positions - 1, k - 1) + _log_comb(size - positions, relevant - k) - _log_comb(size, relevant)
        )
        probability = np.where(
            (positions >= k) & (size - positions >= relevant - k), np.exp(log_probability), 0.0
        )
        total += float(np.sum(probability * (relevant_before + k) / (before + positions)))
    return total


def _log_comb(n, k):
    n = np.asarray(n, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    valid = (k >= 0) & (k <= n)
    safe_n, safe_k = np.where(valid, n, 0.0), np.where(valid, k, 0.0)
    return np.where(valid, gammaln(safe_n + 1) - gammaln(safe_k + 1) - gammaln(safe_n - safe_k + 1), -np.inf)

