"""SUPERB phone recognition (PR) through s3prl's own recipe, for any upstream this project loads or exports.

``CorpusPR`` subclasses s3prl 0.4.18's ``s3prl.problem.asr.superb_pr.SuperbPR`` and changes only what this
environment needs: where the data come from (:meth:`CorpusPR.prepare_data`) and which upstream is built
(:meth:`CorpusPR.build_upstream`). Everything else is s3prl's recipe as it ships: the weighted sum of all hidden
states with learned layer weights (``Featurizer``), the frame-level linear head (``FrameLevelLinear``), CTC,
PER, Adam, gradient clipping and accumulation, best-on-valid checkpointing and ``auto_resume``.

Data: either the synthetic corpus (``scripts/make_synthetic_corpus.py``: ``{split}.tsv`` + ``{split}.phones``,
espeak's phone transcription of each utterance) or LibriSpeech in its own layout (s3prl's own preparation and
``G2P``, with the lexicon files given as local paths). On the synthetic corpus the probe trains on ``train``,
picks its checkpoint on ``valid`` and is tested on every split of ``test_splits`` (default ``test``; e.g. also
a held-out-voice split of ``scripts/make_voice_split.py``). A finished run asked for a split it was not tested
on is only tested on it (s3prl's test stage, no training), so one trained probe serves every eval split.
"""

import json
import math
import os
from typing import Dict, List, Optional, Sequence

import yaml

from ..checkpoint_io import CheckpointError
from ..files import sha256_of, write_json
from .s3prl_compat import s3prl_environment, superb_pr_class
from .s3prl_upstream import project_upstream

CORPUS_SPLITS = ("train", "valid", "test")
TEST_STAGE = 4  # s3prl's ASR.run stage that tests the valid-best checkpoint on each test csv
# The SUPERB recipe as s3prl ships it (SuperbPR.default_config) is the full-scale preset; the miniature scales the
# step budget (100,000 -> 600) and with it the evaluation / save intervals and the gradient accumulation, so that
# one upstream finishes within 15 min on 2 CPU cores. Learning rate, batch size, head, CTC and metric are SUPERB's.
PRESETS = {
    "full": dict(total_steps=100000, eval_step=1000, save_step=100, log_step=100, gradient_accumulate=2,
                 batch_size=16),
    "miniature": dict(total_steps=600, eval_step=200, save_step=100, log_step=50, gradient_accumulate=1,
                      batch_size=16),
}
RESULT = "result.json"


class SuperbPRError(Exception):
    """A bad input of a SUPERB PR run, with the file and the fix in its message."""


def is_synthetic_corpus(data: str) -> bool:
    return os.path.isfile(os.path.join(data, "train.tsv"))


def test_name(split: str) -> str:
    """The name s3prl gives a synthetic-corpus test split (the stem of its csv): result.json's ``test`` keys."""
    return f"corpus_{split}"


def check_corpus(data: str, test_splits: Sequence[str] = ("test",)) -> None:
    if not os.path.isdir(data):
        raise SuperbPRError(f"{data}: no such folder; pass a corpus made by scripts/make_synthetic_corpus.py or "
                            f"a LibriSpeech root (--data)")
    if not is_synthetic_corpus(data):
        if os.path.isdir(os.path.join(data, "train-clean-100")):
            return
        raise SuperbPRError(f"{data}: neither a synthetic corpus (no train.tsv) nor a LibriSpeech root (no "
                            f"train-clean-100/); make one with scripts/make_synthetic_corpus.py")
    for split in dict.fromkeys(("train", "valid", *test_splits)):
        for suffix in (".tsv", ".phones"):
            path = os.path.join(data, split + suffix)
            if not os.path.isfile(path):
                raise SuperbPRError(
                    f"{path}: missing: the corpus has no phone transcriptions ({split}.phones); re-make it with "
                    f"scripts/make_synthetic_corpus.py, which writes them")


