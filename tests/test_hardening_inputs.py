"""Items of the hostile-input audit (issue 10) on inputs, time and training, each named after its number."""

import datetime
import json
import types

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import sine_panel
from typer.testing import CliRunner

import qkanforecast.train as training
from qkanforecast.cli import app
from qkanforecast.config import Settings
from qkanforecast.data import from_frame, read_table
from qkanforecast.errors import QKANForecastError
from qkanforecast.windows import SeriesScaler, WindowDataset, make_datasets


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def error_line(result, exit_code=1):
    """The one ``Error:`` line of a failed command (and nothing on stdout, no traceback)."""
    assert result.exit_code == exit_code and result.stdout == "", (result.stdout, result.stderr)
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr.strip()


@pytest.fixture
def trained(tmp_path):
    data = tmp_path / "panel.csv"
    sine_panel().to_csv(data, index=False)
    reg = tmp_path / "registry"
    result = run(
        "train",
        data,
        "--model",
        "lstm",
        "--lookback",
        "16",
        "--epochs",
        "1",
        "--registry",
        reg,
        "--name",
        "m",
        "-q",
    )
    assert result.exit_code == 0, result.stderr
    return data, reg, result.stdout.strip()


def test_item_06_id_column_absent_detected_or_one_series(tmp_path):
    panel = sine_panel(steps=6, freq="h").rename(columns={"unique_id": "cell"})
    cells = tmp_path / "cells.csv"
    panel.to_csv(cells, index=False)
    out = tmp_path / "out.csv"
    # a misspelt --id-col is an error, and nothing is written
    line = error_line(run("ingest", cells, "--id-col", "cel", "-o", out))
    assert line == f"Error: {cells}: no column 'cel' for --id-col (columns: cell, ds, y)"
    assert not out.exists()
    # an id column that is not unique_id is found (the one text column), not merged into one series
    result = run("ingest", cells, "--json", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert sorted(pd.read_csv(out)["unique_id"].unique()) == ["cell0", "cell1"]
    notes = json.loads(result.stderr)["notes"]
    assert "series ids from column 'cell' (there is no column 'unique_id'; --id-col names another)" in notes
    # two text columns could each be the id: the user must say which
    panel.assign(region="milan").to_csv(cells, index=False)
    line = error_line(run("ingest", cells))
    assert line.endswith(
        "no id column 'unique_id' and several text columns that could name the series "
        "(cell, region); pass --id-col"
    )
    # without any id column: one series, and a note on stderr names it
    single = tmp_path / "single.csv"
    panel[panel.cell == "cell0"][["ds", "y"]].to_csv(single, index=False)
    result = run("ingest", single, "--json")
    assert result.exit_code == 0
    assert (
        "no id column 'unique_id': the file is read as one series, 'single'"
        in json.loads(result.stderr)["notes"]
    )
    # numeric ids are not guessed, but merging them is not silent: the error names the column
    numeric = tmp_path / "numeric.csv"
    panel.assign(cell=panel.cell.str[-1].astype(int)).to_csv(numeric, index=False)
    line = error_line(run("ingest", numeric))
    assert "duplicate timestamps" in line and line.endswith(
        "the file has no id column and was read as one series: if one of its other columns (cell) tells the "
        "series apart, pass it with --id-col"
    )


def test_item_06_forecast_notes_a_file_read_as_one_series(trained, tmp_path):
    data, reg, ref = trained
    single = tmp_path / "one.csv"
    sine_panel(n_series=1).drop(columns="unique_id").to_csv(single, index=False)
    result = run("forecast", single, "-m", ref, "--registry", reg)
    assert result.exit_code == 0, result.stderr
    assert "note: no id column 'unique_id': the file is read as one series, 'one'\n" in result.stderr
    assert set(pd.read_csv(__import__("io").StringIO(result.stdout))["unique_id"]) == {"one"}


def test_item_07_repeated_column_name_is_an_error(tmp_path):
    path = tmp_path / "yy.csv"
    path.write_text("ds,y,y\n2024-01-01 00:00,1,5\n2024-01-01 01:00,2,6\n")
    line = error_line(run("ingest", path))
    assert (
        line
        == f"Error: {path}: column 'y' appears 2 times (columns: ds, y, y); give every column its own name"
    )


def test_item_08_values_whose_scaled_form_is_not_finite_are_an_error(tmp_path):
    panel = sine_panel(steps=200)
    panel.loc[250, "y"] = 1e308  # series cell1, 2024-01-01 08:20
    path = tmp_path / "huge.csv"
    panel.to_csv(path, index=False)
    reg = tmp_path / "registry"
    line = error_line(run("train", path, "--model", "lstm", "--epochs", "1", "--registry", reg))
    assert line == (
        f"Error: {path}: series 'cell1' value 1e+308 at 2024-01-01 08:20:00 is too large to scale "
        "(the series' mean or standard deviation overflows); rescale the series, e.g. to other units"
    )
    assert not reg.exists() or not any(reg.iterdir())
    # smaller values that only overflow the model's float32 once scaled (no scaler): named at training too
    from qkanforecast.checks import check_scaled

    panel.loc[250, "y"] = 1e50
    table = from_frame(panel)
    with pytest.raises(
        QKANForecastError,
        match=r"^series 'cell1' value 1e\+50 at 2024-01-01 08:20:00 scales to "
        r"1e\+50 with the none scaler, beyond what the model computes with \(float32",
    ):
        check_scaled(table, SeriesScaler("none").fit(table))
    with pytest.raises(QKANForecastError, match="series 'cell1' value 1e"):
        training.fit_table(
            table, Settings().updated({"model": "lstm", "scaler": "none", "epochs": 1, "lookback": 8})
        )
    check_scaled(table, SeriesScaler("standard").fit(table))  # standard scaling brings it back in range


def test_item_09_forecast_dates_past_2262_are_an_error(trained, tmp_path):
    data, reg, ref = trained
    late = tmp_path / "late.csv"
    sine_panel(start="2262-03-28").to_csv(late, index=False)  # ends 2262-03-30 18:30
    out = tmp_path / "f.csv"
    line = error_line(run("forecast", late, "-m", ref, "--registry", reg, "--steps", "5000", "-o", out))
    assert line == (
        "Error: the forecast of series 'cell0' would end after 2262-04-11, the last date a timestamp "
        "holds (5000 steps of 10min after 2262-03-30 18:30:00); forecast fewer steps"
    )
    assert not out.exists()
    ok = run("forecast", late, "-m", ref, "--registry", reg, "--steps", "144")
    assert ok.exit_code == 0 and "2262-03-31 18:30:00" in ok.stdout


def _rome_parquet(path, periods=400):
    ds = pd.date_range("2024-10-25 00:00", periods=periods, freq="h", tz="Europe/Rome")  # over the DST end
    y = 100 + 20 * np.sin(2 * np.pi * np.arange(periods) / 24)
    pd.DataFrame({"unique_id": "a", "ds": ds, "y": y}).to_parquet(path)
    return ds


def test_item_12_time_zone_aware_input_stays_aware_in_every_output(tmp_path):
    rome = tmp_path / "rome.parquet"
    ds = _rome_parquet(rome)
    table = read_table(rome)
    assert table.tz == "Europe/Rome" and table.frame["ds"].iloc[0] == pd.Timestamp("2024-10-24 22:00")  # UTC
    # ingest: CSV and Parquet keep the zone
    result = run("ingest", rome, "-q")
    assert result.stdout.splitlines()[1] == "a,2024-10-25 00:00:00+02:00,100"
    assert "a,2024-10-27 02:00:00+02:00," in result.stdout and "a,2024-10-27 02:00:00+01:00," in result.stdout
    run("ingest", rome, "-q", "-o", tmp_path / "c.parquet")
    assert pd.read_parquet(tmp_path / "c.parquet")["ds"].tolist() == list(ds)
    # train records the zone; forecast and evaluate write in it (CSV, Parquet, JSON lines)
    reg = tmp_path / "registry"
    ref = run("train", rome, "--model", "lstm", "--lookback", "24", "--epochs", "1", "--registry", reg,
              "--name", "lstm", "-q")
    assert ref.exit_code == 0, ref.stderr
    manifest = json.loads((reg / "lstm" / "v1" / "manifest.json").read_text())
    assert manifest["schema"]["tz"] == "Europe/Rome" and manifest["format_version"] >= 3  # 3 added tz
    fc = run("forecast", rome, "-m", "lstm", "--registry", reg, "-q").stdout.splitlines()
    assert fc[1].startswith(f"a,{ds[-1] + pd.Timedelta('1h')},")  # 2024-11-09 16:00:00+01:00
    run("forecast", rome, "-m", "lstm", "--registry", reg, "-o", tmp_path / "f.parquet")
    assert str(pd.read_parquet(tmp_path / "f.parquet")["ds"].dt.tz) == "Europe/Rome"
    run("forecast", rome, "-m", "lstm", "--registry", reg, "-o", tmp_path / "f.jsonl")
    assert json.loads((tmp_path / "f.jsonl").read_text().splitlines()[0])["ds"].endswith("+01:00")
    run("evaluate", rome, "-m", "lstm", "--registry", reg, "-o", tmp_path / "bt.parquet", "-q")
    backtest = pd.read_parquet(tmp_path / "bt.parquet")
    assert str(backtest["ds"].dt.tz) == str(backtest["cutoff"].dt.tz) == "Europe/Rome"
    # input with offsets only is written in UTC, with its offset; --tz writes it in a zone
    offsets = tmp_path / "offsets.csv"
    pd.DataFrame({"ds": [t.isoformat() for t in ds[:30]], "y": np.arange(30.0)}).to_csv(offsets, index=False)
    assert run("ingest", offsets, "-q").stdout.splitlines()[1] == "offsets,2024-10-24 22:00:00+00:00,0"
    assert run("ingest", offsets, "-q", "--tz", "Europe/Rome").stdout.splitlines()[1] == (
        "offsets,2024-10-25 00:00:00+02:00,0"
    )


def test_item_12_local_naive_times_over_a_dst_change_need_tz(tmp_path):
    local = tmp_path / "local.csv"
    ds = pd.date_range("2024-10-27 00:00", periods=6, freq="h", tz="Europe/Rome").tz_localize(None)
    pd.DataFrame({"ds": ds, "y": np.arange(6.0)}).to_csv(local, index=False)  # 02:00 twice
    line = error_line(run("ingest", local))
    assert line.endswith(
        "if these are local times over a daylight-saving change, pass --tz ZONE (a repeated "
        "local hour (clocks going back) is read in file order, the first as summer time and "
        "the repeat as standard time; a local time that does not exist (clocks going "
        "forward) is an error)"
    )
    result = run("ingest", local, "--tz", "Europe/Rome", "-q")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[3:5] == [
        "local,2024-10-27 02:00:00+02:00,2",
        "local,2024-10-27 02:00:00+01:00,3",
    ]
    spring = tmp_path / "spring.csv"
    spring.write_text("ds,y\n2024-03-31 01:00,1\n2024-03-31 03:00,2\n2024-03-31 04:00,3\n")
    assert "pass --tz ZONE" in error_line(run("ingest", spring))  # the skipped hour looks like a gap
    assert run("ingest", spring, "--tz", "Europe/Rome", "-q").exit_code == 0
    spring.write_text("ds,y\n2024-03-31 01:00,1\n2024-03-31 02:30,2\n2024-03-31 03:00,3\n")
    line = error_line(run("ingest", spring, "--tz", "Europe/Rome"))
    assert line.startswith(
        f"Error: {spring}: line 3: local time 2024-03-31 02:30:00 does not exist in "
        "Europe/Rome (the clocks went forward)"
    )
    daily = tmp_path / "daily.csv"
    pd.DataFrame({"ds": pd.date_range("2024-03-25", periods=14, freq="D"), "y": np.arange(14.0)}).to_csv(
        daily, index=False
    )
    assert run("ingest", daily, "-q").exit_code == 0  # naive dates are days, whatever the clocks do
    assert error_line(run("ingest", daily, "--tz", "Europe/Rome")).endswith(
        "in Europe/Rome a day is not a fixed step in UTC across daylight-saving changes; read daily dates "
        "without a zone (leave out --tz, or write them without an offset)"
    )
    assert error_line(run("ingest", spring, "--tz", "Mars/Olympus")) == (
        "Error: unknown time zone 'Mars/Olympus'; use an IANA name such as Europe/Rome, America/New_York "
        "or UTC"
    )


def test_item_13_named_columns_must_exist_and_freq_names_the_data_step(tmp_path):
    bare = tmp_path / "bare.csv"
    bare.write_text("a,b\n2024-01-01 00:00,1\n2024-01-01 00:10,2\n2024-01-01 00:20,3\n")
    assert error_line(run("ingest", bare, "--time-col", "ts")) == (
        f"Error: {bare}: no column 'ts' for --time-col (columns: a, b)"
    )
    assert error_line(run("ingest", bare, "--target-col", "value")) == (
        f"Error: {bare}: no column 'value' for --target-col (columns: a, b)"
    )
    assert run("ingest", bare, "-q").exit_code == 0  # a bare time,value file without names given still reads
    assert error_line(run("ingest", bare, "--freq", "h")) == (
        f"Error: {bare}: series 'bare' timestamp 2024-01-01 00:10:00 is off the h grid (previous 2024-01-01 "
        "00:00:00): the data's step is 10min, not the --freq h given; pass --freq 10min or leave --freq out"
    )


def test_item_14_timestamps_out_of_range_and_two_y_columns_are_errors(tmp_path):
    cases = {
        "plain.csv": "ds,y\n2300-01-01,1\n2300-01-02,2\n",
        "zulu.csv": "ds,y\n2024-01-01T00:00:00Z,1\n2300-01-02T00:00:00Z,2\n",
        "early.csv": "ds,y\n2024-01-01 00:00:00,1\n1500-01-02 00:00:00,2\n",
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        line = error_line(run("ingest", path))
        assert line.startswith(f"Error: {path}: column 'ds' line ") and line.endswith(
            "is outside 1677-09-21 .. 2262-04-11, the dates a nanosecond timestamp holds"
        ), line
    pq.write_table(
        pa.table(
            {
                "ds": pa.array(
                    [datetime.datetime(2024, 1, 1), datetime.datetime(2300, 1, 1)], pa.timestamp("us")
                ),
                "y": [1.0, 2.0],
            }
        ),
        tmp_path / "far.parquet",
    )
    assert error_line(run("ingest", tmp_path / "far.parquet")) == (
        f"Error: {tmp_path / 'far.parquet'}: column 'ds' row 2: date '2300-01-01 00:00:00' is outside "
        "1677-09-21 .. 2262-04-11, the dates a nanosecond timestamp holds"
    )
    two = pa.table(
        [pa.array(["2024-01-01", "2024-01-02"]), pa.array([1.0, 2.0]), pa.array([3.0, 4.0])],
        names=["ds", "y", "y"],
    )
    pq.write_table(two, tmp_path / "two.parquet")
    assert error_line(run("ingest", tmp_path / "two.parquet")) == (
        f"Error: {tmp_path / 'two.parquet'}: column 'y' appears 2 times (columns: ds, y, y); give every "
        "column "
        "its own name"
    )


def test_item_17_short_series_are_skipped_with_a_note_or_refused_with_strict(trained, tmp_path):
    data, reg, ref = trained
    mixed = tmp_path / "mixed.csv"
    panel = sine_panel()
    short = sine_panel(n_series=1, steps=10, ids="new{}")
    pd.concat([panel, short]).to_csv(mixed, index=False)
    out = tmp_path / "f.csv"
    result = run("forecast", mixed, "-m", ref, "--registry", reg, "-o", out)
    assert result.exit_code == 0, result.stderr
    assert set(pd.read_csv(out)["unique_id"]) == {"cell0", "cell1"}
    assert (
        "note: skipped 1 series with fewer than 16 steps (a lookback of 16 needs at least 16): 'new0'; "
        "--strict refuses them instead\n"
    ) in result.stderr
    assert f"2 forecasts of 2 series written to {out}; 1 series skipped (too short)\n" in result.stderr
    assert error_line(run("forecast", mixed, "-m", ref, "--registry", reg, "--strict")) == (
        "Error: series 'new0' has 10 steps; a lookback of 16 needs at least 16"
    )
    result = run("evaluate", mixed, "-m", ref, "--registry", reg, "--windows", "2", "--json")
    assert result.exit_code == 0, result.stderr
    assert (
        "note: skipped 1 series with fewer than 18 steps (2 backtest windows of lookback 16 + horizon 1, "
        "1 apart, needs at least 18): 'new0'" in result.stderr
    )
    assert error_line(run("evaluate", mixed, "-m", ref, "--registry", reg, "--strict")).startswith(
        "Error: series 'new0' has 10 steps; 3 backtest windows"
    )
    only_short = tmp_path / "short.csv"
    short.to_csv(only_short, index=False)
    assert error_line(run("forecast", only_short, "-m", ref, "--registry", reg)) == (
        "Error: series 'new0' has 10 steps; a lookback of 16 needs at least 16; all 1 series are shorter"
    )


def test_item_19_validation_and_calibration_are_sampled_under_max_windows(monkeypatch):
    table = from_frame(sine_panel(steps=600))
    settings = Settings().updated(
        {
            "model": "lstm",
            "lookback": 16,
            "hidden_size": 4,
            "epochs": 3,
            "max_windows": 50,
            "val_size": 200,
            "patience": 0,
        }
    )
    val_batches: list[list[int]] = []
    real_batch = WindowDataset.batch

    def spy(self, index):
        if self.part == "val":
            val_batches.append(sorted(np.atleast_1d(index).tolist()))
        return real_batch(self, index)

    monkeypatch.setattr(WindowDataset, "batch", spy)
    fitted = training.fit_table(table, settings)
    assert fitted.val_windows > 300  # about 2 x 199 validation windows, of which 50 are read
    per_call = [sum(val_batches, [])]
    assert len(per_call[0]) == 4 * 50  # 3 epochs and the calibration, 50 windows each
    epochs = [sum(val_batches[k : k + 1], []) for k in range(4)]
    assert all(e == epochs[0] for e in epochs) and len(epochs[0]) == 50  # the same sample every time
    assert fitted.calibration.windows == 50
    # windows/s counts the training windows over the training time alone
    clock = types.SimpleNamespace(now=0.0)

    def tick():
        clock.now += 1.0
        return clock.now

    real_loss = training.evaluate_loss

    def slow_validation(*args, **kwargs):
        clock.now += 1000.0  # validation "takes" 1000 s
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(training, "time", types.SimpleNamespace(perf_counter=tick))
    monkeypatch.setattr(training, "evaluate_loss", slow_validation)
    train_ds, val_ds, _, _ = make_datasets(table, 16, val_size=200, calendar=True)
    model = training.build_model(training.resolve(settings, table).model)
    history = training.fit(model, train_ds, val_ds, settings.train)
    assert [e.windows_per_s for e in history] == [50.0] * 3  # 50 windows in 1 s of training
    assert all(e.seconds > 1000 for e in history)


def test_item_20_canonical_parquet_is_recognised_whatever_the_model_columns(tmp_path):
    raw = tmp_path / "cells.csv"
    sine_panel().rename(columns={"unique_id": "cell", "ds": "time", "y": "internet"}).to_csv(raw, index=False)
    reg = tmp_path / "registry"
    ref = run(
        "train",
        raw,
        "--id-col",
        "cell",
        "--time-col",
        "time",
        "--target-col",
        "internet",
        "--model",
        "lstm",
        "--lookback",
        "16",
        "--epochs",
        "1",
        "--registry",
        reg,
        "-q",
    ).stdout.strip()
    canonical = tmp_path / "cells.parquet"
    assert (
        run(
            "ingest",
            raw,
            "--id-col",
            "cell",
            "--time-col",
            "time",
            "--target-col",
            "internet",
            "-o",
            canonical,
            "-q",
        ).exit_code
        == 0
    )
    for data in (canonical, raw):
        result = run("forecast", data, "-m", ref, "--registry", reg, "-q")
        assert result.exit_code == 0, result.stderr
        assert result.stdout.splitlines()[0] == "unique_id,ds,lstm" and len(result.stdout.splitlines()) == 3


def test_item_23_calendar_frequencies_said_plainly_and_weekly_season_stated(tmp_path):
    monthly = tmp_path / "monthly.csv"
    pd.DataFrame({"ds": pd.date_range("2020-01-01", periods=24, freq="MS"), "y": np.arange(24.0)}).to_csv(
        monthly, index=False
    )
    plainly = (
        "calendar frequencies (months, quarters, years: MS, ME, QS, YS...) are not supported: "
        "qkanforecast needs a fixed step such as 10min, h, D or W"
    )
    for freq in ("MS", "ME", "QS"):
        assert error_line(run("ingest", monthly, "--freq", freq)) == f"Error: --freq {freq}: {plainly}"
    assert error_line(run("ingest", monthly)).endswith(f"this looks like monthly or yearly data; {plainly}")
    weekly = tmp_path / "weekly.csv"
    sundays = pd.date_range("2020-01-05", periods=160, freq="W-SUN")
    y = 100 + 10 * np.sin(2 * np.pi * np.arange(160) / 52)
    pd.DataFrame({"ds": sundays, "y": y}).to_csv(weekly, index=False)
    assert read_table(weekly).freq == "7D"
    result = run("ingest", weekly, "--freq", "W-SUN", "-q")
    assert result.exit_code == 0 and result.stdout.splitlines()[1] == "weekly,2020-01-05 00:00:00,100"
    assert error_line(run("ingest", weekly, "--freq", "W-MON")) == (
        f"Error: {weekly}: series 'weekly' starts on a Sunday (2020-01-05 00:00:00), but --freq W-MON steps "
        "on Mondays; pass --freq W-SUN or 7D"
    )
    result = run("train", weekly, "--model", "lstm", "--epochs", "1", "--registry", tmp_path / "reg",
                 "--name", "lstm")
    assert result.exit_code == 0, result.stderr
    assert "note: season: 52 steps, a year of weeks (52 weeks, 364 days)\n" in result.stderr
    manifest = json.loads((tmp_path / "reg" / "lstm" / "v1" / "manifest.json").read_text())
    assert manifest["model"]["season"] == 52
    result = run("evaluate", weekly, "-m", "lstm", "--registry", tmp_path / "reg", "--windows", "2")
    assert result.exit_code == 0, result.stderr
    assert "note: season: 52 steps, a year of weeks (52 weeks, 364 days)\n" in result.stderr


def test_item_25_without_validation_the_progress_line_says_so(tmp_path):
    data = tmp_path / "panel.csv"
    sine_panel().to_csv(data, index=False)
    result = run(
        "train",
        data,
        "--model",
        "lstm",
        "--lookback",
        "16",
        "--epochs",
        "2",
        "--val-size",
        "0",
        "--registry",
        tmp_path / "reg",
    )
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    first, second = (line for line in lines if line.startswith("epoch"))
    assert "(no validation part: early stopping and the kept epoch use the training loss)" in first
    assert "(no validation)" in second and " val " not in first + second
    assert (
        lines[-1].startswith("best epoch ")
        and "by the training loss" in lines[-1]
        and "(no validation part)" in lines[-1]
    )
    with_val = run(
        "train", data, "--model", "lstm", "--lookback", "16", "--epochs", "1", "--registry", tmp_path / "reg"
    )
    assert " val " in with_val.stderr and "no validation" not in with_val.stderr
