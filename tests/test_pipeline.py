"""Library-level training, registry round trips, backtests and the committed golden checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import sine_panel
from test_registry import MANIFEST, STATE

from qkanforecast.config import BacktestConfig, Settings
from qkanforecast.data import from_frame, read_table
from qkanforecast.errors import QKANForecastError
from qkanforecast.evaluate import backtest, evaluate
from qkanforecast.features import calendar
from qkanforecast.forecast import Predictor, forecast
from qkanforecast.registry import Registry
from qkanforecast.train import train
from qkanforecast.windows import WindowDataset

GOLDEN = Path(__file__).parent / "golden"
SMALL = dict(lookback=16, hidden_size=4, epochs=2, batch_size=64, reps=1)


def config(**options):
    """Settings from flat option names, as the CLI gives them."""
    return Settings().updated(options)


@pytest.fixture(scope="module")
def table():
    return from_frame(sine_panel())


@pytest.mark.parametrize("model", ["qkan-lstm", "hqkan-lstm", "lstm"])
def test_save_load_gives_identical_forecasts(table, tmp_path, model, monkeypatch):
    """The published and reloaded model forecasts exactly what the model that was trained forecasts."""
    import qkanforecast.train as training

    trained = []
    fit_table = training.fit_table

    def keep(*args, **kwargs):
        trained.append(fit_table(*args, **kwargs))
        return trained[-1]

    monkeypatch.setattr(training, "fit_table", keep)
    registry = Registry(tmp_path)
    entry = train(table, config(model=model, horizon=2, **SMALL), registry=registry)
    loaded = Predictor.load(entry.ref, registry)
    (fitted,) = trained
    original = Predictor(entry, fitted.model, fitted.scaler)
    window = original.scaler.transform(np.stack([table.values[:16], table.values[400:416]]), table.ids)
    last_ds = table.ds_ns[[15, 415]]
    np.testing.assert_array_equal(loaded.rollout(window, last_ds), original.rollout(window, last_ds))
    pd.testing.assert_frame_equal(forecast(loaded, table), forecast(original, table))
    assert entry.manifest.num_parameters == sum(p.numel() for p in loaded.model.parameters())


def test_forecast_matches_the_model_on_the_last_window(table, tmp_path):
    registry = Registry(tmp_path)
    entry = train(table, config(model="lstm", horizon=3, **SMALL), registry=registry)
    p = Predictor.load(entry.ref, registry)
    fc = forecast(p, table)
    end = table.offsets[1]
    last = table.values[end - 16 : end]
    step = 600 * 10**9  # 10 minutes
    times = table.ds_ns[end - 1] + step * np.arange(-15, 4)  # the 16 inputs and the 3 forecast steps
    x = torch.tensor(p.scaler.transform(last, "cell0"), dtype=torch.float32)[None, :, None]
    x = torch.cat([x, torch.from_numpy(calendar(times[:16]))[None]], dim=-1)
    future = torch.from_numpy(calendar(times[16:]))[None]
    prediction = p.model(x, future).detach().numpy()[0].astype(np.float64)
    expected = p.scaler.inverse_transform(prediction, "cell0")
    np.testing.assert_allclose(fc[fc.unique_id == "cell0"]["lstm"].to_numpy(), expected, rtol=1e-6)
    assert fc["ds"].iloc[0] == table.frame["ds"].iloc[table.offsets[1] - 1] + pd.Timedelta("10min")


def test_backtest_rows_and_baselines_by_hand(table, tmp_path):
    registry = Registry(tmp_path)
    entry = train(table, config(model="lstm", horizon=4, **SMALL), registry=registry)
    p = Predictor.load(entry.ref, registry)
    bt = backtest(p, table, BacktestConfig(windows=3, step=5))
    v = table.values[: table.offsets[1]]
    ds = table.frame["ds"].to_numpy()[: table.offsets[1]]
    part = bt[bt.unique_id == "cell0"]
    cutoffs = sorted(part["cutoff"].unique())
    n = len(v)
    # origins 5 steps apart, the last one ending at the last value
    assert [np.datetime64(c) for c in cutoffs] == [ds[n - 4 - 10 - 1], ds[n - 4 - 5 - 1], ds[n - 4 - 1]]
    last = part[part.cutoff == cutoffs[-1]]
    np.testing.assert_array_equal(last["y"].to_numpy(), v[-4:])
    np.testing.assert_array_equal(last["naive"].to_numpy(), np.repeat(v[-5], 4))
    np.testing.assert_array_equal(last["seasonal_naive"].to_numpy(), v[-4 - 144 : -144])
    # each model forecast equals a direct prediction from the window before its cutoff
    direct = p.predict(["cell0"], v[None, n - 4 - 16 : n - 4], ds[n - 4 - 1 : n - 4], 4)[0]
    np.testing.assert_allclose(last["lstm"].to_numpy(), direct, rtol=1e-6)


def test_refit_backtest_trains_without_the_future(table, tmp_path, monkeypatch):
    import qkanforecast.train as training

    registry = Registry(tmp_path)
    entry = train(table, config(model="lstm", **SMALL), registry=registry)
    p = Predictor.load(entry.ref, registry)
    fitted_on = []  # the last timestamp of every series each refit trained on
    real_fit_table = training.fit_table

    def spy(cut, settings, **kwargs):
        fitted_on.append({u: cut.series(u)["ds"].max() for u in cut.ids})
        return real_fit_table(cut, settings, **kwargs)

    monkeypatch.setattr(training, "fit_table", spy)
    result = evaluate(p, table, BacktestConfig(windows=2, step=1, refit=True))
    assert len(result.backtest) == 2 * 2
    assert set(result.metrics["model"]) == {"lstm", "naive", "seasonal_naive"}
    assert result.notes == []
    cutoffs = result.backtest.groupby("unique_id")["cutoff"].unique()
    assert len(fitted_on) == 2  # one refit per window, in cutoff order, each ending at that window's cutoff
    for k, ends in enumerate(fitted_on):
        assert ends == {u: pd.Timestamp(sorted(cutoffs[u])[k]) for u in table.ids}


def test_evaluate_notes_targets_the_model_was_trained_on(table, tmp_path):
    registry = Registry(tmp_path)
    inside = train(table, config(model="lstm", **SMALL), registry=registry)
    result = evaluate(Predictor.load(inside.ref, registry), table, BacktestConfig(windows=2, step=3))
    until = inside.manifest.schema.trained_until
    assert result.notes == [
        f"4 of 4 backtest targets are on or before {until}, data the model was trained or validated on; "
        "train with --test-size for an out-of-sample backtest"
    ]
    held_out = train(table, config(model="lstm", test_size=4, **SMALL), registry=registry)
    assert held_out.manifest.schema.trained_until == "2024-01-03T17:50:00"  # row 395 of 400
    result = evaluate(Predictor.load(held_out.ref, registry), table, BacktestConfig(windows=2, step=3))
    assert result.notes == []


def test_max_windows_samples_each_epoch(table, tmp_path, monkeypatch):
    seen: list[np.ndarray] = []  # the training windows of each batch, as (series, position) pairs
    real_batch = WindowDataset.batch

    def spy(self, index):
        if self.part == "train":
            s, t = self.locate(np.atleast_1d(np.asarray(index)))
            seen.append(s * 10_000 + t)
        return real_batch(self, index)

    monkeypatch.setattr(WindowDataset, "batch", spy)
    registry = Registry(tmp_path)
    settings = config(model="lstm", max_windows=100, **{**SMALL, "epochs": 3, "batch_size": 30})
    entry = train(table, settings, registry=registry)
    assert entry.manifest.train.max_windows == 100
    assert entry.manifest.training.train_windows > 100  # the dataset is larger than the sample
    assert len(entry.manifest.history) == 3
    sizes = [len(b) for b in seen]
    assert sizes == [30, 30, 30, 10] * 3  # 100 windows an epoch, in batches of 30
    epochs = [set(np.concatenate(seen[4 * e : 4 * e + 4]).tolist()) for e in range(3)]
    assert all(len(e) == 100 for e in epochs) and epochs[0] != epochs[1] != epochs[2]  # a fresh sample each
    with pytest.raises(QKANForecastError, match="max_windows must be at least 0, got -1"):
        config(max_windows=-1)


def test_conformal_intervals(tmp_path):
    table = from_frame(sine_panel(steps=1200))
    registry = Registry(tmp_path)
    settings = config(model="lstm", horizon=2, test_size=300, val_size=300, **{**SMALL, "epochs": 5})
    entry = train(table, settings, registry=registry)
    assert entry.manifest.calibration.levels == [50, 80, 90, 95, 99]
    widths = np.array(entry.manifest.calibration.half_widths)  # [levels, H]
    assert widths.shape == (5, 2) and (np.diff(widths, axis=0) >= 0).all()
    p = Predictor.load(entry.ref, registry)
    fc = forecast(p, table, levels=[90, 50])
    assert list(fc.columns) == [
        "unique_id",
        "ds",
        "lstm",
        "lstm-lo-50",
        "lstm-hi-50",
        "lstm-lo-90",
        "lstm-hi-90",
    ]
    assert (fc["lstm-lo-90"] <= fc["lstm-lo-50"]).all() and (fc["lstm-lo-50"] <= fc["lstm"]).all()
    assert (fc["lstm"] <= fc["lstm-hi-50"]).all() and (fc["lstm-hi-50"] <= fc["lstm-hi-90"]).all()
    # coverage on the held-out test tail, which neither training nor calibration saw
    bt = backtest(p, table, BacktestConfig(windows=149, step=2))
    uids = bt["unique_id"].tolist()
    scaled_pred = p.scaler.transform(bt["lstm"].to_numpy(), uids)
    scaled_y = p.scaler.transform(bt["y"].to_numpy(), uids)
    step_of_row = bt.groupby(["unique_id", "cutoff"]).cumcount().to_numpy()
    covered = np.abs(scaled_y - scaled_pred) <= p.interval_width(90)[step_of_row]
    assert 0.8 <= covered.mean() <= 1.0
    with pytest.raises(QKANForecastError, match="prediction intervals cover the model's horizon"):
        forecast(p, table, steps=3, levels=[90])
    with pytest.raises(
        QKANForecastError, match="--level 85 is not calibrated; choose from 50, 80, 90, 95, 99"
    ):
        forecast(p, table, levels=[85])
    golden = Predictor.load("golden@v1", Registry(GOLDEN / "registry"))
    with pytest.raises(QKANForecastError, match="has no calibration residuals"):
        golden.interval_width(90)


def test_too_short_series_is_an_error(table, tmp_path):
    registry = Registry(tmp_path)
    entry = train(table, config(model="lstm", **SMALL), registry=registry)
    short = from_frame(sine_panel(steps=10))
    with pytest.raises(
        QKANForecastError, match="series 'cell0' has 10 steps; a lookback of 16 needs at least 16"
    ):
        forecast(Predictor.load(entry.ref, registry), short)


_PAUSE_IN_PUBLISHING = """
import sys, time
import qkanforecast.registry as registry
write = registry.write_synced
def pausing(path, data):
    write(path, data)
    if path.name == "model.pt":  # the weights are on disk, the manifest not yet: the worst moment
        print("publishing", file=sys.stderr, flush=True)
        time.sleep(120)
