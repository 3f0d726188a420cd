PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench reproduce reproduce-quick clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,plot]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check qkanforecast tests bench
	$(BIN)/mypy

demo: install
	bash bench/demo.sh

bench: install
	$(BIN)/python bench/layer.py

reproduce: install
	$(BIN)/python bench/reproduce.py

reproduce-quick: install
	$(BIN)/python bench/reproduce.py --quick

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache demo_output results
