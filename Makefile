# The two commands: `make run` (embedded PostgreSQL + Redis + demo feed) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
WEBUI_STAMP := webui/node_modules/.installed

.PHONY: run test lint faults bench clean-data deploy-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Web UI assets from the npm registry (the Chinese web font), vendored at install time from
# webui/package-lock.json. Without npm the pages still work, in the system's fonts.
$(WEBUI_STAMP): webui/package.json webui/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		(cd webui && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error && touch node_modules/.installed) \
		|| echo "make: npm ci failed; the web UI falls back to the system's fonts" >&2; \
	else echo "make: npm not found; the web UI falls back to the system's fonts" >&2; fi

run: $(STAMP) $(WEBUI_STAMP)
	$(BIN)/dispatchd dev

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
test: $(STAMP) $(WEBUI_STAMP)
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: no test ran" >&2; exit 1; fi; exit $$rc

# The shipped deployment (deploy/): the files checked against their tools, then two instances behind
# Debian's nginx over TLS (installs nginx and its stream module where missing, as root). Also in `make test`.
deploy-test: $(STAMP)
	@bash .ci/deploy-deps
	@$(BIN)/python -m pytest tests/deploy tests/channels/hotline/test_standby.py tests/test_ops.py $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make deploy-test: no test ran" >&2; exit 1; fi; exit $$rc

# The fault suite at full length: PostgreSQL and Redis frozen and stopped for 30 s each under load, the
# daemon killed with SIGKILL (`make test` runs it with 5 s outages). Prints and writes its figures.
FAULT_SECONDS ?= 30
faults: $(STAMP)
	DISPATCHD_FAULT_SECONDS=$(FAULT_SECONDS) $(BIN)/python -m pytest tests/faults -p no:cacheprovider -s \
		-o timeout=1800 $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check dispatchd tests bench
	$(BIN)/mypy

clean-data:
	rm -rf var
