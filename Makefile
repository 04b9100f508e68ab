# make setup: .venv with lineside and everything the demo and tests need (idempotent)
# make demo:  the textile demo line on the embedded starter pack (console on http://127.0.0.1:8080)
# make test:  the test suite, browser and PostgreSQL tests included (installs Debian chromium and postgresql if
#             missing)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SECONDS ?=

.PHONY: setup demo test chromium postgresql faults lint pack clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch==2.13.0 first, pinned, so nothing pulls a CUDA build (calibrate and train need it: the train extra; the
# build extra, which holds it too, rebuilds the starter pack)
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[build,datasets,dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/lineside demo $(if $(SECONDS),--seconds $(SECONDS),)

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser tests"; \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver) \
	  || (sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver); }

# the store tests also run against a real PostgreSQL server: the tests start a throwaway cluster with these binaries
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing Debian postgresql for the PostgreSQL store tests"; \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql) \
	  || (sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql); }

test: setup chromium postgresql
	$(BIN)/lint-imports --no-cache --no-logo
	$(BIN)/python -m pytest -q --durations=15

# the long fault-injection run (README "Fault injection"): 10,000 frames per scenario, 60 s outages
faults: setup
	$(BIN)/python -m edge.tools.faults run --frames 10000 --out var/faults

lint: setup
	$(BIN)/ruff check edge tests models scripts
	$(BIN)/mypy edge
	$(BIN)/lint-imports --no-cache --no-logo

pack: setup
	$(BIN)/python models/build_starter.py --out models/starter

clean:
	rm -rf var test-output .pytest_cache
