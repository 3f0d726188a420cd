PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench reproduce reproduce-quick peers leaderboard clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,plot,ray]'
	# the numba kernels of the QKAN-LSTM recurrence (extra [fast]; where numba cannot install, the torch
	# path runs), compiled once into numba's on-disk cache (else the first training run compiles them)
	-$(BIN)/pip install --quiet -e '.[fast]'
	$(BIN)/python -c "from qkanforecast.models.kernel_scan import warm_up; print('numba kernels:', warm_up())"
	# optional: the reference `qkan` library, only for the parity test (skipped when absent)
	-QKAN_SKIP_CUDA_BUILD=TRUE $(BIN)/pip install --quiet --no-build-isolation qkan==0.2.3
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check qkanforecast tests bench
	$(BIN)/mypy

DEMO := demo_output
QF := $(BIN)/qkanforecast

# The quick start: ingest -> train -> forecast -> evaluate on two real Milan cells (14 days, 10-minute steps).
# The last two days are held out of training (--test-size 288) so that the backtest is out of sample.
# The two plots are committed (the README shows them); the same seed and thread count redraw them unchanged.
demo: install
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(QF) ingest sample_data/milan_internet.csv -o $(DEMO)/milan_internet.parquet
	$(QF) train $(DEMO)/milan_internet.parquet --model qkan-lstm --horizon 144 \
		--test-size 288 --registry $(DEMO)/registry --name milan-demo > $(DEMO)/ref.txt
	$(QF) forecast $(DEMO)/milan_internet.parquet --model $$(cat $(DEMO)/ref.txt) --level 90 \
		--registry $(DEMO)/registry -o $(DEMO)/forecast.csv
	$(QF) evaluate $(DEMO)/milan_internet.parquet --model $$(cat $(DEMO)/ref.txt) --windows 2 --step 144 \
		--registry $(DEMO)/registry -o $(DEMO)/backtest.csv
	$(QF) plot forecast $(DEMO)/milan_internet.parquet $(DEMO)/forecast.csv --dpi 80 -q -o $(DEMO)/forecast.png
	$(QF) plot backtest $(DEMO)/backtest.csv --dpi 80 -q -o $(DEMO)/backtest.png
	@echo "model:    $$(cat $(DEMO)/ref.txt) in $(DEMO)/registry/"
	@echo "forecast: $(DEMO)/forecast.csv (next day, 144 steps per cell, with 90% prediction intervals)"
	@echo "backtest: $(DEMO)/backtest.csv (last two days, model vs naive and seasonal naive)"
	@echo "plots:    $(DEMO)/forecast.png, $(DEMO)/backtest.png"

bench: install
	$(BIN)/python -m bench.layer

reproduce: install
	$(BIN)/python -m bench.reproduce --jobs 2

reproduce-quick: install
	$(BIN)/python -m bench.reproduce --quick --jobs 2

# Benchmark-only peers (NeuralForecast, statsforecast) in their own environment, never package dependencies.
# torch first, pinned (the CPU build from the configured index), so that the peers do not pull another one.
PEERS := .venv-peers
PEERS_STAMP := $(PEERS)/.installed

peers: $(PEERS_STAMP)

$(PEERS_STAMP):
	test -d $(PEERS) || $(PY) -m venv $(PEERS)
	$(PEERS)/bin/pip install --quiet --upgrade pip
	$(PEERS)/bin/pip install --quiet torch==2.13.0
	$(PEERS)/bin/pip install --quiet neuralforecast==3.3.0 statsforecast==2.1.1
	touch $(PEERS_STAMP)

# The issue-9 benchmark: our models vs baselines and peers on Milan traffic (results/leaderboard.md).
# Results are cached per contender; `$(BIN)/python -m bench.leaderboard --only ours` reruns only ours.
leaderboard: install peers
	$(BIN)/python -m bench.leaderboard

clean:
	rm -rf $(VENV) $(PEERS) build *.egg-info .pytest_cache .ruff_cache .mypy_cache demo_output
