# Every target creates the environment it needs from nothing (python3 -m venv + pip).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-floors promtool lint unit chaos demo replay preflight bench diagrams clean

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

# tests/integration/test_deploy.py runs promtool over deploy/prometheus. On a Debian machine
# where we are root (this project's machines and CI) it is installed from Debian's prometheus
# package (about 8 s; the package's server is not started); elsewhere install it yourself.
promtool:
	@command -v promtool >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -q --no-install-recommends prometheus; \
	  else \
	    echo "make test needs promtool on PATH: on Debian/Ubuntu" \
	      "'apt-get install --no-install-recommends prometheus', elsewhere the promtool" \
	      "binary of a Prometheus release" >&2; exit 1; \
	  fi; }

# After the suite, the dependency floors: scripts/floors.py installs every runtime and extra
# dependency at its pyproject lower bound in .venv-floors and runs the tests that use them.
test: promtool lint unit
	$(PY) scripts/floors.py

test-floors:
	$(PY) scripts/floors.py

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
	$(BIN)/python bench/bench_fleet.py
	$(BIN)/python bench/bench_load.py
	$(BIN)/python bench/bench_feed.py
	$(BIN)/python bench/bench_gc.py

diagrams: $(STAMP)
	$(BIN)/tradeguard diagrams

clean:
	rm -rf $(VENV) .venv-floors .mypy_cache .ruff_cache .hypothesis
