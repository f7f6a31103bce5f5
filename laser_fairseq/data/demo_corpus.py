"""The demo corpus committed in ``manifests/demo``: a preset of the synthetic corpus tool (``synthetic_corpus``).

16 hand-written sentences, each spoken by 5 espeak-ng voices (80 utterances, 16 kHz FLAC), split by sentence
into train (13 sentences) and valid (the last 3), manifests rooted at ``audio`` relative to their folder, with
``.wrd .ltr .sent .voice`` side files, ``dict.ltr.txt``, ``voices.tsv`` and a generated ``README.md``.
Regenerate it with ``python scripts/make_synthetic_corpus.py --preset demo --out manifests/demo --force``.
"""

from typing import Dict, List

from .sentences import Sentence
from .audio import SAMPLE_RATE
from .synthesis import Voice
from .synthetic_corpus import Preset, Record

# Written for this corpus: short, phonetically varied, digit-free (digits would be spoken as words and break the
# transcripts). The last ones go to valid.
DEMO_SENTENCES = (
    Sentence("s01", "Seven thirsty zebras drank slowly."),
    Sentence("s02", "Joyful children chased yellow kites."),
    Sentence("s03", "The old clock chimed at noon."),
    Sentence("s04", "Please fetch warm bread and cheese."),
    Sentence("s05", "A quiet fox crept through the garden."),
    Sentence("s06", "Thunder shook the windows."),
    Sentence("s07", "Gentle waves washed the pebbles."),
    Sentence("s08", "My brother bought a shiny violin."),
    Sentence("s09", "Each voyage needs a brave choice."),
    Sentence("s10", "The judge measured the huge pumpkin."),
    Sentence("s11", "Heavy rain soaked the village."),
    Sentence("s12", "Would you like orange juice?"),
    Sentence("s13", "Bright stars sparkled above the harbour."),
    Sentence("s14", "Nobody noticed the purple umbrella."),
    Sentence("s15", "Quickly zip your jacket."),
    Sentence("s16", "Thick fog hid the ships."),
)

# Five voices keep the committed FLACs under ~3 MB. Names are espeak-ng voice files + variant ("en" is the
# British English file, which the espeak-ng command line also selects for "en-gb"); pitch range 50 = normal.
DEMO_VOICES = (
    Voice("v1", "en-us+m3", 45, 50, 174, "American English, male"),
    Voice("v2", "en+f2", 62, 50, 182, "British English, female"),
    Voice("v3", "en-gb-scotland+m1", 36, 50, 168, "Scottish English, male"),
    Voice("v4", "en-029+f4", 70, 50, 178, "Caribbean English, female"),
    Voice("v5", "en-gb-x-rp+m7", 52, 50, 190, "Received Pronunciation English, male"),
)

DEMO_SIDE_FILES = ("wrd", "ltr", "sent", "voice")


def demo_readme(preset: Preset, splits: Dict[str, List[Sentence]], records: List[Record]) -> str:
    """Markdown description of the demo corpus, generated with it so that it never goes stale."""
    seconds = [r.num_samples / SAMPLE_RATE for r in records]
    sentence_rows = "\n".join(
        f"| {s.sentence_id} | {split} | {s.text} |" for split, sentences in splits.items() for s in sentences
    )
    voice_rows = "\n".join(
        f"| {v.voice_id} | `{v.espeak_name}` | {v.pitch} | {v.pitch_range} | {v.rate} | {v.description} |"
        for v in preset.voices
    )
    valid_ids = ", ".join(s.sentence_id for s in splits["valid"])
    return f"""# Demo speech corpus

A tiny synthetic English corpus for smoke tests and demos of laser-fairseq.
It is NOT meant for real training: every file is espeak-ng speech.

- {len(preset.sentences)} sentences, each spoken by all {len(preset.voices)} voices:
  {len(records)} files, {min(seconds):.2f}-{max(seconds):.2f} s each,
  {sum(seconds):.1f} s in total.
- 16 kHz mono, 16-bit FLAC in `audio/<sentid>_<voiceid>.flac`.
- Split by sentence: `valid` holds all voices of sentences
  {valid_ids}; `train` holds the other
  {len(splits["train"])} sentences. Validation content is unseen in training.

## Files

| file | content |
| --- | --- |
| `train.tsv`, `valid.tsv` | fairseq manifests: root `audio`, then `file<TAB>num_samples` |
| `*.wrd` | transcript: upper-case words, punctuation removed (LibriSpeech style) |
| `*.ltr` | fairseq letter targets, `|` marks word ends (as `libri_labels.py`) |
| `*.sent` | sentence id of each utterance |
| `*.voice` | voice id of each utterance (see `voices.tsv`) |
| `dict.ltr.txt` | fairseq dictionary of letters and `|` over train+valid |
| `voices.tsv` | voice id, espeak-ng voice, pitch, pitch range, rate |

The side files have one line per audio line of the manifest with the same
name (the root line is not counted). The manifest root `audio` is relative to
the folder holding the manifest, so the committed corpus works from any
checkout; fairseq's own tasks need the absolute copies
`python scripts/absolute_manifests.py manifests/demo --out DEST` writes (why:
docs/synthetic_corpus.md#the-manifests-root-line).

## Sentences

| id | split | text |
| --- | --- | --- |
{sentence_rows}

## Voices

| id | espeak-ng voice | pitch | pitch range | rate (wpm) | description |
| --- | --- | --- | --- | --- | --- |
{voice_rows}

## Regenerating

The demo preset of the synthetic corpus tool (`laser_fairseq/data/demo_corpus.py`, libespeak-ng from the
`espeakng-loader` wheel). From the repository root:

<!-- run: syntax -->
```bash
python scripts/make_synthetic_corpus.py --preset demo --out manifests/demo --force
```

Output is byte-identical for the same libespeak-ng / torchaudio / libsndfile
versions. See `python scripts/make_synthetic_corpus.py --help` for options.
"""


DEMO_PRESET = Preset(
    name="demo",
    sentences=DEMO_SENTENCES,
    voices=DEMO_VOICES,
    valid_sentences=3,
    side_files=DEMO_SIDE_FILES,
    readme=demo_readme,
)

# Every named preset of the synthetic corpus tool (``make_synthetic_corpus --preset NAME``).
PRESETS = {DEMO_PRESET.name: DEMO_PRESET}
