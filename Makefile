# make run   — start the service on PORT (default 8000) with its embedded defaults
# make test  — the whole test suite (TEST_DATABASE_URL picks a PostgreSQL; else embedded)
# make lint  — ruff + mypy, and the deployment files (hadolint, the Compose schema)
# make bench — the benchmarks in bench/
# make clients — the Python and TypeScript clients, from the OpenAPI document of a service
#   started here on its embedded defaults, or of a running one: OPENAPI_URL=http://host:port

PORT ?= 8000
export PORT
UV_VERSION := 0.13.8
# uv from PATH if there is one, else our own copy in .tools/ (only Python 3.11+ needed).
UV := $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
PYTHON ?= python3

.PHONY: run test lint bench clients install clean

# A venv of its own where Python can make one; else pip's user site (e.g. Debian
# without python3-venv), with uv linked into .tools/bin either way.
$(CURDIR)/.tools/bin/uv:
	@if $(PYTHON) -m venv $(CURDIR)/.tools 2>/dev/null; then \
	  $(CURDIR)/.tools/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"; \
	else \
	  rm -rf $(CURDIR)/.tools; mkdir -p $(CURDIR)/.tools/bin; \
	  $(PYTHON) -m pip install --quiet --user "uv==$(UV_VERSION)" 2>/dev/null \
	    || $(PYTHON) -m pip install --quiet --user --break-system-packages "uv==$(UV_VERSION)"; \
	  ln -sf "$$($(PYTHON) -m site --user-base)/bin/uv" $(CURDIR)/.tools/bin/uv; \
	fi

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen
	@touch $@

install: .venv/.synced

run: install
	$(UV) run --frozen --no-sync python -m app

test: install
	$(UV) run --frozen --no-sync pytest

lint: install
	$(UV) run --frozen --no-sync ruff check .
	$(UV) run --frozen --no-sync ruff format --check .
	$(UV) run --frozen --no-sync mypy
	$(UV) run --frozen --no-sync hadolint Dockerfile
	$(UV) run --frozen --no-sync check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

bench: install
	$(UV) run --frozen --no-sync python -m bench.list_conversations
	$(UV) run --frozen --no-sync python -m bench.runs
	$(UV) run --frozen --no-sync python -m bench.durable
	$(UV) run --frozen --no-sync python -m bench.jail
	$(UV) run --frozen --no-sync python -m bench.workspace
	$(UV) run --frozen --no-sync python -m bench.skills
	$(UV) run --frozen --no-sync python -m bench.mcp
	$(UV) run --frozen --no-sync python -m bench.usage
	$(UV) run --frozen --no-sync python -m bench.nodes
	$(UV) run --frozen --no-sync python -m bench.load

# Needs Node.js 18+ and npm for the TypeScript client (docs/clients.md).
clients: install
	$(UV) run --frozen --no-sync python -m clients.generate $(if $(OPENAPI_URL),--url '$(OPENAPI_URL)')

clean:
	rm -rf .venv .tools .pytest_cache .mypy_cache .ruff_cache
