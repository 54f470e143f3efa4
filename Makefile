# Two commands on a fresh machine: `make run` (service + a spoken sample) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet
# the CPU build of torch; a looser spec would pull a CUDA build of several GB
TORCH_CPU ?= torch==2.13.0

.PHONY: install dev run test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml $(VENV)/.installed
	$(PIP) "$(TORCH_CPU)"
	$(PIP) -e '.[dev,mms]'
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.dev-installed

run: $(VENV)/.installed
	$(VENV)/bin/tts-actor serve --sample-out hello.wav --http 127.0.0.1:8000

test: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check statemachine tts_actor tests
	$(PY) -m pytest -q

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check statemachine tts_actor tests
	$(VENV)/bin/ruff format --check statemachine tts_actor tests

bench: $(VENV)/.dev-installed
	$(PY) -m tests.bench

clean:
	rm -rf $(VENV) .pytest_cache hello.wav
