# Set-up and entry points. `make demo` and `make test` each install everything they need on a fresh machine
# (Python 3.11, CPU only, no hub access).
PYTHON ?= python

.PHONY: install demo test benchmark

install:
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e ".[testing]"

demo: install
	$(PYTHON) -m uniaudio2.cli demo

test: install
	$(PYTHON) -m pytest tests

benchmark: install
	$(PYTHON) benchmarks/benchmark_generation.py
	$(PYTHON) benchmarks/benchmark_codec.py
	$(PYTHON) benchmarks/benchmark_training.py
