# The two commands: `make demo` (the main job, offline) and `make test`.
# Both create .venv from nothing when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test install clean finetune-table

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev,app,engine]'
	touch $(STAMP)

install: $(STAMP)

# transformers' common model tests (tests/test_modeling_common.py, tests/test_configuration_common.py) ship in its
# source distribution, not in its wheel: unpack the installed version's tests/ once, under
# .venv/transformers-tests/<version>/tests, where tests/modeling_unires/transformers_common_tests.py finds them.
TRANSFORMERS_TESTS := $(VENV)/transformers-tests/.fetched

$(TRANSFORMERS_TESTS): $(STAMP)
	version=$$($(PY) -c 'import transformers; print(transformers.__version__)') && \
	dest=$(VENV)/transformers-tests/$$version && \
	if [ ! -f $$dest/tests/test_modeling_common.py ]; then \
		rm -rf $$dest && mkdir -p $$dest && \
		$(PY) -m pip download --quiet --no-deps --no-binary :all: transformers==$$version -d $$dest && \
		tar -xzf $$dest/transformers-$$version.tar.gz -C $$dest --strip-components=1 transformers-$$version/tests && \
		touch $$dest/tests/__init__.py && rm $$dest/transformers-$$version.tar.gz; \
	fi
	touch $@

transformers-tests: $(TRANSFORMERS_TESTS)

test: $(STAMP) $(TRANSFORMERS_TESTS) browser-for-tests slurm-for-tests
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) examples/demo.py --output_dir outputs/demo

# The fine-tuning table (README, "Fine-tune on your own data"): fine-tunes the `make demo` model (outputs/demo/model;
# another with FINETUNE_ARGS="--base_model DIR") three ways on MRES-Synth's held-out pairs and prints the table.
FINETUNE_ARGS ?=
finetune-table: $(STAMP)
	$(PY) benchmarks/finetune_table.py --threads 1 $(FINETUNE_ARGS)

# The app's browser test (tests/examples/test_app_browser.py) drives Debian's headless chromium: install it and its
# driver when missing and this is root (CI is); otherwise say so (under CI=true that test then fails, naming why).
browser-for-tests:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium and chromium-driver for the browser test (apt-get)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
			|| echo "WARNING: apt-get could not install chromium: the browser test fails under CI=true"; \
	else echo "NOTE: chromium or chromedriver missing and not root: the browser test skips (fails under CI=true)"; fi

# The engine's Slurm test (tests/mres_engine/test_clusters.py) starts munged, slurmctld and slurmd on 127.0.0.1 with
# its own slurm.conf: install Debian's slurm-wlm and munge when missing and this is root (slurmd must run as root);
# otherwise say so (under CI=true that test then fails, naming why). Ray comes with the dev extra.
slurm-for-tests:
	@if command -v slurmd >/dev/null 2>&1 || [ -x /usr/sbin/slurmd ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing slurm-wlm and munge for the engine's Slurm test (apt-get)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null) \
			|| echo "WARNING: apt-get could not install slurm-wlm/munge: the Slurm test fails under CI=true"; \
	else echo "NOTE: slurm-wlm/munge missing and not root: the Slurm test skips (fails under CI=true)"; fi

# The Gradio app on 127.0.0.1:7860 (after `make demo`); `make app MODEL=<folder>` serves another checkpoint.
MODEL ?= outputs/demo/model
app: $(STAMP)
	$(PY) examples/app.py --model $(MODEL) --host 127.0.0.1

.PHONY: app browser-for-tests slurm-for-tests

# Every speed figure against its target (benchmarks/README.md): one JSON line per figure, all collected in
# benchmarks/results.json; CUDA when present, else CPU at reduced sizes. `make bench BENCH_ARGS="--threads 1"` on a
# shared CPU; `BENCH_ARGS="--quick"` only checks that every script runs.
BENCH_ARGS ?=
bench: $(STAMP)
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)

.PHONY: bench

clean:
	rm -rf $(VENV) outputs .pytest_cache
