"""bench/reproduce.py end to end on a tiny budget: every kind of dataset, every model row, the tables."""

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reproduce():
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "bench" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["reproduce"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("reproduce", None)


def test_quick_run_writes_the_tables(reproduce, tmp_path):
    out = tmp_path / "results"
    rc = reproduce.main(["--quick", "--datasets", "damped_shm,milan_internet_w4,milan_hourly_h24",
                         "--epochs", "1", "--train-cap", "64", "--max-series", "2", "--jobs", "1",
                         "--out", str(out)])
    assert rc == 0
    table = pd.read_csv(out / "reproduce.csv")
    for col in ("dataset", "model", "variant", "hidden_size", "reps", "readout", "params",
                "params_pct_of_lstm", "seeds", "mse_mean", "mse_std", "mae_mean", "mae_std", "r2_mean",
                "r2_std", "mae_orig_mean", "train_seconds_mean", "train_seconds_std"):
        assert col in table.columns, col
    assert set(table["dataset"]) == {"damped_shm", "milan_internet_w4", "milan_hourly_h24"}
    for dataset, part in table.groupby("dataset"):
        models = set(part["model"])
        assert {"naive", "lstm", "qkan-lstm", "hqkan-lstm"} <= models, dataset
        assert ("seasonal-naive" in models) == (dataset != "damped_shm")
        small = part[part["variant"] == "<=21% of LSTM"]
        assert set(small["readout"]) == {"fast", "born"}
        assert (small["params_pct_of_lstm"] <= 21).all()
        assert part[part["variant"] == "~LSTM params"]["params_pct_of_lstm"].between(90, 110).all()
    assert table["mse_mean"].notna().all() and (table["seeds"] == 1).all()
    runs = pd.read_csv(out / "reproduce_runs.csv")
    assert len(runs) == len(table)
    md = (out / "reproduce.md").read_text()
    assert "| model | variant | hidden | reps | read-out | params |" in md
    for png in ("forecast_damped_shm.png", "activations_damped_shm.png", "forecast_milan_hourly_h24.png"):
        assert (out / png).stat().st_size > 0


def test_qkan_models_are_sized_as_the_paper(reproduce):
    specs = {(s.family, s.variant, s.kwargs.get("readout")): s for s in reproduce.model_specs(5, 1)}
    assert reproduce.n_params("lstm", horizon=1, **specs["lstm", "paper size", None].kwargs) == 166
    # the paper's 34-parameter QKAN-LSTM: hidden 1, reps 1, no residual, no gate bias
    small = specs["qkan-lstm", "<=21% of LSTM", "fast"].kwargs
    assert small == dict(hidden_size=1, reps=1, base_weight=False, bias=False, readout="fast")
    assert reproduce.n_params("qkan-lstm", horizon=1, **small) == 34


def test_unknown_dataset_is_an_error(reproduce, tmp_path, capsys):
    assert reproduce.main(["--datasets", "nope", "--out", str(tmp_path)]) == 1
    assert "unknown dataset(s) nope" in capsys.readouterr().err
