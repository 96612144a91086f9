# Two commands do all set-up: `make demo` and `make test` create or refresh .venv themselves.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup test test-slow test-heavy demo bench clean

setup: $(STAMP)

# Re-install only when the project's dependencies change (idempotent, fast when nothing changed).
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,torch]'
	@touch $(STAMP)

# The quick suite (well under 15 minutes on 2 cores); CI also runs the slow cases. Two
# workers: XLA compiles on one core, and compiling is most of a test's time here (which
# tests share a worker: tests/conftest.py). JOBS=0 runs in this process (e.g. to debug).
JOBS ?= 2
XDIST := $(if $(filter 0,$(JOBS)),,-n $(JOBS))

test: setup
	$(PY) -m pytest $(XDIST) -m "not slow and not heavy"

test-slow: setup
	$(PY) -m pytest $(XDIST) -m "slow and not heavy"

# The longest cases (e.g. the 8-prompt x 32-token fidelity check on SmolLM2): by hand.
test-heavy: setup
	$(PY) -m pytest -m heavy

demo: setup
	$(VENV)/bin/pspec demo

bench: setup
	$(VENV)/bin/pspec bench mpc

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
