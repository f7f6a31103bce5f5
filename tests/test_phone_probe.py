"""Known-answer tests of the phone probe, its frame label format, the aligner-output converter and the CLI.

The probe is checked on features whose answers are known (a one-hot of the label: perfect; independent of
the labels: the majority-class chance; labels shifted by a few frames: visibly worse), its closed form
against a direct ridge solve on the data matrix, the PER on a hand-computed example, the frame grid
against the real CNN, and the whole path on a tiny random upstream with the demo corpus labelled by a
deterministic energy / zero-crossing rule.
"""

from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from laser_fairseq.analysis import phone_probe
from laser_fairseq.analysis.alignments import (
    Alignment,
    AlignmentError,
    PhoneMapping,
    Segment,
    read_phone_map,
    read_textgrid,
    segments_to_frames,
    textgrid_alignment,
)
from laser_fairseq.analysis.phone_labels import (
    FrameLabelError,
    format_phone_dict,
    load_phone_probe_labels,
    read_frame_labels,
    read_phone_dict,
)
from laser_fairseq.analysis.utterances import load_utterances
from laser_fairseq.data.audio import read_audio
from laser_fairseq.data.frames import frame_count
from laser_fairseq.data.manifest import read_manifest
from laser_fairseq.models.trained_upstream import open_upstream
from laser_fairseq.tiny_upstream import make_tiny_hubert, save_checkpoint
from laser_fairseq.checkout import REPO

DEMO = os.path.join(REPO, "manifests", "demo")

from test_analysis import laser_checkpoint_with_new_top_blocks, read_rows  # noqa: E402 (pytest puts tests/ on the path)

# ------------------------------------------------------------------------------------------- the probe


def phone_runs(rng, utterances: int, classes: int = 8, frames: int = 120):
    """(T,) label sequences of runs of 3..12 frames; class 0 (silence-like) is drawn 3x as often."""
    weights = np.ones(classes)
    weights[0] = 3.0
    sequences = []
    for _ in range(utterances):
        labels = []
        while len(labels) < frames:
            labels += [int(rng.choice(classes, p=weights / weights.sum()))] * int(rng.integers(3, 13))
        sequences.append(np.array(labels[:frames]))
    return sequences


def train_and_score(train_frames, train_labels, test_frames, test_labels, silence=0):
    """Fit on the training utterances (every 5th, added last, chooses the shrinkage), score the test ones."""
    dim, classes = train_frames[0].shape[1], int(max(np.max(labels) for labels in train_labels)) + 1
    trainer = phone_probe.ProbeTrainer(dim, classes)
    for held_out in (False, True):
        for index, (frames, labels) in enumerate(zip(train_frames, train_labels)):
            if (index % 5 == 4) == held_out:
                trainer.add(frames, labels, held_out)
    probe = trainer.finish()
    scores = phone_probe.score(phone_probe.predict_utterances(probe, test_frames), test_labels, silence)
    chance = phone_probe.majority_chance(trainer.class_counts, test_labels, silence)
    return scores, chance, probe


def test_one_hot_features_of_the_labels_are_probed_perfectly():
    rng = np.random.default_rng(0)
    train, test = phone_runs(rng, 60), phone_runs(rng, 20)
    one_hot = np.eye(8, dtype=np.float32)
    scores, chance, _ = train_and_score([one_hot[y] for y in train], train, [one_hot[y] for y in test], test)
    assert scores.accuracy == 1.0 and scores.error_rate == 0.0
    assert chance.accuracy < 0.4 and chance.error_rate == 1.0  # majority = silence: nothing is recognised


def test_features_independent_of_the_labels_score_the_majority_chance():
    rng = np.random.default_rng(1)
    train, test = phone_runs(rng, 100), phone_runs(rng, 40)
    noise = [rng.normal(size=(len(y), 24)).astype(np.float32) for y in train + test]
    scores, chance, probe = train_and_score(noise[:100], train, noise[100:], test)
    assert chance.accuracy == pytest.approx(np.mean(np.concatenate(test) == 0))
    assert abs(scores.accuracy - chance.accuracy) < 0.01
    assert probe.shrinkage >= 0.1  # the held-out training utterances chose a strong shrinkage


