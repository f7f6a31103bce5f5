"""Convert forced-aligner phone alignments into frame labels for manifests: <stem>.phn + dict.phn.txt.

    python scripts/alignments_to_frame_labels.py --manifest manifests/ls_probe/train.tsv \\
        manifests/ls_probe/valid.tsv --textgrids /data/alignments/dev-clean --strip-stress

For every audio line of every manifest, the alignment of its utterance (id = audio file name without
extension, e.g. 1272-128104-0000) is turned into one phone symbol per 20 ms upstream frame
(T = (samples - 400) // 320 + 1; frame t takes the phone at sample 320 t + 200). Frames no segment covers
become `sil`. Inputs: Montreal Forced Aligner TextGrids (any folder layout; the `phones` tier) or a text
file of `utterance_id start end phone` lines (seconds). Phones: silence names and empty labels -> `sil`,
optionally ARPAbet stress digits stripped (--strip-stress), then an optional `from to` table (--phone-map).

Writes <manifest stem>.phn beside each manifest and one dict.phn.txt (symbol counts over all the manifests)
beside the first; these are the files scripts/analyze_layers.py reads for its phone probe
(docs/phone_probe.md). Nothing is written unless every utterance converts; every problem is listed with
its file and line. Existing outputs are replaced only with --force. When the only problem is utterances
the aligner skipped, their audio paths (the manifests' first column) are written to unaligned.txt beside the
dictionary, to filter the manifests with (docs/phone_probe.md).
"""

import argparse
import os
import sys

from laser_fairseq.analysis.alignments import (
    DEFAULT_DURATION_TOLERANCE,
    DEFAULT_SILENCE_NAMES,
    DEFAULT_TIER,
    AlignmentError,
    MissingAlignments,
    PhoneMapping,
    alignment_lookup,
    convert_manifests,
    read_phone_map,
    symbol_counts,
    utterance_id,
)
from laser_fairseq.analysis.phone_labels import DICT_NAME, LABELS_EXTENSION, format_phone_dict
from laser_fairseq.analysis.utterances import side_file_path
from laser_fairseq.data.frames import SILENCE
from laser_fairseq.data.manifest import ManifestError, read_manifest
from laser_fairseq.files import write_texts


UNALIGNED_NAME = "unaligned.txt"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", nargs="+", required=True,
                        help="fairseq manifests (tsv) to label, e.g. train.tsv valid.tsv of one corpus folder")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--textgrids", help="folder searched recursively for <utterance id>.TextGrid files")
    source.add_argument("--ctm", nargs="+", help="text file(s) of 'utterance_id start end phone' lines")
    parser.add_argument("--tier", help=f"TextGrid tier holding the phones (default '{DEFAULT_TIER}' or "
                                       f"'<speaker> - {DEFAULT_TIER}')")
    parser.add_argument("--strip-stress", action="store_true",
                        help="drop ARPAbet stress digits (AH0, AH1, AH2 -> AH), e.g. 69 -> 39 phones for MFA's "
                             "english_us_arpa")
    parser.add_argument("--phone-map", help="file of 'from to' lines applied after the silence names and "
                                            "--strip-stress (e.g. folding a phone set)")
    parser.add_argument("--silence-names", nargs="*", default=list(DEFAULT_SILENCE_NAMES),
                        help=f"aligner labels that become '{SILENCE}', besides empty labels (default "
                             f"{' '.join(DEFAULT_SILENCE_NAMES)})")
    parser.add_argument("--duration-tolerance", type=float, default=DEFAULT_DURATION_TOLERANCE,
                        help=f"seconds an alignment may run past the audio's end, and a TextGrid's length may "
                             f"differ from the audio's (default {DEFAULT_DURATION_TOLERANCE})")
    parser.add_argument("--dict", help=f"phone dictionary to write (default {DICT_NAME} beside the first manifest)")
    parser.add_argument("--force", action="store_true", help="replace existing .phn / dictionary files")
    args = parser.parse_args(argv)
    if args.duration_tolerance < 0:
        parser.error("--duration-tolerance must be >= 0")
    return args


def output_paths(args) -> dict:
    """manifest path -> its .phn path, plus "dict" -> the dictionary path."""
    paths = {manifest: side_file_path(manifest, LABELS_EXTENSION) for manifest in args.manifest}
    paths["dict"] = args.dict or os.path.join(os.path.dirname(os.path.abspath(args.manifest[0])), DICT_NAME)
    return paths


def main(argv=None) -> int:
    args = parse_args(argv)
    paths = output_paths(args)
    existing = [path for path in paths.values() if os.path.exists(path)]
    if existing and not args.force:
        print(f"error: {', '.join(existing)} exist(s); pass --force to replace", file=sys.stderr)
        return 1
    try:
        manifests = [read_manifest(path) for path in args.manifest]
        table = read_phone_map(args.phone_map) if args.phone_map else {}
        mapping = PhoneMapping(frozenset(args.silence_names), args.strip_stress, table)
        alignment_of, available = alignment_lookup(args.textgrids, args.ctm, args.tier)
        converted = convert_manifests(manifests, alignment_of, mapping, args.duration_tolerance)
    except MissingAlignments as error:
        listing = os.path.join(os.path.dirname(paths["dict"]), UNALIGNED_NAME)
        write_texts({listing: "".join(f"{relative}\n" for _, relative in error.unaligned)})
        print(f"error: {error}\nall of them: {listing} (audio paths as in the manifests)", file=sys.stderr)
        return 1
    except (AlignmentError, ManifestError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    counts = symbol_counts(converted)
    texts = {paths[result.manifest.path]: "".join(f"{line}\n" for line in result.lines) for result in converted}
    texts[paths["dict"]] = format_phone_dict(counts)
    write_texts(texts)
    for result in converted:
        print(
            f"{paths[result.manifest.path]}: {len(result.lines)} utterances, {result.frames} frames, "
            f"{result.uncovered} frames outside every segment (labelled {SILENCE})"
        )
    total = sum(counts.values())
    used = {utterance_id(entry.path) for manifest in manifests for entry in manifest.entries}
    print(f"{paths['dict']}: {len(counts)} symbols, {SILENCE} {counts.get(SILENCE, 0) / total:.1%} of {total} frames")
    if available - used:
        print(f"note: {len(available - used)} aligned utterance(s) are in none of the manifests (left unused)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