def corpus_csv(data: str, split: str, csv_path: str) -> None:
    """s3prl's ASR csv (id, wav_path, transcription) of one split of the synthetic corpus: the transcription is
    the utterance's phone sequence (espeak's phones, pauses left out), space-separated."""
    import pandas as pd

    with open(os.path.join(data, f"{split}.tsv")) as handle:
        lines = handle.read().splitlines()
    root = os.path.join(data, lines[0]) if not os.path.isabs(lines[0]) else lines[0]
    entries = [line.split("\t")[0] for line in lines[1:] if line.strip()]
    with open(os.path.join(data, f"{split}.phones")) as handle:
        phones = [line.strip() for line in handle.read().splitlines()]
    if len(phones) != len(entries):
        raise SuperbPRError(f"{os.path.join(data, split + '.phones')}: {len(phones)} lines for {len(entries)} "
                            f"utterances in {split}.tsv; re-make the corpus with scripts/make_synthetic_corpus.py")
    empty = [entry for entry, line in zip(entries, phones) if not line]
    if empty:
        raise SuperbPRError(f"{os.path.join(data, split + '.phones')}: empty phone transcription for {empty[:3]}")
    frame = pd.DataFrame({
        "id": [os.path.splitext(os.path.basename(entry))[0] for entry in entries],
        "wav_path": [os.path.abspath(os.path.join(root, entry)) for entry in entries],
        "transcription": phones,
    })
    frame.to_csv(csv_path, index=False)


def _corpus_pr_class():
    import torch

    SuperbPR = superb_pr_class()

    class CorpusPR(SuperbPR):
        """s3prl's SuperbPR whose data are the synthetic corpus or LibriSpeech with local lexicons, and whose
        upstream is any checkpoint of this project (see :mod:`.s3prl_upstream`)."""

        def default_config(self) -> dict:
            config = super().default_config()
            config["prepare_data"]["lexicon"] = None  # LibriSpeech only: local lexicon files for s3prl's G2P
            config["prepare_data"]["test_splits"] = ["test"]  # synthetic corpus only: the splits tested on
            config["build_upstream"] = dict(path=None, work_dir=None)
            config["train"]["seed"] = 0
            return config

        def prepare_data(self, prepare_data: dict, target_dir: str, cache_dir: str, get_path_only: bool = False):
            root = prepare_data["dataset_root"]
            if is_synthetic_corpus(root):
                splits = ["train", "valid", *prepare_data["test_splits"]]
                paths = [os.path.join(target_dir, f"{test_name(split)}.csv") for split in splits]
                if not get_path_only:
                    for split, path in zip(splits, paths):
                        corpus_csv(root, split, path)
                return paths[0], paths[1], paths[2:]
            # LibriSpeech: s3prl's own csvs (SuperbASR.prepare_data), phonemised with s3prl's G2P and local lexicons
            import pandas as pd
            from s3prl.dataio.encoder.g2p import G2P

            arguments = {key: value for key, value in prepare_data.items() if key not in ("lexicon", "test_splits")}
            train_csv, valid_csv, test_csvs = SuperbPR.__mro__[1].prepare_data(
                self, arguments, target_dir, cache_dir, get_path_only)
            if get_path_only:
                return train_csv, valid_csv, test_csvs
            lexicon = prepare_data.get("lexicon")
            if not lexicon:
                raise SuperbPRError("LibriSpeech needs lexicon files for s3prl's G2P (--lexicon FILE ...: "
                                    "librispeech-lexicon-200k-g2p.txt and librispeech-lexicon-allothers-g2p.txt)")
            g2p = G2P(file_list=list(lexicon))
            for csv_path in [train_csv, valid_csv, *test_csvs]:
                frame = pd.read_csv(csv_path)
                frame["transcription"] = [g2p.encode(text.strip()) for text in frame["transcription"]]
                frame.to_csv(csv_path, index=False)
            return train_csv, valid_csv, test_csvs

        def build_upstream(self, build_upstream: dict):
            # Building the upstream re-seeds torch's global generator to a constant somewhere below s3prl's
            # hubert_local / fairseq's loading, so the head s3prl builds next would start the same for every
            # train.seed: build it on a forked generator, leaving the seeded state to the head.
            with torch.random.fork_rng(devices=[]):
                return project_upstream(build_upstream["path"], build_upstream["work_dir"])

    return CorpusPR


