import os

import numpy as np
import pandas as pd
import pytest
import torch

# The test models are tiny: one thread is fastest, and it keeps the suite fast when the machine is shared
# (OpenMP threads spin-waiting on a loaded 2-core machine cost up to 100x). Subprocesses inherit it.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


def sine_panel(
    n_series: int = 2,
    steps: int | list[int] = 400,
    freq: str = "10min",
    seed: int = 0,
    *,
    start: str = "2024-01-01",
    ids: str = "cell{}",
    amplitude: float = 20.0,
    noise: float = 1.0,
) -> pd.DataFrame:
    """The tests' one panel builder: a long table ``unique_id, ds, y`` of noisy daily sines (144 steps a
    period), series k at level 100 with amplitude ``amplitude * (k + 1)``. ``steps`` is one length for
    every series or a list of lengths (then ``n_series`` is its length)."""
    rng = np.random.default_rng(seed)
    lengths = [steps] * n_series if isinstance(steps, int) else list(steps)
    rows = []
    for k, n in enumerate(lengths):
        t = np.arange(n)
        y = 100 + amplitude * (k + 1) * np.sin(2 * np.pi * t / 144 + k) + rng.normal(0, noise, n)
        ds = pd.date_range(start, periods=n, freq=freq)
        rows.append(pd.DataFrame({"unique_id": ids.format(k), "ds": ds, "y": y}))
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
