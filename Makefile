# `make demo` and `make test` each create .venv if missing and install what they need.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip --disable-pip-version-check -q
STAMP   = $(VENV)/.xpmat-installed

.PHONY: demo test lint docs bench bench-quick clean

$(STAMP): pyproject.toml backends/requirements-cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -r backends/requirements-cpu.txt
	$(PIP) install -e '.[test,bench,docs]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m xpmat demo

# One worker per core (pytest-xdist); TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= auto
test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS)

lint: $(STAMP)
	$(PY) -m pip install -q ruff && $(PY) -m ruff check src tests asv_benchmarks

docs: $(STAMP)
	$(PY) -m mkdocs build --strict

bench-quick: $(STAMP)
	cd asv_benchmarks && ../$(PY) -m asv run --python=same --quick --show-stderr

clean:
	rm -rf $(VENV) site build asv_benchmarks/env asv_benchmarks/results asv_benchmarks/html
