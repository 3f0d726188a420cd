"""Arrow chunks (CSV blocks, Parquet row groups, a DataFrame) to numpy columns, then ``canonicalise``.

Dates, values and series ids are converted chunk by chunk, so each chunk can be freed at once; errors
name the file, the column and the CSV line or Parquet row (``Ctx``). Imports ``canonical`` and
``table`` from the data package.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from qkanforecast.data.canonical import IngestOptions, canonicalise
from qkanforecast.data.table import Table
from qkanforecast.data.zones import localize
from qkanforecast.errors import QKANForecastError

_NAN_WORDS = {"", "nan", "na", "n/a", "null", "none", "-nan", "#n/a"}
_TZ_RE = r"(Z|z|[+-]\d{2}:?\d{2})$"


CANONICAL = ("unique_id", "ds", "y")  # the columns of the canonical table ingest writes
_FLAGS = {"id_col": "--id-col", "time_col": "--time-col", "target_col": "--target-col"}
TextColumns = Callable[[list[str]], list[str]]  # which of these columns hold text (the first rows' types)
# what converts the chunks of one input: (label, chunks, options, unit, first, columns) -> result
Finish = Callable[[str, Iterator[Any], IngestOptions, str, int, dict[str, Any]], Any]


def text_columns_of(schema: pa.Schema) -> TextColumns:
    """``TextColumns`` from an Arrow schema: string, large string or dictionary-of-string columns."""

    def text(names: list[str]) -> list[str]:
        out = []
        for name in names:
            typ = schema.field(name).type
            typ = typ.value_type if pa.types.is_dictionary(typ) else typ
            if pa.types.is_string(typ) or pa.types.is_large_string(typ):
                out.append(name)
        return out

    return text


def pick_columns(label: str, names: list[str], options: IngestOptions,
                 text_columns: TextColumns | None = None) -> dict[str, Any]:
    """Which columns hold the id, the time and the value(s).

    A repeated column name is an error, and so is a column the user named (``options.named``) that is
    absent. Names the user did not give (defaults, or a model's recorded names) give way: to the canonical
    ``unique_id, ds, y`` when the file has those, to the two columns of a bare ``time,value`` file, and
    for the id to the one text column besides the time and the target (``text_columns`` says which
    columns hold text; several text columns are an error asking for ``--id-col``). Without any id column
    the file is one series, and the returned ``note`` says so.
    """
    listing = ", ".join(names)
    repeated = [n for n, k in Counter(names).items() if k > 1]
    if repeated:
        raise QKANForecastError(
            f"{label}: column '{repeated[0]}' appears {names.count(repeated[0])} times "
            f"(columns: {listing}); give every column its own name")
    given = set(options.named)
    for key in ("id_col", "time_col", "target_col"):
        name = getattr(options, key)
        if key in given and name not in names:
            raise QKANForecastError(f"{label}: no column '{name}' for {_FLAGS[key]} (columns: {listing})")
    id_col, time_col, target_col = options.id_col, options.time_col, options.target_col
    if not options.wide and not given and not {id_col, time_col, target_col} <= set(names) \
            and set(CANONICAL) <= set(names):
        id_col, time_col, target_col = CANONICAL  # a canonical table, whatever names a model recorded
    bare = not given & {"time_col", "target_col"}
    if not options.wide and bare and time_col not in names and target_col not in names and len(names) == 2:
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
    for name in options.covariates:
        if name not in names:
            raise QKANForecastError(f"{label}: no covariate column '{name}' (columns: {listing})")
    found = {"time": time_col, "series": [target_col], "wide": False, "covariates": list(options.covariates)}
    if id_col in names:
        return {"id": id_col, **found}
    others = [c for c in names if c not in (time_col, target_col, *options.covariates)]
    text = text_columns(others) if text_columns is not None and others else []
    if len(text) > 1:
        raise QKANForecastError(
            f"{label}: no id column '{id_col}' and several text columns that could name the series "
            f"({', '.join(text)}); pass --id-col")
    if text:
        note = f"series ids from column '{text[0]}' (there is no column '{id_col}'; --id-col names another)"
        return {"id": text[0], **found, "note": note}
    note = f"no id column '{id_col}': the file is read as one series, '{options.series_id or 'series'}'"
    return {"id": None, **found, "note": note, "unused": others}


def from_arrow(label: str, holder: list[pa.Table], options: IngestOptions, unit: str, first: int,
               columns: dict[str, Any] | None = None, finish: Finish | None = None) -> Any:
    """Convert the table in ``holder`` (emptied, so that chunks are freed once converted)."""
    table = holder.pop()
    columns = columns or pick_columns(label, table.column_names, options, text_columns_of(table.schema))
    batches = table.to_batches()
    del table

    def gen() -> Iterator[pa.RecordBatch]:
        while batches:
            yield batches.pop(0)

    return (finish or from_batches)(label, gen(), options, unit, first, columns)


class Ctx:
    """Conversion state shared by the chunks of one input: error locations and time-zone state."""

    def __init__(self, label: str, unit: str, first: int) -> None:
        self.label, self.unit, self.first = label, unit, first
        self.aware: tuple[int, str] | None = None
        self.naive: tuple[int, str] | None = None
        self.zone: str | None = None  # the zone of a zone-aware timestamp column (Parquet, Arrow)
        self.notes: list[str] = []

    def where(self, row: int) -> str:
        return f"{self.unit} {row + self.first}"

    def fail(self, col: str, row: int, what: str) -> QKANForecastError:
        return QKANForecastError(f"{self.label}: column '{col}' {self.where(row)}: {what}")


@dataclass
class Chunk:
    """One input chunk converted: per series column ``j`` (one unless the table is wide) the codes, times
    and values of its rows, and the covariates; ``pos`` is the chunk's first row in the input."""

    pos: int
    codes: list[np.ndarray]
    ds: np.ndarray
    y: list[np.ndarray]
    extra: dict[str, np.ndarray]


def convert(batches: Iterator[Any], ctx: Ctx, options: IngestOptions, columns: dict[str, Any],
            names: dict[str, int]) -> Iterator[Chunk]:
    """Arrow chunks -> numpy ``Chunk``s as they arrive (each Arrow chunk can be freed at once); series
    names are added to ``names`` (name -> code) as they are met."""
    time_col, series_cols = columns["time"], columns["series"]
    covariates: list[str] = columns.get("covariates", [])
    if columns["wide"]:
        names.update({c: i for i, c in enumerate(series_cols)})
    elif not columns["id"]:
        names[str(options.series_id or "series")] = 0
    pos = 0
    for batch in batches:
        m = batch.num_rows
        t = _to_ns(batch.column(time_col), ctx, time_col, pos)
        id_col = columns["id"]
        ids = to_codes(batch.column(id_col), ctx, id_col, pos, names) if id_col else None
        yield Chunk(
            pos,
            [ids if ids is not None else np.full(m, j, dtype=np.int32) for j in range(len(series_cols))],
            t,
            [_to_float(batch.column(col), ctx, col, pos) for col in series_cols],
            {name: _to_float(batch.column(name), ctx, name, pos) for name in covariates})
        del batch
        pos += m


def from_batches(label: str, batches: Iterator[Any], options: IngestOptions, unit: str, first: int,
                  columns: dict[str, Any]) -> Table:
    """Convert chunks to numpy as they arrive (each chunk can be freed at once), then validate."""
    ctx = Ctx(label, unit, first)
    if columns.get("note"):
        ctx.notes.append(columns["note"])
    time_col, series_cols = columns["time"], columns["series"]
    k = len(series_cols)
    parts: dict[str, list[list[np.ndarray]]] = {key: [[] for _ in range(k)] for key in ("codes", "ds", "y")}
    covariates: list[str] = columns.get("covariates", [])
    extra: dict[str, list[np.ndarray]] = {name: [] for name in covariates}
    names: dict[str, int] = {}
    n = 0
    for chunk in convert(batches, ctx, options, columns, names):
        for j in range(k):
            parts["ds"][j].append(chunk.ds)
            parts["y"][j].append(chunk.y[j])
            parts["codes"][j].append(chunk.codes[j])
        for name in covariates:
            extra[name].append(chunk.extra[name])
        n = chunk.pos + len(chunk.ds)
    pa.default_memory_pool().release_unused()  # hand the text buffers of the read back to the OS

    def join(key: str, dtype: type) -> np.ndarray:  # one column at a time, freeing its chunks
        chunks = [c for per_series in parts.pop(key) for c in per_series]
        return np.concatenate(chunks).astype(dtype, copy=False) if chunks else np.empty(0, dtype)

    codes, ds, y = join("codes", np.int32), join("ds", np.int64), join("y", np.float64)
    tz, local = zone(label, ctx, options, time_col)
    if local and len(ds):
        ds = localize(label, codes, ds, tz, lambda i: ctx.where(i % n))
    categories = np.array(list(names), dtype=object)
    report = read_report(label, n, columns, tz)
    columns_extra = {name: np.concatenate(extra.pop(name)) if n else np.empty(0) for name in covariates}
    return canonicalise(label, codes, categories, ds, y, options, report, ctx.notes, columns_extra, tz=tz,
                        naive=not ctx.aware and tz is None)


def zone(label: str, ctx: Ctx, options: IngestOptions, time_col: str) -> tuple[Any, bool]:
    """Once every chunk is converted: the table's zone, and whether its naive times are local times of
    it (to ``localize``); the note saying so joins ``ctx.notes``."""
    if ctx.aware and ctx.naive:
        (a, va), (b, vb) = ctx.aware, ctx.naive
        raise QKANForecastError(
            f"{label}: column '{time_col}' mixes time zones and naive times "
            f"({ctx.where(a)}: '{va}', {ctx.where(b)}: '{vb}')")
    tz = options.tz
    if ctx.aware:
        tz = tz or ctx.zone or "UTC"
        ctx.notes.append(f"time zones converted to UTC; outputs are written in {tz}, with the offset")
        return tz, False
    if tz is not None:
        ctx.notes.append(
            f"local times of {tz} converted to UTC; outputs are written in {tz}, with the offset")
    return tz, tz is not None


def read_report(label: str, rows: int, columns: dict[str, Any], tz: str | None) -> dict[str, Any]:
    """The part of the ingest report that describes the read: rows and the columns used."""
    return {"source": label, "rows_read": int(rows), "columns": {
        "id": columns["id"], "time": columns["time"],
        "target": None if columns["wide"] else columns["series"][0], "wide": bool(columns["wide"]),
        "unused": columns.get("unused", [])}, "tz": tz}


def _to_ns(arr: Any, ctx: Ctx, col: str, row0: int) -> np.ndarray:
    """A time column chunk -> int64 ns since epoch (naive or UTC)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    typ = arr.type
    if arr.null_count:
        raise ctx.fail(col, row0 + _first_null(arr), "empty date")
    if pa.types.is_timestamp(typ):
        if typ.tz is not None and ctx.aware is None:
            ctx.aware = (row0, str(arr[0]))
            ctx.zone = None if typ.tz.upper() in ("UTC", "Z", "+00:00") else typ.tz
        elif typ.tz is None and ctx.naive is None:
            ctx.naive = (row0, str(arr[0]))
        return _cast_ns(arr, pa.timestamp("ns", tz=typ.tz), ctx, col, row0)
    if pa.types.is_date(typ):
        if ctx.naive is None:
            ctx.naive = (row0, str(arr[0]))
        return _cast_ns(arr, pa.timestamp("ns"), ctx, col, row0)
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
            value = s.iloc[int(bad[0])]
            raise ctx.fail(col, row0 + int(bad[0]), f"date '{value}' {_OUT_OF_RANGE}" if _is_date(value)
                           else f"cannot parse date '{value}'") from None
    if parsed.dt.tz is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return parsed.to_numpy(dtype="datetime64[ns]").view(np.int64)


_OUT_OF_RANGE = "is outside 1677-09-21 .. 2262-04-11, the dates a nanosecond timestamp holds"


def _is_date(value: str) -> bool:
    """Whether ``value`` is a date pandas reads at a coarser resolution than nanoseconds (out of range)."""
    try:
        pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError):
        return False
    return True


def _cast_ns(arr: Any, typ: pa.DataType, ctx: Ctx, col: str, row0: int) -> np.ndarray:
    """A date or timestamp chunk as int64 ns; a value outside the nanosecond range is an error."""
    try:
        return np.asarray(arr.cast(typ).cast(pa.int64()).to_numpy())
    except (pa.ArrowInvalid, OverflowError):
        pass
    ns_per = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
    unit = getattr(arr.type, "unit", "s" if pa.types.is_date32(arr.type) else "ms")
    per = 86_400 * 10**9 if pa.types.is_date32(arr.type) else ns_per[unit]
    raw = np.asarray(arr.cast(pa.int32() if pa.types.is_date32(arr.type) else pa.int64()).to_numpy(),
                     dtype=np.int64)
    lo, hi = pd.Timestamp.min.value // per + 1, pd.Timestamp.max.value // per
    i = int(np.argmax((raw < lo) | (raw > hi)))
    raise ctx.fail(col, row0 + i, f"date '{arr[i]}' {_OUT_OF_RANGE}")


def _to_float(arr: Any, ctx: Ctx, col: str, row0: int) -> np.ndarray:
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


def to_codes(arr: Any, ctx: Ctx, col: str, row0: int, names: dict[str, int]) -> np.ndarray:
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
