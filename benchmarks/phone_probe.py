#!/usr/bin/env python
"""Phone probe cost per layer, and (with --corpus) its accuracy against two other linear probes.

Speed (always): synthetic frames (a class embedding plus noise, float32) of --utterances test utterances
and --train-utterances training utterances of --seconds each at --dim features and --classes phones, as one
layer of scripts/analyze_layers.py sees them. Times, in one process: accumulating the training statistics
(fitting + held-out utterances, which also score the candidate shrinkages), the final solve, and predicting
and scoring the test utterances. Frame generation is not timed.

    python benchmarks/phone_probe.py --utterances 3000 --seconds 2 --dim 768

Classifier comparison (--corpus DIR, a corpus with train/test .tsv + .phn + dict.phn.txt such as the
synthetic corpus): log-mel frames (80 bands, 25 ms / 20 ms, the frames' own grid), optionally stacked with
--context neighbours on each side, stand in for a layer; the same training utterances (fitting + held-out
every 5th sentence) train three linear probes, each choosing its regulariser on the held-out ones:
  lda      the probe of scripts/analyze_layers.py (shrinkage LDA from streamed statistics)
  ridge    ridge regression on one-hot targets from the same statistics (least squared held-out error)
  softmax  multinomial logistic regression, full-batch L-BFGS (torch), weight decay by held-out accuracy
Reports test frame accuracy, PER and seconds for each.

    python benchmarks/phone_probe.py --corpus data/synth --context 4

Results: ``--out DIR`` also writes DIR/phone_probe.json (``--name`` changes the file name; the timings, the
comparison's rows, the command, date, machine, load average before/after and versions;
laser_fairseq/bench_results.py). ``make bench`` writes the committed benchmarks/results/phone_probe*.json,
from which docs/phone_probe.md quotes.
"""

import argparse
import os
import time

import numpy as np
import torch

from laser_fairseq.analysis import phone_probe
from laser_fairseq.analysis.features import log_mel_frames
from laser_fairseq.analysis.phone_labels import evenly_spaced, read_frame_labels, read_phone_dict, selection_mask
from laser_fairseq.analysis.utterances import load_utterances
from laser_fairseq.data.audio import read_audio
from laser_fairseq.data.frames import SILENCE, frame_count
from laser_fairseq.data.manifest import read_manifest

RIDGE_STRENGTHS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # x the number of frames
WEIGHT_DECAYS = (1e-5, 1e-4, 1e-3)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=3000, help="test utterances (default 3000)")
    parser.add_argument("--train-utterances", type=int, default=500, help="training utterances (default 500, "
                        "analyze_layers.py's --probe-train-utterances default)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of every utterance (default 2)")
    parser.add_argument("--dim", type=int, default=768, help="features per frame (default 768, a Base layer)")
    parser.add_argument("--classes", type=int, default=40, help="phone classes (default 40)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic frames (default 0)")
    parser.add_argument("--corpus", help="also compare lda / ridge / softmax probes on this corpus's log-mel frames")
    parser.add_argument("--context", type=int, default=0, help="--corpus: stack this many neighbouring log-mel "
                        "frames on each side (default 0: 80 features; 4: 720)")
    parser.add_argument("--max-train-utterances", type=int, default=500,
                        help="--corpus: training utterances, evenly spaced (default 500)")
    parser.add_argument("--out", help="write the results to OUT/NAME.json (make bench: benchmarks/results)")
    parser.add_argument("--name", default="phone_probe", help="file name of the results (default phone_probe)")
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------------------------ speed


def synthetic_utterance(rng, embedding: np.ndarray, frames: int):
    """((T, C) float32 frames, (T,) labels): runs of 3..12 frames of random phones, embedding + noise."""
    labels = np.repeat(rng.integers(0, len(embedding), size=frames), rng.integers(3, 13, size=frames))[:frames]
    return (embedding[labels] + rng.normal(size=(frames, embedding.shape[1]))).astype(np.float32), labels