def test_labels_shifted_by_a_few_frames_lower_the_accuracy():
    rng = np.random.default_rng(2)
    train, test = phone_runs(rng, 80), phone_runs(rng, 30)
    embedding = rng.normal(size=(8, 32))

    def features(labels):
        return (embedding[labels] + 0.8 * rng.normal(size=(len(labels), 32))).astype(np.float32)

    train_frames, test_frames = [features(y) for y in train], [features(y) for y in test]

    def delayed(labels, shift):  # what a misaligned label file gives: frame t carries the label of t - shift
        return np.concatenate([np.full(shift, labels[0]), labels[: len(labels) - shift]])

    accuracy = {
        shift: train_and_score(train_frames, [delayed(y, shift) for y in train], test_frames,
                               [delayed(y, shift) for y in test])[0].accuracy
        for shift in (0, 1, 3)
    }
    assert accuracy[0] > 0.97
    assert accuracy[0] > accuracy[1] > accuracy[3]
    assert accuracy[3] < accuracy[0] - 0.2


def direct_lda(x, labels, classes, shrinkage):
    """LDA class scores computed on the data matrix itself: standardised frames, class means, the pooled
    within-class covariance from the per-class deviations, float64."""
    mean, scale = x.mean(axis=0), x.std(axis=0)
    z = (x - mean) / scale
    means = np.stack([z[labels == k].mean(axis=0) for k in range(classes)], axis=1)
    deviations = z - means.T[labels]
    within = deviations.T @ deviations / len(z)
    weight = np.linalg.solve(within + shrinkage * np.eye(x.shape[1]), means)
    bias = np.log(np.bincount(labels, minlength=classes) / len(z)) - 0.5 * np.sum(means * weight, axis=0)
    return lambda frames: (frames - mean) / scale @ weight + bias


