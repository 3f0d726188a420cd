"""Partitioned tables: ``ingest --buckets``, the ``_SUCCESS.json`` marker, and reading them back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import sine_panel
from typer.testing import CliRunner

from qkanforecast.cli import app
from qkanforecast.data import Dataset, bucket_of, from_frame, read_source, write_partitioned, write_table
from qkanforecast.data.partitioned import MARKER, Writer
from qkanforecast.errors import QKANForecastError

runner = CliRunner()


def panel(n: int = 12) -> pd.DataFrame:
    return sine_panel(n, 50, ids="site-{}")


def test_ingest_buckets_puts_each_series_whole_in_its_crc32_bucket(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    panel().to_csv(src, index=False)
    result = runner.invoke(app, ["ingest", str(src), "--buckets", "5", "-o", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 0, result.output
    marker = json.loads((tmp_path / "out" / MARKER).read_text())
    assert marker["kind"] == "canonical" and marker["buckets"] == 5 and marker["rows"] == 12 * 50
    seen = []
    for part in marker["parts"]:
        frame = pq.read_table(tmp_path / "out" / part["path"]).to_pandas()
        assert part["path"].startswith(f"bucket={part['bucket']}/part-") and len(frame) == part["rows"]
        for uid, rows in frame.groupby("unique_id"):
            assert zlib.crc32(str(uid).encode("utf-8")) % 5 == part["bucket"]
            assert len(rows) == 50  # the whole series
            seen.append(uid)
    assert sorted(seen) == sorted(panel()["unique_id"].unique())


def test_bucket_is_crc32_of_the_utf8_id_in_every_process() -> None:
    ids = ["cell0", "Mailand-Zürich", "x"]
    expected = [zlib.crc32(u.encode("utf-8")) % 7 for u in ids]
    assert bucket_of(ids, 7).tolist() == expected
    code = ("from qkanforecast.data import bucket_of; "
            "print(bucket_of(['cell0', 'Mailand-Zürich', 'x'], 7).tolist())")
    for seed in ("1", "2"):  # Python's hash() of a str would differ between these processes
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed})
        assert out.stdout.strip() == str(expected)


def test_a_partitioned_table_reads_back_as_the_single_file(tmp_path: Path) -> None:
    table = from_frame(panel())
    write_table(table, tmp_path / "one.parquet")
    write_partitioned(table, tmp_path / "parts", 4)
    merged = read_source(tmp_path / "parts")
    single = read_source(tmp_path / "one.parquet")
    pd.testing.assert_frame_equal(merged.frame, single.frame)
    assert merged.freq == single.freq and merged.offsets.tolist() == single.offsets.tolist()
    by_bucket = Dataset.open(tmp_path / "parts")
    assert [p.bucket for p in by_bucket.parts] == sorted(p.bucket for p in by_bucket.parts)
    assert sum(by_bucket.read_part(p).n_series for p in by_bucket.parts) == table.n_series


def test_a_directory_without_the_marker_is_refused(tmp_path: Path) -> None:
    write_partitioned(from_frame(panel()), tmp_path / "parts", 3)
    (tmp_path / "parts" / MARKER).unlink()
    result = runner.invoke(app, ["ingest", str(tmp_path / "parts"), "-o", str(tmp_path / "x.csv")])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (f"Error: {tmp_path / 'parts'}: no {MARKER} marker, so not a complete "
                             "partitioned table (a run that was stopped, or still running, leaves none); "
                             "rerun the command that writes it\n")
    assert not (tmp_path / "x.csv").exists()


def test_an_interrupted_run_leaves_the_last_complete_table_readable(tmp_path: Path) -> None:
    old = from_frame(panel(6))
    parts = len(write_partitioned(old, tmp_path / "parts", 3).parts)
    # a second run writes some parts and dies before its marker
    newer = from_frame(sine_panel(6, 50, seed=1, ids="site-{}"))
    killed = Writer(str(tmp_path / "parts")).begin()
    killed.write_table(newer, 0)
    assert len(list((tmp_path / "parts").rglob("part-*.parquet"))) == parts + 1
    pd.testing.assert_frame_equal(read_source(tmp_path / "parts").frame, old.frame)  # not the new part
    # the next complete run replaces the table and sweeps the stray parts
    parts = len(write_partitioned(newer, tmp_path / "parts", 2).parts)
    pd.testing.assert_frame_equal(read_source(tmp_path / "parts").frame, newer.frame)
    assert len(list((tmp_path / "parts").rglob("part-*.parquet"))) == parts


def test_a_marker_whose_parts_do_not_add_up_is_refused(tmp_path: Path) -> None:
    write_partitioned(from_frame(panel()), tmp_path / "parts", 2)
    marker = json.loads((tmp_path / "parts" / MARKER).read_text())
    marker["rows"] += 1
    (tmp_path / "parts" / MARKER).write_text(json.dumps(marker))
    with pytest.raises(QKANForecastError, match="the parts' rows do not add up"):
        Dataset.open(tmp_path / "parts")


def test_a_spark_directory_with_success_is_read_through_pyarrow_dataset(tmp_path: Path) -> None:
    frame = panel(4)
    root = tmp_path / "spark"
    for k, (_uid, rows) in enumerate(frame.groupby("unique_id")):
        (root / f"region={k % 2}").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(rows.rename(columns={"unique_id": "cell"}), preserve_index=False),
                       root / f"region={k % 2}" / f"part-{k:05d}.parquet")
    with pytest.raises(QKANForecastError, match="no _SUCCESS.json marker"):
        read_source(root)
    (root / "_SUCCESS").touch()
    from qkanforecast.data import IngestOptions

    table = read_source(root, IngestOptions(id_col="cell"))
    pd.testing.assert_frame_equal(table.frame, from_frame(frame).frame)


def test_ingest_output_kind_must_match_buckets(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    panel(2).to_csv(src, index=False)
    result = runner.invoke(app, ["ingest", str(src), "-o", str(tmp_path / "dir")])  # no --buckets: a file
    assert result.exit_code == 1 and "unknown output format" in result.stderr
    result = runner.invoke(app, ["ingest", str(src), "--buckets", "2", "-o", str(tmp_path / "a.parquet")])
    assert result.exit_code == 1 and "--buckets writes a directory" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]
    assert np.array_equal(bucket_of([], 3), np.zeros(0, np.int64))


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """An S3 stand-in on 127.0.0.1 (moto's server, a dev extra) with one bucket; yields a URI maker."""
    server_mod = pytest.importorskip("moto.server")
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(key, value)
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        from pyarrow import fs

        s3fs = fs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
                                 allow_bucket_creation=True)
        s3fs.create_dir("cells")
        yield lambda key: f"s3://cells/{key}?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    finally:
        server.stop()


