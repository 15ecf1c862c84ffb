# equinorm -- `make help` lists the targets. Everything runs inside .venv (created on first use).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
# make test: one pytest-xdist worker per core (each test process uses one torch thread)
PYTEST_WORKERS ?= auto
LOCK   := requirements.lock
# the newest versions pyproject.toml's ranges allow (make test-latest), beside .venv
LATEST ?= .venv-latest
RESULTS ?= results
# the demo trains and reports under its own (git-ignored) tree, so `make demo` and `make figures`
# never touch tracked files (the README's demo artefacts: scripts/report.py --out results)
DEMO_RESULTS ?= results/demo
# the demo trains on what its committed figures and tables were made with -- AVX2 kernels (torch's,
# oneDNN's, MKL's), 2 threads -- so that an AVX-512 CPU gives them byte for byte too (its own
# kernels change the last digits, which the demo's unstable GroupNorm cell amplifies: docs/runs.md,
# Notes); DEMO_PIN= trains on the machine's own kernels and threads. A process that may use one
# CPU (nproc) trains on 1 thread: 2 would only run 2x slower there
DEMO_THREADS ?= $(shell [ "$$(nproc 2>/dev/null || echo 2)" -ge 2 ] && echo 2 || echo 1)
DEMO_PIN ?= ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
  OMP_NUM_THREADS=$(DEMO_THREADS)
NPROC   ?= 1
DETACH  ?=
ARGS    ?=
# gpu-check runs under the Python that holds the GPU machine's own torch (not .venv)
GPU_PYTHON ?= python3

