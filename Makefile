# dped: `make help` lists the targets. Everything runs inside .venv (made by `make setup`).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export DPED_REFERENCE_DIR ?= $(abspath ../shared/reference)

.PHONY: help setup test parity lint format calibrate data bench sweep reproduce lab lab-check clean
EXP ?= experiments/ablations.yaml
EXPERIMENTS ?= experiments/ablations.yaml experiments/undocumented.yaml
PROFILE ?= cpu
RESULTS ?= results
# Test files run in this many worker processes (pytest-xdist): much of the suite waits on
# subprocesses and TensorFlow imports, which one core leaves idle. TEST_WORKERS=0: all in
# pytest's own process.
TEST_WORKERS ?= 2
# WORKERS=N: a local Dask cluster of N workers; SCHEDULER=ADDRESS: an existing Dask cluster
EXECUTOR = $(if $(WORKERS),--workers $(WORKERS)) $(if $(SCHEDULER),--scheduler $(SCHEDULER))

help: ## list the targets
	@grep -hE '^[a-z][a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv, install dped[dev], the Jupyter kernel and the nbstripout git filter

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; \
		sys.exit(0 if (3, 10) <= v <= (3, 12) else f"dped needs Python 3.10-3.12, {sys.executable} is {v}")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name dped --display-name "Python (dped)"
	@# notebooks/*.ipynb are committed without outputs (.gitattributes): git runs nbstripout on add
	if git rev-parse --git-dir >/dev/null 2>&1; then \
		git config filter.nbstripout.clean \
			"'$(abspath $(BIN))/nbstripout' --keep-id --extra-keys metadata.language_info" && \
		git config filter.nbstripout.smudge cat && \
		git config filter.nbstripout.required true; fi
	touch $(STAMP)

test: setup data ## pytest (parity with the original code included) + nbval on notebooks/ (smoke-sized)
	DPED_SMOKE=1 $(BIN)/python -m pytest tests -n $(TEST_WORKERS) --dist loadfile --durations=20 \
		--nbval-lax --nbval-current-env --nbval-cell-timeout=600 notebooks

parity: setup ## parity numbers against ../shared/reference: the authors' code and the seed's
	$(BIN)/python -m pytest -q -m parity tests

lint: setup ## ruff check on dped/, tests/ and benchmarks/
	$(BIN)/ruff check dped tests benchmarks
	$(BIN)/ruff format --check dped tests benchmarks

format: setup ## ruff format + import sorting
	$(BIN)/ruff check --fix --select I dped tests
	$(BIN)/ruff format dped tests

data: setup ## build the mini dataset (data/dped-mini) and print the identity baseline
	$(BIN)/dped data --config experiments/cpu.yaml

bench: setup ## speed on this machine -> results/bench/<machine>.json + .md (ORIGINAL=aiff22/DPED checkout; BENCH_ARGS="--sections enhance")
	$(BIN)/python benchmarks/bench.py --weights-dir $(or $(DPED_WEIGHTS_DIR),$(DPED_REFERENCE_DIR)/dped_orig_checkpoints) \
		--reference-dir $(DPED_REFERENCE_DIR) $(if $(ORIGINAL),--original $(ORIGINAL)) $(BENCH_ARGS)

sweep: setup ## papermill sweep: make sweep EXP=experiments/ablations.yaml PROFILE=cpu [WORKERS=2 | SCHEDULER=tcp://host:8786]
	$(BIN)/dped sweep $(EXP) --profile $(PROFILE) $(EXECUTOR)

reproduce: setup ## fresh clone -> mini dataset, both sweeps (cpu, 3 seeds; 2 local workers unless WORKERS/SCHEDULER), PSNR plots, summary.md
	$(MAKE) data
	@# One queue for every experiment: no worker idles through an experiment's last run.
	$(BIN)/dped sweep $(EXPERIMENTS) --profile $(PROFILE) --results $(RESULTS) $(or $(strip $(EXECUTOR)),--workers 2)

lab: setup ## JupyterLab on notebooks/ with the project's kernel ("Python (dped)")
	$(BIN)/jupyter lab notebooks/

lab-check: setup ## dev only: Run All of every notebook in JupyterLab under headless Chromium
	$(BIN)/python tools/lab_in_browser.py

calibrate: setup ## measure each loss term at initialisation (VGG=path/to/weights, default random)
	$(BIN)/dped calibrate --set vgg_weights=$(or $(VGG),random)

clean: ## remove caches (keeps .venv and results/)
	rm -rf .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
