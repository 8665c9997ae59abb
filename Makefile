# gr2: `make demo` runs the main job (the Kubeflow pipeline, locally), `make test` the test suite; both create .venv on first use.
VENV ?= .venv
PROFILE ?= default
RUN_DIR ?= runs/$(PROFILE)
PYTEST_ARGS ?=

.PHONY: setup demo test lint clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet torch==2.13.0  # the CPU wheel; must come before anything that needs torch
	$(VENV)/bin/pip install --quiet -e ".[dev,pipeline,serve]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/gr2 pipeline run --local --profile $(PROFILE) --run-dir $(RUN_DIR)

test: setup
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf runs .pytest_cache .ruff_cache
