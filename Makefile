# Every target creates the environment it needs from nothing (python3 -m venv + pip).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint unit chaos demo replay preflight bench diagrams clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check tradeguard tests bench
	$(BIN)/ruff format --check tradeguard tests bench
	$(BIN)/mypy --strict tradeguard

unit: $(STAMP)
	$(BIN)/pytest

test: lint unit

# The seed's rollout checklist, step 3: the harness's own tests, then the engine under chaos.
chaos: $(STAMP)
	$(BIN)/pytest tests/chaos/test_chaos_harness.py
	$(BIN)/pytest tests/chaos/test_engine_chaos.py

demo: $(STAMP)
	$(BIN)/tradeguard demo

replay: $(STAMP)
	$(BIN)/tradeguard replay

# Against the embedded exchange; pass --rest-url/--ws-url to `tradeguard preflight` for a venue.
preflight: $(STAMP)
	$(BIN)/tradeguard preflight --profile canary

bench: $(STAMP)
	$(BIN)/python bench/bench_core.py
	$(BIN)/python bench/bench_loop.py

diagrams: $(STAMP)
	$(BIN)/tradeguard diagrams

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .hypothesis
