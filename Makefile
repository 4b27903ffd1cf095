# Set-up and the main jobs. Every path installs torch==2.13.0 (the CPU build) before the project.
# `test` also installs Debian's chromium, which the browser test drives through Playwright (never a
# browser download of its own). KaTeX, for the page's preview, is vendored in the package (`make katex`).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED ?= ../shared
ARCHIVE := $(SHARED)/data/crohme/crohme-inkml.tar.gz
DATA := data/crohme

CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo data test web katex browser
setup: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# The main job: the shipped weights recognize the bundled example images and print their LaTeX.
EXAMPLES := src/maskmatch/assets/examples
demo: setup
	$(BIN)/maskmatch recognize $(EXAMPLES)/img
	$(BIN)/maskmatch evaluate $(EXAMPLES)

# CROHME from the shared archive into data/crohme (the default 40 px renders) and data/crohme26 (the CPU
# recipe's 26 px renders, which the shipped model trains and is evaluated on, with 4 stroke-distorted variants of
# each training expression, which the finetune-cpu preset draws), and a contact sheet.
data: setup
	$(BIN)/maskmatch data build $(ARCHIVE) --out $(DATA)
	$(BIN)/maskmatch data build $(ARCHIVE) --out $(DATA)26 --symbol-size 26 --stroke-width 2.5 --variants 4
	$(BIN)/maskmatch data sheet $(DATA)/2014 --out out/sheet-2014.png

# KaTeX for `maskmatch serve`'s preview, exactly as web/package-lock.json pins it, into web/node_modules;
# `make katex` copies what the page uses (script, style, woff2 fonts, licence) into the package.
web: web/node_modules/.package-lock.json

KATEX_DIST := web/node_modules/katex/dist
KATEX_VENDORED := src/maskmatch/serve/katex
katex: web
	rm -rf $(KATEX_VENDORED) && mkdir -p $(KATEX_VENDORED)/fonts
	cp $(KATEX_DIST)/katex.min.js $(KATEX_DIST)/katex.min.css web/node_modules/katex/LICENSE $(KATEX_VENDORED)/
	cp $(KATEX_DIST)/fonts/*.woff2 $(KATEX_VENDORED)/fonts/
	node -p '"KaTeX " + require("./web/node_modules/katex/package.json").version + " (MIT), from npm by make katex"' \
		> $(KATEX_VENDORED)/VERSION

web/node_modules/.package-lock.json: web/package.json web/package-lock.json
	@command -v npm >/dev/null || { echo "make web: npm not found (Debian: apt-get install nodejs npm)" >&2; exit 1; }
	npm ci --prefix web --no-audit --no-fund --loglevel=error

# Debian's chromium for the browser test (tests/test_serve_browser.py).
browser: $(CHROMIUM)

$(CHROMIUM):
	$(SUDO) apt-get update -q
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends chromium

test: setup browser
	$(BIN)/python -m pytest -q
