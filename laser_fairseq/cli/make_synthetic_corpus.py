"""Synthesise an English speech corpus with frame-level phone labels, using only pip packages.

    python scripts/make_synthetic_corpus.py --out data/synth --sentences 250 --voices 8 --seed 1

Sentences come from a small committed grammar (laser_fairseq/data/sentences.py), every sentence is spoken by
several espeak-ng voices (libespeak-ng 1.52 from the espeakng-loader wheel, called through ctypes: no system
espeak-ng, no network). Splits are by sentence: valid and test sentences never occur in train.

Output in --out: audio/<sentence>_<voice>.flac (16 kHz mono), fairseq manifests train/valid/test.tsv, and per
split .wrd .ltr .sent .voice .phones (espeak's phones) .phn (one phone per 50 Hz frame, HuBERT/WavLM frame
count), plus dict.ltr.txt, dict.phn.txt, voices.tsv, sentences.tsv and corpus.json. The same arguments give
byte-identical output (the manifests' root line names --out). See docs/synthetic_corpus.md.

The manifests' root line is the absolute path of --out/audio, or with --relative-root "audio", relative to the
manifest's folder, for a corpus to move or commit (why: docs/synthetic_corpus.md#the-manifests-root-line).

--preset demo makes the committed demo corpus instead (16 fixed sentences x 5 voices, train/valid, root "audio"):

    python scripts/make_synthetic_corpus.py --preset demo --out manifests/demo --force
"""

import argparse
import dataclasses
import os
import sys

from laser_fairseq.data.demo_corpus import PRESETS
from laser_fairseq.data.synthesis import VOICES, EspeakError
from laser_fairseq.data.synthetic_corpus import CorpusError, CorpusSettings, build_corpus, build_preset

# what a preset fixes: these flags must keep their defaults with --preset
PRESET_FIXED = ("sentences", "voices", "voices_per_sentence", "test_sentences", "seed", "edge_silence_ms",
                "relative_root")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (must not exist or be empty, unless --force)")
    parser.add_argument(
        "--sentences", type=int, default=250,
        help="distinct sentences over all splits (default 250: with 8 voices, 2000 utterances)",
    )
    parser.add_argument(
        "--voices", type=int, default=8,
        help=f"number of voices, the first ones of the table in docs/synthetic_corpus.md (1..{len(VOICES)}, default 8)",
    )
    parser.add_argument(
        "--voices-per-sentence", type=int, default=0,
        help="voices speaking each sentence, rotating through the voices (default: all of them)",
    )
    parser.add_argument(
        "--valid-sentences", type=int, default=0,
        help="sentences held out for valid (default: 10%% of --sentences, at least 1)",
    )
    parser.add_argument(
        "--test-sentences", type=int, default=0,
        help="sentences held out for test (default: 10%% of --sentences, at least 1)",
    )
    parser.add_argument("--seed", type=int, default=1, help="chooses the sentences and the synthesis noise (default 1)")
    parser.add_argument(
        "--edge-silence-ms", type=int, default=100,
        help="silence added before and after every utterance, labelled sil (default 100)",
    )
    parser.add_argument(
        "--workers", type=int, default=min(2, os.cpu_count() or 1),
        help="synthesis processes (default: 2, or 1 on a single core); the output does not depend on it",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing corpus in --out")
    parser.add_argument(
        "--relative-root", action="store_true",
        help="write the manifests' root as 'audio' (relative to their folder: a corpus to move or commit) "
             "instead of the absolute path of --out/audio",
    )
    parser.add_argument(
        "--progress-seconds", type=float, default=10.0, help="seconds between progress lines (default 10)"
    )
    parser.add_argument(
        "--preset", choices=sorted(PRESETS),
        help="a named corpus of fixed sentences and voices instead of grammar sentences: 'demo' is the committed "
             "manifests/demo (train/valid, relative root); --valid-sentences (default: the preset's), --workers, "
             "--force and --progress-seconds apply, the other corpus options are fixed",
    )
    return parser.parse_args(argv)


def make_preset(args) -> int:
    """``--preset``: build_preset of the named preset, after checking no option it fixes was given."""
    defaults = parse_args(["--out", args.out])
    changed = [name for name in PRESET_FIXED if getattr(args, name) != getattr(defaults, name)]
    if changed:
        options = ", ".join("--" + name.replace("_", "-") for name in changed)
        print(f"error: --preset {args.preset} fixes {options}; leave them out", file=sys.stderr)
        return 1
    preset = PRESETS[args.preset]
    if args.valid_sentences:
        preset = dataclasses.replace(preset, valid_sentences=args.valid_sentences)
    try:
        result = build_preset(args.out, preset, workers=args.workers, force=args.force,
                              progress_seconds=args.progress_seconds)
    except (CorpusError, EspeakError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {result.utterances} utterances of preset {preset.name} to {result.out} in {result.seconds:.1f} s")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    settings = CorpusSettings(**{field.name: getattr(args, field.name) for field in dataclasses.fields(CorpusSettings)})
    if args.workers < 1:
        print(f"error: --workers must be at least 1, got {args.workers}", file=sys.stderr)
        return 1
    if args.preset:
        return make_preset(args)
    try:
        result = build_corpus(
            args.out, settings, workers=args.workers, force=args.force, progress_seconds=args.progress_seconds,
            relative_root=args.relative_root,
        )
    except (CorpusError, EspeakError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        f"wrote {result.utterances} utterances to {result.out} in {result.seconds:.1f} s: "
        f"{result.utterances_per_minute:.0f} utterances/minute with {args.workers} worker(s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
