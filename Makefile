# The two set-up commands of the README work on a fresh machine: they create .venv,
# install the pinned requirements, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

.PHONY: install test demo
install: $(BIN)/.installed

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

# make demo DEMO_ARGS="--skip-week" (or --week-only, --market low --market-seed 2; see demo.py)
demo: $(BIN)/.installed
	$(BIN)/python demo.py $(DEMO_ARGS)