registry.write_synced = pausing
from qkanforecast.cli import app
app()
"""


@pytest.mark.slow
def test_killed_training_leaves_nothing(tmp_path, panel_csv):
    """SIGKILL in the middle of publishing (weights written, manifest not): no version appears, and the
    next publish of the name removes what the killed run left."""
    root = tmp_path / "reg"
    env = {**os.environ, "QKANFORECAST_HOME": str(root)}
    args = [str(panel_csv), "--model", "lstm", "--lookback", "16", "--epochs", "1", "--name", "m", "-q"]
    cmd = [sys.executable, "-c", _PAUSE_IN_PUBLISHING, "train", *args]
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        deadline = time.monotonic() + 120
        line = b""
        while b"publishing" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert b"publishing" in line
    assert (root / "m").is_dir()  # the kill came while files were being written there
    registry = Registry(root)
    assert registry.versions("m") == [] and registry.listing() == []
    with pytest.raises(QKANForecastError, match="unknown model 'm'"):
        Predictor.load("m", registry)
    entry = registry.publish("m", STATE, MANIFEST)
    assert entry.ref == "m@v1" and sorted(p.name for p in (root / "m").iterdir()) == ["v1"]


def test_golden_checkpoint_keeps_loading_and_forecasting_the_same_numbers():
    registry = Registry(GOLDEN / "registry")
    predictor = Predictor.load("golden@v1", registry)
    fc = forecast(predictor, read_table(GOLDEN / "input.csv"))
    expected = pd.read_csv(GOLDEN / "forecast.csv", parse_dates=["ds"])
    pd.testing.assert_frame_equal(fc, expected, check_dtype=False, rtol=1e-6)
    manifest = json.loads((GOLDEN / "registry" / "golden" / "v1" / "manifest.json").read_text())
    assert manifest["format_version"] == 1


def test_forecasts_follow_a_series_scaled_and_shifted(table, tmp_path):
    """Window normalisation: 10 y + 5 is forecast as 10 forecast(y) + 5, for a series seen in training and
    for one never seen (fitted on its own history)."""
    registry = Registry(tmp_path)
    entry = train(table, config(model="qkan-lstm", horizon=3, **SMALL), registry=registry)
    p = Predictor.load(entry.ref, registry)
    base = forecast(p, table)
    frame = table.frame.copy()
    frame["y"] = 10 * frame["y"] + 5
    moved = forecast(p, from_frame(frame))
    np.testing.assert_allclose(moved["qkan-lstm"], 10 * base["qkan-lstm"] + 5, rtol=1e-4)
    frame["unique_id"] = frame["unique_id"].astype(str) + "-new"
    unseen = forecast(p, from_frame(frame))
    np.testing.assert_allclose(unseen["qkan-lstm"], 10 * base["qkan-lstm"] + 5, rtol=1e-4)


@pytest.mark.parametrize(
    "horizon, skip, lags, lookback",
    [(2, "last", False, 288), (36, "last", False, 288), (37, "none", True, 144), (144, "none", True, 72)],
)
def test_training_resolves_the_data_dependent_defaults(table, horizon, skip, lags, lookback):
    """10-minute data: a day is 144 steps; up to a quarter day ahead the naive skip and no lags, beyond it
    no skip and the lags; the lookback is the longest of a week / 2 days / a day that leaves the training
    part (360 steps) room for two horizons, else what fits."""
    from qkanforecast.train import resolve

    settings = resolve(config(horizon=horizon), table)  # 400 steps a series, 360 before validation
    model = settings.model
    assert (model.season, model.skip.value, model.lags) == (144, skip, lags)
    assert settings.data.lookback == lookback
    assert model.recurrent_steps == settings.data.lookback
    assert resolve(settings, table) == settings  # concrete values stay as they are
