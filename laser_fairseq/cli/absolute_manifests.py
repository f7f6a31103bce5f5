"""Copies of a corpus folder's manifests with an absolute root, for fairseq's own tasks.

    python scripts/absolute_manifests.py manifests/demo --out outputs/demo_absolute

fairseq's audio_finetuning (CTC) and hubert_pretraining tasks join a manifest's root line with the working
directory (and fairseq-hydra-train changes into hydra.run.dir), so manifests with a relative root -- the
committed demo corpus, a synthetic corpus made with --relative-root, manifests from older versions -- only
work there from the manifest's folder. This writes into --out every manifest of SOURCE (a .tsv whose first
line is the audio root), each checked, with the root made absolute and the audio lines unchanged, plus the
side files of their splits (train.ltr, valid.phn, ...) and dict.*.txt, unchanged: --out is a task.data folder.
The audio stays where it is. SOURCE is never changed; files already in --out are replaced only with --force.
"""

import argparse
import os
import sys

from laser_fairseq.data.manifest import ManifestError, write_absolute_copies


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", metavar="SOURCE", help="folder holding the manifests (e.g. manifests/demo)")
    parser.add_argument("--out", required=True, help="folder for the copies (not SOURCE)")
    parser.add_argument("--force", action="store_true", help="replace files already in --out")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        written = write_absolute_copies(args.source, args.out, force=args.force)
    except ManifestError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    manifests = [os.path.basename(path) for path in written if path.endswith(".tsv")]
    print(f"wrote {len(written)} files to {args.out}: {', '.join(manifests)} with an absolute root, "
          f"{len(written) - len(manifests)} side file(s) unchanged", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
