# The two commands of the README: `make run` (the main job) and `make test` (lint, types, the test suite).
# Both create .venv and install accelsim with its dev, hf, dask and docs extras on first use.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# SCALE-Sim 3.0.0 breaks with numpy >= 2.4, so the peer cross-check runs it in a venv of its own.
SCALESIM_VENV ?= .venv-scalesim
SCALESIM_STAMP := $(SCALESIM_VENV)/.installed-stamp
# ZigZag 3.9.1, the timing and energy peer, also in a venv of its own; it imports six without declaring it.
# Its wheel ships the CACTI 7 binary behind configs/energy/sram_cacti7_45nm.yaml (calibration/cacti_sram_table.py).
ZIGZAG_VENV ?= .venv-zigzag
ZIGZAG_STAMP := $(ZIGZAG_VENV)/.installed-stamp
# Vidur 0.0.26, the serving schedulers' peer (its batches timed by accelsim's closed form, not its profiles).
VIDUR_VENV ?= .venv-vidur
VIDUR_STAMP := $(VIDUR_VENV)/.installed-stamp
# GenZ 0.0.16 (genz-llm), the collectives' peer for tensor parallelism.
GENZ_VENV ?= .venv-genz
GENZ_STAMP := $(GENZ_VENV)/.installed-stamp

.PHONY: run test install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,hf,dask,docs]'
	touch $(STAMP)

$(SCALESIM_STAMP):
	$(PYTHON) -m venv $(SCALESIM_VENV)
	$(SCALESIM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check 'scalesim==3.0.0' 'numpy<2.4'
	touch $(SCALESIM_STAMP)

$(ZIGZAG_STAMP):
	$(PYTHON) -m venv $(ZIGZAG_VENV)
	$(ZIGZAG_VENV)/bin/python -m pip install --quiet --disable-pip-version-check 'zigzag-dse==3.9.1' 'six==1.17.0'
	touch $(ZIGZAG_STAMP)

$(VIDUR_STAMP):
	$(PYTHON) -m venv $(VIDUR_VENV)
	$(VIDUR_VENV)/bin/python -m pip install --quiet --disable-pip-version-check 'vidur==0.0.26'
	touch $(VIDUR_STAMP)

$(GENZ_STAMP):
	$(PYTHON) -m venv $(GENZ_VENV)
	$(GENZ_VENV)/bin/python -m pip install --quiet --disable-pip-version-check 'genz-llm==0.0.16'
	touch $(GENZ_STAMP)

install: $(STAMP) $(SCALESIM_STAMP) $(ZIGZAG_STAMP) $(VIDUR_STAMP) $(GENZ_STAMP)

run: $(STAMP)
	$(BIN)/accelsim run configs/int4_sp.yaml --model bert-base

test: $(STAMP) $(SCALESIM_STAMP) $(ZIGZAG_STAMP) $(VIDUR_STAMP) $(GENZ_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	rm -rf .site && NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir .site && rm -rf .site
	$(BIN)/python -m pytest -q -n auto

clean:
	rm -rf $(VENV) $(SCALESIM_VENV) $(ZIGZAG_VENV) $(VIDUR_VENV) $(GENZ_VENV)
