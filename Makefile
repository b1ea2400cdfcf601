# inferq: one command sets up, one runs the tests. Every target is idempotent.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.inferq-installed

.PHONY: venv test clean system-deps run demo

# The virtual environment, rebuilt when the dependencies change.
# constraints.txt pins every version (torch 2.13.0, the CPU build pip finds locally).
venv: $(STAMP)
$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

# Debian packages (redis-server, chromium, sshd ...) installed when missing.
system-deps:
	scripts/system-deps.sh

# The test suite: starts its own Redis, workers and API; needs nothing running.
test: system-deps venv
	$(PY) -m pytest

# The whole stack in the foreground under supervisord: its own Redis (else the one in REDIS_URL),
# the API on :5000, WORKERS workers (default: one per core), Flower on :5555. A service that
# dies is restarted; Ctrl-C stops all of it.
run: venv
	$(VENV)/bin/inferq-stack

# Starts the stack, runs the seed's test (5 threads x 10 requests) through the API,
# prints a summary and stops it; fails if any job failed or was lost.
demo: venv
	$(VENV)/bin/inferq-demo

clean:
	rm -rf $(VENV) .cache build *.egg-info
