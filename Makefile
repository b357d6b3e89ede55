# Two commands on a fresh machine with Python 3.11: `make run` (the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

.PHONY: run test bench
run: $(VENV)/.installed
	$(VENV)/bin/jaxbp train

test: $(VENV)/.installed
	$(VENV)/bin/pytest -q

bench: $(VENV)/.installed
	cd benchmarks && for b in *.py; do [ "$$b" = timing.py ] || ../$(PY) $$b; done
