"""Cluster quality of k-means targets (phone purity, cluster purity, PNMI) against fairseq's own
``examples/hubert/measure_teacher_quality.py``, run as a script on the same frames."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import fairseq
from laser_fairseq.pretraining.cluster_quality import cluster_quality, quality_from_counts

MEASURE_SCRIPT = os.path.join(os.path.dirname(fairseq.__file__), "examples", "hubert", "measure_teacher_quality.py")
# espeak-like symbols; fairseq's reader strips digits (stress marks), so it gets digit-free aliases
SYMBOLS = ["sil", "@2", "aI", "t", "s", "3:", "n", "k"]


def synthetic_frames(seed: int, utterances: int = 12, clusters: int = 20, rate_factor: int = 1):
    """Phone runs at 50 Hz and cluster labels at 50 * rate_factor Hz that depend on the phone (noisily),
    with lengths off by one frame now and then, as real label files are."""
    rng = np.random.default_rng(seed)
    phones, labels = [], []
    for _ in range(utterances):
        runs = rng.integers(0, len(SYMBOLS), size=rng.integers(5, 15))
        line = [SYMBOLS[p] for p in runs for _ in range(rng.integers(2, 8))]
        phones.append(line)
        frames = np.repeat([SYMBOLS.index(p) for p in line], rate_factor)
        noisy = np.where(rng.random(len(frames)) < 0.3, rng.integers(0, clusters, len(frames)),
                         (frames * 3 + rng.integers(0, 2, len(frames))) % clusters)
        labels.append([int(k) for k in noisy[: len(noisy) - int(rng.integers(0, 2))]])
    return phones, labels


def fairseq_measures(tmp_path, phones, labels, rate_factor: int) -> dict:
    """Run measure_teacher_quality.py on files written in its formats; returns its table as a dict."""
    names = [f"utt{i:03d}" for i in range(len(phones))]
    (tmp_path / "valid.tsv").write_text("/audio\n" + "".join(f"{name}.flac\t16000\n" for name in names))
    (tmp_path / "valid.km").write_text("".join(" ".join(map(str, line)) + "\n" for line in labels))
    alias = {symbol: f"P{chr(ord('a') + i)}" for i, symbol in enumerate(SYMBOLS)}
    phone_dir = tmp_path / "phones"
    phone_dir.mkdir()
    (phone_dir / "valid.tsv").write_text("".join(
        f"{name}\t{','.join(alias[p] for p in line for _ in range(rate_factor))}\n" for name, line in zip(names, phones)
    ))
    result = subprocess.run(
        [sys.executable, MEASURE_SCRIPT, str(tmp_path), str(tmp_path), "km", "--lab_sets", "valid",
         "--phn_dir", str(phone_dir), "--phn_sets", "valid"],
        capture_output=True, text=True, check=True,
    )
    header, _, values = [line for line in result.stdout.splitlines() if line.strip()][-3:]
    return dict(zip(re.split(r"\s{2,}", header.strip()), re.split(r"\s{2,}", values.strip())))


@pytest.mark.parametrize("label_rate", [50, 100])
def test_matches_fairseqs_measure_teacher_quality(tmp_path, label_rate):
    factor = label_rate // 50
    phones, labels = synthetic_frames(seed=label_rate, rate_factor=factor)
    ours = cluster_quality(phones, labels, label_rate)
    theirs = fairseq_measures(tmp_path, phones, labels, factor)
    assert ours.frames == int(theirs["frm tot"])
    assert ours.phone_purity == pytest.approx(float(theirs["ref pur"]), abs=6e-5)
    assert ours.cluster_purity == pytest.approx(float(theirs["hyp pur"]), abs=6e-5)
    assert ours.pnmi == pytest.approx(float(theirs["MI/H(ref)"]), abs=6e-5)
    assert ours.phone_entropy == pytest.approx(float(theirs["H(ref)"]), abs=6e-5)
    assert 0.2 < ours.pnmi < 0.9  # the synthetic labels carry some, not all, phone information


def test_known_answers():
    perfect = quality_from_counts(np.diag([5.0, 3.0, 2.0]))
    assert (perfect.pnmi, perfect.phone_purity, perfect.cluster_purity) == pytest.approx((1.0, 1.0, 1.0))
    independent = quality_from_counts(np.outer([1.0, 2.0, 3.0], [4.0, 1.0]))
    assert independent.pnmi == pytest.approx(0.0, abs=1e-12)
    assert independent.phone_purity == pytest.approx(3 / 6)  # every cluster's commonest phone
    assert independent.cluster_purity == pytest.approx(4 / 5)  # every phone's commonest cluster
    # one cluster per phone pair: purity halves on one side only
    merged = quality_from_counts(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]]))
    assert merged.cluster_purity == pytest.approx(1.0) and merged.phone_purity == pytest.approx(3 / 4)


def test_phones_are_repeated_to_the_label_rate_and_lengths_trimmed():
    phones = [["a", "b", "b"]]
    quality = cluster_quality(phones, [[0, 0, 1, 1, 1]], label_rate=100)  # a a b b b (b) -> 5 frames
    assert quality.frames == 5 and quality.pnmi == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not a multiple"):
        cluster_quality(phones, [[0, 1, 1]], label_rate=75)
