# Two commands: `make run` (default experiment end to end) and `make test` (whole suite). Both set up .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test bench setup clean

setup: $(STAMP)

# torch is pinned and installed first: an unpinned torch would pull several GB of CUDA wheels.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/metaicl run configs/quickstart.yaml

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/train_overhead.py
	$(PY) bench/lm_throughput.py
	$(PY) bench/gpu_throughput.py
	$(PY) bench/lm_loss.py
	$(PY) bench/episode_batches.py
	$(PY) bench/data_build.py
	$(PY) bench/scoring.py

clean:
	rm -rf runs
