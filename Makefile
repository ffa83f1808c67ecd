# metaproxy: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo test lint format unit integration e2e clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[test,bench]'
	@touch $(STAMP)

## demo: venv + install, then fake Nova + agent on the demo table, requests through
## the shared socket and a per-namespace socket
demo: venv
	$(BIN)/python -m bench.demo

## bench: the standard boot storm (1,000 instances x ~28 requests, 200 concurrent boots)
## through the per-namespace sockets, then the shared socket (results in bench/results/),
## then the CPU regression benchmarks of the parser and the request path (bench-cpu)
.PHONY: bench bench-storm
bench: venv
	$(BIN)/python -m bench storm --target both
	$(BIN)/python -m pytest bench/cpu --benchmark-only -q

## bench-storm: a storm of your own, e.g. make bench-storm ARGS='--instances 200 --keepalive'
bench-storm: venv
	$(BIN)/python -m bench storm $(ARGS)

## upstream: upstream's neutron from PyPI in its own virtualenv (~/.cache/metaproxy/upstream-venv),
## for bench-compare and for the tests that hold metaproxy against Neutron's own code
.PHONY: upstream
upstream: venv
	$(BIN)/python -c 'from bench.compare.upstream import ensure_upstream_venv; print(ensure_upstream_venv())'

## bench-compare: the same storm against metaproxy and upstream's neutron-metadata-agent
## (installed from PyPI into ~/.cache/metaproxy/upstream-venv the first time, 1-2 minutes)
.PHONY: bench-compare
bench-compare: venv
	$(BIN)/python -m bench compare --a metaproxy --b upstream

## test: everything, from nothing: the linter first, then every test
test: lint
	$(BIN)/python -m pytest

## lint: ruff's checks and its formatter (configured in pyproject.toml); format: apply both
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

unit: venv
	$(BIN)/python -m pytest tests/unit

integration: venv
	$(BIN)/python -m pytest tests/integration

## e2e: network namespaces + real haproxy (as root; skipped with a reason otherwise)
e2e: venv
	$(BIN)/python -m pytest tests/e2e

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis twisted/plugins/dropin.cache

## bench-ovn: metaproxy's ML2/OVN chassis mode against upstream's neutron-ovn-metadata-agent on a
## real OVN sandbox made here (root; OVN and OVS packages; upstream from PyPI), e.g.
## ARGS='--networks 4 --vms 5 --concurrency 20'
.PHONY: bench-ovn
bench-ovn: venv upstream
	$(BIN)/python -m bench.ovnsandbox.compare $(ARGS)

## bench-ovn-scale: metaproxy's chassis mode with 1,000 networks provisioned on a real OVN
## sandbox (root; OVN and OVS packages): start-up, RSS, descriptors, threads, processes,
## resync after an SB and an agent restart, teardown; e.g. ARGS='--networks 200'
.PHONY: bench-ovn-scale
bench-ovn-scale: venv
	$(BIN)/python -m bench.ovnsandbox.scale $(ARGS)

## bench-cpu: CPU per request of the parser and of the whole request path in memory
## (pytest-benchmark; not part of make test), e.g. ARGS='--benchmark-autosave', then
## ARGS='--benchmark-compare' to compare with the run kept; on a busy machine add
## --benchmark-timer=time.process_time to count this process's CPU time only
.PHONY: bench-cpu
bench-cpu: venv
	$(BIN)/python -m pytest bench/cpu --benchmark-only $(ARGS)

## soak: repeated storms against one agent with faults injected (Nova killed and
## restarted, the secret rotated with SIGHUP, namespaces churned); lost requests, RSS and
## open descriptors per round; e.g. ARGS='--rounds 40 --instances 500' for a longer one
.PHONY: soak
soak: venv
	$(BIN)/python -m bench.soak $(ARGS)
