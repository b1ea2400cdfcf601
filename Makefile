# inferq: one command sets up, one runs the tests. Every target is idempotent.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.inferq-installed

.PHONY: venv test clean system-deps

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

clean:
	rm -rf $(VENV) .cache build *.egg-info
