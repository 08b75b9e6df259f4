# Two commands do everything on a fresh clone: `make repro` (the embedded paper-in-miniature) and
# `make test`. Both create the virtual environment first if it is missing or out of date.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
export TORCH_HOME ?= $(CURDIR)/.cache/torch
export HF_HOME ?= $(CURDIR)/.cache/huggingface

.PHONY: setup repro test test-all bench lint clean-runs

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
	$(VENV)/bin/dvc repro

test: setup
	$(VENV)/bin/pytest -q tests

bench: setup
	$(VENV)/bin/pytest bench/ --benchmark-only

lint: setup
	$(VENV)/bin/ruff check yonos methods bench tests
