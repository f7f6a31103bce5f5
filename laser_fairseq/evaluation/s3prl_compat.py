"""Every breakage of s3prl 0.4.18 in this environment, patched in one place and only while s3prl is used.

``s3prl_environment()`` is a context manager: the patches exist inside it and are undone on exit (nothing is
changed at import time of this module). Each patch has a test in tests/test_superb_pr.py that fails without it.

=================================  ===============================================  =============================
breakage                           where                                            patch
=================================  ===============================================  =============================
``torchaudio.set_audio_backend``   ``s3prl.dataio.dataset.load_audio`` calls it at  ``audio_backend_shim``: a
removed in torchaudio 2.9          import (s3prl issue #575, "no attribute          no-op while s3prl imports
                                   set_audio_backend")                              (audio is read by librosa)
``torchaudio.sox_effects`` removed ``s3prl.hub`` imports every upstream; the        ``sox_effects_stub``: a
in torchaudio 2.9                  ``mos_prediction`` upstream imports it           module whose functions raise
``import s3prl.problem`` runs      ``s3prl/problem/__init__.py`` imports every      ``problem_package``: import
every recipe                       recipe; the HEAR ones need ``sed_eval`` and      ``s3prl.problem.asr`` without
                                   others not installed (cf. issue #575)            the package ``__init__``
``torch.load`` weights-only by      s3prl's HuBERT conversion and loading read        ``fairseq_safe_globals``:
default (torch >= 2.6)             fairseq checkpoints holding fairseq classes       the project's SAFE_GLOBALS
                                   (``Dictionary``, omegaconf containers)            allowed while inside
=================================  ===============================================  =============================

Not patched, because the recipe path never reaches them: huggingface_hub >= 1.0 (``HfFolder``/``Repository``
gone) breaks only the legacy ``s3prl/run_downstream.py`` / ``downstream/runner.py``, which this project no longer
documents; the missing ``torchcodec`` (``torchaudio.load`` / ``info`` in torchaudio >= 2.9) is not reached:
s3prl's ``LoadAudio`` reads with librosa (soundfile), and s3prl's HuBERT conversion is run on a copy.
"""

import contextlib
import importlib
import os
import sys
import types

import torchaudio

PROBLEM = "s3prl.problem"


@contextlib.contextmanager
def audio_backend_shim():
    """``torchaudio.set_audio_backend`` as a no-op while inside (s3prl's load_audio calls it at import)."""
    if hasattr(torchaudio, "set_audio_backend"):
        yield
        return
    torchaudio.set_audio_backend = lambda backend=None: None
    try:
        yield
    finally:
        del torchaudio.set_audio_backend


@contextlib.contextmanager
def _installed_module(module: types.ModuleType):
    """``module`` in ``sys.modules`` under its name while inside; removed on exit unless replaced meanwhile."""
    sys.modules[module.__name__] = module
    try:
        yield
    finally:
        if sys.modules.get(module.__name__) is module:
            del sys.modules[module.__name__]


def _no_sox(*args, **kwargs):
    raise RuntimeError(
        "torchaudio.sox_effects is not available in torchaudio >= 2.9; this s3prl code path needs sox effects"
    )


@contextlib.contextmanager
def sox_effects_stub():
    """A stand-in ``torchaudio.sox_effects`` module while inside (imported by s3prl's mos_prediction upstream)."""
    name = "torchaudio.sox_effects"
    try:
        importlib.import_module(name)
        yield
        return
    except ImportError:
        pass
    stub = types.ModuleType(name)
    stub.apply_effects_tensor = stub.apply_effects_file = _no_sox
    with _installed_module(stub):
        yield


@contextlib.contextmanager
def problem_package():
    """``s3prl.problem`` as a bare package (its ``__path__`` only) while inside, so that ``s3prl.problem.asr``
    imports without ``s3prl/problem/__init__.py`` importing every other recipe."""
    if PROBLEM in sys.modules:
        yield
        return
    import s3prl

    bare = types.ModuleType(PROBLEM)
    bare.__path__ = [os.path.join(os.path.dirname(s3prl.__file__), "problem")]
    bare.__package__ = PROBLEM
    with _installed_module(bare):
        yield


@contextlib.contextmanager
def fairseq_safe_globals():
    """The fairseq / omegaconf classes of a fairseq checkpoint allowed to ``torch.load`` (weights only)."""
    import torch

    from ..checkpoint_io import SAFE_GLOBALS

    with torch.serialization.safe_globals(SAFE_GLOBALS):
        yield


@contextlib.contextmanager
def s3prl_environment():
    """All patches, for the duration of an s3prl call (import, training, evaluation)."""
    with audio_backend_shim(), sox_effects_stub(), problem_package(), fairseq_safe_globals():
        yield


def superb_pr_class():
    """s3prl's ``SuperbPR`` recipe class (imported inside the patches)."""
    with s3prl_environment():
        from s3prl.problem.asr.superb_pr import SuperbPR
    return SuperbPR
