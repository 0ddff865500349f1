# The two commands of the README: `make run` (the main job) and `make test` (lint + the test suite).
# Both create .venv and install accelsim with its dev and hf extras on first use.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,hf]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/accelsim extract --model bert-base

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV)
