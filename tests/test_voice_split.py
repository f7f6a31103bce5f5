"""laser_fairseq.data.voice_split (laser-make-voice-split): a held-out-voice split taken from a corpus with more
voices."""

import os

import pytest

from laser_fairseq.analysis.phone_labels import load_phone_probe_labels
from laser_fairseq.analysis.utterances import load_utterances
from laser_fairseq.data.synthetic_corpus import CorpusSettings, build_corpus
from laser_fairseq.data.voice_split import VoiceSplitError, make_voice_split
from laser_fairseq.checkout import REPO


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    folder = tmp_path_factory.mktemp("voices")
    made = {}
    for voices in (2, 4):
        made[voices] = str(folder / f"v{voices}")
        build_corpus(made[voices], CorpusSettings(sentences=8, voices=voices, valid_sentences=1, test_sentences=2),
                     workers=1, log=lambda message: None)
    return made


def lines(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read().splitlines()


def test_more_voices_same_seed_draw_the_same_sentences_and_splits(corpora):
    """What the script relies on: --voices does not change which sentences each split has."""
    assert lines(os.path.join(corpora[2], "sentences.tsv")) == lines(os.path.join(corpora[4], "sentences.tsv"))


def test_the_split_has_only_the_new_voices_of_the_held_out_sentences(corpora):
    source, dest = corpora[4], corpora[2]
    # new voices (Scottish, Caribbean) speak a phone the 2-voice corpus never had: refused, nothing written
    with pytest.raises(VoiceSplitError, match=r"test\.phn:\d+: phone\(s\) .* not in .*dict\.phn\.txt"):
        make_voice_split(source, "test", ["v03", "v04"], dest, "test_new_voices")
    assert not os.path.exists(os.path.join(dest, "test_new_voices.tsv"))
    # a DEST whose inventory has them (here: SOURCE's dictionary, a superset)
    with open(os.path.join(dest, "dict.phn.txt"), "w") as handle:
        handle.write("\n".join(lines(os.path.join(source, "dict.phn.txt"))) + "\n")
    count = make_voice_split(source, "test", ["v03", "v04"], dest, "test_new_voices")
    assert count == 4  # 2 test sentences x 2 voices
    voices = lines(os.path.join(dest, "test_new_voices.voice"))
    assert sorted(voices) == ["v03", "v03", "v04", "v04"]
    assert set(lines(os.path.join(dest, "test_new_voices.sent"))) == set(lines(os.path.join(dest, "test.sent")))
    source_phn = dict(zip(lines(os.path.join(source, "test.tsv"))[1:], lines(os.path.join(source, "test.phn"))))
    new_tsv = lines(os.path.join(dest, "test_new_voices.tsv"))
    assert new_tsv[0] == os.path.join(source, "audio")
    for entry, labels in zip(new_tsv[1:], lines(os.path.join(dest, "test_new_voices.phn"))):
        assert source_phn[entry] == labels and ("_v03." in entry or "_v04." in entry)
    # the project's readers take it: audio found, frame labels checked against DEST's dictionary
    utterances = load_utterances(os.path.join(dest, "test_new_voices.tsv"))
    labels, missing = load_phone_probe_labels(utterances, max_train_utterances=4)
    assert not missing and len(labels.test.labels) == 4


def test_seen_voices_train_sentences_and_existing_splits_are_refused(corpora):
    source, dest = corpora[4], corpora[2]
    with pytest.raises(VoiceSplitError, match=r"train\.voice: DEST's train split already has voice\(s\) v01"):
        make_voice_split(source, "test", ["v01", "v03"], dest, "mixed")
    with pytest.raises(VoiceSplitError, match=r"train\.sent:\d+: sentence .* is in DEST's train split"):
        make_voice_split(source, "train", ["v03"], dest, "leaky")
    with pytest.raises(VoiceSplitError, match="no line has voice v09"):
        make_voice_split(source, "test", ["v09"], dest, "absent")
    make_voice_split(source, "valid", ["v03"], dest, "twice")
    with pytest.raises(VoiceSplitError, match="twice.tsv exists; pass --force"):
        make_voice_split(source, "valid", ["v04"], dest, "twice")
    assert not os.path.exists(os.path.join(dest, "mixed.tsv")) and not os.path.exists(os.path.join(dest, "leaky.tsv"))
