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
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from qkanforecast.errors import QKANForecastError

FILLS = ("none", "ffill", "linear", "zero")
META_KEY = b"qkanforecast"
FORMAT_VERSION = 1
ROW_GROUP_ROWS = 1 << 20
CSV_BLOCK_BYTES = 1 << 24
_NAN_WORDS = {"", "nan", "na", "n/a", "null", "none", "-nan", "#n/a"}
_TZ_RE = r"(Z|z|[+-]\d{2}:?\d{2})$"


@dataclass
class IngestOptions:
    """How to read a table. ``series_id`` names the series of a file without an id column
    (default: the file stem, or ``series`` for stdin). ``input_format`` is ``csv`` or ``parquet``
    (default: from the suffix, else sniffed)."""

    id_col: str = "unique_id"
    time_col: str = "ds"
    target_col: str = "y"
    wide: bool = False
    freq: str | None = None
    fill: str = "none"
    min_length: int | None = None
    series_id: str | None = None
    input_format: str | None = None

    def __post_init__(self) -> None:
        if self.fill not in FILLS:
            raise QKANForecastError(f"unknown fill '{self.fill}'; choose from {', '.join(FILLS)}")
        if self.min_length is not None and self.min_length < 1:
            raise QKANForecastError(f"min_length must be at least 1, got {self.min_length}")
        if self.input_format not in (None, "csv", "parquet"):
            raise QKANForecastError(f"unknown input format '{self.input_format}'; choose csv or parquet")
        if self.freq is not None:
            freq_to_ns(self.freq)


def freq_to_ns(freq: str) -> int:
    """Length of a fixed frequency (``10min``, ``h``, ``D``...) in nanoseconds."""
    try:
        ns = int(pd.Timedelta(pd.tseries.frequencies.to_offset(freq)).value)
    except (ValueError, TypeError):
        raise QKANForecastError(
            f"invalid frequency '{freq}'; use a fixed step such as 5min, 10min, h or D"
        ) from None
    if ns <= 0:
        raise QKANForecastError(f"invalid frequency '{freq}'; it must be a positive step")
    return ns


def ns_to_freq(ns: int) -> str:
    """Pandas alias of a step in nanoseconds: 600e9 -> ``10min``, 3600e9 -> ``h``, 86400e9 -> ``D``."""
    for unit, size in (("D", 86_400 * 10**9), ("h", 3_600 * 10**9), ("min", 60 * 10**9), ("s", 10**9),
                       ("ms", 10**6), ("us", 10**3), ("ns", 1)):
        if ns % size == 0:
            n = ns // size
            return unit if n == 1 else f"{n}{unit}"
    raise AssertionError("unreachable")


def _ts(ns: int | np.integer) -> str:
    return str(pd.Timestamp(int(ns)))


@dataclass
class Table:
    """A canonical table: ``frame`` (``unique_id`` categorical, ``ds``, ``y``), its ``freq`` and the
    ingest ``report``. Series ``i`` is ``frame.iloc[offsets[i]:offsets[i + 1]]``."""

    frame: pd.DataFrame
    freq: str
    report: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def offsets(self) -> np.ndarray:
        """Row where each series starts, plus the row count: int64 ``[S + 1]``."""
        codes = self.frame["unique_id"].cat.codes.to_numpy()
        cuts = np.flatnonzero(codes[1:] != codes[:-1]) + 1
        return np.concatenate([[0], cuts, [len(codes)]]).astype(np.int64)

    @cached_property
    def ids(self) -> list[str]:
        """Series names in table order."""
        codes = self.frame["unique_id"].cat.codes.to_numpy()
        cats = self.frame["unique_id"].cat.categories
        return [str(cats[c]) for c in codes[self.offsets[:-1]]] if len(codes) else []

    @property
    def n_series(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def step_ns(self) -> int:
        return freq_to_ns(self.freq)

    @property
    def values(self) -> np.ndarray:
        """``y`` as a float64 array (a read-only view, no copy): ``[rows]``."""
        return self.frame["y"].to_numpy()

    @property
    def ds_ns(self) -> np.ndarray:
        """``ds`` as int64 nanoseconds (a view): ``[rows]``."""
        return self.frame["ds"].to_numpy().view(np.int64)

    def index_of(self, unique_id: str) -> int:
        try:
            return self._index[unique_id]
        except KeyError:
            raise QKANForecastError(f"no series '{unique_id}' in the table") from None

    @cached_property
    def _index(self) -> dict[str, int]:
        return {uid: i for i, uid in enumerate(self.ids)}

    def series(self, unique_id: str) -> pd.DataFrame:
        i = self.index_of(unique_id)
        return self.frame.iloc[self.offsets[i]:self.offsets[i + 1]]

    def spans(self) -> pd.DataFrame:
        """One row per series: ``unique_id, start, end, length``."""
        ds = self.frame["ds"].to_numpy()
        return pd.DataFrame({"unique_id": self.ids, "start": ds[self.offsets[:-1]],
                             "end": ds[self.offsets[1:] - 1], "length": self.lengths})

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, options: IngestOptions | None = None,
                   source: str = "<frame>") -> Table:
        """Validate an in-memory DataFrame with the same rules as ``read_table``."""
        options = options or IngestOptions()
        return _from_arrow(source, [pa.Table.from_pandas(frame, preserve_index=False)], options, "row", 1)


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


