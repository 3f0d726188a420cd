"""Read CSV or Parquet time series, validate them and build the canonical long table.

The canonical table is long: ``unique_id`` (series name), ``ds`` (naive ``datetime64[ns]``) and ``y``
(``float64``), sorted by ``unique_id, ds``, one regular frequency for the whole table, no duplicates,
no gaps and no NaN or infinite values. ``Table.frame["unique_id"]`` is a pandas ``Categorical`` whose
categories are the sorted series names (strings): a few bytes a row instead of a Python string, so a
10,000 x 8,928 panel fits in memory; use ``.astype(str)`` where plain strings are needed.

Policy for problems (``IngestOptions``):

- duplicate ``(unique_id, ds)`` rows with the same ``y`` are dropped and counted; with different ``y``
  they are an error;
- missing timestamps (gaps) and NaN or infinite ``y`` are filled by ``fill`` (``ffill``, ``linear``,
  ``zero``; values before a series' first finite value take that value), or are an error (``none``);
- unparsable dates, non-numeric ``y``, empty ids or dates, time zones mixed with naive times, numbers in
  the time column, timestamps off the frequency grid and series shorter than ``min_length`` are errors;
- time-zone-aware times (all of them) are converted to UTC and stored naive.

Every error is a ``QKANForecastError`` whose one-line message names the file and the column, line or
series (CSV lines count the header as line 1; Parquet rows count from 1).

This module reads and writes files and re-exports the public names of the others: ``table``
(``Table``, ``IngestOptions``, ``freq_to_ns``/``ns_to_freq``), ``convert`` (Arrow chunks to numpy
columns, with the error locations) and ``validate`` (``canonicalise``: the checks and fills above).
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from qkanforecast.convert import _Ctx, _from_arrow, _from_batches, _pick_columns, _to_codes
from qkanforecast.errors import QKANForecastError
from qkanforecast.output import atomic_file, write_frame
from qkanforecast.table import FILLS, IngestOptions, Table, freq_to_ns, ns_to_freq
from qkanforecast.validate import canonicalise

__all__ = ["FILLS", "IngestOptions", "Table", "canonicalise", "freq_to_ns", "load_canonical", "metadata",
           "ns_to_freq", "print_report", "read_metadata", "read_table", "write_frame", "write_table"]

META_KEY = b"qkanforecast"
FORMAT_VERSION = 1
ROW_GROUP_ROWS = 1 << 20
CSV_BLOCK_BYTES = 1 << 24


# ---------------------------------------------------------------------------------------------------
# reading


def read_table(source: str | os.PathLike[str], options: IngestOptions | None = None,
               stdin: BinaryIO | None = None) -> Table:
    """Read CSV or Parquet from a path or ``-`` (stdin), validate it and return the canonical table."""
    options = options or IngestOptions()
    if str(source) == "-":
        label = "<stdin>"
        data = (stdin or sys.stdin.buffer).read()
        fmt = options.input_format or ("parquet" if data[:4] == b"PAR1" else "csv")
        stem = "series"
        src: Any = pa.BufferReader(data)
    else:
        path = Path(source)
        label = str(source)
        if not path.is_file():
            raise QKANForecastError(f"{label}: file not found")
        stem = path.name.split(".")[0] or "series"
        fmt = options.input_format or _guess_format(path)
        src = str(path)
    if options.series_id is None:
        options = _replace(options, series_id=stem)
    if fmt == "parquet":
        return _read_parquet(label, src, options)
    return _read_csv(label, src, options)


def _replace(options: IngestOptions, **kw: Any) -> IngestOptions:
    d = dict(options.__dict__)
    d.update(kw)
    return IngestOptions(**d)


def _guess_format(path: Path) -> str:
    if path.suffix.lower() in (".parquet", ".pq"):
        return "parquet"
    with open(path, "rb") as f:
        return "parquet" if f.read(4) == b"PAR1" else "csv"


def _read_csv(label: str, src: Any, options: IngestOptions) -> Table:
    stream = pa.input_stream(src, compression="detect") if isinstance(src, str) else src
    head = stream.read(1 << 16)
    if not isinstance(src, str):
        src.seek(0)
    first = head.split(b"\n", 1)[0].decode("utf-8", "replace").strip("\r\ufeff")
    if not first:
        raise QKANForecastError(f"{label}: empty file")
    delimiter = max((",", ";", "\t"), key=first.count)
    header = [c.strip().strip('"') for c in first.split(delimiter)]
    columns = _pick_columns(label, header, options)
    types: dict[str, pa.DataType] = {}
    if columns.get("id"):
        types[columns["id"]] = pa.dictionary(pa.int32(), pa.string())
    include = [c for c in [columns.get("id"), columns["time"], *columns["series"]] if c]
    read_options = pacsv.ReadOptions(use_threads=True, block_size=CSV_BLOCK_BYTES)
    parse_options = pacsv.ParseOptions(delimiter=delimiter)
    # fast path: stream block by block with numeric values, so memory holds one block of text at a time
    numeric = dict(types, **{c: pa.float64() for c in columns["series"]})
    try:
        convert = pacsv.ConvertOptions(include_columns=include, column_types=numeric,
                                       strings_can_be_null=True)
        reader = pacsv.open_csv(src, read_options=read_options, parse_options=parse_options,
                                convert_options=convert)
        return _from_batches(label, iter(reader), options, "line", 2, columns)
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError):
        pass  # a value that does not convert (or types that change after the first block): read it all
    if not isinstance(src, str):
        src.seek(0)
    try:
        table = pacsv.read_csv(
            src, read_options=read_options, parse_options=parse_options,
            convert_options=pacsv.ConvertOptions(include_columns=include, column_types=types,
                                                 strings_can_be_null=True))
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError) as e:
        msg = str(e).strip().splitlines()[0]
        raise QKANForecastError(f"{label}: cannot read as CSV: {msg}") from None
    holder = [table]
    del table  # _from_arrow drops the last reference, so converted chunks are freed as it goes
    return _from_arrow(label, holder, options, "line", 2, columns)


def _read_parquet(label: str, src: Any, options: IngestOptions) -> Table:
    try:
        pf = pq.ParquetFile(src)
    except (pa.ArrowInvalid, OSError) as e:
        msg = str(e).strip().splitlines()[0]
        raise QKANForecastError(f"{label}: cannot read as Parquet: {msg}") from None
    columns = _pick_columns(label, pf.schema_arrow.names, options)
    include = [c for c in [columns.get("id"), columns["time"], *columns["series"]] if c]
    # read row group by row group; string ids come back dictionary-encoded
    id_col = columns.get("id")
    dict_cols = [id_col] if id_col and pa.types.is_string(pf.schema_arrow.field(id_col).type) else []
    pf = pq.ParquetFile(src, read_dictionary=dict_cols)
    batches = (pf.read_row_group(i, columns=include) for i in range(pf.num_row_groups))
    return _from_batches(label, batches, options, "row", 1, columns)


# ---------------------------------------------------------------------------------------------------
# writing and loading


def metadata(table: Table) -> dict[str, Any]:
    """The JSON stored under ``qkanforecast`` in the Parquet schema metadata."""
    spans = table.spans()
    return {"format_version": FORMAT_VERSION, "freq": table.freq, "rows": int(len(table.frame)),
            "series": table.n_series,
            "spans": {"unique_id": spans["unique_id"].tolist(),
                      "start": [str(t) for t in spans["start"]], "end": [str(t) for t in spans["end"]],
                      "length": [int(n) for n in spans["length"]]}}


def write_table(table: Table, path: str | os.PathLike[str], format: str | None = None,
                stdout: BinaryIO | None = None) -> None:
    """Write the canonical table to Parquet (with metadata) or CSV, chosen by ``format`` or suffix.

    Written to a temporary file next to ``path`` and renamed, so a failure leaves nothing behind.
    ``-`` writes to stdout (CSV unless ``format="parquet"``).
    """
    fmt = format or ("csv" if str(path) == "-" else
                     "csv" if Path(path).suffix.lower() in (".csv", ".txt") else
                     "parquet" if Path(path).suffix.lower() in (".parquet", ".pq") else None)
    if fmt not in ("csv", "parquet"):
        raise QKANForecastError(f"{path}: unknown output format; use a .parquet or .csv suffix")
    if str(path) == "-":
        out = stdout or sys.stdout.buffer
        buf = io.BytesIO()
        _write(table, buf, fmt)
        out.write(buf.getvalue())
        out.flush()
        return
    with atomic_file(path) as f:
        _write(table, f, fmt)


def _chunks(table: Table, rows: int = ROW_GROUP_ROWS) -> Iterator[pa.Table]:
    frame = table.frame
    cats = pa.array(np.asarray(frame["unique_id"].cat.categories, dtype=object), type=pa.string())
    codes = frame["unique_id"].cat.codes.to_numpy()
    ds, y = frame["ds"].to_numpy(), frame["y"].to_numpy()
    for s in range(0, len(frame), rows):
        yield pa.table({"unique_id": cats.take(pa.array(codes[s:s + rows].astype(np.int32))),
                        "ds": pa.array(ds[s:s + rows], type=pa.timestamp("ns")),
                        "y": pa.array(y[s:s + rows], type=pa.float64())})


def _write(table: Table, f: Any, fmt: str) -> None:
    schema = pa.schema([("unique_id", pa.string()), ("ds", pa.timestamp("ns")), ("y", pa.float64())])
    if fmt == "parquet":
        schema = schema.with_metadata({META_KEY: json.dumps(metadata(table)).encode()})
        with pq.ParquetWriter(f, schema, compression="zstd") as w:
            for chunk in _chunks(table):
                w.write_table(chunk.cast(schema), row_group_size=ROW_GROUP_ROWS)
        return
    csv_schema = pa.schema([("unique_id", pa.string()), ("ds", pa.string()), ("y", pa.float64())])
    whole_seconds = not np.any(table.ds_ns % 10**9)
    plain = not any(set(str(c)) & set(',"\r\n') for c in table.frame["unique_id"].cat.categories)
    options = pacsv.WriteOptions(quoting_style="none" if plain else "needed", include_header=False)
    f.write(b"unique_id,ds,y\n")
    with pacsv.CSVWriter(f, csv_schema, write_options=options) as w:
        for chunk in _chunks(table):
            ds = chunk.column("ds").cast(pa.timestamp("s")) if whole_seconds else chunk.column("ds")
            ds = pc.strftime(ds, format="%Y-%m-%d %H:%M:%S")
            w.write_table(pa.table({"unique_id": chunk.column("unique_id"), "ds": ds,
                                    "y": chunk.column("y")}, schema=csv_schema))


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``qkanforecast`` metadata of a canonical Parquet file (``None`` if it has none)."""
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta[META_KEY]) if META_KEY in meta else None


