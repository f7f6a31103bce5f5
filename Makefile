# laser-fairseq: `make demo` and `make test` set everything up in .venv (Python 3.12) and run.
#
#   make install   create/update .venv with pinned versions (constraints.txt); a no-op when up to date
#   make demo      install, then LASER on the committed tiny pretrained HuBERT and a small synthetic corpus
#   make test      install, then the test suite on TEST_JOBS processes (prints its 15 slowest steps; fails if it
#                  changed `git status`)
#   make real-geometry   install, then the README's workflow (train, export, load) at HuBERT/WavLM Base shape (3-7 min)
#   make bench     install, then the benchmarks (soft-DTW, training step, phone probe, yardsticks); their result files go to
#                  BENCH_OUT (default: the committed benchmarks/results, which the docs quote) -- running it
#                  deliberately updates the committed results; `make bench BENCH_OUT=outputs/bench` does not
#   make mutate    install, then mutation testing of one scope of the core (default: composition, ~7 min); docs/mutation_report*.md
#   make pretrain-demo   install, then the tiny_standard HuBERT pretraining on the synthetic corpus (the demo upstream)
#   make constraints   re-pin constraints.txt from the current .venv (after a deliberate upgrade)

# Python 3.12 (fastabx needs >= 3.12; fairseq-fixed, torch, s3prl, numba, transformers all run on it). A pyenv
# 3.12 is taken by its real path (pyenv's `python3.12` shim fails when 3.12 is not the selected version);
# otherwise `python3.12` from the PATH. Override with `make install PYTHON=/path/to/python3.12`.
PYTHON ?= $(or $(lastword $(sort $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12))),python3.12)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
INSTALL_INPUTS := pyproject.toml constraints.txt
STAMP := $(VENV)/.installed-$(shell cat $(INSTALL_INPUTS) 2>/dev/null | sha256sum | cut -c1-16)

# Two OpenMP runtimes (torch's, numba's) busy-waiting on 2 cores slow each other down several times.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install demo test real-geometry bench mutate constraints pretrain-demo

install: $(STAMP)

$(STAMP): $(INSTALL_INPUTS)
	@# a .venv left on another Python (e.g. 3.11 before the move to 3.12) is replaced, not patched
	@if [ -x $(PY) ] && [ "$$($(PY) -c 'import sys; print(sys.version_info[:2])')" != "$$($(PYTHON) -c 'import sys; print(sys.version_info[:2])')" ]; then \
	  echo "$(VENV) is on Python $$($(PY) -c 'import platform; print(platform.python_version())'), not that of $(PYTHON): recreating it"; \
	  rm -rf $(VENV); fi
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q pip==26.3 setuptools==81.0.0 wheel==0.48.0
	$(PIP) install -q -c constraints.txt torch torchaudio numpy cython
	@# fairseq-fixed is an sdist with C++/Cython extensions: it must be compiled against the torch just
	@# installed (no build isolation) and never taken from pip's wheel cache, which keys it by the sdist
	@# alone and would hand back a build for another torch (undefined symbols in fairseq.libbase), nor from a
	@# prebuilt wheel (a cp312 wheel in a local index has undefined symbols too): --no-binary.
	$(PY) -c "import fairseq, fairseq.libbase, fairseq.data.data_utils_fast" 2>/dev/null || \
	  env -u CUDA_HOME $(PIP) install -q -c constraints.txt --no-build-isolation --no-cache-dir \
	    --no-binary fairseq-fixed fairseq-fixed
	$(PIP) install -q -c constraints.txt -e '.[test,bench,analysis,hf,dev,superb]'
	$(PY) -c "import fairseq.libbase, fairseq.data.data_utils_fast, torchaudio, soundfile, numba, espeakng_loader, transformers, librosa, pandas, tensorboard, fastabx, laser_fairseq"
	$(PIP) check
	@rm -f $(VENV)/.installed-*
	@touch $@

demo: install
	$(PY) scripts/run_demo.py

# The suite, its 15 slowest steps (docs/contributing.md#where-the-suites-time-goes), and a check that it left the
# repository as it found it: `git status --porcelain` before and after must match (local changes are fine).
# pytest-xdist spreads the test files over TEST_JOBS processes, each file whole in one of them (--dist loadfile:
# a file's fixtures are made once); TEST_JOBS=0 runs everything in one process.
TEST_JOBS ?= 2
test: install
	@before=$$(mktemp) && after=$$(mktemp) && git status --porcelain --untracked-files=all > $$before 2>&1; \
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile --durations=15 tests; status=$$?; \
	git status --porcelain --untracked-files=all > $$after 2>&1; \
	if ! cmp -s $$before $$after; then \
	  echo "make test: the suite changed the repository (git status --porcelain, before -> after):"; \
	  diff $$before $$after; status=1; \
	fi; rm -f $$before $$after; exit $$status

# tests/real_geometry.py: not collected by `make test` (no test_ prefix); .ci/run runs it after the suite.
real-geometry: install
	$(PY) -m pytest -q tests/real_geometry.py

BENCH_OUT ?= benchmarks/results
bench: install
	$(PY) benchmarks/soft_dtw.py --omp-wait-policy passive --flush-denormal --out $(BENCH_OUT)
	$(PY) benchmarks/training_step.py --out $(BENCH_OUT)
	$(PY) benchmarks/phone_probe.py --utterances 3000 --seconds 2 --dim 768 --out $(BENCH_OUT)
	$(PY) benchmarks/phone_probe.py --utterances 3000 --train-utterances 3000 --seconds 2 --dim 768 \
	  --name phone_probe_train3000 --out $(BENCH_OUT)
	$(PY) benchmarks/yardsticks.py --out $(BENCH_OUT)

# mutmut over the core modules with the fast tests ([tool.mutmut] in pyproject.toml, docs/contributing.md).
# A fresh run each time (mutants/ is mutmut's working copy); MUTATE_JOBS mutants are tested at once.
# MUTATE_SCOPE: composition (default, ~7 min), training, soft_dtw, export, corpus, or core (all of them).
MUTATE_JOBS ?= 2
MUTATE_SCOPE ?= composition
mutate: install
	$(PY) dev/mutate.py --scope $(MUTATE_SCOPE) --jobs $(MUTATE_JOBS)

# The synthetic espeak-ng corpus (made once) and the tiny_standard schedule on it, which rebuilds the demo's
# upstream examples/hubert_pretraining/tiny_standard_hubert.pt as PRETRAIN_RUN/iter2/train/model.pt (equal up
# to float differences between CPUs); re-running continues or skips what is done (examples/hubert_pretraining/README.md).
PRETRAIN_CORPUS ?= outputs/synthetic_corpus
PRETRAIN_RUN ?= outputs/pretrain/tiny_standard
pretrain-demo: install
	@test -f $(PRETRAIN_CORPUS)/train.tsv || \
	  $(PY) scripts/make_synthetic_corpus.py --out $(PRETRAIN_CORPUS) --sentences 250 --voices 8 --seed 1
	$(PY) scripts/pretrain_hubert.py --schedule examples/hubert_pretraining/tiny_standard.yaml \
	  --data $(PRETRAIN_CORPUS) --out $(PRETRAIN_RUN)

constraints:
	$(PIP) freeze --exclude-editable | grep -v '^-e ' > constraints.txt.new
	@{ head -n 2 constraints.txt; cat constraints.txt.new; } > constraints.txt.tmp && rm constraints.txt.new
	@mv constraints.txt.tmp constraints.txt