def test_s3_inputs_and_partitioned_outputs(tmp_path: Path, s3) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "in.csv"
    panel(6).to_csv(src, index=False)
    single = read_source(src)
    result = runner.invoke(app, ["ingest", str(src), "--buckets", "3", "-o", s3("parts"), "-q"])
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(read_source(s3("parts")).frame, single.frame)
    assert sum(p.series for p in Dataset.open(s3("parts")).parts) == 6
    from pyarrow import fs

    s3fs, path = fs.FileSystem.from_uri(s3("in.csv"))
    with s3fs.open_output_stream(path) as out:
        out.write(src.read_bytes())
    result = runner.invoke(app, ["ingest", s3("in.csv"), "-o", str(tmp_path / "back.parquet"), "-q"])
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(read_source(tmp_path / "back.parquet").frame, single.frame)
    result = runner.invoke(app, ["ingest", s3("nothing"), "-o", str(tmp_path / "x.csv")])
    assert result.exit_code == 1 and result.stderr.startswith("Error: s3://cells/nothing")


def test_covariates_travel_with_their_buckets(tmp_path: Path) -> None:
    from qkanforecast.data import IngestOptions

    frame = panel(5)
    frame["temp"] = np.arange(len(frame), dtype=float)
    table = from_frame(frame, IngestOptions(covariates=("temp",)))
    write_partitioned(table, tmp_path / "parts", 3)
    merged = read_source(tmp_path / "parts")
    assert merged.covariates == ("temp",)
    pd.testing.assert_frame_equal(merged.frame, table.frame)