def make_config(problem, upstream: str, data: str, out: str, preset: str = "miniature",
                steps: Optional[int] = None, batch_size: Optional[int] = None, eval_step: Optional[int] = None,
                device: str = "cpu", seed: int = 0, num_workers: int = 0,
                lexicon: Optional[Sequence[str]] = None, test_splits: Sequence[str] = ("test",)) -> dict:
    import omegaconf

    scale = dict(PRESETS[preset])
    if steps is not None:
        scale["total_steps"] = steps
        if eval_step is None:
            scale["eval_step"] = min(scale["eval_step"], max(1, steps // 3))
        scale["save_step"] = min(scale["save_step"], steps)
        scale["log_step"] = min(scale["log_step"], steps)
    if eval_step is not None:
        scale["eval_step"] = eval_step
    if batch_size is not None:
        scale["batch_size"] = batch_size
    config = problem.default_config()
    config.update(target_dir=os.path.abspath(os.path.join(out, "s3prl")),
                  cache_dir=os.path.abspath(os.path.join(out, "cache")))
    config["prepare_data"]["dataset_root"] = os.path.abspath(data)
    if is_synthetic_corpus(data):
        for key in ("train_sets", "valid_sets", "test_sets"):
            config["prepare_data"].pop(key)
    config["prepare_data"]["lexicon"] = [os.path.abspath(path) for path in lexicon] if lexicon else None
    config["prepare_data"]["test_splits"] = list(test_splits)
    config["build_upstream"] = dict(path=os.path.abspath(upstream), work_dir=os.path.abspath(os.path.join(out, "upstream")))
    config["build_batch_sampler"]["train"]["batch_size"] = scale["batch_size"]
    train = config["train"]
    for key in ("total_steps", "eval_step", "save_step", "log_step", "gradient_accumulate"):
        train[key] = scale[key]
    train["seed"] = seed
    config["device"] = device
    config["num_workers"] = num_workers
    resolved = omegaconf.OmegaConf.to_container(omegaconf.OmegaConf.create(config), resolve=True,
                                                throw_on_missing=True)
    return resolved


def check_out(out: str, upstream_sha: str) -> None:
    """A finished ``out`` of another upstream is refused (nothing is overwritten); one of the same upstream is
    resumed by s3prl's auto_resume."""
    stamp = os.path.join(out, "upstream.json")
    if os.path.isfile(stamp):
        with open(stamp) as handle:
            previous = json.load(handle)
        if previous.get("upstream_sha256") != upstream_sha:
            raise SuperbPRError(
                f"{out}: holds a run of another upstream ({previous.get('upstream')}, sha256 "
                f"{str(previous.get('upstream_sha256'))[:12]}); pass a new --out for this upstream, or delete {out}")


def layer_weights(checkpoint_dir: str) -> List[float]:
    """softmax of the featurizer's learned weights in an s3prl checkpoint (the weighted sum's layer weights)."""
    import torch

    state = torch.load(os.path.join(checkpoint_dir, "model", "state_dict.pt"), map_location="cpu")
    weights = [value for key, value in state.items() if key.endswith("featurizer.weights")]
    return [round(float(value), 6) for value in torch.softmax(weights[0].float(), dim=-1)]


SETTINGS = ("steps", "preset", "batch_size", "eval_step", "seed")  # a finished result.json is reused only if equal


def finished_result(out: str, settings: Dict) -> Optional[Dict]:
    """``out/result.json`` when it was made with exactly these ``settings`` (else None: s3prl's auto_resume)."""
    path = os.path.join(out, RESULT)
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        result = json.load(handle)
    return result if all(result.get(key) == settings[key] for key in SETTINGS) else None


def run_superb_pr(upstream: str, data: str, out: str, preset: str = "miniature", steps: Optional[int] = None,
                  batch_size: Optional[int] = None, eval_step: Optional[int] = None, device: str = "cpu",
                  seed: int = 0, num_workers: int = 0, lexicon: Optional[Sequence[str]] = None,
                  test_splits: Sequence[str] = ("test",)) -> Dict:
    """Train and test SUPERB PR with s3prl's recipe; writes and returns ``out/result.json``.

    ``test_splits`` (synthetic corpus): the splits the valid-best probe is tested on; ``per`` is the first one's.
    A finished ``out`` with the same settings is returned as it is, or only tested on the splits it lacks."""
    if preset not in PRESETS:
        raise SuperbPRError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    if not os.path.exists(upstream):
        raise SuperbPRError(f"{upstream}: no such file or directory; pass an upstream checkpoint (--upstream)")
    test_splits = list(dict.fromkeys(test_splits))
    if not test_splits:
        raise SuperbPRError("no test split given: pass at least one (e.g. test)")
    check_corpus(data, test_splits)
    upstream_sha = sha256_of(upstream)
    check_out(out, upstream_sha)
    from .s3prl_upstream import upstream_route

    try:
        route = upstream_route(upstream)
    except CheckpointError as error:
        raise SuperbPRError(f"cannot load the upstream: {error}") from None
    CorpusPR = _corpus_pr_class()
    problem = CorpusPR()
    config = make_config(problem, upstream, data, out, preset, steps, batch_size, eval_step, device, seed,
                         num_workers, lexicon, test_splits)
    settings = dict(steps=int(config["train"]["total_steps"]), preset=preset, seed=seed,
                    batch_size=int(config["build_batch_sampler"]["train"]["batch_size"]),
                    eval_step=int(config["train"]["eval_step"]))
    synthetic = is_synthetic_corpus(data)
    previous = finished_result(out, settings)
    missing = [split for split in test_splits if test_name(split) not in (previous or {}).get("test", {})]
    if previous is not None and not (synthetic and missing):
        return previous
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "upstream.json"), "w") as handle:
        json.dump({"upstream": os.path.abspath(upstream), "upstream_sha256": upstream_sha}, handle, indent=1)
    target = config["target_dir"]
    with s3prl_environment():
        if previous is None:
            problem.run(**config)
        else:  # trained already: s3prl's test stage on the missing splits only
            config["prepare_data"]["test_splits"] = missing
            for split in missing:
                corpus_csv(data, split, os.path.join(target, f"{test_name(split)}.csv"))
            problem.run(**{**config, "start": TEST_STAGE})
    with open(os.path.join(target, "train", "valid_best", "training_stats.yaml")) as handle:
        stats = yaml.safe_load(handle)
    tests = {}
    evaluate_dir = os.path.join(target, "evaluate", "valid_best")
    for name in sorted(os.listdir(evaluate_dir)):
        with open(os.path.join(evaluate_dir, name, "result.yaml")) as handle:
            tests[name] = yaml.safe_load(handle)
    reported = test_name(test_splits[0]) if synthetic else next(iter(tests))
    if previous is not None:
        tests = {**{name: {"per": per} for name, per in previous["test"].items()}, **tests}
    result = {
        "per": float(tests[reported]["per"]),
        "test": {name: float(metrics["per"]) for name, metrics in tests.items()},
        "valid_per": float(stats["valid_best_metrics"]["per"]),
        "valid_best_step": int(stats["global_step"]),
        **settings,
        "device": device,
        "upstream": os.path.abspath(upstream),
        "upstream_sha256": upstream_sha,
        "upstream_class": route,
        "data": os.path.abspath(data),
        "layer_weights": layer_weights(os.path.join(target, "train", "valid_best")),
        "layer_weights_note": "softmax of s3prl Featurizer.weights at valid_best: index 0 = CNN output "
                              "(input of block 1), i = output of block i",
        "recipe": "s3prl 0.4.18 s3prl.problem.asr.superb_pr.SuperbPR (subclass CorpusPR)",
    }
    if not all(math.isfinite(value) for value in (result["per"], result["valid_per"], *result["test"].values())):
        raise SuperbPRError(f"{out}: non-finite PER {result['test']} / valid {result['valid_per']}")
    write_json(os.path.join(out, RESULT), result)
    return result
