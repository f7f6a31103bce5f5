"""Quality of k-means targets against frame-level phone labels (HuBERT paper, section IV-C).

With the joint distribution p(y, z) of phone y and cluster z over all frames:

- phone purity   = E_z[max_y p(y | z)] = sum_z max_y p(y, z)   (how pure a cluster is in phones)
- cluster purity = E_y[max_z p(z | y)] = sum_y max_z p(y, z)   (how concentrated a phone is in one cluster)
- PNMI           = I(y; z) / H(y)                             (phone information the clusters keep)

fairseq ships the same measures as ``examples/hubert/measure_teacher_quality.py`` ("ref pur", "hyp pur",
"MI/H(ref)"); the tests compare against it. Phone labels come at 50 Hz (one per CNN frame); cluster labels
at ``label_rate`` (100 Hz for MFCC targets): the phones are repeated ``label_rate / 50`` times so both run
at the cluster rate, and each utterance is cut to the shorter of the two sequences.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Sequence

import numpy as np

PHONE_RATE = 50


@dataclass
class ClusterQuality:
    phone_purity: float
    cluster_purity: float
    pnmi: float
    phone_entropy: float  # H(y), nats
    cluster_entropy: float  # H(z), nats
    mutual_information: float  # I(y; z), nats
    frames: int
    phones: int  # distinct phones seen
    clusters: int  # distinct clusters used

    def as_dict(self) -> dict:
        return asdict(self)


def read_phone_lines(path: str, expected: int) -> List[List[str]]:
    """One line of whitespace-separated phone symbols per utterance; the count must match the manifest."""
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().rstrip("\n").split("\n")
    if len(lines) != expected:
        raise ValueError(f"{path}: {len(lines)} lines, the manifest has {expected} audio lines; one line of "
                         f"frame phone labels per utterance is expected")
    return [line.split() for line in lines]


def joint_counts(phones: Sequence[Sequence[str]], clusters: Sequence[Sequence[int]], repeat: int):
    """(counts (P, K) float64, phone symbols) over all frames, phones repeated ``repeat`` times."""
    if len(phones) != len(clusters):
        raise ValueError(f"{len(phones)} phone lines but {len(clusters)} cluster lines")
    symbols: Dict[str, int] = {}
    phone_ids, cluster_ids = [], []
    for phone_line, cluster_line in zip(phones, clusters):
        ids = np.repeat(np.array([symbols.setdefault(p, len(symbols)) for p in phone_line], dtype=np.int64), repeat)
        cluster_line = np.asarray(cluster_line, dtype=np.int64)
        length = min(len(ids), len(cluster_line))
        phone_ids.append(ids[:length])
        cluster_ids.append(cluster_line[:length])
    phone_ids, cluster_ids = np.concatenate(phone_ids), np.concatenate(cluster_ids)
    if len(phone_ids) == 0:
        raise ValueError("no frames to compare")
    num_clusters = int(cluster_ids.max()) + 1
    flat = np.bincount(phone_ids * num_clusters + cluster_ids, minlength=len(symbols) * num_clusters)
    return flat.reshape(len(symbols), num_clusters).astype(np.float64), list(symbols)


def cluster_quality(phones: Sequence[Sequence[str]], clusters: Sequence[Sequence[int]], label_rate: int) -> ClusterQuality:
    if label_rate % PHONE_RATE:
        raise ValueError(f"label rate {label_rate} Hz is not a multiple of the phone rate {PHONE_RATE} Hz")
    counts, _ = joint_counts(phones, clusters, label_rate // PHONE_RATE)
    return quality_from_counts(counts)


def quality_from_counts(counts: np.ndarray) -> ClusterQuality:
    """Measures of a (phones, clusters) count matrix; empty rows/columns carry no probability mass."""
    total = counts.sum()
    joint = counts / total
    p_phone, p_cluster = joint.sum(1), joint.sum(0)
    nonzero = joint > 0
    outer = np.outer(p_phone, p_cluster)
    mutual = float(np.sum(joint[nonzero] * np.log(joint[nonzero] / outer[nonzero])))
    h_phone, h_cluster = _entropy(p_phone), _entropy(p_cluster)
    return ClusterQuality(
        phone_purity=float(joint.max(0).sum()),
        cluster_purity=float(joint.max(1).sum()),
        pnmi=mutual / h_phone if h_phone > 0 else float("nan"),
        phone_entropy=h_phone,
        cluster_entropy=h_cluster,
        mutual_information=mutual,
        frames=int(total),
        phones=int(np.count_nonzero(p_phone)),
        clusters=int(np.count_nonzero(p_cluster)),
    )


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))
