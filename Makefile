# Two commands do all the set-up: `make run` (the whole pipeline) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test clean-venv

# The venv is rebuilt when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[test]'
	touch $@

# Stage commands say `python -m stages.<name>`: the venv's bin goes first on PATH.
run: $(VENV)/.installed
	PATH="$(abspath $(BIN)):$$PATH" dvc repro

test: $(VENV)/.installed
	PATH="$(abspath $(BIN)):$$PATH" python -m pytest

clean-venv:
	rm -rf $(VENV)