def time_probe(args) -> dict:
    rng = np.random.default_rng(args.seed)
    embedding = rng.normal(size=(args.classes, args.dim)) * 0.5
    frames = frame_count(int(args.seconds * 16000))
    trainer = phone_probe.ProbeTrainer(args.dim, args.classes)
    times = {"statistics": 0.0, "solve": 0.0, "predict_and_score": 0.0}
    for held_out in (False, True):
        for index in range(args.train_utterances):
            if (index % 5 == 4) != held_out:
                continue
            x, y = synthetic_utterance(rng, embedding, frames)
            started = time.perf_counter()
            trainer.add(x, y, held_out)
            times["statistics"] += time.perf_counter() - started
    started = time.perf_counter()
    probe = trainer.finish()
    times["solve"] = time.perf_counter() - started
    test = [synthetic_utterance(rng, embedding, frames) for _ in range(args.utterances)]
    started = time.perf_counter()
    predicted = phone_probe.predict_utterances(probe, [x for x, _ in test])
    scores = phone_probe.score(predicted, [y for _, y in test], silence=0)
    times["predict_and_score"] = time.perf_counter() - started
    times["total"] = sum(times.values())
    times["accuracy"] = scores.accuracy
    return times


# ------------------------------------------------------------------------------------ classifier comparison


def corpus_frames(folder: str, split: str, symbols, context: int, limit=None):
    manifest_path = os.path.join(folder, f"{split}.tsv")
    utterances = load_utterances(manifest_path).utterances
    if limit is not None:
        utterances = [utterances[i] for i in evenly_spaced(len(utterances), limit)]
    labels = read_frame_labels(os.path.join(folder, f"{split}.phn"), read_manifest(manifest_path), symbols,
                               os.path.join(folder, "dict.phn.txt"), [u.index for u in utterances])
    frames = [stacked(log_mel_frames(read_audio(u.path, 16000)), context) for u in utterances]
    return utterances, frames, labels


def stacked(frames: np.ndarray, context: int) -> np.ndarray:
    """(T, F) -> (T, (2 context + 1) F): each frame with its neighbours (edges repeated)."""
    padded = np.pad(frames, ((context, context), (0, 0)), mode="edge")
    return np.concatenate([padded[i:i + len(frames)] for i in range(2 * context + 1)], axis=1)


def lda_probe(train, held_out_mask, dim, classes):
    trainer = phone_probe.ProbeTrainer(dim, classes)
    for held_out in (False, True):
        for (x, y), selected in zip(train, held_out_mask):
            if selected == held_out:
                trainer.add(x, y, held_out)
    probe = trainer.finish()
    return probe.predict, f"shrinkage {probe.shrinkage:g}"


def ridge_probe(train, held_out_mask, dim, classes):
    """Ridge on one-hot targets from the same statistics; strength by the held-out squared error."""

    def solve(parts, strength):
        stats = phone_probe.ProbeStatistics(dim, classes)
        for x, y in parts:
            stats.add(x, y)
        mean, scale = phone_probe.standardisation(stats)
        moments = phone_probe.standardised_moments(stats, mean, scale)
        weight = np.linalg.solve(moments.zz + strength * moments.count * np.eye(dim), moments.zy)
        return lambda x: ((x - mean) / scale) @ weight + moments.y_sum / moments.count

    fitting = [pair for pair, selected in zip(train, held_out_mask) if not selected]
    held = [pair for pair, selected in zip(train, held_out_mask) if selected]
    errors = []
    for strength in RIDGE_STRENGTHS:
        scores = solve(fitting, strength)
        errors.append(sum(np.sum((np.eye(classes)[y] - scores(x)) ** 2) for x, y in held))
    strength = RIDGE_STRENGTHS[int(np.argmin(errors))]
    scores = solve(train, strength)
    return (lambda x: np.argmax(scores(x), axis=1)), f"strength {strength:g}"


