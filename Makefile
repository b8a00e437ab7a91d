# towpath: `make run` and `make test` are the whole set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
EXTRAS := dev,hiredis,crypto,rabbitmq,uvloop

.PHONY: run test lint typecheck pytest bench bench-servers system-deps clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Re-install whenever pyproject.toml changes.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	@touch $(STAMP)

system-deps:
	@bash scripts/system-deps.sh

# The chat example (examples/chat) on the in-memory layer; PORT=9000 make run for another port.
run: $(STAMP)
	@echo "chat example: open http://127.0.0.1:$(or $(PORT),8000)/ (Ctrl-C stops it; see examples/chat/README.md)"
	$(VENV)/bin/towpath runserver --routing examples.chat.routing:routes --port $(or $(PORT),8000)

lint: $(STAMP)
	$(VENV)/bin/ruff check towpath tests bench examples
	$(VENV)/bin/ruff format --check towpath tests bench examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict towpath

pytest: $(STAMP) system-deps
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(STAMP) system-deps
	$(PY) -m bench layers $(BENCH_ARGS)

bench-servers: $(STAMP) system-deps
	$(PY) -m bench servers $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build *.egg-info