def _pick_columns(label: str, names: list[str], options: IngestOptions) -> dict[str, Any]:
    """Which columns hold the id, the time and the value(s)."""
    listing = ", ".join(names)
    time_col, target_col = options.time_col, options.target_col
    if not options.wide and time_col not in names and target_col not in names and len(names) == 2:
        time_col, target_col = names  # a bare time,value file
    if time_col not in names:
        raise QKANForecastError(f"{label}: no time column '{time_col}' (columns: {listing}); pass --time-col")
    if options.wide:
        series = [c for c in names if c != time_col]
        if not series:
            raise QKANForecastError(f"{label}: --wide needs one column per series besides '{time_col}'")
        return {"id": None, "time": time_col, "series": series, "wide": True}
    if target_col not in names:
        raise QKANForecastError(
            f"{label}: no target column '{target_col}' (columns: {listing}); pass --target-col")
    id_col = options.id_col if options.id_col in names else None
    return {"id": id_col, "time": time_col, "series": [target_col], "wide": False}


def _from_arrow(label: str, holder: list[pa.Table], options: IngestOptions, unit: str, first: int,
                columns: dict[str, Any] | None = None) -> Table:
    """Convert the table in ``holder`` (emptied, so that chunks are freed once converted)."""
    table = holder.pop()
    columns = columns or _pick_columns(label, table.column_names, options)
    batches = table.to_batches()
    del table

    def gen() -> Iterator[pa.RecordBatch]:
        while batches:
            yield batches.pop(0)

    return _from_batches(label, gen(), options, unit, first, columns)


class _Ctx:
    """Conversion state shared by the chunks of one input: error locations and time-zone state."""

    def __init__(self, label: str, unit: str, first: int) -> None:
        self.label, self.unit, self.first = label, unit, first
        self.aware: tuple[int, str] | None = None
        self.naive: tuple[int, str] | None = None
        self.notes: list[str] = []

    def where(self, row: int) -> str:
        return f"{self.unit} {row + self.first}"

    def fail(self, col: str, row: int, what: str) -> QKANForecastError:
        return QKANForecastError(f"{self.label}: column '{col}' {self.where(row)}: {what}")


