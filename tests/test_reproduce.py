"""python -m bench.reproduce on a tiny budget: every kind of dataset, every model row, the tables."""

import pandas as pd

from bench import reproduce
from bench.experiments import PARAM_RATIO, SMALL, model_specs, n_params
from qkanforecast.config import PLAIN, ModelConfig, QKANSpec


def test_quick_run_writes_the_tables(tmp_path):
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
        assert ("seasonal_naive" in models) == (dataset != "damped_shm")
        small = part[part["variant"] == SMALL]
        assert set(small["readout"]) == {"fast", "born"}
        assert (small["params_pct_of_lstm"] <= 100 * PARAM_RATIO).all()
        assert part[part["variant"] == "~LSTM params"]["params_pct_of_lstm"].between(90, 110).all()
    assert table["mse_mean"].notna().all() and (table["seeds"] == 1).all()
    runs = pd.read_csv(out / "reproduce_runs.csv")
    assert len(runs) == len(table)
    md = (out / "reproduce.md").read_text()
    assert "| model | variant | hidden | reps | read-out | params |" in md
    for png in ("forecast_damped_shm.png", "activations_damped_shm.png", "forecast_milan_hourly_h24.png"):
        assert (out / png).stat().st_size > 0


def test_qkan_models_are_sized_as_the_paper():
    specs = {(s.family, s.variant, s.qkan.readout if s.qkan else None): s for s in model_specs(5, 1)}
    assert n_params(specs["lstm", "paper size", None].config) == 166
    # the paper's 34-parameter QKAN-LSTM: hidden 1, reps 1, no residual, no gate bias
    small = specs["qkan-lstm", SMALL, "fast"].config
    assert small == ModelConfig(model="qkan-lstm", horizon=1, hidden_size=1, bias=False, **PLAIN,
                                qkan=QKANSpec(reps=1, base_weight=False, readout="fast"))
    assert n_params(small) == 34


def test_unknown_dataset_is_an_error(tmp_path, capsys):
    assert reproduce.main(["--datasets", "nope", "--out", str(tmp_path)]) == 1
    assert "unknown dataset(s) nope" in capsys.readouterr().err
