"""Write every table the tool writes: the canonical table (``write_table``) and result tables such as
forecasts and backtests (``write_frame``). One choice of format (``output_format``: the caller's, else
the suffix, ``-`` is CSV on stdout) and one write path (``_save``: a temporary file next to the target,
renamed once complete, so a failure leaves the target as it was). Imports ``table`` and ``formats``
from the data package.
"""

from __future__ import annotations

import io
import json
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from qkanforecast.config import OutFormat
from qkanforecast.data.formats import FORMAT_VERSION, META_KEY, format_of
from qkanforecast.data.table import Table
from qkanforecast.errors import QKANForecastError
from qkanforecast.files import STORAGE_ERRNOS, check_output, storage_error

CANONICAL_FORMATS = (OutFormat.PARQUET, OutFormat.CSV)  # the canonical table is never written as JSON
ROW_GROUP_ROWS = 1 << 20


def output_format(path: str | os.PathLike[str], fmt: str | None = None,
                  choices: Sequence[OutFormat] = tuple(OutFormat), hint: str = "") -> OutFormat:
    """``fmt`` if given, else from the suffix of ``path``; ``-`` (stdout) defaults to CSV.

    A format outside ``choices`` is an error that lists their suffixes, followed by ``hint``.
    """
    if fmt is None and str(path) == "-":
        return OutFormat.CSV
    named = format_of(path) if str(path) != "-" else None
    found = named if fmt is None else _member(fmt)
    if fmt is not None and named is not None and found is not None and named is not found:
        raise QKANForecastError(
            f"{path}: the suffix says {named.value} but the format asked for is {found.value}; "
            f"use a .{found.value} file or leave the format out")
    if found not in choices:
        names = [f".{c.value}" for c in choices]
        listing = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]
        raise QKANForecastError(f"{path}: unknown output format; use a {listing} suffix{hint}")
    return found  # type: ignore[return-value]  # found is in choices, so not None


def _member(fmt: str) -> OutFormat | None:
    try:
        return OutFormat(fmt)
    except ValueError:
        return None


def write_frame(frame: pd.DataFrame, path: str | os.PathLike[str], fmt: str | None = None,
                stdout: BinaryIO | None = None) -> None:
    """Write a result table as Parquet, CSV or JSON lines, chosen by ``fmt`` or the suffix of ``path``
    (``-``: stdout, CSV unless ``fmt`` says otherwise)."""
    out = output_format(path, fmt, hint=" or --format")
    _save(path, out, lambda fh: _dump(frame, fh, out), stdout)


def write_table(table: Table, path: str | os.PathLike[str], format: str | None = None,
                stdout: BinaryIO | None = None) -> None:
    """Write the canonical table to Parquet (with metadata) or CSV, chosen by ``format`` or suffix.

    Written to a temporary file next to ``path`` and renamed, so a failure leaves nothing behind.
    ``-`` writes to stdout (CSV unless ``format="parquet"``).
    """
    out = output_format(path, format, CANONICAL_FORMATS)
    _save(path, out, lambda fh: _write(table, fh, out), stdout)


def write_frame_to(frame: pd.DataFrame, fh: BinaryIO) -> None:
    """Write a result table as Parquet to an open binary file (a part of a partitioned output)."""
    _dump(frame, fh, OutFormat.PARQUET)


def write_table_to(table: Table, fh: BinaryIO) -> None:
    """Write the canonical table as Parquet, with its metadata, to an open binary file."""
    _write(table, fh, OutFormat.PARQUET)


def _save(path: str | os.PathLike[str], fmt: OutFormat, dump: Callable[[BinaryIO], None],
          stdout: BinaryIO | None) -> None:
    """Run ``dump`` on a temporary file that becomes ``path`` (all or nothing); ``-``: on ``stdout``."""
    if str(path) == "-":
        out = stdout or sys.stdout.buffer
        if fmt is OutFormat.PARQUET and out.isatty():
            raise QKANForecastError("refusing to write Parquet to a terminal; use -o FILE or --format csv")
        buf = io.BytesIO()  # all or nothing on stdout too
        dump(buf)
        out.write(buf.getvalue())
        out.flush()
        return
    if "://" in str(path):
        raise QKANForecastError(f"{path}: a URI takes only a partitioned directory (a path without a "
                                "suffix); write single files locally")
    with atomic_file(path) as fh:
        dump(fh)


@contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary file that appears at ``path`` only once everything was written (temp file + rename).

    On any error, or an interrupt, the temporary file is removed and ``path`` is left as it was. A file
    being replaced keeps its permissions; a symbolic link is written through: its target is replaced
    (atomically, by a temporary file next to the target) and the link stays. A write that fails for lack
    of space or permission is one error naming ``path``, not the temporary file.
    """
    check_output(path)
    target = Path(os.path.realpath(path))
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask  # mkstemp makes 0600; a new file gets the usual permissions
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise storage_error(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.errno in STORAGE_ERRNOS or isinstance(exc, IsADirectoryError):
            raise storage_error(path, exc) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------------
# result tables


def _dump(frame: pd.DataFrame, fh: BinaryIO, fmt: OutFormat) -> None:
    if fmt is OutFormat.PARQUET:
        frame.to_parquet(fh, index=False)
    elif fmt is OutFormat.CSV:
        fh.write(frame.to_csv(index=False).encode())
    else:
        fh.write(_json_lines(frame).encode())


def _json_lines(frame: pd.DataFrame) -> str:
    """JSON lines with every float as its shortest exact form (pandas' writer keeps at most 15 digits),
    timestamps in ISO 8601 (as pandas writes them), NaN as null."""
    columns: dict[str, list[Any]] = {}
    for name, col in frame.items():
        if pd.api.types.is_datetime64_any_dtype(col):
            text = col.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3]
            if col.dt.tz is not None:  # ISO 8601 offset, +01:00
                offset = col.dt.strftime("%z")
                text = text + offset.str[:3] + ":" + offset.str[3:]
            columns[str(name)] = text.where(col.notna(), None).tolist()
        else:
            columns[str(name)] = [None if isinstance(v, float) and v != v else v for v in col.tolist()]
    names = list(columns)
    rows = zip(*columns.values(), strict=True)
    line = json.JSONEncoder(separators=(",", ":")).encode
    return "".join(line(dict(zip(names, row, strict=True))) + "\n" for row in rows)


# ---------------------------------------------------------------------------------------------------
# the canonical table


def metadata(table: Table) -> dict[str, Any]:
    """The JSON stored under ``qkanforecast`` in the Parquet schema metadata."""
    spans = table.spans()
    return {"format_version": FORMAT_VERSION, "freq": table.freq, "rows": int(len(table.frame)),
            "series": table.n_series,
            "spans": {"unique_id": spans["unique_id"].tolist(),
                      "start": [str(t) for t in spans["start"]], "end": [str(t) for t in spans["end"]],
                      "length": [int(n) for n in spans["length"]]}}


def _chunks(table: Table, rows: int = ROW_GROUP_ROWS) -> Iterator[pa.Table]:
    """The table in chunks of ``rows``; ``ds`` in the table's zone when it has one."""
    frame = table.frame
    ds_type = pa.timestamp("ns", tz=table.tz)
    cats = pa.array(np.asarray(frame["unique_id"].cat.categories, dtype=object), type=pa.string())
    codes = frame["unique_id"].cat.codes.to_numpy()
    ds = frame["ds"].to_numpy()
    values = {name: frame[name].to_numpy() for name in ("y", *table.covariates)}
    for s in range(0, len(frame), rows):
        yield pa.table({"unique_id": cats.take(pa.array(codes[s:s + rows].astype(np.int32))),
                        "ds": pa.array(ds[s:s + rows], type=pa.timestamp("ns")).cast(ds_type),
                        **{name: pa.array(v[s:s + rows], type=pa.float64()) for name, v in values.items()}})


def _write(table: Table, f: Any, fmt: OutFormat) -> None:
    values = [(name, pa.float64()) for name in ("y", *table.covariates)]
    ds_type = pa.timestamp("ns", tz=table.tz)  # naive, or UTC instants shown in the table's zone
    schema = pa.schema([("unique_id", pa.string()), ("ds", ds_type), *values])
    if fmt is OutFormat.PARQUET:
        schema = schema.with_metadata({META_KEY: json.dumps(metadata(table)).encode()})
        with pq.ParquetWriter(f, schema, compression="zstd") as w:
            for chunk in _chunks(table):
                w.write_table(chunk.cast(schema), row_group_size=ROW_GROUP_ROWS)
        return
    csv_schema = pa.schema([("unique_id", pa.string()), ("ds", pa.string()), *values])
    whole_seconds = not np.any(table.ds_ns % 10**9)
    plain = not any(set(str(c)) & set(',"\r\n') for c in table.frame["unique_id"].cat.categories)
    options = pacsv.WriteOptions(quoting_style="none" if plain else "needed", include_header=False)
    f.write(",".join(["unique_id", "ds", *(name for name, _ in values)]).encode() + b"\n")
    with pacsv.CSVWriter(f, csv_schema, write_options=options) as w:
        for chunk in _chunks(table):
            ds = chunk.column("ds")
            ds = ds.cast(pa.timestamp("s", tz=table.tz)) if whole_seconds else ds
            ds = pc.strftime(ds, format="%Y-%m-%d %H:%M:%S%z" if table.tz else "%Y-%m-%d %H:%M:%S")
            if table.tz:  # +0100 -> +01:00, as pandas writes offsets
                ds = pc.replace_substring_regex(ds, pattern=r"([+-]\d\d)(\d\d)$", replacement=r"\1:\2")
            w.write_table(chunk.set_column(1, "ds", ds).cast(csv_schema))
