# metaproxy: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo test unit integration clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(STAMP)

## demo: venv + install, then fake Nova + agent on the demo table, requests through
## the shared socket and a per-namespace socket
demo: venv
	$(BIN)/python -m bench.demo

## test: everything, from nothing
test: venv
	$(BIN)/python -m pytest

unit: venv
	$(BIN)/python -m pytest tests/unit

integration: venv
	$(BIN)/python -m pytest tests/integration

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis twisted/plugins/dropin.cache
