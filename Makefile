# Nightlink: `make demo` sets up and runs the main job; `make test` sets up and runs every test.
# Installs are stamped against the files that declare them, so a second run installs nothing.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMPS := $(VENV)/.stamps
# One worker more than the CPUs: many tests wait on brokers, databases, Chromium or Node, so a
# third worker on two cores took the suite from 17.4 to 12.6 minutes here.
PYTEST_WORKERS ?= $(shell $(PYTHON) -c 'import os; print(len(os.sched_getaffinity(0)) + 1)' 2>/dev/null || echo auto)

.PHONY: demo test lint test-python setup setup-dev node mosquitto report-packages clean

demo: setup report-packages
	$(VENV)/bin/nightlink demo

test: setup-dev node mosquitto report-packages lint test-python

lint: setup-dev
	$(VENV)/bin/ruff check .

test-python: setup-dev node
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --durations=10

setup: $(STAMPS)/main
setup-dev: $(STAMPS)/dev
node: node_modules/.package-lock.json

# pip's output goes to $(VENV)/pip.log and is shown only when an install fails.
PIP_LOG := $(VENV)/pip.log
define pip_install
	@echo "Installing $(1) (log: $(PIP_LOG))"
	@$(PY) -m pip install --disable-pip-version-check $(1) >$(PIP_LOG) 2>&1 || \
		{ cat $(PIP_LOG); echo "pip install $(1) failed; the log is above and in $(PIP_LOG)."; exit 1; }
endef

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Nightlink needs Python 3.11 or newer as $(PYTHON); set PYTHON=python3.x."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(call pip_install,--upgrade pip)

# The demo runs every tier: the demo extra. The tests also train models: dev and train.
$(STAMPS)/main: pyproject.toml | $(PY)
	$(call pip_install,--editable '.[demo]')
	@mkdir -p $(STAMPS) && touch $@

# (A comma cannot appear inside $(call ...): the extras list is a variable.)
DEV_EXTRAS := .[dev,train]
$(STAMPS)/dev: pyproject.toml $(STAMPS)/main
	$(call pip_install,--editable '$(DEV_EXTRAS)')
	@mkdir -p $(STAMPS) && touch $@

# Node packages (package.json): MicroPython's WebAssembly port for the clock tests and axe-core,
# which the portal's browser tests inject into Chromium.
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

# The tests start their own Mosquitto brokers on free ports; they need the binary.
mosquitto:
	@command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || \
	if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; \
	else \
		echo "Install the mosquitto broker (e.g. 'sudo apt-get install mosquitto') and run make test again."; \
		exit 1; \
	fi

# Doctor reports: WeasyPrint needs Pango; the portal tests drive headless Chromium and turn
# PDFs into PNGs with pdftoppm (poppler-utils).
REPORT_DEBS := chromium poppler-utils libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core
report-packages:
	@command -v chromium >/dev/null 2>&1 && command -v pdftoppm >/dev/null 2>&1 && \
	ldconfig -p | grep -q libpangoft2-1.0 || \
	if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(REPORT_DEBS) >/dev/null; \
	else \
		echo "Install $(REPORT_DEBS) (e.g. with sudo apt-get install) and run make test again."; \
		exit 1; \
	fi

clean:
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache out
