# Two commands on a fresh machine:  `make run` (the main job)  and  `make test`.
# Both create .venv and install what they need first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint test-deps bench bench-api clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# torch first, pinned, so pip keeps this build instead of fetching a CUDA one
	$(BIN)/pip install "torch==2.13.0"
	# torchvision 0.28.0 is the release for torch 2.13 (the tests put exported layers in its models and
	# timm's). Without its dependencies: they would pull a CUDA torch. Its PyPI wheel is CUDA-built, so its
	# compiled ops do not load beside the CPU torch; see tests/primitives/test_prim_interop.py.
	$(BIN)/pip install --no-deps "torchvision==0.28.0"
	$(BIN)/pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# A quick search on the embedded defaults: SQLite (runs/evonorm.db), a local Ray, offline data.
run: $(STAMP)
	$(BIN)/evonorm-search run --preset quick --summary-json runs/quick-summary.json

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Debian packages the tests drive: Chromium (the dashboard's browser test, through Playwright,
# no browser download) and docker-compose (validates docker-compose.yml; no engine needed).
test-deps:
	(command -v chromium && command -v docker-compose) >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq chromium docker-compose)

test: $(STAMP) lint test-deps
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m benchmarks.layer_speed

bench-api: $(STAMP)
	$(BIN)/python -m benchmarks.api_latency

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