def load_canonical(path: str | os.PathLike[str]) -> Table:
    """Load a Parquet file written by ``write_table`` quickly (no re-validation of the values).

    Files without qkanforecast metadata go through ``read_table``.
    """
    if not Path(path).is_file():
        raise QKANForecastError(f"{path}: file not found")
    meta = read_metadata(path)
    if meta is None:
        return read_table(path)
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise QKANForecastError(f"{path}: written by a newer qkanforecast (format {meta['format_version']})")
    pf = pq.ParquetFile(path, read_dictionary=["unique_id"])
    n = pf.metadata.num_rows
    ds, y = np.empty(n, np.int64), np.empty(n, np.float64)
    names: dict[str, int] = {}
    codes = np.empty(n, np.int32)
    pos = 0
    for i in range(pf.num_row_groups):
        rg = pf.read_row_group(i, columns=["unique_id", "ds", "y"])
        m = rg.num_rows
        ctx = _Ctx(str(path), "row", 1)
        codes[pos:pos + m] = _to_codes(rg.column("unique_id"), ctx, "unique_id", pos, names)
        ds[pos:pos + m] = rg.column("ds").combine_chunks().cast(pa.int64()).to_numpy()
        y[pos:pos + m] = rg.column("y").combine_chunks().to_numpy(zero_copy_only=False)
        pos += m
    cats = np.array(list(names), dtype=object)
    if list(cats) != sorted(cats):
        # categories are seen in row order; the file is sorted, so this only happens for foreign files
        return read_table(path)
    frame = pd.DataFrame({
        "unique_id": pd.Categorical.from_codes(codes.astype(np.int16 if len(cats) < 2**15 else np.int32),
                                               categories=pd.Index(cats, dtype=object)),
        "ds": ds.view("datetime64[ns]"), "y": y}, copy=False)
    report = {"source": str(path), "rows": n, "series": int(meta["series"]), "freq": meta["freq"],
              "loaded": "canonical"}
    table = Table(frame=frame, freq=meta["freq"], report=report)
    lengths = np.asarray(meta["spans"]["length"], dtype=np.int64)
    if meta["spans"]["unique_id"] == list(cats) and lengths.sum() == n:
        table.__dict__["offsets"] = np.concatenate([[0], np.cumsum(lengths)])
    return table


