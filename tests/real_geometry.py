"""The README's real workflow, steps 2-4, at the released checkpoints' geometry: `make real-geometry`.

Not collected by `make test` (the file name does not start with ``test_``); `.ci/run` runs it after the
suite. A HuBERT Base-shaped checkpoint in fairseq's original format (12 blocks x 768, the real 512-channel
conv extractor, 128-tap positional conv in 16 groups; random weights) and a WavLM Base-shaped one in unilm's
format (the same, with 320 relative-position buckets up to 800) each go through:

2. LASER with fairseq-hydra-train and the project's own configs (laser_hubert_base / laser_wavlm_base),
   overriding only the data (the bundled demo corpus, one data-loader worker), the update count (2) and the
   output folders: the paper's model, criterion, optimiser and batch of 8 pairs, and the validation at the end;
3. scripts/export_checkpoint.py in every format the upstream exports to (HuBERT: fairseq, s3prl, hf;
   WavLM: unilm, hf);
4. scripts/analyze_layers.py on the original vs the export;

then fairseq, s3prl and transformers load the exports and their hidden states are compared with LASER's
own view of the trained upstream. Measured on the project's 2-core machine: 2 min 49 s at load ~5, 7 min
23 s at load ~14; largest process 4.2 GB resident (the two trainings run side by side, one thread each).
"""

import json
import os
import subprocess

import pytest
import torch

import doc_blocks
from checkpoint_shapes import max_difference_to_transformers
from laser_fairseq.checkpoint_io import SAFE_GLOBALS, load_checkpoint
from laser_fairseq.hydra_command import hydra_train_command, run_folder_overrides
from laser_fairseq.models.trained_upstream import open_upstream
from laser_fairseq.tiny_upstream import make_tiny_hubert, make_tiny_unilm_checkpoint, save_checkpoint
from laser_runs import REPO

DEMO = os.path.join(REPO, "manifests", "demo")
LAYERS, DIM = 12, 768
TOP_BLOCKS = (10, 11)
BASE_CNN = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"
ATOL = 1e-5  # as for the tiny exports (tests/test_export_consumers.py); the measured differences are printed
FORMATS = {"hubert": ("fairseq", "s3prl", "hf"), "wavlm": ("unilm", "hf")}
CONFIGS = {"hubert": "laser_hubert_base", "wavlm": "laser_wavlm_base"}


def hubert_base() -> dict:
    return make_tiny_hubert(layers=LAYERS, dim=DIM, ffn=3072, heads=12, conv_channels=512, num_labels=504,
                            conv_pos=128, conv_pos_groups=16)


def wavlm_base() -> dict:
    return make_tiny_unilm_checkpoint(layers=LAYERS, dim=DIM, ffn=3072, heads=12, conv_feature_layers=BASE_CNN,
                                      conv_pos=128, conv_pos_groups=16, num_buckets=320, max_distance=800)


def laser_command(kind: str, upstream: str, run: str):
    """Step 2 of the README with the project's config; only data, update count and output folders set."""
    return hydra_train_command(os.path.join(REPO, "examples", "laser", "config"), CONFIGS[kind], {
        "task.data": DEMO, "model.upstream_path": upstream, **run_folder_overrides(run),
        "optimization.max_update": 2, "dataset.num_workers": 1,
    })


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    root = tmp_path_factory.mktemp("real_geometry")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    paths, runs = {}, []
    for kind, make in (("hubert", hubert_base), ("wavlm", wavlm_base)):
        original = str(root / f"{kind}_base.pt")
        save_checkpoint(make(), original)
        run = str(root / f"laser_{kind}")
        log = open(f"{run}.log", "w")
        runs.append((subprocess.Popen(laser_command(kind, original, run), cwd=REPO, env=env, stdout=log,
                                      stderr=subprocess.STDOUT), f"{run}.log"))
        log.close()
        paths[kind] = {"original": original, "laser": os.path.join(run, "checkpoints", "checkpoint_last.pt")}
    for process, log in runs:
        if process.wait(timeout=1800) != 0:
            pytest.fail(f"fairseq-hydra-train failed:\n{open(log).read()[-4000:]}")
    export = doc_blocks.load_script(REPO, "export_checkpoint")
    analyze = doc_blocks.load_script(REPO, "analyze_layers")
    for kind, formats in FORMATS.items():
        for fmt in formats:  # step 3
            output = str(root / (f"laser_{kind}_base_{fmt}" + ("" if fmt == "hf" else ".pt")))
            export.main(["--checkpoint", paths[kind]["laser"], "--output", output, "--format", fmt])
            paths[kind][fmt] = output
        default = paths[kind][formats[0]]
        paths[kind]["analysis"] = str(root / f"analysis_{kind}")  # step 4
        analyze.main(["--checkpoint", paths[kind]["original"], "--compare", default,
                      "--manifest", os.path.join(DEMO, "valid.tsv"), "--max-utterances", "6",
                      "--out", paths[kind]["analysis"]])
    return paths


