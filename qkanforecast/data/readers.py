"""Read tables: CSV or Parquet from a path or stdin (``read_table``), an in-memory DataFrame
(``from_frame``), and the canonical Parquet files ``write_table`` writes (``load_canonical``, fast, and
``read_metadata``). Imports ``arrow``, ``canonical``, ``table`` and ``formats`` from the data package.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from qkanforecast.config import OutFormat
from qkanforecast.data.arrow import (
    Ctx,
    Finish,
    TextColumns,
    from_arrow,
    from_batches,
    pick_columns,
    text_columns_of,
    to_codes,
)
from qkanforecast.data.canonical import IngestOptions
from qkanforecast.data.formats import FORMAT_VERSION, META_KEY, format_of
from qkanforecast.data.table import Table
from qkanforecast.errors import QKANForecastError

CSV_BLOCK_BYTES = 1 << 24


def read_table(source: str | os.PathLike[str], options: IngestOptions | None = None,
               stdin: BinaryIO | None = None, finish: Finish = from_batches) -> Table:
    """Read CSV or Parquet from a path or ``-`` (stdin), validate it and return the canonical table.
    ``finish`` converts the chunks read (``from_batches``; ``bucketed`` streams them into buckets)."""
    options = options or IngestOptions()
    given = OutFormat(options.input_format) if options.input_format else None
    if str(source) == "-":
        return read_bytes("<stdin>", (stdin or sys.stdin.buffer).read(), options, finish)
    path = Path(source)
    if not path.is_file():
        raise QKANForecastError(f"{source}: file not found")
    fmt = given or _guess_format(path)
    return _read(str(source), str(path), fmt, path.name.split(".")[0] or "series", options, finish)


def read_bytes(label: str, data: bytes, options: IngestOptions | None = None,
               finish: Finish = from_batches) -> Table:
    """Read CSV or Parquet held in memory (stdin, an object fetched from a URI); ``label`` names it in
    errors and, for a file without an id column, names its one series (``series`` for stdin)."""
    options = options or IngestOptions()
    given = OutFormat(options.input_format) if options.input_format else None
    name = label.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    stem = "series" if label == "<stdin>" else (name.split(".")[0] or "series")
    return _read(label, pa.BufferReader(data), given or _sniff(data[:4]), stem, options, finish)


def _read(label: str, src: Any, fmt: OutFormat, stem: str, options: IngestOptions, finish: Finish) -> Any:
    if options.series_id is None:
        options = dataclasses.replace(options, series_id=stem)
    if fmt is OutFormat.PARQUET:
        return _read_parquet(label, src, options, finish)
    return _read_csv(label, src, options, finish)


def _guess_format(path: Path) -> OutFormat:
    """Parquet by its suffix, else by its first bytes (a ``.csv`` that is Parquet is read as Parquet)."""
    if format_of(path) is OutFormat.PARQUET:
        return OutFormat.PARQUET
    with open(path, "rb") as f:
        return _sniff(f.read(4))


def _sniff(head: bytes) -> OutFormat:
    """Parquet files start with ``PAR1``; anything else is read as CSV."""
    return OutFormat.PARQUET if head == b"PAR1" else OutFormat.CSV


def _read_csv(label: str, src: Any, options: IngestOptions, finish: Finish) -> Any:
    stream = pa.input_stream(src, compression="detect") if isinstance(src, str) else src
    head = stream.read(1 << 16)
    if not isinstance(src, str):
        src.seek(0)
    first = head.split(b"\n", 1)[0].decode("utf-8", "replace").strip("\r\ufeff")
    if not first:
        raise QKANForecastError(f"{label}: empty file")
    delimiter = max((",", ";", "\t"), key=first.count)
    header = [c.strip().strip('"') for c in first.split(delimiter)]
    columns = pick_columns(label, header, options, _sniff_text(head, delimiter))
    types: dict[str, pa.DataType] = {}
    if columns.get("id"):
        types[columns["id"]] = pa.dictionary(pa.int32(), pa.string())
    include = _included(columns)
    read_options = pacsv.ReadOptions(use_threads=True, block_size=CSV_BLOCK_BYTES)
    parse_options = pacsv.ParseOptions(delimiter=delimiter)
    # fast path: stream block by block with numeric values, so memory holds one block of text at a time
    numeric = dict(types, **{c: pa.float64() for c in [*columns["series"], *columns.get("covariates", [])]})
    try:
        convert = pacsv.ConvertOptions(include_columns=include, column_types=numeric,
                                       strings_can_be_null=True)
        reader = pacsv.open_csv(src, read_options=read_options, parse_options=parse_options,
                                convert_options=convert)
        return finish(label, iter(reader), options, "line", 2, columns)
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
    del table  # from_arrow drops the last reference, so converted chunks are freed as it goes
    return from_arrow(label, holder, options, "line", 2, columns, finish)


def _included(columns: dict[str, Any]) -> list[str]:
    """The columns to read: the id (if any), the time, the value(s) and the covariates."""
    named = [columns.get("id"), columns["time"], *columns["series"], *columns.get("covariates", [])]
    return [c for c in named if c]


def _sniff_text(head: bytes, delimiter: str) -> TextColumns:
    """``TextColumns`` from the types Arrow infers for the complete lines of the first block."""

    def text(names: list[str]) -> list[str]:
        body = head[: head.rfind(b"\n") + 1]
        try:
            sample = pacsv.read_csv(pa.BufferReader(body),
                                    parse_options=pacsv.ParseOptions(delimiter=delimiter),
                                    convert_options=pacsv.ConvertOptions(include_columns=names))
        except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError):
            return []
        return text_columns_of(sample.schema)(names)

    return text


def _read_parquet(label: str, src: Any, options: IngestOptions, finish: Finish) -> Any:
    try:
        pf = pq.ParquetFile(src)
    except (pa.ArrowInvalid, OSError) as e:
        msg = str(e).strip().splitlines()[0]
        raise QKANForecastError(f"{label}: cannot read as Parquet: {msg}") from None
    columns = pick_columns(label, pf.schema_arrow.names, options, text_columns_of(pf.schema_arrow))
    include = _included(columns)
    # read row group by row group; string ids come back dictionary-encoded
    id_col = columns.get("id")
    dict_cols = [id_col] if id_col and pa.types.is_string(pf.schema_arrow.field(id_col).type) else []
    pf = pq.ParquetFile(src, read_dictionary=dict_cols)
    batches = (pf.read_row_group(i, columns=include) for i in range(pf.num_row_groups))
    return finish(label, batches, options, "row", 1, columns)


def from_frame(frame: pd.DataFrame, options: IngestOptions | None = None, source: str = "<frame>") -> Table:
    """Validate an in-memory DataFrame with the same rules as ``read_table``."""
    options = options or IngestOptions()
    return from_arrow(source, [pa.Table.from_pandas(frame, preserve_index=False)], options, "row", 1)


# ---------------------------------------------------------------------------------------------------
# canonical files


def read_metadata(path: str | os.PathLike[str], filesystem: Any = None) -> dict[str, Any] | None:
    """The ``qkanforecast`` metadata of a canonical Parquet file (``None`` if it has none)."""
    meta = pq.read_schema(path, filesystem=filesystem).metadata or {}
    return json.loads(meta[META_KEY]) if META_KEY in meta else None


def load_canonical(path: str | os.PathLike[str], filesystem: Any = None, label: str | None = None) -> Table:
    """Load a Parquet file written by ``write_table`` quickly (no re-validation of the values).

    ``filesystem`` is a ``pyarrow.fs`` filesystem holding ``path`` (default: the local one); ``label``
    names the file in errors. Files without qkanforecast metadata go through ``read_table``.
    """
    label = label or str(path)
    if filesystem is None and not Path(path).is_file():
        raise QKANForecastError(f"{path}: file not found")
    meta = read_metadata(path, filesystem)
    if meta is None:
        if filesystem is None:
            return read_table(path)
        with filesystem.open_input_file(str(path)) as fh:
            return read_bytes(label, fh.read())
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise QKANForecastError(f"{label}: written by a newer qkanforecast (format {meta['format_version']})")
    pf = pq.ParquetFile(path, read_dictionary=["unique_id"], filesystem=filesystem)
    n = pf.metadata.num_rows
    covariates = [c for c in pf.schema_arrow.names if c not in ("unique_id", "ds", "y")]
    ds = np.empty(n, np.int64)
    values = {name: np.empty(n, np.float64) for name in ("y", *covariates)}
    names: dict[str, int] = {}
    codes = np.empty(n, np.int32)
    pos = 0
    for i in range(pf.num_row_groups):
        rg = pf.read_row_group(i)
        m = rg.num_rows
        ctx = Ctx(label, "row", 1)
        codes[pos:pos + m] = to_codes(rg.column("unique_id"), ctx, "unique_id", pos, names)
        ds[pos:pos + m] = rg.column("ds").combine_chunks().cast(pa.int64()).to_numpy()
        for name, column in values.items():
            column[pos:pos + m] = rg.column(name).combine_chunks().to_numpy(zero_copy_only=False)
        pos += m
    cats = np.array(list(names), dtype=object)
    if list(cats) != sorted(cats):
        # categories are seen in row order; the file is sorted, so this only happens for foreign files
        if filesystem is None:
            return read_table(path)
        with filesystem.open_input_file(str(path)) as fh:
            return read_bytes(label, fh.read())
    frame = pd.DataFrame({
        "unique_id": pd.Categorical.from_codes(codes.astype(np.int16 if len(cats) < 2**15 else np.int32),
                                               categories=pd.Index(cats, dtype=object)),
        "ds": ds.view("datetime64[ns]"), **values}, copy=False)
    report = {"source": label, "rows": n, "series": int(meta["series"]), "freq": meta["freq"],
              "loaded": "canonical"}
    tz = getattr(pf.schema_arrow.field("ds").type, "tz", None)
    lengths = np.asarray(meta["spans"]["length"], dtype=np.int64)
    known = meta["spans"]["unique_id"] == list(cats) and lengths.sum() == n
    return Table(frame=frame, freq=meta["freq"], report=report, tz=tz,
                 known_offsets=np.concatenate([[0], np.cumsum(lengths)]) if known else None)
