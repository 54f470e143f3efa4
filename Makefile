# Two commands on a fresh machine: `make run` (service + a spoken sample) and `make test`.
# Two environments, so that testing never changes what `make run` does: `.venv` holds the service alone
# (Piper, no torch), `.venv-test` the dev tools and the torch extras the tests need.
PYTHON ?= python3
VENV ?= .venv
TEST_VENV ?= .venv-test
PY := $(VENV)/bin/python
TPY := $(TEST_VENV)/bin/python
# torch, alone and first, from the CPU wheel index when it answers: PyPI's torch is the CUDA build with
# about 20 nvidia-* packages (several GB). Unreachable (or TORCH_INDEX_URL=''), it comes from pip's
# configured index, where a local CPU wheel may stand ready. Pick another source: make test TORCH_INDEX_URL=...
TORCH_VERSION ?= 2.13.0
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu

.PHONY: install dev run test lint rules bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(TEST_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(TEST_VENV)
	$(TPY) -m pip install --quiet --upgrade pip
	@if [ -n "$(TORCH_INDEX_URL)" ] && $(TPY) -c "import urllib.request as u; u.urlopen('$(TORCH_INDEX_URL)/torch/', timeout=5)" 2>/dev/null \
		&& $(TPY) -m pip install --quiet --index-url "$(TORCH_INDEX_URL)" "torch==$(TORCH_VERSION)"; then \
		echo "torch==$(TORCH_VERSION) from $(TORCH_INDEX_URL)"; \
	else \
		echo "torch==$(TORCH_VERSION) from pip's configured index ($(TORCH_INDEX_URL) not used)"; \
		$(TPY) -m pip install --quiet "torch==$(TORCH_VERSION)"; \
	fi
	$(TPY) -m pip install --quiet -e '.[dev,mms,watermark]'
	touch $@

install: $(VENV)/.installed

dev: $(TEST_VENV)/.installed

run: $(VENV)/.installed
	$(VENV)/bin/tts-actor serve --sample-out hello.wav --http 127.0.0.1:8000

test: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/ruff check statemachine tts_actor tests
	$(TEST_VENV)/bin/lint-imports --no-cache
	$(TPY) -m pytest -q

lint: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/ruff check statemachine tts_actor tests
	$(TEST_VENV)/bin/lint-imports --no-cache
	$(TEST_VENV)/bin/ruff format --check statemachine tts_actor tests

# The alert rules alone, as promtool sees them (make test runs the same through pytest, one case per alert).
rules:
	@command -v promtool >/dev/null || { echo "promtool is not on the PATH: apt-get install prometheus"; exit 1; }
	promtool check rules ops/prometheus/alerts.yml
	promtool test rules ops/prometheus/tests/*.yml

bench: $(TEST_VENV)/.installed
	$(TPY) -m tests.bench
	$(TPY) -m tests.bench_watermark

clean:
	rm -rf $(VENV) $(TEST_VENV) .pytest_cache hello.wav
