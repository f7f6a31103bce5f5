#!/usr/bin/env python
"""The cost of the field's two yardsticks for one upstream: SUPERB phone recognition (s3prl's recipe, the
miniature preset) and fastabx triphone ABX of every layer and of the two input rows on the test split.

Targets (issue 24): SUPERB PR, miniature preset, ≤ 15 min on 2 cores for one upstream; ABX of all layers of
the tiny model on the test split ≤ 2 min. Each is timed as wall-clock time of the library call the command
line makes (``laser_fairseq.evaluation.superb_pr.run_superb_pr`` and ``laser_fairseq.analysis.abx_run.run_abx``)
into a fresh temporary folder, so nothing is reused; the process's CPU time is recorded beside it, because
on a shared machine the wall-clock time measures the other jobs too.

--data is a synthetic corpus with phone labels (``scripts/make_synthetic_corpus.py``; the study's corpus is
``--sentences 250 --voices 8 --seed 1``); without it one is built into the temporary folder first (not
timed).

    python benchmarks/yardsticks.py --data outputs/synthetic_corpus --out outputs/bench

Results: ``--out DIR`` also writes DIR/yardsticks.json (each run's wall-clock and CPU seconds, its target,
its result numbers, the command, date, machine, load average before/after and versions;
laser_fairseq/bench_results.py). ``make bench`` writes the committed benchmarks/results/yardsticks.json.
"""

import argparse
import os
import resource
import tempfile
import time

from laser_fairseq.checkout import REPO

DEFAULT_UPSTREAM = os.path.join(REPO, "examples", "hubert_pretraining", "tiny_progressive_hubert.pt")
TARGET_SECONDS = {"superb_pr": 15 * 60, "abx": 2 * 60}
STUDY_CORPUS = dict(sentences=250, voices=8, seed=1)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", default=DEFAULT_UPSTREAM,
                        help="upstream checkpoint (default: the committed tiny pretrained HuBERT)")
    parser.add_argument("--data", help="synthetic corpus with phone labels (default: build the study's corpus "
                                       "into a temporary folder, not timed)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the SUPERB PR probe (default 1)")
    parser.add_argument("--skip", choices=sorted(TARGET_SECONDS), action="append", default=[],
                        help="leave one yardstick out (repeatable)")
    parser.add_argument("--out", help="write the results to OUT/yardsticks.json (make bench: benchmarks/results)")
    return parser.parse_args(argv)


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(name: str, call) -> dict:
    """Run ``call()``; its wall-clock and CPU seconds against the target of ``name``, and what it returned."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = call()
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    target = TARGET_SECONDS[name]
    print(f"{name}: {wall:.1f} s wall-clock, {cpu:.1f} s CPU (target ≤ {target} s: "
          f"{'met' if wall <= target else 'NOT met'})")
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "target_s": target, "target_met": wall <= target,
            "result": result}


def build_corpus(folder: str) -> str:
    from laser_fairseq.data.synthetic_corpus import CorpusSettings, build_corpus as build

    print(f"building the study corpus ({STUDY_CORPUS}) into {folder} (not timed)")
    return build(folder, CorpusSettings(**STUDY_CORPUS), workers=2, log=lambda message: None).out


def main(argv=None):
    args = parse_args(argv)
    from laser_fairseq.analysis.abx_run import run_abx
    from laser_fairseq.bench_results import Recorder
    from laser_fairseq.evaluation.superb_pr import run_superb_pr

    recorder = Recorder("yardsticks", args, None if argv is None else ["benchmarks/yardsticks.py", *argv])
    results = {}
    with tempfile.TemporaryDirectory(prefix="yardsticks-") as scratch:
        data = args.data or build_corpus(os.path.join(scratch, "corpus"))
        if "superb_pr" not in args.skip:
            run = timed("superb_pr", lambda: run_superb_pr(args.upstream, data, os.path.join(scratch, "superb_pr"),
                                                           preset="miniature", seed=args.seed))
            kept = {key: run["result"][key] for key in ("per", "valid_per", "steps") if key in run["result"]}
            results["superb_pr"] = {**run, "result": kept}
        if "abx" not in args.skip:
            run = timed("abx", lambda: run_abx(args.upstream, data, "test", os.path.join(scratch, "abx"),
                                               log=lambda message: None))
            record = run["result"]
            results["abx"] = {**run, "result": {"layers": len(record["layers"]), "utterances": record["utterances"],
                                                "seconds": record["seconds"]}}
    recorder.write(args.out, results)


if __name__ == "__main__":
    main()
