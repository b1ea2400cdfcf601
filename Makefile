# inferq: one command sets up, one runs the tests. Every target is idempotent.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.inferq-installed

.PHONY: venv test test-fast lint clean system-deps run demo soak

# The virtual environment, rebuilt when the dependencies change.
# constraints.txt pins every version (torch 2.13.0, the CPU build pip finds locally).
venv: $(STAMP)
$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

# Debian packages (redis-server, chromium, sshd ...) installed when missing, and the
# container engine the worker-image tests build and run the image with (podman).
# Without it the image tests skip, saying why; in CI (CI=true or CI=1, any case, as tests/ci.py reads it)
# they must run, so it fails here.
system-deps:
	scripts/system-deps.sh
	scripts/container-engine.sh || ! printf '%s' "$$CI" | grep -qixE 'true|1'

# Static checks: ruff everywhere; mypy on every package and top-level module (setup.cfg's packages,
# then the modules at the root). The repository root is the package inferq (setup.cfg maps it so), but
# its folder can have any name and mypy cannot follow an editable install's import hook: a link named
# inferq to the checkout lets mypy see it as the package, from a clone in any directory.
MYPY_TARGETS := $(foreach p,api broker model settings tasks stack bench deploy client,-p inferq.$(p)) \
	$(foreach m,contract jobview webhooks redislink redis_acl celeryconfig celery_app commands,-m inferq.$(m))
lint: venv
	$(VENV)/bin/ruff check .
	mkdir -p .cache/mypy-path && ln -sfn ../.. .cache/mypy-path/inferq
	MYPYPATH=.cache/mypy-path $(VENV)/bin/mypy $(MYPY_TARGETS)

# The test suite: the static checks, then the tests; they start their own Redis, workers and
# API and need nothing running.
test: system-deps venv lint
	$(PY) -m pytest --durations=25

# The inner loop: everything but the deploy lab, the worker image and the tests marked slow (the long fault
# tests and the crash checker, fuzzing, the stack under supervision), in a few minutes. CI runs `test`.
test-fast: venv lint
	$(PY) -m pytest -m "not slow" --ignore=tests/deploy --ignore=tests/worker_image

# From a checkout, the stack keeps its state and model cache in it (state/, .cache/models: both ignored by
# git) unless INFERQ_STATE_DIR / INFERQ_MODEL_CACHE say otherwise; installed, it uses the user's XDG folders.
CHECKOUT_DIRS = INFERQ_STATE_DIR=$${INFERQ_STATE_DIR:-$(CURDIR)/state} INFERQ_MODEL_CACHE=$${INFERQ_MODEL_CACHE:-$(CURDIR)/.cache/models}

# The whole stack in the foreground under supervisord: its own Redis (else the one in REDIS_URL),
# the API on :5000, WORKERS workers (default: one per core), Flower on :5555. A service that
# dies is restarted; Ctrl-C stops all of it.
run: venv
	$(CHECKOUT_DIRS) $(VENV)/bin/inferq-stack

# Starts the stack, runs the seed's test (5 threads x 10 requests) through the API,
# prints a summary and stops it; fails if any job failed or was lost.
demo: venv
	$(CHECKOUT_DIRS) $(VENV)/bin/inferq-demo

# The crash checker of the suite (tests/reliability/checker.py) for MINUTES minutes with a new seed:
# clients submit while a seeded schedule kills and stops Redis, workers and the API; prints
# "[figures] crash checker: seed= faults= accepted= lost= wrong= ran_twice=" and fails on a loss.
# REPLICATED=1: on a primary, a replica and three Sentinels, killing and freezing the primary.
MINUTES ?= 30
soak: venv
	$(PY) -m tests.reliability.checker --minutes $(MINUTES) $(if $(REPLICATED),--replicated)

clean:
	rm -rf $(VENV) .cache build *.egg-info
