# Two commands set everything up on a fresh machine: `make demo` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export MLFLOW_DISABLE_TELEMETRY := true
export TOKENIZERS_PARALLELISM := false
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: venv demo test bench bench-quick bench-serve bench-lora bench-drift bench-streams chaos clean

venv: $(STAMP)

# requirements.lock pins every package this was tested with; pip takes torch/torchvision from this disk.
$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/continual demo demo

# Three pytest workers on two cores: many tests wait on a server, `dvc repro` or MLflow, so a third keeps the
# cores busy. Whole files go to a worker (module fixtures are built once), the slow ones first (tests/conftest.py).
# TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 3

test: $(STAMP)
	CONTINUAL_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

clean:
	rm -rf demo bench .pytest_cache

# LoRA rounds against full fine-tuning: 3 seeds x both streams, each run in its own process (peak RSS).
bench-lora: $(STAMP)
	$(BENCH_ENV) $(PY) benchmarks/lora.py
	$(BENCH_ENV) $(PY) benchmarks/storage.py
	mkdir -p docs/img && cp bench/full/lora_vader.png bench/full/lora_wordnet.png docs/img/

# Drift detection on both streams with the served round-1 champion (~20 minutes), then the status page's
# screenshot in headless Chromium (docs/img/status_page.png).
bench-drift: $(STAMP)
	$(BENCH_ENV) $(PY) benchmarks/drift.py
	$(BENCH_ENV) $(PY) benchmarks/status_screenshot.py

# Several streams in one server: memory per extra MiniLM, and a hot swap of one stream under load on the others.
bench-streams: $(STAMP)
	$(PY) benchmarks/streams_serving.py

bench-serve: $(STAMP)
	$(PY) benchmarks/serve_bench.py --seconds 15

# Issue 10's chaos suite (docs/benchmarks.md, "Chaos"): hostile arrivals, kill -9 at random points, an ingest
# during dvc repro, MLflow down, a serving soak with hot swaps and a killed worker, fuzzing. Tiny model,
# loopback only; JSON and the table land in bench/chaos. CHAOS_ARGS passes options, e.g. --soak-seconds 600.
chaos: $(STAMP)
	CONTINUAL_THREADS=1 $(PY) benchmarks/chaos.py $(CHAOS_ARGS)

# Benchmarks on the real streams (docs/benchmarks.md). One torch thread: on a shared 2-core machine two
# threads per process slow everything down. JSON and PNG land in bench/quick or bench/full (git-ignored).
BENCH_ENV := CONTINUAL_THREADS=1

bench-quick: $(STAMP)
	$(BENCH_ENV) $(PY) benchmarks/forgetting.py --quick
	$(BENCH_ENV) $(PY) benchmarks/cost.py --quick
	$(BENCH_ENV) $(PY) benchmarks/trainer_speed.py --quick
	$(BENCH_ENV) $(PY) benchmarks/auto_lambda.py --quick
	$(BENCH_ENV) $(PY) benchmarks/round_phases.py --quick
	$(BENCH_ENV) $(PY) benchmarks/overheads.py --quick
	$(BENCH_ENV) $(PY) benchmarks/quantized.py --quick
	$(BENCH_ENV) $(PY) benchmarks/lora.py --quick
	$(BENCH_ENV) $(PY) benchmarks/drift.py --quick

# The timed benchmarks run alone; the two forgetting streams (accuracy, not time) then share the 2 cores.
bench: $(STAMP)
	$(BENCH_ENV) $(PY) benchmarks/trainer_speed.py
	$(BENCH_ENV) $(PY) benchmarks/round_phases.py
	$(BENCH_ENV) $(PY) benchmarks/auto_lambda.py
	$(BENCH_ENV) $(PY) benchmarks/cost.py
	$(BENCH_ENV) $(PY) benchmarks/overheads.py
	$(BENCH_ENV) $(PY) benchmarks/forgetting.py --stream vader & vader=$$!; \
	  $(BENCH_ENV) $(PY) benchmarks/forgetting.py --stream wordnet; wordnet=$$?; \
	  wait $$vader && exit $$wordnet
	$(BENCH_ENV) $(PY) benchmarks/quantized.py --stream vader & vader=$$!; \
	  $(BENCH_ENV) $(PY) benchmarks/quantized.py --stream wordnet; wordnet=$$?; \
	  wait $$vader && exit $$wordnet
	mkdir -p docs/img && cp bench/full/forgetting_vader.png bench/full/forgetting_wordnet.png bench/full/cost.png docs/img/
