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

# the MNIST benchmarks read TFDS_DATA_DIR; as the tests do, default to the prepared copy beside the
# checkout when there is one (else tfds' own default directory)
SHARED_TFDS := $(wildcard $(abspath ..)/shared/data/tensorflow_datasets)

bench: $(VENV)/.installed
	export TFDS_DATA_DIR="$${TFDS_DATA_DIR:-$(SHARED_TFDS)}" && cd benchmarks && \
	for b in *.py; do [ "$$b" = timing.py ] || ../$(PY) $$b; done