def _messy(tmp_path: Path) -> Path:
    """Shuffled rows of 40 series with a gap, a NaN, an identical duplicate row and a covariate."""
    frame = sine_panel(n_series=40, steps=200)
    frame["temp"] = np.arange(len(frame), dtype=float) % 7
    frame = frame.drop(index=[5, 6]).copy()  # a gap in the first series
    frame.loc[300, "y"] = np.nan
    frame = pd.concat([frame, frame.iloc[[10]]]).sample(frac=1, random_state=1)
    frame.to_csv(tmp_path / "messy.csv", index=False)
    return tmp_path / "messy.csv"


@pytest.mark.parametrize("spill_bytes", [1 << 26, 1 << 10])  # held in memory, or flushed chunk by chunk
@pytest.mark.parametrize("extra", [[], ["--tz", "Europe/Rome"]])
def test_streamed_ingest_writes_what_the_whole_table_would(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          spill_bytes: int, extra: list[str]) -> None:
    """``ingest --buckets`` streams the input into buckets and validates one bucket at a time: the parts,
    their metadata and the report equal bucketing the table read whole."""
    from qkanforecast.data import IngestOptions, bucketed

    monkeypatch.setattr(bucketed, "SPILL_BYTES", spill_bytes)
    src = _messy(tmp_path)
    args = ["--fill", "linear", "--covariates", "temp", "--buckets", "8", "--json", *extra]
    result = runner.invoke(app, ["ingest", str(src), *args, "-o", str(tmp_path / "streamed")])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stderr.strip().splitlines()[-1])
    whole = read_source(str(src), IngestOptions(fill="linear", covariates=("temp",),
                                                tz=extra[1] if extra else None))
    write_partitioned(whole, tmp_path / "whole", 8)
    streamed, reference = Dataset.open(tmp_path / "streamed"), Dataset.open(tmp_path / "whole")
    assert [p.bucket for p in streamed.parts] == [p.bucket for p in reference.parts]
    for a, b in zip(streamed.parts, reference.parts, strict=True):
        ta, tb = streamed.read_part(a), reference.read_part(b)
        pd.testing.assert_frame_equal(ta.frame, tb.frame)
        assert (ta.freq, ta.tz, ta.n_series) == (tb.freq, tb.tz, tb.n_series)
    for key in ("rows_read", "rows", "series", "freq", "start", "end", "min_length", "max_length",
                "duplicates_dropped", "missing_timestamps_filled", "nan_filled", "series_filled", "tz",
                "notes"):
        assert report[key] == whole.report[key], key


def test_streamed_ingest_errors_name_the_input_line_and_leave_nothing(tmp_path: Path) -> None:
    src = _messy(tmp_path)
    lines = src.read_text().splitlines()
    lines[57] = lines[57].rsplit(",", 2)[0] + ",abc," + lines[57].rsplit(",", 1)[1]  # y of line 58
    src.write_text("\n".join(lines) + "\n")
    whole = runner.invoke(app, ["ingest", str(src), "--covariates", "temp", "-o",
                                str(tmp_path / "one.parquet")])
    streamed = runner.invoke(app, ["ingest", str(src), "--covariates", "temp", "--buckets", "4",
                                   "-o", str(tmp_path / "parts")])
    assert whole.exit_code == streamed.exit_code == 1
    assert streamed.stderr == whole.stderr and "line 58" in streamed.stderr
    assert not (tmp_path / "parts").exists()
    # a gap and a NaN without --fill: the first bucket holding one of them stops the run (which of the two
    # is named depends on the bucket order, not the id order of a whole-table read)
    gaps = runner.invoke(app, ["ingest", str(_messy(tmp_path)), "--buckets", "4", "-o",
                               str(tmp_path / "parts")])
    assert gaps.exit_code == 1 and gaps.stderr.count("\n") == 1 and gaps.stderr.endswith(
        "pass --fill ffill, linear or zero\n")
    assert not (tmp_path / "parts").exists()  # buckets written before the failing one were removed
