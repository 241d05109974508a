# Two commands do all set-up: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# Reinstall whenever the project's dependency list changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/critwin demo

# Everything the tests keep on disk (trained tiny models, Hugging Face and matplotlib caches, pytest's temp
# folders) lives in .test-cache/ inside the checkout and starts empty on every run, as on a new machine.
TEST_CACHE := $(CURDIR)/.test-cache
test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	rm -rf $(TEST_CACHE) && mkdir -p $(TEST_CACHE)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -q -d $(TEST_CACHE)/site
	CRITWIN_TEST_CACHE=$(TEST_CACHE) HF_HOME=$(TEST_CACHE)/hf MPLCONFIGDIR=$(TEST_CACHE)/mpl HF_HUB_OFFLINE=1 \
		$(BIN)/python -m pytest -n 2 --timeout 900 -q --basetemp=$(TEST_CACHE)/tmp

bench: $(STAMP)
	for b in benchmarks/*_bench.py; do HF_HUB_OFFLINE=1 $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
