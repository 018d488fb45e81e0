# Everything a fresh machine needs: `make demo` shows the UNet tree, `make test` runs the tests.
# Both create (or reuse) the virtual environment in .venv and install the project into it.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sd-explorer-installed

.PHONY: install demo test test-hostile test-lowest test-all notebooks diagrams docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml scripts/install-torch | $(BIN)/python
	$(BIN)/python -m pip install --upgrade pip
	scripts/install-torch $(VENV)
	$(BIN)/pip install -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/explore unet --depth 3
	@echo
	@echo "Next, each runnable as written:"
	@echo "  $(BIN)/explore diagram unet --depth 1 -o unet.svg      # the U as a figure (Graphviz), open unet.svg"
	@echo "  $(BIN)/pip install -e '.[notebooks]' && $(BIN)/jupyter lab notebooks/01_unet.ipynb   # the first walkthrough"
	@echo '  $(BIN)/explore html site/ && $(BIN)/python -m webbrowser "file://$$PWD/site/index.html"   # the page: click into any block'

# the tests in WORKERS processes at once (pytest-xdist; each file's tests in one of them)
WORKERS ?= 2
PYTEST := $(BIN)/pytest -q -n $(WORKERS) --dist loadfile

test: install
	$(PYTEST)

# the suite again as a user with a hostile environment would run it: offline Hugging Face settings,
# colours forced and refused, a narrow dumb terminal, a home and caches that cannot be written
test-hostile: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HOME=/dev/null/hf HF_HUB_CACHE=/dev/null/hub \
	NO_COLOR=1 FORCE_COLOR=1 COLUMNS=40 TERM=dumb HOME=/dev/null/home SD_EXPLORER_CACHE_DIR=/dev/null/cache \
	$(PYTEST) -p no:cacheprovider

# the suite with the lowest versions pyproject.toml allows (in .venv-lowest; see the script for torch)
test-lowest: install
	scripts/test-lowest

# also the tests marked slow
test-all: install
	$(PYTEST) --runslow

# re-execute the walkthrough notebooks in place (their outputs are committed)
notebooks: install
	$(BIN)/python scripts/run_notebooks.py

# regenerate what the tests check for freshness: the diagrams, the course's pictures and the numbers
# the docs quote (from micro's weights), the naming table, the CLI examples
diagrams: install
	$(BIN)/explore diagrams diagrams
	$(BIN)/explore diagrams diagrams/zh --lang zh
	$(BIN)/python scripts/course_figures.py

docs: install diagrams
	$(BIN)/python scripts/naming_page.py docs/naming.md
	$(BIN)/python scripts/glossary_page.py
	$(BIN)/python scripts/zh_notebooks.py build
	SD_EXPLORER_UPDATE_DOCS=1 $(BIN)/pytest -q tests/test_docs.py

clean:
	rm -rf $(VENV) .venv-lowest .pytest_cache build *.egg-info