def test_closed_form_from_streamed_statistics_matches_lda_on_the_data_matrix(monkeypatch):
    monkeypatch.setattr(phone_probe, "FLUSH_FRAMES", 64)  # many buffer flushes and prediction chunks
    rng = np.random.default_rng(3)
    classes, dim = 4, 6
    x = rng.normal(size=(900, dim)) * rng.uniform(0.1, 20, size=dim) + rng.uniform(-50, 50, size=dim)
    labels = rng.integers(0, classes, size=900)
    x[:, 0] += 2.0 * labels  # some signal
    x[:, 1] += 1.5 * (labels == 2)
    x = x.astype(np.float32)
    trainer = phone_probe.ProbeTrainer(dim, classes)
    for start in range(0, 700, 37):  # fitting utterances of uneven length
        trainer.add(x[start:min(start + 37, 700)], labels[start:min(start + 37, 700)], held_out=False)
    for start in (700, 800):
        trainer.add(x[start:start + 100], labels[start:start + 100], held_out=True)
    x = x.astype(np.float64)

    # the shrinkage: the most held-out hits (ties: the strongest), counted directly
    hits = {}
    for shrinkage in phone_probe.DEFAULT_SHRINKAGES:
        scores = direct_lda(x[:700], labels[:700], classes, shrinkage)(x[700:])
        hits[shrinkage] = int(np.sum(np.argmax(scores, axis=1) == labels[700:]))
    probe = trainer.finish()
    assert probe.shrinkage == max(s for s, h in hits.items() if h == max(hits.values()))
    assert len(set(hits.values())) > 1  # the choice mattered

    expected = direct_lda(x, labels, classes, probe.shrinkage)(x)
    np.testing.assert_allclose(x @ probe.weight + probe.bias, expected, rtol=1e-9, atol=1e-8)
    np.testing.assert_array_equal(probe.predict(x), np.argmax(expected, axis=1))
    utterances = np.split(x, [1, 700, 2800 // 3, 850])  # chunked prediction = per-utterance prediction
    for ours, frames in zip(phone_probe.predict_utterances(probe, utterances), utterances):
        np.testing.assert_array_equal(ours, probe.predict(frames))
    assert list(trainer.class_counts) == list(np.bincount(labels, minlength=classes))
    with pytest.raises(ValueError, match="before the held-out ones"):
        trainer.add(x[:5], labels[:5], held_out=False)


def test_classes_never_seen_in_training_are_never_predicted():
    rng = np.random.default_rng(4)
    labels = np.repeat([0, 2], 50)  # class 1 has no training frame
    frames = np.eye(3)[labels] + 0.1 * rng.normal(size=(100, 3))
    trainer = phone_probe.ProbeTrainer(3, 3)
    trainer.add(frames[::2], labels[::2], held_out=False)
    trainer.add(frames[1::2], labels[1::2], held_out=True)
    probe = trainer.finish()
    assert probe.bias[1] == -np.inf and set(probe.predict(np.eye(3) * 5)) <= {0, 2}


# ------------------------------------------------------------------------------------------------- PER


def test_phone_error_rate_of_a_hand_computed_example():
    s, a, b, c, d = range(5)  # 0 is silence
    predicted = [np.array([s, a, a, b, b, s, s, c, c]), np.array([a, s, a])]
    reference = [np.array([s, a, a, a, d, d, c, c, s]), np.array([a, a, a])]
    # utterance 1: "a b c" against "a d c" -> 1 substitution; utterance 2: "a a" against "a" -> 1 insertion
    assert phone_probe.collapse(predicted[0], s) == [a, b, c]
    assert phone_probe.collapse(predicted[1], s) == [a, a]  # a pause between two a's keeps both
    assert phone_probe.collapse(predicted[1], None) == [a, s, a]
    scores = phone_probe.score(predicted, reference, silence=s)
    assert scores.error_rate == 2 / 4  # pooled: (1 + 1) / (3 + 1), not the mean of 1/3 and 1/1
    assert scores.accuracy == 6 / 12 and scores.frames == 12 and scores.reference_phones == 4
    chance = phone_probe.majority_chance(np.array([10, 3, 1, 1, 1]), reference, silence=s)
    assert chance.accuracy == 2 / 12 and chance.error_rate == 1.0  # all silence: every phone deleted


# ------------------------------------------------------------------------------------------ label files


def test_frame_grid_is_the_cnn_frame_count(tmp_path):
    path = tmp_path / "tiny.pt"
    save_checkpoint(make_tiny_hubert(layers=1, dim=16, seed=0), str(path))
    upstream = open_upstream(str(path)).upstream
    for samples in (400, 719, 720, 721, 16_000, 16_001, 29_352):
        with torch.no_grad():
            frames = upstream.conv_features(torch.randn(1, samples)).shape[1]
        assert frame_count(samples) == frames, samples


def write_corpus(folder, lines_per_split, labels_of=None):
    """Manifests over demo audio (absolute root) with their .sent / .voice / .phn side files."""
    folder.mkdir(parents=True, exist_ok=True)
    demo_manifest = read_manifest(os.path.join(DEMO, "train.tsv"))
    counts = {}
    for split, count in lines_per_split.items():
        source = read_manifest(os.path.join(DEMO, f"{split}.tsv"))
        entries = source.entries[:count]
        (folder / f"{split}.tsv").write_text(
            demo_manifest.root + "\n" + "".join(f"{os.path.basename(e.path)}\t{e.num_samples}\n" for e in entries)
        )
        for extension in ("sent", "voice"):
            with open(os.path.join(DEMO, f"{split}.{extension}")) as handle:
                (folder / f"{split}.{extension}").write_text("".join(handle.readlines()[:count]))
        if labels_of is not None:
            lines = [labels_of(entry) for entry in entries]
            for line in lines:
                for symbol in line:
                    counts[symbol] = counts.get(symbol, 0) + 1
            (folder / f"{split}.phn").write_text("".join(" ".join(line) + "\n" for line in lines))
    if labels_of is not None:
        (folder / "dict.phn.txt").write_text(format_phone_dict(counts))
    return folder


def energy_labels(entry):
    """A deterministic, learnable labelling of the demo audio: per 25 ms frame, 'sil' below -30 dB of the
    utterance's loudest frame, else 'fric' with many zero crossings, else 'voiced'."""
    waveform = read_audio(entry.path, 16000).numpy()
    starts = np.arange(frame_count(len(waveform))) * 320
    frames = waveform[starts[:, None] + np.arange(400)[None, :]]
    energy = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-10)
    crossings = np.mean(np.abs(np.diff(np.sign(frames), axis=1)) > 0, axis=1)
    return np.where(energy < energy.max() - 30, "sil", np.where(crossings > 0.3, "fric", "voiced")).tolist()


def test_label_file_problems_are_all_reported_with_file_line_and_counts(tmp_path):
    corpus = write_corpus(tmp_path / "c", {"valid": 3}, energy_labels)
    manifest = read_manifest(str(corpus / "valid.tsv"))
    symbols = read_phone_dict(str(corpus / "dict.phn.txt"))
    lines = (corpus / "valid.phn").read_text().splitlines()
    frames = frame_count(manifest.entries[1].num_samples)
    assert len(lines[1].split()) == frames
    good = read_frame_labels(str(corpus / "valid.phn"), manifest, symbols, "dict", [2, 0])
    assert [len(labels) for labels in good] == [len(lines[2].split()), len(lines[0].split())]
    assert symbols[good[1][0]] == lines[0].split()[0]

    bad = corpus / "bad.phn"
    bad.write_text("\n".join([lines[0] + " zz", " ".join(lines[1].split()[:-1]), lines[2]]) + "\n")
    with pytest.raises(FrameLabelError) as error:
        read_frame_labels(str(bad), manifest, symbols, "dict.phn.txt", [0, 1, 2])
    message = str(error.value)
    assert "2 bad lines" in message
    assert f"{bad}:1" in message and f"{len(lines[0].split()) + 1} frame labels" in message
    assert f"{bad}:2" in message and f"{frames - 1} frame labels, but the audio has {frames} frames" in message
    assert f"{corpus / 'valid.tsv'}:3" in message  # the audio line of label line 2

    bad.write_text("\n".join([lines[0], "", lines[2]]) + "\n")
    with pytest.raises(FrameLabelError, match=r"bad.phn:2: blank line"):
        read_frame_labels(str(bad), manifest, symbols, "d", [0])
    bad.write_text(" ".join(["xx"] + lines[0].split()[1:]) + "\n" + lines[1] + "\n")
    with pytest.raises(FrameLabelError) as error:
        read_frame_labels(str(bad), manifest, symbols, "d", [0])
    assert "2 lines, but" in str(error.value) and "3 audio lines" in str(error.value)
    assert "'xx'" in str(error.value)  # and the unknown symbol of line 1, in the same message

    dictionary = corpus / "bad_dict.txt"
    dictionary.write_text("sil 10\nvoiced 4\nsil 3\nfric\n")
    with pytest.raises(FrameLabelError) as error:
        read_phone_dict(str(dictionary))
    assert f"{dictionary}:3: symbol 'sil' already on line 1" in str(error.value)
    assert f"{dictionary}:4: expected 'symbol count'" in str(error.value)


def test_probe_trains_on_other_sentences_and_says_why_when_it_cannot(tmp_path):
    corpus = write_corpus(tmp_path / "c", {"train": 65, "valid": 15}, energy_labels)
    valid = load_utterances(str(corpus / "valid.tsv"))
    labels, reason = load_phone_probe_labels(valid)
    assert reason == "" and len(labels.test.labels) == 15 and len(labels.train.utterances) == 65
    assert labels.symbols[labels.silence] == "sil"
    # every 5th training sentence (s05, s10) chooses the ridge strength
    held_out = {u.sentence for u, selected in zip(labels.train.utterances, labels.selection) if selected}
    assert held_out == {"s05", "s10"} and labels.selection.sum() == 10
    assert labels.settings["excluded_overlapping"] == 0

    few, _ = load_phone_probe_labels(valid, max_train_utterances=7)
    assert [u.index for u in few.train.utterances] == [0, 11, 21, 32, 43, 53, 64]

    # analysing the training split itself: its first 10 utterances (s01, s02) are left out of training
    train_head = load_utterances(str(corpus / "train.tsv"), max_utterances=10)
    labels, reason = load_phone_probe_labels(train_head)
    assert reason == "" and labels.settings["excluded_overlapping"] == 10
    assert not {u.sentence for u in labels.train.utterances} & {"s01", "s02"}
    labels, reason = load_phone_probe_labels(load_utterances(str(corpus / "train.tsv")))
    assert labels is None and "share audio or a sentence" in reason

    os.remove(corpus / "train.phn")
    labels, reason = load_phone_probe_labels(valid)
    assert labels is None and "train.phn not found; pass --probe-train-labels" in reason
    with pytest.raises(FileNotFoundError, match="--phone-labels"):
        load_phone_probe_labels(valid, labels_path=str(corpus / "missing.phn"))
    os.remove(corpus / "valid.phn")
    labels, reason = load_phone_probe_labels(valid)
    assert labels is None and reason.startswith("no frame labels")


# ------------------------------------------------------------------------------------------- converter

TEXTGRID_LONG = """File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 1.8345
tiers? <exists>
size = 2
item []:
    item [1]:
        class = "IntervalTier"
        name = "words"
        xmin = 0
        xmax = 1.8345
        intervals: size = 1
        intervals [1]:
            xmin = 0
            xmax = 1.8345
            text = "say ""hi"" now"
    item [2]:
        class = "IntervalTier"
        name = "phones"
        xmin = 0
        xmax = 1.8345
        intervals: size = 4
        intervals [1]:
            xmin = 0
            xmax = 0.3
            text = ""
        intervals [2]:
            xmin = 0.3
            xmax = 0.5
            text = "S"
        intervals [3]:
            xmin = 0.5
            xmax = 0.9
            text = "EH1"
        intervals [4]:
            xmin = 1.0
            xmax = 1.8345
            text = "spn"
"""

TEXTGRID_SHORT = """File type = "ooTextFile"
Object class = "TextGrid"

0
1.8345
<exists>
2
"TextTier"
"marks"
0
1.8345
1
0.7
"peak"
"IntervalTier"
"speaker1 - phones"
0
1.8345
4
0
0.3
""
0.3
0.5
"S"
0.5
0.9
"EH1"
1.0
1.8345
"spn"
"""

# 29352 samples (s14_v1.flac): 91 frames at 0.0125 + 0.02 t s: 15 sil, 10 S, 20 EH, 5 uncovered (0.9-1.0 s),
# 41 spn -> sil
EXPECTED_FRAMES = ["sil"] * 15 + ["S"] * 10 + ["EH"] * 20 + ["sil"] * 46


def test_textgrid_long_short_and_utf16_files_give_the_same_frames(tmp_path):
    (tmp_path / "long.TextGrid").write_text(TEXTGRID_LONG)
    (tmp_path / "short.TextGrid").write_text(TEXTGRID_SHORT)
    (tmp_path / "utf16.TextGrid").write_bytes(TEXTGRID_LONG.encode("utf-16"))
    long = read_textgrid(str(tmp_path / "long.TextGrid"))
    assert [t.name for t in long.tiers] == ["words", "phones"] and long.xmax == 1.8345
    assert long.tiers[0].segments[0].phone == 'say "hi" now'
    assert long.tiers[1].segments[2].where == f"{tmp_path / 'long.TextGrid'}:34"
    mapping = PhoneMapping(strip_stress=True)
    for name in ("long", "short", "utf16"):
        labelling = segments_to_frames(textgrid_alignment(str(tmp_path / f"{name}.TextGrid")), 29352, mapping)
        assert labelling.labels == EXPECTED_FRAMES and labelling.uncovered == 5, name


@pytest.mark.parametrize(
    "text,message",
    [
        (TEXTGRID_LONG.replace("intervals: size = 4", "intervals: size = 5"), "the file ends where the xmin of item 5"),
        (TEXTGRID_LONG.replace("xmax = 0.5", 'xmax = "x"'), ":31: expected the xmax of item 2 of 4 in tier 'phones'"),
        (TEXTGRID_LONG.replace('text = "S"', 'text = "S'), "unterminated string"),
        (TEXTGRID_LONG.replace('"phones"', '"phonemes"'), "tiers: 'words', 'phonemes'; choose one with --tier"),
        (TEXTGRID_LONG.replace('"IntervalTier"\n        name = "phones"', '"PointTier"\n        name = "phones"'),
         "tier 2 has unknown class 'PointTier'"),
    ],
)
def test_malformed_textgrids_are_reported_with_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.TextGrid"
    path.write_text(text)
    with pytest.raises(AlignmentError) as error:
        textgrid_alignment(str(path))
    assert message in str(error.value) and str(path) in str(error.value)


def test_segments_become_frames_by_the_label_time_and_bad_timings_are_refused():
    def alignment(*segments, duration=None):
        items = [Segment(s, e, p, f"a.ctm:{i + 1}") for i, (s, e, p) in enumerate(segments)]
        return Alignment(items, duration, "a.ctm")

    mapping = PhoneMapping(table={"AX": "AH"})
    # frame 15 takes its label at 0.3125 s, exactly the boundary: it belongs to the later segment
    unordered = alignment((0.3125, 0.5, "AX"), (0.0, 0.3125, "sp"), (0.5, 0.6, "T"))
    frames = segments_to_frames(unordered, 16000, mapping).labels
    assert frames[14:16] == ["sil", "AH"] and frames[24:26] == ["AH", "T"] and frames[29:31] == ["T", "sil"]
    assert frames[30:] == ["sil"] * 19 and len(frames) == 49
    with pytest.raises(AlignmentError, match=r"a.ctm:2: segment \[0.2, 0.4\) overlaps \[0.0, 0.3\) of a.ctm:1"):
        segments_to_frames(alignment((0.0, 0.3, "A"), (0.2, 0.4, "B")), 16000, mapping)
    with pytest.raises(AlignmentError, match=r"a.ctm:1: segment ends at 1.100 s, after the audio's end \(1.000 s"):
        segments_to_frames(alignment((0.0, 1.1, "A")), 16000, mapping)
    assert segments_to_frames(alignment((0.0, 1.04, "A")), 16000, mapping).labels[-1] == "A"  # within 0.05 s
    with pytest.raises(AlignmentError, match="ends .* before it starts"):
        segments_to_frames(alignment((0.5, 0.4, "A")), 16000, mapping)
    with pytest.raises(AlignmentError, match="the TextGrid lasts 2.000 s but the audio 1.000 s"):
        segments_to_frames(alignment((0.0, 0.5, "A"), duration=2.0), 16000, mapping)


def test_phone_map_file_is_read_with_comments_and_its_errors_are_named(tmp_path):
    table = tmp_path / "map.txt"
    table.write_text("# fold to 39\nAX AH\n\nIX IH\n")
    mapping = PhoneMapping(strip_stress=True, table=read_phone_map(str(table)))
    assert [mapping(p) for p in ["AX", "AH0", "IX", "IH2", "spn", " ", "ZH", "T2X"]] == [
        "AH", "AH", "IH", "IH", "sil", "sil", "ZH", "T2X"]
    table.write_text("AX AH\nAX AA\nIX\n")
    with pytest.raises(AlignmentError) as error:
        read_phone_map(str(table))
    assert f"{table}:2: 'AX' is mapped twice" in str(error.value)
    assert f"{table}:3: expected 'from to'" in str(error.value)


def test_converter_script_writes_labels_the_probe_reads_and_refuses_bad_input(tmp_path, capsys):
    from laser_fairseq.cli import alignments_to_frame_labels as converter

    corpus = tmp_path / "c"
    root = corpus / "audio"
    root.mkdir(parents=True)
    for name, samples in (("s14_v1", 29352), ("s14_v2", 29048), ("s14_v3", 31020)):  # the TextGrids' lengths
        sf.write(str(root / f"{name}.flac"), 0.1 * np.sin(np.arange(samples) * 0.05), 16000, subtype="PCM_16")
    (corpus / "train.tsv").write_text(f"{root}\ns14_v1.flac\t29352\ns14_v2.flac\t29048\n")
    (corpus / "valid.tsv").write_text(f"{root}\ns14_v3.flac\t31020\n")
    grids = tmp_path / "aligned" / "speaker" / "chapter"
    grids.mkdir(parents=True)
    (grids / "s14_v1.TextGrid").write_text(TEXTGRID_LONG)  # 29352 samples = 1.8345 s
    (grids / "s14_v2.TextGrid").write_text(TEXTGRID_SHORT.replace("1.8345", "1.8155"))
    (grids / "s14_v3.TextGrid").write_text(TEXTGRID_LONG.replace("1.8345", "1.93875"))
    (grids / "unused.TextGrid").write_text(TEXTGRID_LONG)
    manifests = [str(corpus / "train.tsv"), str(corpus / "valid.tsv")]
    train = read_manifest(manifests[0])
    for entry in train.entries + read_manifest(manifests[1]).entries:  # the counts are the audio's own
        assert entry.num_samples == len(read_audio(entry.path, 16000))

    argv = ["--manifest", *manifests, "--textgrids", str(tmp_path / "aligned"), "--strip-stress"]
    assert converter.main(argv) == 0
    printed = capsys.readouterr().out
    assert "1 aligned utterance(s) are in none of the manifests" in printed
    symbols = read_phone_dict(str(corpus / "dict.phn.txt"))
    assert symbols == ["sil", "EH", "S"]  # most frequent first
    labels = read_frame_labels(str(corpus / "train.phn"), train, symbols, "d", [0, 1])
    assert [symbols[i] for i in labels[0]] == EXPECTED_FRAMES
    assert len(labels[1]) == frame_count(29048) == 90
    assert (corpus / "valid.phn").read_text().split() == EXPECTED_FRAMES + ["sil"] * 5
    assert converter.main(argv) == 1 and "--force" in capsys.readouterr().err

    # a CTM with a malformed line, an utterance the manifests lack and one missing: nothing is written
    before = (corpus / "train.phn").read_text()
    ctm = tmp_path / "phones.ctm"
    ctm.write_text("# utt start end phone\ns14_v1 0.0 0.5 AH0\ns14_v1 0.5 oops B\ns14_v2 0 1 AH1 extra\n")
    assert converter.main(["--manifest", *manifests, "--ctm", str(ctm), "--force"]) == 1
    err = capsys.readouterr().err
    assert f"{ctm}:3: start and end must be numbers" in err
    assert f"{ctm}:4: expected 'utterance_id start end phone'" in err
    ctm.write_text("s14_v1 0.0 0.5 AH0\ns14_v2 0.1 0.3 AH1\ns14_v2 0.3 0.6 sp\nother 0 1 X\n")
    assert converter.main(["--manifest", *manifests, "--ctm", str(ctm), "--force"]) == 1
    err = capsys.readouterr().err
    assert "1 audio line(s) have no alignment" in err
    assert f"{corpus / 'valid.tsv'}:2: no alignment for utterance 's14_v3'" in err
    assert (corpus / "unaligned.txt").read_text() == "s14_v3.flac\n"  # to filter the manifest with
    assert (corpus / "train.phn").read_text() == before

    assert converter.main(["--manifest", manifests[0], "--ctm", str(ctm), "--force"]) == 0
    lines = (corpus / "train.phn").read_text().splitlines()
    assert lines[0].split() == ["AH0"] * 25 + ["sil"] * 66
    assert lines[1].split()[4:17] == ["sil"] + ["AH1"] * 10 + ["sil"] * 2
    assert read_phone_dict(str(corpus / "dict.phn.txt")) == ["sil", "AH0", "AH1"]


# ------------------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def labelled_demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("labelled")
    corpus = write_corpus(folder / "demo", {"train": 65, "valid": 15}, energy_labels)
    hubert, laser = str(folder / "tiny_hubert.pt"), str(folder / "laser.pt")
    save_checkpoint(make_tiny_hubert(layers=3, dim=32, seed=0), hubert)
    save_checkpoint(laser_checkpoint_with_new_top_blocks(hubert), laser)
    return {"corpus": corpus, "hubert": hubert, "laser": laser}


def test_cli_reports_the_phone_probe_per_layer_beside_the_other_measures(labelled_demo, tmp_path, capsys):
    from laser_fairseq.cli import analyze_layers

    corpus, out = labelled_demo["corpus"], tmp_path / "report"
    analyze_layers.main([
        "--checkpoint", labelled_demo["hubert"], "--compare", labelled_demo["laser"],
        "--upstream", labelled_demo["hubert"], "--manifest", str(corpus / "valid.tsv"), "--max-utterances", "10",
        "--probe-train-utterances", "40", "--out", str(out),
    ])
    printed = capsys.readouterr()
    assert "encoding phone probe training utterances: 40/40" in printed.err
    rows = read_rows(out / "layers.csv")
    assert [row["layer"] for row in rows] == ["cnn", "block0_in", "block1", "block2", "block3"]

    # chance, independently: the majority label of the 40 training utterances, scored on the 10 analysed
    train_lines = (corpus / "train.phn").read_text().splitlines()
    chosen = np.round(np.linspace(0, 64, 40)).astype(int)
    train_symbols = np.concatenate([train_lines[i].split() for i in chosen])
    values, counts = np.unique(train_symbols, return_counts=True)
    majority = values[np.argmax(counts)]
    test_symbols = np.concatenate([line.split() for line in (corpus / "valid.phn").read_text().splitlines()[:10]])
    for row in rows:
        for column in ("phone_acc", "phone_per", "compare_phone_acc", "compare_phone_per", "input_cka", "voice_probe"):
            assert math.isfinite(float(row[column])), (row["layer"], column)
        assert float(row["phone_acc_chance"]) == pytest.approx(np.mean(test_symbols == majority), abs=1e-4)
    assert float(rows[0]["phone_acc"]) > float(rows[0]["phone_acc_chance"]) + 0.05  # energy is in the CNN output
    for row in rows[:3]:  # below the two LASER-trained blocks: the same network, the same probe
        assert float(row["delta_phone_acc"]) == 0.0 and float(row["delta_phone_per"]) == 0.0
    assert float(rows[-1]["delta_phone_acc"]) == pytest.approx(
        float(rows[-1]["compare_phone_acc"]) - float(rows[-1]["phone_acc"]), abs=2e-4)

    markdown = (out / "layers.md").read_text()
    assert "| phone acc A | phone acc B | Δ | PER A | PER B | Δ |" in markdown
    assert "phone probe: LDA on 40 utterances" in markdown and f"always `{majority}`" in markdown
    summary = json.loads((out / "summary.json").read_text())
    probe = summary["main"]["phone_probe"]
    assert probe["train_utterances"] == 40 and probe["classes"] == 3 and probe["test_frames"] == len(test_symbols)
    assert set(probe["shrinkages"]) == {row["layer"] for row in rows}
    assert summary["main"]["layers"][0]["phone_acc"] == pytest.approx(float(rows[0]["phone_acc"]), abs=1e-4)


def test_cli_refuses_labels_that_do_not_match_the_frames(labelled_demo, tmp_path):
    from laser_fairseq.cli import analyze_layers

    corpus = tmp_path / "c"
    shutil.copytree(labelled_demo["corpus"], corpus)
    lines = (corpus / "valid.phn").read_text().splitlines()
    (corpus / "valid.phn").write_text("\n".join([lines[0], lines[1] + " sil"] + lines[2:]) + "\n")
    argv = ["--checkpoint", labelled_demo["hubert"], "--manifest", str(corpus / "valid.tsv"),
            "--out", str(tmp_path / "o"), "--probe-train-utterances", "5"]
    expected = len(lines[1].split()) + 1
    with pytest.raises(SystemExit, match=rf"valid.phn:2 \(audio line .*valid.tsv:3, .*\): {expected} frame labels"):
        analyze_layers.main(argv)

    # a stale sample count that agrees with the labels: caught against the upstream's real frames
    manifest = (corpus / "valid.tsv").read_text().splitlines()
    name, samples = manifest[1].split("\t")
    manifest[1] = f"{name}\t{int(samples) + 640}"
    (corpus / "valid.tsv").write_text("\n".join(manifest) + "\n")
    (corpus / "valid.phn").write_text("\n".join([lines[0] + " sil sil"] + lines[1:]) + "\n")
    frames = len(lines[0].split())
    message = rf"valid.phn:1: {frames + 2} frame labels, but the upstream gives {frames} frames"
    with pytest.raises(SystemExit, match=message):
        analyze_layers.main(argv)
