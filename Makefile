# The two set-up commands of the README:
#   make demo   install into .venv, then run `workbench demo` (train -> sample -> evaluate, report)
#   make test   install into .venv (with test extras), then run the test suite
# Python 3.10+ is needed; PYTHON picks the interpreter.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned so pip takes the wheel that matches this project's CI; on a GPU machine
# install your CUDA build of torch into $(VENV) first and this step keeps it.
TORCH ?= torch==2.13.0
EXTRAS ?= test,graphs,timeseries,medical,crystals

.PHONY: demo test install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-$(EXTRAS): $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed-$(EXTRAS)

demo: $(VENV)/.installed-$(EXTRAS)
	$(BIN)/workbench demo --out workbench-demo

# two pytest workers of one torch thread each (tests/conftest.py): 1.3-2x faster than one worker
# with two threads on a 2-core machine; TEST_WORKERS=0 runs them in one process
TEST_WORKERS ?= 2
test: $(VENV)/.installed-$(EXTRAS)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal

clean:
	rm -rf $(VENV) workbench-demo runs