.PHONY: help install lock test test-latest test-slow test-slurm lint format clean demo demo-tuned figures plan complexity bench gpu-check gpu-wheels \
        reproduce-cifar10 reproduce-cifar100 reproduce-svhn reproduce-imagenet reproduce-short \
        reproduce-all

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "; printf "Usage: make <target>\n\n"} \
	     /^[a-zA-Z0-9_%-]+:.*## / {printf "  \033[36m%-20s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# Every distribution comes from the lock (the lock pins the whole closure, so the constraints fix
# each version); pip check: the set is consistent.
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -c $(LOCK) -e '.[dev,demo]'
	$(PY) -m pip check
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the package with [dev,demo] extras, every version from requirements.lock

# UPGRADE=all: the newest versions the ranges allow; UPGRADE=wandb: only that package (and what it
# needs); empty: keep every pin that pyproject.toml's ranges still allow
lock: $(STAMP) ## Rewrite requirements.lock from pyproject.toml's ranges (UPGRADE=all|<package>)
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --extra demo --universal \
	  --python-version 3.10 --custom-compile-command "make lock" -o $(LOCK) \
	  $(if $(filter all,$(UPGRADE)),--upgrade,$(if $(UPGRADE),--upgrade-package $(UPGRADE)))

test: $(STAMP) ## Run the fast test suite on every core (installs first if needed)
	$(PY) -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

# Not part of CI: run it before `make lock UPGRADE=all`, or when a dependency releases, to see an
# upstream break before a user meets it (then cap the range in pyproject.toml)
test-latest: ## The fast suite in .venv-latest, with the newest versions pyproject.toml allows (no lock)
	@test -x $(LATEST)/bin/python || $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --disable-pip-version-check -q --upgrade \
	  --upgrade-strategy eager -e '.[dev,demo]'
	$(LATEST)/bin/python -m pip list --format=freeze --exclude-editable > $(LATEST)/versions.txt
	EQUINORM_UNLOCKED=1 $(LATEST)/bin/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

test-slow: $(STAMP) ## Run the slow tests too
	$(PY) -m pytest -m 'slow or not slow' $(PYTEST_ARGS)

test-slurm: $(STAMP) ## The submitit launcher on a real single-node SLURM it brings up (root; apt-installs SLURM)
	$(PY) -m pytest -m slurm $(PYTEST_ARGS)

lint: $(STAMP) ## Lint and check formatting with ruff
	$(VENV)/bin/ruff check src tests scripts notebooks tools
	$(VENV)/bin/ruff format --check src tests scripts notebooks tools

format: $(STAMP) ## Auto-fix lint and format the code
	$(VENV)/bin/ruff check --fix src tests scripts notebooks tools
	$(VENV)/bin/ruff format src tests scripts notebooks tools

demo: $(STAMP) ## Embedded demo: digits x {equi,bn,gn} x 5 seeds on the CPU, then its figure and table (results/demo/)
	$(DEMO_PIN) $(PY) -m equinorm.train -m experiment=digits_demo results_dir=$(DEMO_RESULTS) $(ARGS)
	$(PY) scripts/report.py --results $(DEMO_RESULTS) --experiment digits_demo

# The tuned comparison of the demo (docs/tuning.md): the demo's sweep (skipped where `make demo` ran),
# then each norm's lr picked from 4 values (x1/8 .. x1) on 300 held-out images with 2 seeds, run with 5 seeds
demo-tuned: $(STAMP) ## The demo with every norm at its own lr, chosen on a validation split (results/demo/)
	$(DEMO_PIN) $(PY) -m equinorm.train -m experiment=digits_demo results_dir=$(DEMO_RESULTS) $(ARGS)
	$(DEMO_PIN) $(PY) -m equinorm.launch.tune experiment=digits_demo results_dir=$(DEMO_RESULTS) \
	  --grid 0.0125,0.025,0.05,0.1 --val-size 300 $(ARGS)

# make tune-<experiment>: stage 1 (the lr grid on a validation split) and stage 2 (each norm's pick,
# every seed), then the report; ARGS as for the trainer, e.g. ARGS="--grid 0.05,0.1,0.2 --plan"
tune-%: $(STAMP) ## Tuned comparison of one experiment, e.g. make tune-cifar10_wrn_short (ARGS apply)
	$(PY) -m equinorm.launch.tune experiment=$* results_dir=$(RESULTS) $(ARGS)

figures: $(STAMP) ## Figures and tables for every experiment under $(RESULTS)/runs
	$(PY) scripts/report.py --results $(RESULTS)

# Each reproduce target runs its sweeps (finished runs are skipped, interrupted ones resume), then
# the report. NPROC=2 starts each job under torchrun (on SLURM: 2 tasks per job); ARGS passes Hydra
# overrides, e.g. ARGS="hydra/launcher=submitit_slurm_gpu hydra.launcher.partition=gpu"; on SLURM all
# experiments are submitted at once and DETACH=1 returns right after (report later: make figures).
reproduce-cifar10:  ## CIFAR-10: paper Fig. 2, section 6.1 and Fig. 4a
reproduce-cifar100: ## CIFAR-100: paper Fig. 4b
reproduce-svhn:     ## SVHN + extra: paper Fig. 4c (the paper used NPROC=2)
reproduce-imagenet: ## ImageNet ResNet-50: paper Fig. 4d
reproduce-short:    ## CIFAR-10 in 30 epochs (super-convergence): paper Fig. 3
reproduce-all:      ## All of the above
REPRODUCE := cifar10 cifar100 svhn imagenet short all
$(addprefix reproduce-,$(REPRODUCE)): reproduce-%: $(STAMP)
	$(PY) scripts/reproduce.py $* --nproc $(NPROC) --results $(RESULTS) $(if $(DETACH),--detach) -- $(ARGS)

plan: $(STAMP) ## Runs and estimated GPU-hours of every reproduce target (no training; ARGS apply)
	$(PY) scripts/reproduce.py all --plan -- $(ARGS)

bench: $(STAMP) ## Training-step time per arch x norm and loader throughput -> results/bench/<device>.*
	$(PY) scripts/bench.py all $(ARGS)

gpu-check: ## On a GPU machine, its own torch: env, gpu tests, the paper's bench rows, smoke, demo (ARGS="--budget 480")
	bash scripts/gpu_env.sh $(GPU_PYTHON)
	$(GPU_PYTHON) scripts/gpu_check.py $(ARGS)

gpu-wheels: ## .whl/: the wheels a GPU image without network lacks (hydra-core, omegaconf, antlr4)
	PYTHON=$(PYTHON) bash scripts/gpu_wheels.sh

complexity: $(STAMP) ## Parameters and forward MACs per architecture (and the golden counts)
	$(PY) scripts/model_complexity.py

clean: ## Remove caches (keeps .venv, data and results)
	rm -rf .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +
