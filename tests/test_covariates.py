"""Exogenous covariates (--hist-exog, --futr-exog, --static, forecast --futr) and holidays, from the data
layer to the command line."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import sine_panel
from typer.testing import CliRunner

from qkanforecast.cli import app
from qkanforecast.config import DataConfig, Settings
from qkanforecast.covariates import Covariates, fit_stats, holiday_flags, read_holidays
from qkanforecast.data import IngestOptions, from_frame, load_canonical, read_table, write_table
from qkanforecast.errors import QKANForecastError
from qkanforecast.features import calendar
from qkanforecast.forecast import Predictor
from qkanforecast.forecast import forecast as forecast_table
from qkanforecast.registry import Registry
from qkanforecast.train import train as train_model
from qkanforecast.windows import WindowDataset, make_datasets

FAST = ["--lookback", "16", "--hidden-size", "4", "--epochs", "2", "--batch-size", "64", "--reps", "1",
        "--horizon", "3"]


def exog_panel(n_series=2, steps=300, seed=0):
    """A sine panel with a temperature (historical), a promotion flag (known ahead) and a per-series size."""
    frame = sine_panel(n_series, steps, seed=seed)
    rng = np.random.default_rng(seed + 1)
    frame["temp"] = 10 + rng.normal(0, 3, len(frame))
    frame["promo"] = (rng.random(len(frame)) < 0.2).astype(float)
    frame["size"] = frame["unique_id"].map({f"cell{k}": 10.0 * (k + 1) for k in range(n_series)})
    frame["y"] = frame["y"] + 30 * frame["promo"]
    return frame


def run(*args, input=None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def forecast(data, ref, registry, out, *extra):
    return run("forecast", data, "-m", ref, "--registry", registry, "-o", out, *extra)


def one_error(result):
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1, result.stderr
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


@pytest.fixture
def exog_csv(tmp_path):
    path = tmp_path / "exog.csv"
    exog_panel().to_csv(path, index=False)
    return path


@pytest.fixture
def registry(tmp_path):
    return str(tmp_path / "registry")


def train(data, registry, *extra):
    result = run("train", data, *FAST, "--registry", registry, "-q", *extra)
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip()


# -- the data layer ------------------------------------------------------------------------------------------
def test_covariates_follow_their_rows_through_sorting_and_round_trips(tmp_path):
    frame = exog_panel()
    shuffled = frame.sample(frac=1.0, random_state=0)
    table = from_frame(shuffled, IngestOptions(covariates=("temp", "promo")))
    assert table.covariates == ("temp", "promo")
    expected = frame.sort_values(["unique_id", "ds"])
    np.testing.assert_array_equal(table.column("temp"), expected["temp"].to_numpy())
    np.testing.assert_array_equal(table.column("promo"), expected["promo"].to_numpy())
    for suffix in ("parquet", "csv"):
        path = tmp_path / f"t.{suffix}"
        write_table(table, path)
        back = load_canonical(path) if suffix == "parquet" else read_table(
            path, IngestOptions(covariates=("temp", "promo")))
        assert back.covariates == ("temp", "promo")
        np.testing.assert_array_equal(back.column("temp"), table.column("temp"))


def test_covariate_gaps_are_filled_like_y_or_refused(tmp_path):
    frame = exog_panel(1, 50)
    frame.loc[10, "temp"] = np.nan
    with pytest.raises(QKANForecastError, match="covariate column 'temp' of series 'cell0' has 1 missing"):
        from_frame(frame, IngestOptions(covariates=("temp",)))
    frame = frame.drop(index=[20, 21])  # a gap of two timestamps
    table = from_frame(frame, IngestOptions(covariates=("temp",), fill="linear"))
    temp = table.column("temp")
    assert len(temp) == 50 and np.isfinite(temp).all()
    raw = exog_panel(1, 50)["temp"].to_numpy()
    assert temp[10] == pytest.approx((raw[9] + raw[11]) / 2)
    assert temp[20] == pytest.approx(raw[19] + (raw[22] - raw[19]) / 3)


def test_covariate_errors_are_one_line(tmp_path, exog_csv):
    out = tmp_path / "out.parquet"
    missing = one_error(run("ingest", exog_csv, "--covariates", "wind", "-o", out))
    assert "no covariate column 'wind'" in missing and not out.exists()
    text = exog_csv.read_text().splitlines()
    cells = text[5].split(",")
    cells[3] = "warm"  # the temp column
    text[5] = ",".join(cells)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(text) + "\n")
    message = one_error(run("ingest", bad, "--covariates", "temp", "-o", out))
    assert "column 'temp' line 6: non-numeric value 'warm'" in message and not out.exists()
    cells[3] = ""  # a gap in the covariate
    text[5] = ",".join(cells)
    bad.write_text("\n".join(text) + "\n")
    message = one_error(run("train", bad, *FAST, "--hist-exog", "temp", "--registry", tmp_path / "r"))
    assert "covariate column 'temp' of series 'cell0' has 1 missing" in message and "--fill" in message


# -- windows -------------------------------------------------------------------------------------------------
def test_windows_read_the_covariates_of_their_own_steps():
    frame = exog_panel()
    table = from_frame(frame, IngestOptions(covariates=("temp", "promo", "size")))
    data = DataConfig(lookback=8, horizon=3, hist_exog=["temp"], futr_exog=["promo"], static=["size"],
                      holidays=["2024-01-02"])
    train_end = table.lengths - 30
    stats = fit_stats(table, data, train_end)
    cov = Covariates(data, stats)
    train_ds, _, _, _ = make_datasets(table, 8, 3, val_size=30, calendar=True, covariates=cov)
    k = 250  # a window of the second series, its first target on 2024-01-02 (a holiday)
    s, t = train_ds.locate([k])
    x, future, _ = train_ds.batch([k])
    row = table.offsets[s[0]] + t[0]
    loc, scale = np.array(stats.loc), np.array(stats.scale)

    def scaled(column, rows):
        i = stats.columns.index(column)
        return (table.column(column)[rows] - loc[i]) / scale[i]

    past_rows, future_rows = np.arange(row - 8, row), np.arange(row, row + 3)
    # x: target, calendar (4), temp, promo, size, holiday; future: calendar (4), promo, size, holiday
    np.testing.assert_allclose(x[0, :, 5].numpy(), scaled("temp", past_rows), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x[0, :, 6].numpy(), scaled("promo", past_rows), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(future[0, :, 4].numpy(), scaled("promo", future_rows), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(future[0, :, 5].numpy(), scaled("size", future_rows), rtol=1e-5, atol=1e-5)
    days = table.ds_ns[future_rows] // (86_400 * 10**9)
    holiday = (days == np.datetime64("2024-01-02", "D").astype(np.int64)).astype(np.float32)
    np.testing.assert_array_equal(future[0, :, 6].numpy(), holiday)
    assert x.shape[-1] == 1 + 4 + 4 and future.shape[-1] == 4 + 3


def test_static_columns_must_be_constant_per_series():
    frame = exog_panel()
    frame.loc[5, "size"] = 99.0
    table = from_frame(frame, IngestOptions(covariates=("size",)))
    with pytest.raises(QKANForecastError, match="static column 'size' changes within series 'cell0'"):
        fit_stats(table, DataConfig(static=["size"]), table.lengths)


def test_holidays_file_and_flags(tmp_path):
    path = tmp_path / "holidays.csv"
    path.write_text("date,name\n2013-12-25,Christmas\n2013-12-26,St Stephen\n\n2013-12-25,again\n")
    assert read_holidays(str(path)) == ["2013-12-25", "2013-12-26"]
    ns = pd.to_datetime(["2013-12-24 23:50", "2013-12-25 00:00", "2013-12-26 23:50"]).as_unit("ns").asi8
    np.testing.assert_array_equal(holiday_flags(ns, ["2013-12-25", "2013-12-26"]), [0, 1, 1])
    path.write_text("date\n2013-13-45\n")
    with pytest.raises(QKANForecastError, match="line 2: '2013-13-45' is not a date"):
        read_holidays(str(path))


# -- the command line ----------------------------------------------------------------------------------------
def test_train_records_covariates_and_forecast_reads_the_future_file(tmp_path, exog_csv, registry):
    ref = train(exog_csv, registry, "--hist-exog", "temp", "--futr-exog", "promo", "--static", "size")
    manifest = json.loads(next((tmp_path / "registry").rglob("manifest.json")).read_text())
    assert manifest["data"]["hist_exog"] == ["temp"] and manifest["data"]["futr_exog"] == ["promo"]
    assert manifest["data"]["static"] == ["size"]
    assert manifest["covariates"]["columns"] == ["temp", "promo", "size"]
    assert manifest["model"]["input_size"] == 4 and manifest["model"]["future_size"] == 2

    frame = exog_panel()
    last = frame.groupby("unique_id")["ds"].max()
    step = pd.Timedelta("10min")
    rows = [{"unique_id": u, "ds": t + k * step, "promo": 0.0} for u, t in last.items() for k in (1, 2, 3)]
    futr = tmp_path / "futr.csv"
    pd.DataFrame(rows).to_csv(futr, index=False)
    out_a, out_b = tmp_path / "a.csv", tmp_path / "b.csv"
    result = run("forecast", exog_csv, "-m", ref, "--registry", registry, "--futr", futr, "-o", out_a)
    assert result.exit_code == 0, result.stderr
    pd.DataFrame(rows).assign(promo=1.0).to_csv(futr, index=False)
    assert forecast(exog_csv, ref, registry, out_b, "--futr", futr).exit_code == 0
    a, b = pd.read_csv(out_a), pd.read_csv(out_b)
    assert len(a) == 6 and (a["ds"] == b["ds"]).all()
    assert not np.allclose(a["qkan-lstm"], b["qkan-lstm"])  # the model reads the future promotion

    # the historical covariate is read too: change its last values and the forecast changes
    changed = tmp_path / "changed.csv"
    frame.assign(temp=frame["temp"] + 50.0).to_csv(changed, index=False)
    out_c = tmp_path / "c.csv"
    assert forecast(changed, ref, registry, out_c, "--futr", futr).exit_code == 0
    assert not np.allclose(pd.read_csv(out_c)["qkan-lstm"], b["qkan-lstm"])


def test_future_covariate_errors(tmp_path, exog_csv, registry):
    ref = train(exog_csv, registry, "--futr-exog", "promo", "--model", "lstm")
    out = tmp_path / "f.csv"
    message = one_error(run("forecast", exog_csv, "-m", ref, "--registry", registry, "-o", out))
    assert "--futr FILE" in message and "promo" in message
    last = exog_panel().groupby("unique_id")["ds"].max()
    step = pd.Timedelta("10min")
    rows = [{"unique_id": u, "ds": t + k * step, "promo": 1.0} for u, t in last.items() for k in (1, 2, 3)]
    futr = tmp_path / "futr.csv"
    pd.DataFrame(rows[:-1]).to_csv(futr, index=False)  # cell1's last step is missing
    message = one_error(forecast(exog_csv, ref, registry, out, "--futr", futr))
    assert "series 'cell1'" in message and str(last["cell1"] + 3 * step) in message
    pd.DataFrame(rows).drop(columns="promo").assign(other=1.0).to_csv(futr, index=False)
    message = one_error(forecast(exog_csv, ref, registry, out, "--futr", futr))
    assert "promo" in message
    assert not out.exists()


def test_historical_covariates_errors(tmp_path, exog_csv, registry):
    ref = train(exog_csv, registry, "--hist-exog", "temp", "--model", "lstm")
    plain = tmp_path / "plain.csv"
    exog_panel().drop(columns="temp").to_csv(plain, index=False)
    message = one_error(run("forecast", plain, "-m", ref, "--registry", registry))
    assert "no covariate column 'temp'" in message
    message = one_error(run("forecast", exog_csv, "-m", ref, "--registry", registry, "--steps", "5"))
    assert "historical covariates (temp)" in message
    message = one_error(run("train", exog_csv, *FAST, "--registry", registry, "--hist-exog", "temp,temp"))
    assert "--hist-exog" in message


def test_backtest_uses_the_table_covariates_like_forecast_uses_the_future_file(tmp_path, registry):
    """The last backtest window equals a forecast from the table cut at its origin, given the cut rows'
    future values as --futr: both paths align the covariates the same way."""
    frame = exog_panel()
    tail_rows = frame.groupby("unique_id").tail(4).index  # the origin and the 3 steps after it
    frame.loc[tail_rows, "promo"] = [0.0, 1.0, 0.0, 1.0] * 2  # a shift by one step changes every value
    data = tmp_path / "promo.csv"
    frame.to_csv(data, index=False)
    ref = train(data, registry, "--hist-exog", "temp", "--futr-exog", "promo", "--holidays",
                _holidays(tmp_path))
    backtest = tmp_path / "bt.csv"
    result = run("evaluate", data, "-m", ref, "--registry", registry, "--windows", "1", "-o", backtest)
    assert result.exit_code == 0, result.stderr
    head = frame.groupby("unique_id").head(297)
    tail = frame.groupby("unique_id").tail(3)[["unique_id", "ds", "promo"]]
    cut, futr = tmp_path / "cut.csv", tmp_path / "futr.csv"
    head.to_csv(cut, index=False)
    tail.to_csv(futr, index=False)
    out = tmp_path / "f.csv"
    assert run("forecast", cut, "-m", ref, "--registry", registry, "--futr", futr, "-o", out).exit_code == 0
    bt, fc = pd.read_csv(backtest), pd.read_csv(out)
    np.testing.assert_allclose(bt["qkan-lstm"].to_numpy(), fc["qkan-lstm"].to_numpy(), rtol=1e-6)


def _holidays(tmp_path):
    path = tmp_path / "holidays.csv"
    path.write_text("2024-01-02\n2024-01-03\n")
    return path


def test_model_input_width_follows_the_covariates(exog_csv, registry, tmp_path):
    ref = train(exog_csv, registry, "--static", "size", "--holidays", _holidays(tmp_path), "--model", "lstm")
    predictor = Predictor.load(ref, Registry(registry))
    cfg = predictor.model.config
    assert cfg.input_size == 1 + 2 and cfg.future_size == 2
    assert predictor.entry.manifest.data.holidays == ["2024-01-02", "2024-01-03"]
    x = torch.zeros(1, 16, 1 + 4 + 2)
    with pytest.raises(ValueError, match="covariates of every forecast step"):
        predictor.model(x, torch.zeros(1, 3, 4))


def test_zoned_data_reads_the_local_calendar_in_training_and_forecasts(tmp_path):
    frame = sine_panel(1, 300)
    frame["ds"] = frame["ds"].dt.tz_localize("Europe/Rome")  # 00:00 local is 23:00 UTC
    table = from_frame(frame)
    assert table.tz == "Europe/Rome"
    local = frame["ds"].dt.tz_localize(None).to_numpy().astype("datetime64[ns]").view(np.int64)
    x, future, _ = WindowDataset(table, 16, 3, calendar=True).batch([0])
    np.testing.assert_allclose(x[0, :, 1:5].numpy(), calendar(local[:16]), atol=1e-6)
    np.testing.assert_allclose(future[0].numpy(), calendar(local[16:19]), atol=1e-6)

    registry = Registry(tmp_path)
    settings = Settings().updated(dict(model="lstm", horizon=3, lookback=16, hidden_size=4, epochs=1))
    entry = train_model(table, settings, registry=registry)
    assert entry.manifest.schema.tz == "Europe/Rome"
    p = Predictor.load(entry.ref, registry)
    got = forecast_table(p, table)["lstm"].to_numpy()
    times = local[-1] + 600 * 10**9 * np.arange(-15, 4)  # the 16 inputs and the 3 forecast steps, local
    window = torch.tensor(p.scaler.transform(table.values[-16:], "cell0"), dtype=torch.float32)[None, :, None]
    x = torch.cat([window, torch.from_numpy(calendar(times[:16]))[None]], dim=-1)
    expected = p.model(x, torch.from_numpy(calendar(times[16:]))[None]).detach().numpy()[0].astype(np.float64)
    np.testing.assert_allclose(got, p.scaler.inverse_transform(expected, "cell0"), rtol=1e-6)
