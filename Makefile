# Two commands do everything on a fresh clone: `make repro` (the embedded paper-in-miniature) and
# `make test`. Both create the virtual environment first if it is missing or out of date.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# Stage commands (`python -m yonos.stages...`) must find the venv's python, also under `dvc repro`.
export PATH := $(abspath $(VENV))/bin:$(PATH)
# A local mirror of pyiqa weight files (NIQE's parameters, ...), used only when present.

SHARED ?= $(abspath $(CURDIR)/../shared)
export YONOS_PYIQA_WEIGHTS ?= $(wildcard $(SHARED)/weights/pyiqa)
export YONOS_SHARED_DIR ?= $(SHARED)
# A local mirror of the datasets (train291, b100, set5, ...): the embedded profile trains on train291.
export YONOS_DATA_MIRROR ?= $(wildcard $(SHARED)/datasets)

.PHONY: setup repro repro-real test test-fast bench bench-gpu lint drift study

$(STAMP): requirements.txt pyproject.toml
	python3.11 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# pyiqa needs torchvision; this pair imports together (CUDA build, also runs on the CPU).
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -e .
	touch $@

setup: $(STAMP)

repro: setup
	dvc repro

# The suite in TEST_WORKERS processes (pytest-xdist; 0 runs it in this one), a test file per process so that a
# file's module fixtures are built once, each process on one thread: tiny models gain nothing from threads, and
# two processes of 2-thread OpenMP spin badly on 2 cores.
TEST_WORKERS ?= 2
PYTEST := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 pytest -q -n $(TEST_WORKERS) --dist loadfile

test: setup
	$(PYTEST) tests

test-fast: setup
	$(PYTEST) tests -m "not slow"

# The study behind reports/claims/ (not part of `dvc repro`; run it after `make repro`): every arm beside the main
# run, then the report. ~15-35 min per arm on one 2-core machine, 40-65 on another, two arms at once
# (decoder_control 5-10), resumable: re-run to continue.
# A Claim 1 replicate (<arm>_seed1) reuses the teacher of seed1, so the seed arms come first.
CLAIM1_ARMS := claim1_s250 claim1_s1000 claim1_t1600 claim1_direct_scratch claim1_same_noise claim1_uniform_t \
	claim1_multistep
STUDY_ARMS ?= seed1 seed2 previous_default previous_default_seed1 previous_default_seed2 decoder_control \
	base_schedule base_schedule_seed1 base_schedule_seed2 longer longest wider prior prior_seed1 prior_seed2 ema \
	start_condition \
	$(CLAIM1_ARMS) $(addsuffix _seed1,$(CLAIM1_ARMS)) $(addsuffix _seed2,$(CLAIM1_ARMS)) chain_x8 ldmsr_budget5
study: setup
	python -m yonos.study run $(STUDY_ARMS)
	python -m yonos.study report

# Every benchmark in one run (bench/test_bench_ratios.py: ~8 min on 2 cores; the 2048^2 tiling one: minutes),
# then the ratio table generated from its JSON.
bench: setup
	mkdir -p reports/bench
	pytest bench/ --benchmark-only --benchmark-json reports/bench/bench_cpu.json
	python bench/report.py reports/bench/bench_cpu.json --out reports/bench.md --overwrite

# One GPU, <= 8 minutes: SD-2.1-base-shaped YONOS vs LDM-SR-100 / StableSR-200 -> reports/bench/gpu_<device>.json
bench-gpu: setup
	bench/gpu.sh

drift: setup
	yonos check-drift

lint: setup
	ruff check yonos methods bench tests
