# Two commands set everything up on a fresh machine: `make demo` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export MLFLOW_DISABLE_TELEMETRY := true
export TOKENIZERS_PARALLELISM := false
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: venv demo test bench bench-quick bench-serve clean

venv: $(STAMP)

# requirements.lock pins every package this was tested with; pip takes torch/torchvision from this disk.
$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/continual demo demo

test: $(STAMP)
	CONTINUAL_THREADS=1 $(PY) -m pytest -q

clean:
	rm -rf demo bench .pytest_cache

bench-serve: $(STAMP)
	$(PY) benchmarks/serve_bench.py --seconds 15