def _from_batches(label: str, batches: Iterator[Any], options: IngestOptions, unit: str, first: int,
                  columns: dict[str, Any]) -> Table:
    """Convert chunks to numpy as they arrive (each chunk can be freed at once), then validate."""
    ctx = _Ctx(label, unit, first)
    time_col, series_cols = columns["time"], columns["series"]
    k = len(series_cols)
    parts: dict[str, list[list[np.ndarray]]] = {key: [[] for _ in range(k)] for key in ("codes", "ds", "y")}
    names: dict[str, int] = {}
    if columns["wide"]:
        names = {c: i for i, c in enumerate(series_cols)}
    elif not columns["id"]:
        names = {str(options.series_id or "series"): 0}
    pos = 0
    for batch in batches:
        m = batch.num_rows
        t = _to_ns(batch.column(time_col), ctx, time_col, pos)
        id_col = columns["id"]
        ids = _to_codes(batch.column(id_col), ctx, id_col, pos, names) if id_col else None
        for j, col in enumerate(series_cols):
            parts["ds"][j].append(t)
            parts["y"][j].append(_to_float(batch.column(col), ctx, col, pos))
            parts["codes"][j].append(ids if ids is not None else np.full(m, j, dtype=np.int32))
        del batch
        pos += m
    n = pos
    pa.default_memory_pool().release_unused()  # hand the text buffers of the read back to the OS

    def join(key: str, dtype: type) -> np.ndarray:  # one column at a time, freeing its chunks
        chunks = [c for per_series in parts.pop(key) for c in per_series]
        return np.concatenate(chunks).astype(dtype, copy=False) if chunks else np.empty(0, dtype)

    codes, ds, y = join("codes", np.int32), join("ds", np.int64), join("y", np.float64)
    if ctx.aware and ctx.naive:
        (a, va), (b, vb) = ctx.aware, ctx.naive
        raise QKANForecastError(
            f"{label}: column '{time_col}' mixes time zones and naive times "
            f"({ctx.where(a)}: '{va}', {ctx.where(b)}: '{vb}')")
    if ctx.aware:
        ctx.notes.append("time zones converted to UTC")
    categories = np.array(list(names), dtype=object)
    report = {"source": label, "rows_read": int(n), "columns": {
        "id": columns["id"], "time": time_col, "target": None if columns["wide"] else series_cols[0],
        "wide": bool(columns["wide"])}}
    return canonicalise(label, codes, categories, ds, y, options, report, ctx.notes)


