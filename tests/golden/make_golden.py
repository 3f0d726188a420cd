"""Regenerate the golden checkpoint (only when the checkpoint format changes on purpose).

    .venv/bin/python tests/golden/make_golden.py

A QKAN-LSTM (fast read-out, reps 2, hidden 3) trained for 3 epochs on two small sine series, the data it
forecasts, and the forecast it gave. tests/test_pipeline.py checks that later versions load it and forecast
the same numbers.
"""

import shutil
import sys
from pathlib import Path

import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))

from conftest import sine_panel  # noqa: E402

from qkanforecast.data import read_table  # noqa: E402
from qkanforecast.forecast import Predictor, forecast  # noqa: E402
from qkanforecast.registry import Registry  # noqa: E402
from qkanforecast.train import TrainConfig, train  # noqa: E402

if __name__ == "__main__":
    torch.set_num_threads(1)
    shutil.rmtree(HERE / "registry", ignore_errors=True)
    sine_panel(steps=200).round({"y": 6}).to_csv(HERE / "input.csv", index=False)
    table = read_table(HERE / "input.csv")
    config = TrainConfig(model="qkan-lstm", lookback=12, horizon=3, hidden_size=3, reps=2, epochs=3, seed=7)
    entry = train(table, config, name="golden", registry=Registry(HERE / "registry"), source="input.csv")
    forecast(Predictor.load(entry.ref, Registry(HERE / "registry")), table).to_csv(
        HERE / "forecast.csv", index=False
    )
    print(entry.path)
