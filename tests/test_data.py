"""Ingest: round trips, frequency inference, the problem policy and its exact error lines."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import sine_panel
from rich.console import Console

from qkanforecast.data import (
    IngestOptions,
    Table,
    from_frame,
    load_canonical,
    print_report,
    read_metadata,
    read_table,
    readers,
    write_table,
    writers,
)
from qkanforecast.errors import QKANForecastError

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def stdin(text: str) -> io.BytesIO:
    return io.BytesIO(text.encode())


def csv(*rows: str, header: str = "unique_id,ds,y") -> str:
    return "\n".join([header, *rows]) + "\n"


def read_text(text: str, **kw: object) -> Table:
    return read_table("-", IngestOptions(**kw), stdin=stdin(text))  # type: ignore[arg-type]


def error_of(text: str, **kw: object) -> str:
    with pytest.raises(QKANForecastError) as e:
        read_text(text, **kw)
    message = str(e.value)
    assert "\n" not in message
    return message


def panel(n_series: int = 3, steps: int = 50, freq: str = "h", seed: int = 0) -> pd.DataFrame:
    return sine_panel(n_series, steps, freq, seed, start="2013-11-01", ids="cell_{}", amplitude=0, noise=10)


def test_canonical_dtypes_and_order() -> None:
    df = panel().sample(frac=1.0, random_state=1)  # shuffled rows
    t = from_frame(df)
    f = t.frame
    assert list(f.columns) == ["unique_id", "ds", "y"]
    assert isinstance(f["unique_id"].dtype, pd.CategoricalDtype)
    assert str(f["ds"].dtype) == "datetime64[ns]" and str(f["y"].dtype) == "float64"
    assert isinstance(f.index, pd.RangeIndex)
    key = list(zip(f["unique_id"].astype(str), f["ds"], strict=True))
    assert key == sorted(key)
    assert t.ids == ["cell_0", "cell_1", "cell_2"] and t.freq == "h"
    assert t.offsets.tolist() == [0, 50, 100, 150]
    assert t.report["sorted_input"] is False


def test_round_trip_csv_parquet_stdin(tmp_path: Path) -> None:
    t = from_frame(panel(freq="10min"))
    write_table(t, tmp_path / "a.parquet")
    write_table(t, tmp_path / "a.csv")
    from_parquet = read_table(tmp_path / "a.parquet")
    from_csv = read_table(tmp_path / "a.csv")
    from_stdin_csv = read_table("-", stdin=io.BytesIO((tmp_path / "a.csv").read_bytes()))
    from_stdin_parquet = read_table("-", stdin=io.BytesIO((tmp_path / "a.parquet").read_bytes()))
    canonical = load_canonical(tmp_path / "a.parquet")
    for other in (from_parquet, from_csv, from_stdin_csv, from_stdin_parquet, canonical):
        pd.testing.assert_frame_equal(other.frame, t.frame)
        assert other.freq == "10min"
    out = io.BytesIO()
    write_table(t, "-", stdout=out)
    assert out.getvalue() == (tmp_path / "a.csv").read_bytes()
    assert out.getvalue().startswith(b"unique_id,ds,y\ncell_0,2013-11-01 00:00:00,")


def test_parquet_metadata_has_freq_and_spans(tmp_path: Path) -> None:
    df = panel(2, 10, "D")
    df = df[~((df["unique_id"] == "cell_1") & (df["ds"] < "2013-11-03"))]
    t = from_frame(df)
    write_table(t, tmp_path / "t.parquet")
    meta = read_metadata(tmp_path / "t.parquet")
    assert meta is not None and meta["freq"] == "D" and meta["series"] == 2
    assert meta["spans"] == {"unique_id": ["cell_0", "cell_1"],
                             "start": ["2013-11-01 00:00:00", "2013-11-03 00:00:00"],
                             "end": ["2013-11-10 00:00:00", "2013-11-10 00:00:00"], "length": [10, 8]}
    loaded = load_canonical(tmp_path / "t.parquet")
    assert loaded.lengths.tolist() == [10, 8] and loaded.freq == "D"


@pytest.mark.parametrize("freq", ["5min", "10min", "h", "D"])
def test_frequency_inference(freq: str) -> None:
    t = from_frame(panel(2, 30, freq))
    assert t.freq == freq and t.report["freq_inferred"] is True


def test_explicit_freq_and_gaps_from_coarser_series() -> None:
    text = csv("a,2013-11-01 00:00,1", "a,2013-11-01 01:00,3", "b,2013-11-01 00:00,5", "b,2013-11-01 00:30,6")
    assert error_of(text) == ("<stdin>: series 'a' has frequency h but series 'b' has 30min; "
                              "pass --freq to choose one")
    t = read_text(text, freq="30min", fill="linear")
    assert t.freq == "30min" and t.frame["y"].tolist() == [1, 2, 3, 5, 6]
    assert t.report["missing_timestamps_filled"] == 1 and t.report["freq_inferred"] is False


def test_fill_policies() -> None:
    text = ("unique_id,ds,y\nx,2013-11-01 00:00,\nx,2013-11-01 00:10,1\nx,2013-11-01 00:40,4\n"
            "x,2013-11-01 00:50,nan\ny,2013-11-01 00:00,7\ny,2013-11-01 00:10,inf\n")
    assert read_text(text, fill="ffill").frame["y"].tolist() == [1, 1, 1, 1, 4, 4, 7, 7]
    assert read_text(text, fill="linear").frame["y"].tolist() == [1, 1, 2, 3, 4, 4, 7, 7]
    assert read_text(text, fill="zero").frame["y"].tolist() == [0, 1, 0, 0, 4, 0, 7, 0]
    report = read_text(text, fill="linear").report
    assert (report["missing_timestamps_filled"], report["nan_filled"], report["inf_filled"]) == (2, 2, 1)
    assert report["series_filled"] == 2
    assert report["filled_examples"][0] == {"unique_id": "x", "missing_timestamps": 2, "nan_or_inf": 2}


def test_duplicates_identical_are_dropped() -> None:
    t = read_text("ds,y\n2013-11-01,1\n2013-11-02,2\n2013-11-02,2\n")
    assert t.frame["y"].tolist() == [1, 2] and t.report["duplicates_dropped"] == 1


def test_single_series_naming_and_two_column_files(tmp_path: Path) -> None:
    path = tmp_path / "cell42.csv"
    path.write_text("time,value\n2013-11-01 00:00,1\n2013-11-01 01:00,2\n")
    t = read_table(path)
    assert t.ids == ["cell42"] and t.frame["y"].tolist() == [1, 2]
    assert read_text("ds,y\n2013-11-01,1\n2013-11-02,2\n").ids == ["series"]
    assert read_text("ds,y\n2013-11-01,1\n2013-11-02,2\n", series_id="mine").ids == ["mine"]


def test_custom_columns_and_extra_columns_ignored() -> None:
    text = "square_id,time_ms,internet,time\n4556,1,1.5,2013-10-31 23:00:00\n4556,2,2.5,2013-10-31 23:10:00\n"
    t = read_text(text, id_col="square_id", time_col="time", target_col="internet")
    assert t.ids == ["4556"] and t.frame["y"].tolist() == [1.5, 2.5] and t.freq == "10min"


def test_wide() -> None:
    t = read_text("ds,cellB,cellA\n2013-11-01 00:00,1,5\n2013-11-01 01:00,2,6\n", wide=True)
    assert t.ids == ["cellA", "cellB"] and t.frame["y"].tolist() == [5, 6, 1, 2]


def test_timezones_converted_to_utc() -> None:
    # the end of summer time in Milan: 02:00+02:00 is followed by 02:00+01:00
    rows = ("2013-10-27T01:00:00+02:00,1", "2013-10-27T02:00:00+02:00,2", "2013-10-27T02:00:00+01:00,3")
    t = read_text(csv(*rows, header="ds,y"))
    assert t.frame["ds"].dt.strftime("%H:%M").tolist() == ["23:00", "00:00", "01:00"]
    assert t.freq == "h" and any("time zones converted to UTC" in n for n in t.report["notes"])
    assert t.tz == "UTC"  # outputs are written in UTC, with the offset


def test_parse_fallback_for_non_iso_dates() -> None:
    t = read_text("ds,y\n2013/11/01 00:00,1\n2013/11/01 00:05,2\n")
    assert t.freq == "5min"


BAD = [
    ("ds,y\n2013-11-01 00:00,1\n2013-11-01 01:00,x\n", {},
     "<stdin>: column 'y' line 3: non-numeric value 'x'"),
    ("ds,y\n2013-11-01 00:00,1\nfoo,2\n", {}, "<stdin>: column 'ds' line 3: cannot parse date 'foo'"),
    ("ds,y\n2013-11-01 00:00,1\n,2\n", {}, "<stdin>: column 'ds' line 3: empty date"),
    ("ds,y\n2013-11-01T00:00:00+01:00,1\n2013-11-01 01:00:00,2\n", {},
     "<stdin>: column 'ds' mixes time zones and naive times (line 2: '2013-11-01T00:00:00+01:00', "
     "line 3: '2013-11-01 01:00:00')"),
    ("ds,y\n1,1\n2,2\n", {},
     "<stdin>: column 'ds' holds int64 values, not dates; write them as dates such as 2013-11-01 00:10:00"),
    ("unique_id,ds,y\nb,2013-11-02,3\nb,2013-11-02,5\n", {},
     "<stdin>: series 'b' has 1 duplicate timestamp with different values "
     "(first: 2013-11-02 00:00:00, 3 and 5)"),
    (csv("a,2013-11-01 00:00,1", "a,2013-11-01 00:10,2", "a,2013-11-01 00:30,1", "a,2013-11-01 00:50,1"), {},
     "<stdin>: series 'a' has 2 missing timestamps (first: 2013-11-01 00:20:00); "
     "pass --fill ffill, linear or zero"),
    (csv("a,2013-11-01 00:00,1", "a,2013-11-01 00:10,", "b,2013-11-01 00:00,inf", "b,2013-11-01 00:10,1"), {},
     "<stdin>: series 'a' has 1 NaN or infinite value (first: 2013-11-01 00:10:00); "
     "pass --fill ffill, linear or zero"),
    ("ds,y\n2013-11-01 00:00,1\n2013-11-01 00:20,nan\n2013-11-01 00:30,inf\n", {},
     "<stdin>: series 'series' has 1 missing timestamp (first: 2013-11-01 00:10:00) and 2 NaN or infinite "
     "values (first: 2013-11-01 00:20:00); pass --fill ffill, linear or zero"),
    ("unique_id,ds,y\na,2013-11-01 00:00,1\na,2013-11-01 00:10,2\na,2013-11-01 00:25,1\n", {},
     "<stdin>: series 'a' timestamp 2013-11-01 00:25:00 is off the 10min grid "
     "(previous 2013-11-01 00:10:00); pass --freq or fix the timestamps"),
    ("ds,y\n2013-11-01 00:00,1\n2013-11-01 00:10,2\n", {"min_length": 5},
     "<stdin>: series 'series' has 2 values but at least 5 are needed (1 of 1 series too short)"),
    ("ds,y\n2013-11-01 00:00,\n2013-11-01 00:10,\n", {"fill": "ffill"},
     "<stdin>: series 'series' has no finite values to fill from"),
    ("ds,y\n2013-11-01 00:00,1\n", {},
     "<stdin>: cannot infer the frequency from single timestamps; pass --freq"),
    ("ds,y\n", {}, "<stdin>: no rows"),
    ("", {}, "<stdin>: empty file"),
    ("time,value,other\n2013-11-01,1,2\n", {},
     "<stdin>: no time column 'ds' (columns: time, value, other); pass --time-col"),
    ("ds,value,other\n2013-11-01,1,2\n", {},
     "<stdin>: no target column 'y' (columns: ds, value, other); pass --target-col"),
    ("unique_id,ds,y\n,2013-11-01,1\n", {}, "<stdin>: column 'unique_id' line 2: empty series id"),
    ("ds,y\n2013-11-01,1\n2013-11-02,2\n", {"freq": "MS"},
     "--freq MS: calendar frequencies (months, quarters, years: MS, ME, QS, YS...) are not supported: "
     "qkanforecast needs a fixed step such as 10min, h, D or W"),
]


@pytest.mark.parametrize(("text", "kw", "message"), BAD, ids=[m.split(": ", 1)[-1][:40] for _, _, m in BAD])
def test_bad_input_error_lines(text: str, kw: dict[str, object], message: str) -> None:
    assert error_of(text, **kw) == message


def test_option_errors() -> None:
    with pytest.raises(QKANForecastError, match=r"^unknown fill 'back'; choose from none, ffill, linear, "
                                                 r"zero$"):
        IngestOptions(fill="back")


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(QKANForecastError, match=r"^nope\.csv: file not found$"):
        read_table("nope.csv")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(QKANForecastError, match=r"bad\.parquet: cannot read as Parquet: "):
        read_table(bad)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("ds,y\n2013-11-01,1\n2013-11-02,2,3\n")
    with pytest.raises(QKANForecastError, match=r"ragged\.csv: cannot read as CSV: CSV parse error"):
        read_table(ragged)
    t = read_text("ds,y\n2013-11-01,1\n2013-11-02,2\n")
    with pytest.raises(QKANForecastError,
                       match=r"out\.xlsx: unknown output format; use a \.parquet or \.csv suffix"):
        write_table(t, tmp_path / "out.xlsx")


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    t = read_text("ds,y\n2013-11-01,1\n2013-11-02,2\n")
    target = tmp_path / "out.parquet"
    target.write_bytes(b"old")

    def boom(table: Table, f: io.BufferedWriter, fmt: str) -> None:
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(writers, "_write", boom)
    with pytest.raises(OSError, match="disk full"):
        write_table(t, target)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]


def test_parquet_input_by_row_group_with_custom_columns(tmp_path: Path) -> None:
    df = panel(3, 40, "10min").rename(columns={"unique_id": "cell", "ds": "time", "y": "load"})
    df["cell"] = df["cell"].str.replace("cell_", "").astype(int)  # integer ids become strings
    path = tmp_path / "raw.parquet"
    df.to_parquet(path, row_group_size=25)
    t = read_table(path, IngestOptions(id_col="cell", time_col="time", target_col="load"))
    assert t.ids == ["0", "1", "2"] and len(t.frame) == 120 and t.freq == "10min"
    np.testing.assert_array_equal(t.frame["y"].to_numpy(), df["load"].to_numpy())


def test_print_report() -> None:
    t = read_text("ds,y\n2013-11-01 00:00,1\n2013-11-01 00:10,1\n2013-11-01 00:30,3\n", fill="linear")
    console = Console(file=io.StringIO(), width=120)
    print_report(t, console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "missing timestamps filled" in text and "10min (inferred)" in text
    console = Console(file=io.StringIO(), width=40)
    print_report(t, console, as_json=True)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert out.count("\n") == 1 and json.loads(out)["missing_timestamps_filled"] == 1


def test_sample_data_reads() -> None:
    sample = ROOT / "sample_data"
    shm, j2 = read_table(sample / "damped_shm.csv"), read_table(sample / "bessel_j2.csv")
    assert (shm.ids, len(shm.frame), j2.ids, len(j2.frame)) == (["damped_shm"], 240, ["bessel_j2"], 256)
    internet = read_table(sample / "milan_internet.csv")
    assert internet.ids == ["4556", "5161"] and internet.freq == "10min"
    assert internet.lengths.tolist() == [2016] * 2
    cdr = load_canonical(sample / "milan_cdr_hourly.parquet")
    assert cdr.n_series == 211 and cdr.freq == "h" and set(cdr.lengths.tolist()) == {1488}
    pd.testing.assert_frame_equal(read_table(sample / "milan_cdr_hourly.parquet").frame, cdr.frame)
    assert sum(p.stat().st_size for p in sample.iterdir()) < 5 * 2**20


@pytest.mark.skipif(not (SHARED / "milan_internet_10min").is_dir(), reason="../shared/data is absent")
def test_shared_milan_internet_full_file() -> None:
    path = SHARED / "milan_internet_10min" / "ts_full_square_5161.csv"
    t = read_table(path, IngestOptions(id_col="square_id", time_col="time", target_col="internet"))
    assert t.ids == ["5161"] and len(t.frame) == 8928 and t.freq == "10min"
    sample = read_table(ROOT / "sample_data" / "milan_internet.csv")
    np.testing.assert_array_equal(sample.series("5161")["y"].to_numpy(), t.frame["y"].to_numpy()[:2016])


def test_csv_read_in_small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Streaming over many blocks gives the same table; a bad value in a later block still gets its line."""
    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", 256)
    t = from_frame(panel(3, 40, "10min"))
    out = io.BytesIO()
    write_table(t, "-", stdout=out)
    text = out.getvalue().decode()
    pd.testing.assert_frame_equal(read_text(text).frame, t.frame)
    lines = text.splitlines()
    lines[100] = lines[100].rsplit(",", 1)[0] + ",oops"
    assert error_of("\n".join(lines) + "\n") == "<stdin>: column 'y' line 101: non-numeric value 'oops'"
    lines = text.splitlines()
    uid, ds, y = lines[90].split(",")
    lines[90] = f"{uid},{ds.replace(' ', 'T')}+01:00,{y}"
    assert error_of("\n".join(lines) + "\n").startswith("<stdin>: column 'ds' mixes time zones and naive")
