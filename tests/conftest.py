import os

import numpy as np
import pandas as pd
import pytest
import torch

# The test models are tiny: one thread is fastest, and it keeps the suite fast when the machine is shared
# (OpenMP threads spin-waiting on a loaded 2-core machine cost up to 100x). Subprocesses inherit it.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


def sine_panel(n_series: int = 2, steps: int = 400, freq: str = "10min", seed: int = 0) -> pd.DataFrame:
    """A small long table of noisy daily sines (144 steps a day), one amplitude per series."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    rows = []
    for k in range(n_series):
        y = 100 + 20 * (k + 1) * np.sin(2 * np.pi * t / 144 + k) + rng.normal(0, 1, steps)
        rows.append(
            pd.DataFrame(
                {"unique_id": f"cell{k}", "ds": pd.date_range("2024-01-01", periods=steps, freq=freq), "y": y}
            )
        )
    return pd.concat(rows, ignore_index=True)


@pytest.fixture(autouse=True)
def _private_registry(tmp_path, monkeypatch):
    """No test writes to the user's registry: the default registry root is a temporary directory."""
    monkeypatch.setenv("QKANFORECAST_HOME", str(tmp_path / "default-registry"))


@pytest.fixture
def panel_csv(tmp_path):
    path = tmp_path / "panel.csv"
    sine_panel().to_csv(path, index=False)
    return path
