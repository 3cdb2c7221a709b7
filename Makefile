# aigw-proxy — `make run` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Find a Python >= 3.12: $PYTHON if given, then python3.13/3.12 on PATH, then pyenv's installs.
PYTHON ?= $(shell for c in python3.13 python3.12 python3 $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -rV); do \
	  if command -v $$c >/dev/null 2>&1 && $$c -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then command -v $$c; break; fi; done)

.PHONY: install run test lint typecheck bench bench-api clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py
	@if [ -z "$(PYTHON)" ]; then \
	  echo "error: aigw-proxy needs Python >= 3.12 and none was found (tried python3.13, python3.12, python3 and pyenv's versions)." >&2; \
	  echo "       Install one (e.g. 'pyenv install 3.12') or run 'make PYTHON=/path/to/python3.12'." >&2; exit 1; fi
	@echo "Using $(PYTHON) ($$($(PYTHON) --version))"
	@if [ ! -x $(PY) ] || ! $(PY) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then \
	  rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

run: install
	$(VENV)/bin/aigw-proxy run

test: install typecheck
	$(VENV)/bin/ruff check aigw_proxy addons tests bench
	bash scripts/ensure-prometheus.sh
	bash scripts/ensure-postgres.sh
	bash scripts/ensure-agents.sh
	bash scripts/ensure-chromium.sh
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check aigw_proxy addons tests bench

# mypy sees the package as it is installed: addons/ is aigw_proxy.addons (setup.py's package_dir), which mypy
# cannot map, so it checks a tree of links laid out like the installed package. The tests and benchmarks are
# checked in the same run, so their `aigw_proxy.addons.*` imports resolve to that tree (typed, not Any). The cache
# starts empty each time, as on CI's fresh clone: an incremental cache once hid an error a fresh one reports.
typecheck: install
	@rm -rf build/typecheck && mkdir -p build/typecheck/aigw_proxy
	@for f in aigw_proxy/*; do ln -s "../../../$$f" "build/typecheck/$$f"; done
	@ln -s ../../../addons build/typecheck/aigw_proxy/addons
	$(VENV)/bin/mypy --cache-dir build/typecheck/.mypy_cache build/typecheck/aigw_proxy tests bench

bench: install
	$(PY) bench/proxy_bench.py

bench-api: install  # REST API p50/p95 on a generated 1M-interception database (cached under /tmp)
	$(PY) bench/api_bench.py $(BENCH_API_ARGS)  # e.g. BENCH_API_ARGS="--postgresql" or "--database-url postgresql://…"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