def laser_hidden_states(laser_checkpoint: str, source: torch.Tensor):
    """LASER's own view of the trained upstream (what the exports must reproduce), every layer."""
    with torch.no_grad():
        return open_upstream(laser_checkpoint).upstream.eval().hidden_states(source)


def max_difference(theirs, ours) -> float:
    assert len(theirs) == len(ours) == LAYERS + 1
    assert all(a.shape == b.shape for a, b in zip(theirs, ours))
    return max((a - b).abs().max().item() for a, b in zip(theirs, ours))


def waveform(seed: int) -> torch.Tensor:
    return torch.randn(1, 24000, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", ["hubert", "wavlm"])
def test_laser_trained_the_top_blocks_of_a_base_shaped_upstream_with_the_paper_config(workflow, kind):
    state = load_checkpoint(workflow[kind]["laser"])
    assert state["optimizer_history"][-1]["num_updates"] == 2
    assert state["cfg"]["criterion"]["alpha"] == (0.4 if kind == "hubert" else 0.15)
    assert state["cfg"]["dataset"]["batch_size"] == 8 and state["cfg"]["optimization"]["lr"] == [2e-05]
    original = load_checkpoint(workflow[kind]["original"])["model"]
    exported = load_checkpoint(workflow[kind][FORMATS[kind][0]])["model"]  # the upstream's own format
    assert set(exported) == set(original)
    changed = {key for key in original if not torch.equal(exported[key], original[key])}
    assert changed and all(key.startswith(tuple(f"encoder.layers.{i}." for i in TOP_BLOCKS)) for key in changed)


def test_fairseq_and_s3prl_load_the_hubert_exports(workflow):
    from fairseq import checkpoint_utils
    from s3prl.upstream.hubert.hubconf import hubert_local

    hubert, source = workflow["hubert"], waveform(1)
    ours = laser_hidden_states(hubert["laser"], source)
    with torch.serialization.safe_globals(SAFE_GLOBALS), torch.no_grad():
        models, cfg, _ = checkpoint_utils.load_model_ensemble_and_task([hubert["fairseq"]])
        fairseq_top, _ = models[0].eval().extract_features(source, padding_mask=None, mask=False)
    assert cfg.model.encoder_layers == LAYERS and cfg.model.encoder_embed_dim == DIM
    with torch.no_grad():
        s3prl_states = hubert_local(ckpt=hubert["s3prl"]).eval()([source[0]])["hidden_states"]
    fairseq_diff = (fairseq_top - ours[-1]).abs().max().item()
    s3prl_diff = max_difference(s3prl_states, ours)
    print(f"HuBERT Base shape: fairseq top layer {fairseq_diff:.3g}, s3prl every layer {s3prl_diff:.3g}")
    assert fairseq_top.shape == ours[-1].shape and fairseq_diff <= ATOL and s3prl_diff <= ATOL


def test_s3prl_loads_the_wavlm_export(workflow):
    from s3prl.upstream.wavlm.hubconf import wavlm_local

    wavlm, source = workflow["wavlm"], waveform(2)
    with torch.no_grad():
        theirs = wavlm_local(ckpt=wavlm["unilm"]).eval()([source[0]])["hidden_states"]
    difference = max_difference(theirs, laser_hidden_states(wavlm["laser"], source))
    print(f"WavLM Base shape: s3prl wavlm_local every layer {difference:.3g}")
    assert difference <= ATOL


@pytest.mark.parametrize("kind", ["hubert", "wavlm"])
def test_transformers_loads_the_hf_exports(workflow, kind):
    import transformers

    model_class = transformers.HubertModel if kind == "hubert" else transformers.WavLMModel
    model, info = model_class.from_pretrained(workflow[kind]["hf"], output_loading_info=True)
    assert not any(info[name] for name in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert model.config.num_hidden_layers == LAYERS and model.config.hidden_size == DIM
    upstream = open_upstream(workflow[kind]["laser"]).upstream
    difference = max_difference_to_transformers(model, upstream, normalize=False)
    print(f"{kind} Base shape: transformers {model_class.__name__} every layer {difference:.3g}")
    assert difference <= ATOL


@pytest.mark.parametrize("kind", ["hubert", "wavlm"])
def test_the_layerwise_analysis_compares_every_layer(workflow, kind):
    with open(os.path.join(workflow[kind]["analysis"], "summary.json")) as handle:
        summary = json.load(handle)
    before, after = summary["main"]["layers"], summary["compare"]["layers"]
    names = ["cnn", "block0_in"] + [f"block{index}" for index in range(1, LAYERS + 1)]  # CNN, blocks' input, each block
    assert [layer["name"] for layer in before] == [layer["name"] for layer in after] == names
    assert [layer["dim"] for layer in before] == [512] + [DIM] * (LAYERS + 1)