# ---------------------------------------------------------------------------------------------------
# report


def print_report(table: Table | dict[str, Any], console: Any, as_json: bool = False) -> None:
    """Print what ingest found and fixed: a rich table, or one JSON object with ``as_json``."""
    report = table.report if isinstance(table, Table) else table
    if as_json:
        console.print(json.dumps(report), markup=False, highlight=False, soft_wrap=True)
        return
    from rich.table import Table as RichTable

    t = RichTable(title=f"ingest: {report.get('source', '')}", show_header=False, title_justify="left")
    t.add_column("item", style="bold")
    t.add_column("value")
    labels = [("rows_read", "rows read"), ("rows", "rows written"), ("series", "series"),
              ("freq", "frequency"), ("start", "first timestamp"), ("end", "last timestamp"),
              ("min_length", "shortest series"),
              ("max_length", "longest series"), ("duplicates_dropped", "duplicate rows dropped"),
              ("fill", "fill policy"), ("missing_timestamps_filled", "missing timestamps filled"),
              ("nan_filled", "NaN values filled"), ("inf_filled", "infinite values filled"),
              ("series_filled", "series with filled values")]
    for key, name in labels:
        if key in report:
            value = report[key]
            if key == "freq" and report.get("freq_inferred"):
                value = f"{value} (inferred)"
            t.add_row(name, str(value))
    for ex in report.get("filled_examples", [])[:5]:
        t.add_row("  filled", f"{ex['unique_id']}: {ex['missing_timestamps']} missing timestamps, "
                  f"{ex['nan_or_inf']} NaN/inf")
    for note in report.get("notes", []):
        t.add_row("note", note)
    console.print(t)

