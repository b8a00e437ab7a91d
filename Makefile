# towpath: `make run` and `make test` are the whole set-up on a fresh machine.
#
# Both install from committed lock files (requirements/*.lock: exact versions with hashes,
# made by `make lock`), so a new release upstream cannot change what a newcomer gets.
# `make test-latest` runs the same checks against the newest releases instead (its own venv).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
EXTRAS := dev,hiredis,crypto,rabbitmq,uvloop
# uv makes the lock files (`make lock` only); installing from them needs nothing but pip
UV_VERSION := 0.13.10
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes --quiet -c requirements/constraints.txt
PIP_INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: run test test-latest lock lint typecheck pytest peers bench bench-servers system-deps clean

$(PY):
	$(PYTHON) -m venv $(VENV)

ifeq ($(LATEST),1)
# no lock: the newest release of everything pyproject.toml allows
$(VENV)/.dev-stamp: pyproject.toml | $(PY)
	$(PIP_INSTALL) --upgrade pip setuptools wheel
	$(PIP_INSTALL) --upgrade --upgrade-strategy eager -e '.[$(EXTRAS)]'
	$(PY) -m pip list --format=freeze > $(VENV)/latest-versions.txt
	@touch $@
else
# what running the chat example (and the README tour) needs: towpath's dependencies only
$(VENV)/.run-stamp: requirements/run.lock pyproject.toml | $(PY)
	$(PIP_INSTALL) --require-hashes --no-deps -r requirements/run.lock
	$(PIP_INSTALL) --no-deps --no-build-isolation -e .
	@touch $@

# everything the tests, linters and benchmarks use
$(VENV)/.dev-stamp: requirements/dev.lock pyproject.toml | $(PY)
	$(PIP_INSTALL) --require-hashes --no-deps -r requirements/dev.lock
	$(PIP_INSTALL) --no-deps --no-build-isolation -e .
	@touch $@ $(VENV)/.run-stamp
endif

system-deps:
	@bash scripts/system-deps.sh

# The chat example (examples/chat) on the in-memory layer; PORT=9000 make run for another port.
run: $(VENV)/.run-stamp
	@echo "chat example: open http://127.0.0.1:$(or $(PORT),8000)/ (Ctrl-C stops it; see examples/chat/README.md)"
	$(VENV)/bin/towpath runserver --routing examples.chat.routing:routes --port $(or $(PORT),8000)

lint: $(VENV)/.dev-stamp
	$(VENV)/bin/ruff check towpath tests bench examples scripts
	$(VENV)/bin/ruff format --check towpath tests bench examples scripts

typecheck: $(VENV)/.dev-stamp
	$(VENV)/bin/mypy --strict towpath

pytest: $(VENV)/.dev-stamp $(VENV)/peers/.stamp system-deps
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The peers' own test suites, run against towpath by tests/peers/: their sdists, checked against
# the hashes in requirements/peers.lock and unpacked in $(VENV)/peers. Not installed (pip runs
# only their setup.py's metadata step, with the locked setuptools); no test downloads anything.
peers: $(VENV)/peers/.stamp

$(VENV)/peers/.stamp: requirements/peers.lock | $(VENV)/.dev-stamp
	rm -rf $(VENV)/peers
	$(PY) -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
	    --no-build-isolation --require-hashes -r requirements/peers.lock -d $(VENV)/peers/dist
	for sdist in $(VENV)/peers/dist/*.tar.gz; do tar -xzf "$$sdist" -C $(VENV)/peers || exit 1; done
	@touch $@

test: lint typecheck pytest

# The same checks against the newest releases of every dependency, in .venv-latest (not CI):
# an upstream break shows here before a user meets it. Its versions: .venv-latest/latest-versions.txt
test-latest:
	$(MAKE) test VENV=.venv-latest LATEST=1

# Refresh the lock files from pyproject.toml and requirements/*.in (then commit them).
lock: | $(PY)
	$(PIP_INSTALL) 'uv==$(UV_VERSION)'
	$(VENV)/bin/uv pip compile $(LOCK_FLAGS) pyproject.toml requirements/build.in \
	    $(foreach extra,$(subst $(comma), ,$(EXTRAS)),--extra $(extra)) -o requirements/dev.lock
	$(VENV)/bin/uv pip compile $(LOCK_FLAGS) pyproject.toml requirements/run.in \
	    -c requirements/dev.lock -o requirements/run.lock

bench: $(VENV)/.dev-stamp system-deps
	$(PY) -m bench layers $(BENCH_ARGS)

bench-servers: $(VENV)/.dev-stamp system-deps
	$(PY) -m bench servers $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-latest .mypy_cache .pytest_cache .ruff_cache build *.egg-info

comma := ,