def _to_ns(arr: Any, ctx: _Ctx, col: str, row0: int) -> np.ndarray:
    """A time column chunk -> int64 ns since epoch (naive or UTC)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    typ = arr.type
    if arr.null_count:
        raise ctx.fail(col, row0 + _first_null(arr), "empty date")
    if pa.types.is_timestamp(typ):
        if typ.tz is not None and ctx.aware is None:
            ctx.aware = (row0, str(arr[0]))
        elif typ.tz is None and ctx.naive is None:
            ctx.naive = (row0, str(arr[0]))
        return np.asarray(arr.cast(pa.timestamp("ns", tz=typ.tz)).cast(pa.int64()).to_numpy())
    if pa.types.is_date(typ):
        if ctx.naive is None:
            ctx.naive = (row0, str(arr[0]))
        return np.asarray(arr.cast(pa.timestamp("ns")).cast(pa.int64()).to_numpy())
    if pa.types.is_dictionary(typ):
        arr = arr.cast(typ.value_type)
        typ = arr.type
    if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
        raise QKANForecastError(
            f"{ctx.label}: column '{col}' holds {typ} values, not dates; "
            "write them as dates such as 2013-11-01 00:10:00")
    strings = pc.utf8_trim_whitespace(arr)
    has_tz = np.asarray(pc.match_substring_regex(strings, _TZ_RE).to_numpy(zero_copy_only=False), bool)
    if has_tz.any() and ctx.aware is None:
        i = int(np.argmax(has_tz))
        ctx.aware = (row0 + i, strings[i].as_py())
    if not has_tz.all() and ctx.naive is None:
        i = int(np.argmin(has_tz))
        ctx.naive = (row0 + i, strings[i].as_py())
    if ctx.aware and ctx.naive:
        return np.zeros(len(arr), np.int64)  # reported once all chunks are read
    s = pd.Series(strings.to_numpy(zero_copy_only=False), dtype=object)
    try:
        parsed = pd.to_datetime(s, format="ISO8601", utc=bool(has_tz.any()))
    except (ValueError, TypeError):
        parsed = pd.to_datetime(s, errors="coerce", utc=bool(has_tz.any()))
        bad = np.flatnonzero(parsed.isna().to_numpy())
        if len(bad):
            raise ctx.fail(col, row0 + int(bad[0]), f"cannot parse date '{s.iloc[int(bad[0])]}'") from None
    if parsed.dt.tz is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return parsed.to_numpy(dtype="datetime64[ns]").view(np.int64)


def _to_float(arr: Any, ctx: _Ctx, col: str, row0: int) -> np.ndarray:
    """A value column chunk -> float64 (nulls become NaN)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    typ = arr.type
    if pa.types.is_null(typ):
        return np.full(len(arr), np.nan)
    if pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ) \
            or pa.types.is_boolean(typ):
        return np.asarray(arr.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    if pa.types.is_dictionary(typ):
        arr = arr.cast(typ.value_type)
    s = pd.Series(arr.to_numpy(zero_copy_only=False), dtype=object)
    out = pd.to_numeric(s, errors="coerce")
    missing = out.isna().to_numpy()
    if missing.any():
        words = s[missing].map(lambda v: v is None or str(v).strip().lower() in _NAN_WORDS).to_numpy(bool)
        if not words.all():
            i = int(np.flatnonzero(missing)[np.argmin(words)])
            raise ctx.fail(col, row0 + i, f"non-numeric value '{s.iloc[i]}'")
    return out.to_numpy(dtype=np.float64, na_value=np.nan)


def _to_codes(arr: Any, ctx: _Ctx, col: str, row0: int, names: dict[str, int]) -> np.ndarray:
    """An id column chunk -> int32 codes into ``names`` (updated in place)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.null_count:
        raise ctx.fail(col, row0 + _first_null(arr), "empty series id")
    if not pa.types.is_dictionary(arr.type):
        if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            arr = arr.cast(pa.string())
        arr = arr.dictionary_encode()
    values = arr.dictionary.cast(pa.string()).to_pylist()
    lookup = np.array([names.setdefault(v, len(names)) for v in values], dtype=np.int32)
    return lookup[np.asarray(arr.indices.to_numpy(zero_copy_only=False))]


def _first_null(arr: Any) -> int:
    return int(np.argmax(np.asarray(arr.is_null().to_numpy(zero_copy_only=False), bool)))


# ---------------------------------------------------------------------------------------------------
# validation


def canonicalise(label: str, codes: np.ndarray, categories: np.ndarray, ds: np.ndarray, y: np.ndarray,
                 options: IngestOptions, report: dict[str, Any] | None = None,
                 notes: list[str] | None = None) -> Table:
    """Sort, de-duplicate, check the frequency, fill or reject gaps and NaN, build the ``Table``.

    ``codes`` index ``categories`` (series names); ``ds`` is int64 ns; ``y`` float64; all ``[rows]``.
    The arrays may be modified in place.
    """
    report = dict(report or {})
    notes = list(notes or [])
    if len(ds) == 0:
        raise QKANForecastError(f"{label}: no rows")
    # sorted categories, codes in the smallest integer type
    used = np.bincount(codes, minlength=len(categories)) > 0
    cats = categories[used]
    order = np.argsort(cats.astype(str), kind="stable")
    remap = np.full(len(categories), -1, dtype=np.int64)
    remap[np.flatnonzero(used)[order]] = np.arange(len(order))
    cats = cats[order].astype(str)
    ctype = np.int16 if len(cats) < 2**15 else np.int32
    codes = remap[codes].astype(ctype) if not (used.all() and (order == np.arange(len(order))).all()) \
        else codes.astype(ctype, copy=False)
    # sort by (unique_id, ds) unless already sorted
    same = codes[1:] == codes[:-1]
    d = np.diff(ds)  # steps between consecutive rows; only meaningful where ``same``
    in_order = bool(np.all(codes[1:] >= codes[:-1])) and not same[np.flatnonzero(d < 0)].any()
    if not in_order:
        perm = np.lexsort((ds, codes))
        codes, ds, y = codes[perm], ds[perm], y[perm]
        del perm
        same, d = codes[1:] == codes[:-1], np.diff(ds)
    # duplicates
    dup = np.flatnonzero(d == 0)
    dup = dup[same[dup]]
    n_dup = len(dup)
    if n_dup:
        a, b = y[dup], y[dup + 1]
        conflict = ~((a == b) | (np.isnan(a) & np.isnan(b)))
        if conflict.any():
            i = int(dup[np.argmax(conflict)])
            n_conf = int(conflict.sum())
            raise QKANForecastError(
                f"{label}: series '{cats[codes[i]]}' has {n_conf} duplicate timestamp"
                f"{'s' if n_conf > 1 else ''} with different values (first: {_ts(ds[i])}, "
                f"{y[i]:g} and {y[i + 1]:g})")
        keep = np.ones(len(ds), dtype=bool)
        keep[dup + 1] = False
        codes, ds, y = codes[keep], ds[keep], y[keep]
        del keep
        same, d = codes[1:] == codes[:-1], np.diff(ds)
    del dup
    starts = np.concatenate([[0], np.flatnonzero(~same) + 1]).astype(np.int64)
    ends = np.append(starts[1:], len(ds))
    lengths = ends - starts
    step, inferred = _frequency(label, cats, codes, d, same, starts, options)
    # rows followed by anything but one step: gaps, or timestamps off the grid
    irregular = np.flatnonzero(d != step)
    irregular = irregular[same[irregular]]
    del same, d
    jumps = ds[irregular + 1] - ds[irregular]
    off = jumps % step != 0
    if off.any():
        i = int(irregular[np.argmax(off)])
        raise QKANForecastError(
            f"{label}: series '{cats[codes[i]]}' timestamp {_ts(ds[i + 1])} is off the {ns_to_freq(step)} "
            f"grid (previous {_ts(ds[i])}); pass --freq or fix the timestamps")
    owner = np.searchsorted(starts, irregular, side="right") - 1
    gaps = np.bincount(owner, weights=jumps // step - 1, minlength=len(starts)).astype(np.int64)
    grid = lengths + gaps
    finite = bool(np.isfinite(y).all())
    bad = np.zeros(0, dtype=bool) if finite else ~np.isfinite(y)
    n_inf = 0 if finite else int(np.isinf(y).sum())
    n_bad = int(bad.sum())
    n_gaps = int(gaps.sum())
    bad_per = np.add.reduceat(bad, starts) if n_bad else np.zeros(len(starts), np.int64)
    if (n_gaps or n_bad) and options.fill == "none":
        i = int(np.argmax((gaps > 0) | (bad_per > 0)))
        parts = []
        if gaps[i]:
            j = int(irregular[np.argmax(owner == i)])
            parts.append(f"{int(gaps[i])} missing timestamp{'s' if gaps[i] > 1 else ''} "
                         f"(first: {_ts(ds[j] + step)})")
        if bad_per[i]:
            j = int(np.argmax(bad[starts[i]:ends[i]]))
            parts.append(f"{int(bad_per[i])} NaN or infinite value{'s' if bad_per[i] > 1 else ''} "
                         f"(first: {_ts(ds[starts[i] + j])})")
        raise QKANForecastError(
            f"{label}: series '{cats[codes[starts[i]]]}' has {' and '.join(parts)}; "
            "pass --fill ffill, linear or zero")
    problems = np.flatnonzero((gaps > 0) | (bad_per > 0))
    if n_gaps or n_bad:
        if n_gaps:
            if not len(bad):
                bad = np.zeros(len(y), dtype=bool)
            codes, ds, y, bad, starts, ends = _regrid(codes, ds, y, bad, starts, grid, step)
            lengths = grid
        _fill(label, cats, codes, ds, y, bad, starts, ends, options.fill)
    del bad
    if options.min_length is not None:
        short = lengths < options.min_length
        if short.any():
            i = int(np.argmax(short))
            raise QKANForecastError(
                f"{label}: series '{cats[codes[starts[i]]]}' has {int(lengths[i])} values but at least "
                f"{options.min_length} are needed ({int(short.sum())} of {len(lengths)} series too short)")
    frame = pd.DataFrame({
        "unique_id": pd.Categorical.from_codes(codes, categories=pd.Index(cats, dtype=object)),
        "ds": ds.view("datetime64[ns]"), "y": y}, copy=False)
    freq = ns_to_freq(step)
    report.update({
        "rows": int(len(frame)), "series": int(len(starts)), "freq": freq, "freq_inferred": inferred,
        "start": _ts(ds.min()), "end": _ts(ds.max()),
        "min_length": int(lengths.min()), "max_length": int(lengths.max()),
        "sorted_input": in_order, "duplicates_dropped": n_dup, "fill": options.fill,
        "missing_timestamps_filled": n_gaps, "nan_filled": n_bad - n_inf, "inf_filled": n_inf,
        "series_filled": int(len(problems)),
        "filled_examples": [
            {"unique_id": str(cats[codes[starts[i]]]), "missing_timestamps": int(gaps[i]),
             "nan_or_inf": int(bad_per[i])} for i in problems[:10]],
        "notes": notes + ([f"{n_dup} identical duplicate rows dropped"] if n_dup else []),
    })
    table = Table(frame=frame, freq=freq, report=report)
    table.__dict__["offsets"] = np.append(starts, len(ds)).astype(np.int64)
    return table


def _frequency(label: str, cats: np.ndarray, codes: np.ndarray, d: np.ndarray, same: np.ndarray,
               starts: np.ndarray, options: IngestOptions) -> tuple[int, bool]:
    """The table's step in ns: ``options.freq``, else the smallest step of each series (all equal).

    ``d`` holds the steps between consecutive rows, ``same`` whether both rows are of one series.
    """
    if options.freq is not None:
        return freq_to_ns(options.freq), False
    if not same.any():
        raise QKANForecastError(f"{label}: cannot infer the frequency from single timestamps; pass --freq")
    candidate = d[int(np.argmax(same))]
    other = np.flatnonzero(d != candidate)
    if not same[other].any():  # every series moves by the same step: the usual case, one pass
        return int(candidate), True
    big = np.iinfo(np.int64).max
    per = np.minimum.reduceat(np.append(np.where(same, d, big), big), starts)
    known = np.flatnonzero(per < big)
    steps = per[known]
    other = np.flatnonzero(steps != steps[0])
    if len(other):
        a, b = known[0], known[other[0]]
        raise QKANForecastError(
            f"{label}: series '{cats[codes[starts[a]]]}' has frequency {ns_to_freq(int(steps[0]))} "
            f"but series '{cats[codes[starts[b]]]}' has {ns_to_freq(int(per[b]))}; pass --freq to choose one")
    return int(steps[0]), True


def _regrid(codes: np.ndarray, ds: np.ndarray, y: np.ndarray, bad: np.ndarray, starts: np.ndarray,
            grid: np.ndarray, step: int) -> tuple[np.ndarray, ...]:
    """Insert the missing timestamps of every series (their ``y`` is NaN and marked ``bad``)."""
    new_starts = np.concatenate([[0], np.cumsum(grid)[:-1]]).astype(np.int64)
    total = int(grid.sum())
    lengths = np.diff(np.append(starts, len(ds)))
    series = np.repeat(np.arange(len(starts)), lengths)
    pos = new_starts[series] + (ds - ds[starts][series]) // step
    del series
    new_y = np.full(total, np.nan)
    new_y[pos] = y
    new_bad = np.ones(total, dtype=bool)
    new_bad[pos] = bad
    within = np.arange(total, dtype=np.int64) - np.repeat(new_starts, grid)
    new_ds = np.repeat(ds[starts], grid) + within * step
    new_codes = np.repeat(codes[starts], grid)
    return new_codes, new_ds, new_y, new_bad, new_starts, new_starts + grid


def _fill(label: str, cats: np.ndarray, codes: np.ndarray, ds: np.ndarray, y: np.ndarray, bad: np.ndarray,
          starts: np.ndarray, ends: np.ndarray, how: str) -> None:
    """Fill ``y`` where ``bad`` in place, never across series."""
    rows = np.flatnonzero(bad)
    seg = np.repeat(np.arange(len(starts)), ends - starts)[rows]
    good = np.flatnonzero(~bad)
    # previous and next finite value in the same series (-1 / len(y) when none)
    k = np.searchsorted(good, rows)
    prev = np.where(k > 0, good[np.maximum(k - 1, 0)], -1) if len(good) else np.full(len(rows), -1)
    nxt = good[np.minimum(k, len(good) - 1)] if len(good) else np.full(len(rows), len(y))
    prev = np.where(prev >= starts[seg], prev, -1)
    nxt = np.where((nxt > rows) & (nxt < ends[seg]), nxt, len(y))
    empty = (prev < 0) & (nxt >= len(y))
    if empty.any():
        i = int(seg[np.argmax(empty)])
        raise QKANForecastError(
            f"{label}: series '{cats[codes[starts[i]]]}' has no finite values to fill from")
    if how == "zero":
        y[rows] = 0.0
        return
    before = prev < 0
    after = nxt >= len(y)
    fill = np.empty(len(rows))
    fill[before] = y[nxt[before]]
    if how == "ffill":
        fill[~before] = y[prev[~before]]
    else:
        fill[after] = y[prev[after]]
        mid = ~before & ~after
        p, q, r = prev[mid], nxt[mid], rows[mid]
        fill[mid] = y[p] + (y[q] - y[p]) * ((r - p) / (q - p))
    y[rows] = fill


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
    target = Path(path)
    if not target.parent.is_dir():
        raise QKANForecastError(f"{target}: directory {target.parent} does not exist")
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            _write(table, f, fmt)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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

