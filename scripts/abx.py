#!/usr/bin/env python
"""ABX phone discriminability (fastabx, ZeroSpeech 2021 triphone ABX) of every layer of an upstream, and of the
log-mel and MFCC inputs as reference rows, within and across voices, on a split with frame phone labels.

    python scripts/abx.py --upstream examples/hubert_pretraining/tiny_progressive_hubert.pt \\
        --data outputs/synthetic_corpus --split test --out outputs/abx/tiny_progressive

--upstream: any checkpoint this project loads (fairseq HuBERT, unilm WavLM, a LASER training checkpoint, a
Hugging Face directory). --data CORPUS --split SPLIT: CORPUS/SPLIT.tsv with SPLIT.phn (frame phone labels),
SPLIT.voice and dict.phn.txt beside it. Writes DIR/abx.json:

    {"layers": {"cnn": {"within": 31.2, "across": 35.0}, ...}, "inputs": {"log-mel": {...}, "mfcc": {...}},
     "upstream": ..., "upstream_sha256": ..., "split": ..., "items": {...}, "abx": {settings}, "seconds": {...}}

(error rates in %, lower is better, chance 50) and DIR/SPLIT.item, the item file fastabx read. A finished
DIR for the same upstream and split is left as it is; one for another upstream or split is never
overwritten. See docs/abx.md.
"""

import argparse
import hashlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RESULT = "abx.json"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True, help="checkpoint file or Hugging Face directory")
    parser.add_argument("--data", required=True, help="corpus folder with SPLIT.tsv, SPLIT.phn, SPLIT.voice, "
                                                      "dict.phn.txt")
    parser.add_argument("--split", default="test", help="which manifest of --data (default test)")
    parser.add_argument("--out", required=True, help="output folder (abx.json, SPLIT.item)")
    parser.add_argument("--max-utterances", type=int, help="only the first N audio lines of the split")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the upstream runs")
    parser.add_argument("--inputs-only", action="store_true",
                        help="only the log-mel and MFCC rows (no upstream is opened; --upstream is recorded)")
    args = parser.parse_args(argv)
    if args.max_utterances is not None and args.max_utterances < 1:
        parser.error("--max-utterances must be >= 1")
    return args


def upstream_sha256(path: str) -> str:
    """sha256 of the checkpoint file; of a directory: of its files' relative paths and contents, in order."""
    if os.path.isfile(path):
        files = [("", path)]
    else:
        files = sorted(
            (os.path.relpath(os.path.join(folder, name), path), os.path.join(folder, name))
            for folder, _, names in os.walk(path) for name in names
        )
    digest = hashlib.sha256()
    for relative, full in files:
        if relative:
            digest.update(relative.encode() + b"\0")
        with open(full, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def finished_result(out_dir: str, sha256: str, split_manifest: str, max_utterances):
    """The finished abx.json of the same run, None when there is none; exits when DIR holds another run's."""
    path = os.path.join(out_dir, RESULT)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            done = json.load(handle)
    except (OSError, ValueError) as error:
        sys.exit(f"error: {path}: exists but cannot be read ({error}); delete it or choose another --out")
    same = (done.get("upstream_sha256") == sha256 and done.get("manifest") == os.path.abspath(split_manifest)
            and done.get("max_utterances") == max_utterances)
    if not same:
        sys.exit(
            f"error: {path}: a finished ABX run of another upstream or split ({done.get('upstream')}, sha256 "
            f"{str(done.get('upstream_sha256'))[:12]}…, {done.get('manifest')}); it is not overwritten: choose "
            f"another --out, or delete {path} to measure again there"
        )
    return done


class StderrProgress:
    def __init__(self):
        self.started = time.monotonic()

    def __call__(self, stage: str, done: int, total: int):
        step = max(1, -(-total // 10))
        if done == total or done % step == 0:
            sys.stderr.write(f"{stage}: {done}/{total} ({time.monotonic() - self.started:.0f} s)\n")
            sys.stderr.flush()


def main(argv=None):
    args = parse_args(argv)
    import torch

    from laser_fairseq.analysis.abx import AbxInputError, abx_of_upstream, abx_settings, load_abx_split
    from laser_fairseq.analysis.phone_labels import FrameLabelError
    from laser_fairseq.checkpoint_io import CheckpointError
    from laser_fairseq.data.audio import AudioError
    from laser_fairseq.data.manifest import ManifestError
    from laser_fairseq.models.trained_upstream import open_upstream
    from laser_fairseq.files import write_json

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda, but torch sees no CUDA device")
    if not os.path.exists(args.upstream):
        sys.exit(f"error: {args.upstream}: upstream not found (--upstream): give a HuBERT/WavLM/LASER checkpoint "
                 f"file or a Hugging Face directory")
    sha256 = upstream_sha256(args.upstream)
    manifest = os.path.join(args.data, f"{args.split}.tsv")
    done = finished_result(args.out, sha256, manifest, args.max_utterances)
    if done is not None:
        print(f"{os.path.join(args.out, RESULT)}: already measured for this upstream and split; nothing to do")
        return
    try:
        split = load_abx_split(args.data, args.split, args.max_utterances)
        upstream = None
        if not args.inputs_only:
            try:
                upstream = open_upstream(args.upstream).upstream.to(args.device).eval()
            except Exception as error:  # any failure to load is reported with the file and the fix
                raise CheckpointError(
                    f"{args.upstream}: cannot be loaded as an upstream ({type(error).__name__}: {error}); give a "
                    f"fairseq HuBERT, unilm WavLM or LASER checkpoint, or a Hugging Face HuBERT/WavLM directory "
                    f"(docs/checkpoints.md)"
                ) from error
        os.makedirs(args.out, exist_ok=True)
        item_path = os.path.join(args.out, f"{args.split}.item")
        sys.stderr.write(f"{len(split.items)} triphone items in {len(split.utterances)} utterances of {manifest}\n")
        result = abx_of_upstream(upstream, split, item_path, args.device, StderrProgress())
    except (AbxInputError, FrameLabelError, CheckpointError, ManifestError, AudioError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    record = {
        "layers": result["layers"],
        "inputs": result["inputs"],
        "upstream": args.upstream,
        "upstream_sha256": sha256,
        "corpus": args.data,
        "split": args.split,
        "manifest": os.path.abspath(manifest),
        "max_utterances": args.max_utterances,
        "utterances": len(split.utterances),
        "items": result["items"],
        "item_file": item_path,
        "abx": abx_settings(),
        "device": args.device,
        "seconds": result["seconds"],
    }
    write_json(os.path.join(args.out, RESULT), record)  # written whole, then renamed: finished or absent
    print(format_table(record))
    print(f"wrote {os.path.join(args.out, RESULT)} ({result['seconds']['total']:.1f} s)")


def format_table(record: dict) -> str:
    rows = [("input " + name, scores) for name, scores in record["inputs"].items()]
    rows += list(record["layers"].items())
    lines = ["| features | within-voice ABX % | across-voice ABX % |", "|---|---:|---:|"]
    lines += [f"| {name} | {scores['within']:.2f} | {scores['across']:.2f} |" for name, scores in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
