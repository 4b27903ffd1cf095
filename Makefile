# Set-up and the main jobs. Every path installs torch==2.13.0 (the CPU build) before the project.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED ?= ../shared
ARCHIVE := $(SHARED)/data/crohme/crohme-inkml.tar.gz
DATA := data/crohme

.PHONY: setup demo data test
setup: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# The main job, until trained weights ship: build the data and draw a contact sheet to look at.
demo: setup
	$(BIN)/maskmatch data build $(ARCHIVE) --out $(DATA)
	$(BIN)/maskmatch data sheet $(DATA)/2014 --out out/sheet-2014.png

test: setup
	$(BIN)/python -m pytest -q