def softmax_probe(train, held_out_mask, dim, classes, iterations=100):
    """Multinomial logistic regression on standardised frames, full-batch L-BFGS."""

    def fit(parts, decay):
        x = np.concatenate([p[0] for p in parts]).astype(np.float64)
        mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-8
        z = torch.tensor((x - mean) / scale, dtype=torch.float32)
        y = torch.tensor(np.concatenate([p[1] for p in parts]), dtype=torch.long)
        torch.manual_seed(0)
        linear = torch.nn.Linear(dim, classes)
        optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=iterations, history_size=20,
                                      line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(linear(z), y) + decay * linear.weight.pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)

        def predict(frames):
            with torch.no_grad():
                return linear(torch.tensor((frames - mean) / scale, dtype=torch.float32)).argmax(1).numpy()

        return predict

    fitting = [pair for pair, selected in zip(train, held_out_mask) if not selected]
    held = [pair for pair, selected in zip(train, held_out_mask) if selected]
    hits = []
    for decay in WEIGHT_DECAYS:
        predict = fit(fitting, decay)
        hits.append(sum(int(np.sum(predict(x) == y)) for x, y in held))
    decay = WEIGHT_DECAYS[int(np.argmax(hits))]
    return fit(train, decay), f"weight decay {decay:g}"


def compare_classifiers(args):
    symbols = read_phone_dict(os.path.join(args.corpus, "dict.phn.txt"))
    silence = symbols.index(SILENCE) if SILENCE in symbols else None
    utterances, frames, labels = corpus_frames(args.corpus, "train", symbols, args.context, args.max_train_utterances)
    _, test_frames, test_labels = corpus_frames(args.corpus, "test", symbols, args.context)
    train, held_out_mask = list(zip(frames, labels)), selection_mask(utterances).tolist()
    dim = frames[0].shape[1]
    result = {"training_utterances": len(train), "training_frames": sum(len(y) for y in labels),
              "held_out_utterances": sum(held_out_mask), "test_utterances": len(test_frames),
              "test_frames": sum(len(y) for y in test_labels), "features": dim, "classes": len(symbols), "rows": []}
    print(f"{len(train)} training utterances ({sum(len(y) for y in labels)} frames, {sum(held_out_mask)} held out), "
          f"{len(test_frames)} test utterances ({sum(len(y) for y in test_labels)} frames), {dim} features, "
          f"{len(symbols)} classes")
    for name, make in (("lda", lda_probe), ("ridge", ridge_probe), ("softmax", softmax_probe)):
        started = time.perf_counter()
        predict, chosen = make(train, held_out_mask, dim, len(symbols))
        scores = phone_probe.score([predict(x) for x in test_frames], test_labels, silence)
        seconds = time.perf_counter() - started
        print(f"  {name:8s} accuracy {scores.accuracy:.4f}  PER {scores.error_rate:.4f}  "
              f"{seconds:7.1f} s  ({chosen})", flush=True)
        result["rows"].append({"name": name, "accuracy": scores.accuracy, "per": scores.error_rate,
                               "seconds": seconds, "chosen": chosen})
    return result


def main(argv=None):
    args = parse_args(argv)
    from laser_fairseq.bench_results import Recorder

    recorder = Recorder(args.name, args, None if argv is None else ["benchmarks/phone_probe.py", *argv])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    times = time_probe(args)
    print(f"phone probe, one layer: {args.train_utterances} training + {args.utterances} test utterances of "
          f"{args.seconds:g} s ({frame_count(int(args.seconds * 16000))} frames), {args.dim} features, "
          f"{args.classes} classes:")
    print("  " + ", ".join(f"{key} {value:.2f} s" for key, value in times.items() if key != "accuracy")
          + f" (accuracy {times['accuracy']:.3f})")
    results = {"speed": {**{f"{key}_s": value for key, value in times.items() if key != "accuracy"},
                         "accuracy": times["accuracy"], "frames_per_utterance": frame_count(int(args.seconds * 16000))}}
    if args.corpus:
        results["classifiers"] = compare_classifiers(args)
    recorder.write(args.out, results)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
