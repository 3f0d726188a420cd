"""Ingest options and the canonical form: sort, de-duplicate, infer or check the frequency, fill or
reject gaps and NaN, check lengths, and build the ``Table`` with its ingest report (policy in
``qkanforecast.data``). Imports only ``table`` from the data package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from qkanforecast.config import Columns, Fill, OutFormat
from qkanforecast.data.table import CALENDAR_FREQ, Table, freq_to_ns, ns_to_freq, weekday
from qkanforecast.data.zones import DST_POLICY, check_zone
from qkanforecast.errors import QKANForecastError

INPUT_FORMATS = (OutFormat.CSV, OutFormat.PARQUET)  # the formats a table can be read from


@dataclass(frozen=True)
class IngestOptions(Columns):
    """How to read a table: its column names (``Columns``), then the policy. ``series_id`` names the
    series of a file without an id column (default: the file stem, or ``series`` for stdin).
    ``input_format`` is ``csv`` or ``parquet`` (default: from the suffix, else sniffed). ``fill`` and
    ``input_format`` accept the Enum members or their strings and are stored as members. ``covariates``
    are numeric columns kept next to ``y`` (exogenous covariates), under the same checks and fills.
    Column fields listed in ``named`` were named by the user and must exist; the others are defaults (a
    model's recorded names, say) that give way to the canonical names or to a detected id column."""

    wide: bool = False
    freq: str | None = None
    fill: Fill | str = Fill.NONE
    min_length: int | None = None
    series_id: str | None = None
    input_format: OutFormat | str | None = None
    covariates: tuple[str, ...] = ()
    named: tuple[str, ...] = ()  # the column fields the user named (``id_col``...): they must exist
    tz: str | None = None  # the data's zone: naive times are local times there; outputs are written in it

    def __post_init__(self) -> None:
        if self.tz is not None:
            check_zone(self.tz)
        object.__setattr__(self, "covariates", tuple(self.covariates))
        if self.covariates and self.wide:
            raise QKANForecastError("covariate columns need a long table (unique_id, ds, y, ...), not --wide")
        for name in self.covariates:
            if name in (self.id_col, self.time_col, self.target_col) or self.covariates.count(name) > 1:
                raise QKANForecastError(
                    f"covariate column '{name}' is named twice (as the id, time or target column, or twice "
                    "as a covariate)")
        try:
            object.__setattr__(self, "fill", Fill(self.fill))
        except ValueError:
            raise QKANForecastError(
                f"unknown fill '{self.fill}'; choose from {', '.join(f.value for f in Fill)}") from None
        if self.min_length is not None and self.min_length < 1:
            raise QKANForecastError(f"min_length must be at least 1, got {self.min_length}")
        if self.input_format is not None:
            if self.input_format not in INPUT_FORMATS:
                raise QKANForecastError(
                    f"unknown input format '{self.input_format}'; choose csv or parquet")
            object.__setattr__(self, "input_format", OutFormat(self.input_format))
        if self.freq is not None:
            freq_to_ns(self.freq)


def _ts(ns: int | np.integer, tz: str | None = None) -> str:
    """A timestamp for a message or the report (in ``tz``, with its offset, when given)."""
    t = pd.Timestamp(int(ns))
    return str(t if tz is None else t.tz_localize("UTC").tz_convert(tz))


_HOUR = 3_600 * 10**9
_DAY = 24 * _HOUR


def _dst_hint(on: bool, at: int, span: int) -> str:
    """A hint for naive times: an hour (or half an hour) repeated or missing in the small hours, as when the
    clocks change, may be local times over a daylight-saving change."""
    if on and span in (_HOUR, _HOUR // 2) and int(at) % _DAY < 4 * _HOUR:
        return (f"; if these are local times over a daylight-saving change, pass --tz ZONE ({DST_POLICY})")
    return ""


def canonicalise(label: str, codes: np.ndarray, categories: np.ndarray, ds: np.ndarray, y: np.ndarray,
                 options: IngestOptions, report: dict[str, Any] | None = None,
                 notes: list[str] | None = None, extra: dict[str, np.ndarray] | None = None, *,
                 tz: str | None = None, naive: bool = False) -> Table:
    """Sort, de-duplicate, check the frequency, fill or reject gaps and NaN, build the ``Table``.

    ``codes`` index ``categories`` (series names); ``ds`` is int64 ns; ``y`` float64; all ``[rows]``.
    ``extra`` holds the covariate columns (float64 ``[rows]``), which follow ``y`` through every step.
    The arrays may be modified in place. ``tz`` is the table's zone; ``naive`` says the times are naive
    without a zone, so that duplicates and gaps of an hour name ``--tz`` as a possible cause.
    """
    extra = dict(extra or {})
    report = dict(report or {})
    notes = list(notes or [])
    fill = Fill(options.fill)  # already a member (IngestOptions stores one); this tells the type checker
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
        extra = {k: v[perm] for k, v in extra.items()}
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
            read_as = report.get("columns") or {}
            unused = read_as.get("unused") if read_as.get("id") is None else None
            hint = (f"; the file has no id column and was read as one series: if one of its other columns "
                    f"({', '.join(unused)}) tells the series apart, pass it with --id-col") if unused else ""
            if (same & (d > 0)).any():  # the series' repeated span, if the data has a step
                in_series = int(np.sum(codes[dup[conflict]] == codes[i]))
                hint += _dst_hint(naive, int(ds[i]), in_series * int(np.min(d[same & (d > 0)])))
            raise QKANForecastError(
                f"{label}: series '{cats[codes[i]]}' has {n_conf} duplicate timestamp"
                f"{'s' if n_conf > 1 else ''} with different values (first: {_ts(ds[i], tz)}, "
                f"{y[i]:g} and {y[i + 1]:g}){hint}")
        keep = np.ones(len(ds), dtype=bool)
        keep[dup + 1] = False
        codes, ds, y = codes[keep], ds[keep], y[keep]
        extra = {k: v[keep] for k, v in extra.items()}
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
    jumps = ds[irregular + 1] - ds[irregular]
    off = jumps % step != 0
    if off.any():
        i = int(irregular[np.argmax(off)])
        where = (f"{label}: series '{cats[codes[i]]}' timestamp {_ts(ds[i + 1], tz)} is off the "
                 f"{ns_to_freq(step)} grid (previous {_ts(ds[i], tz)})")
        if options.freq is not None:
            data_step = ns_to_freq(int(np.min(d[same & (d > 0)])))
            raise QKANForecastError(
                f"{where}: the data's step is {data_step}, not the --freq {options.freq} given; pass --freq "
                f"{data_step} or leave --freq out")
        if step >= 28 * _DAY:
            raise QKANForecastError(f"{where}: this looks like monthly or yearly data; {CALENDAR_FREQ}")
        if tz is not None and step >= _DAY - _HOUR:  # 23 h: a day that lost its hour to summer time
            raise QKANForecastError(
                f"{where}: in {tz} a day is not a fixed step in UTC across daylight-saving changes; read "
                "daily dates without a zone (leave out --tz, or write them without an offset)")
        raise QKANForecastError(f"{where}; pass --freq or fix the timestamps")
    del same, d
    _check_anchor(label, cats, codes, ds, starts, options, tz)
    owner = np.searchsorted(starts, irregular, side="right") - 1
    gaps = np.bincount(owner, weights=jumps // step - 1, minlength=len(starts)).astype(np.int64)
    grid = lengths + gaps
    finite = bool(np.isfinite(y).all())
    bad = np.zeros(0, dtype=bool) if finite else ~np.isfinite(y)
    n_inf = 0 if finite else int(np.isinf(y).sum())
    n_bad = int(bad.sum())
    n_gaps = int(gaps.sum())
    bad_per = np.add.reduceat(bad, starts) if n_bad else np.zeros(len(starts), np.int64)
    if (n_gaps or n_bad) and fill is Fill.NONE:
        i = int(np.argmax((gaps > 0) | (bad_per > 0)))
        parts = []
        hint = ""
        if gaps[i]:
            j = int(irregular[np.argmax(owner == i)])
            parts.append(f"{int(gaps[i])} missing timestamp{'s' if gaps[i] > 1 else ''} "
                         f"(first: {_ts(ds[j] + step, tz)})")
            hint = _dst_hint(naive, int(ds[j] + step), int(gaps[i]) * step)
        if bad_per[i]:
            j = int(np.argmax(bad[starts[i]:ends[i]]))
            parts.append(f"{int(bad_per[i])} NaN or infinite value{'s' if bad_per[i] > 1 else ''} "
                         f"(first: {_ts(ds[starts[i] + j], tz)})")
        raise QKANForecastError(
            f"{label}: series '{cats[codes[starts[i]]]}' has {' and '.join(parts)}; "
            f"pass --fill ffill, linear or zero{hint}")
    problems = np.flatnonzero((gaps > 0) | (bad_per > 0))
    if n_gaps or n_bad:
        if n_gaps:
            if not len(bad):
                bad = np.zeros(len(y), dtype=bool)
            codes, ds, y, bad, starts, ends, extra = _regrid(codes, ds, y, bad, starts, grid, step, extra)
            lengths = grid
        _fill(label, cats, codes, ds, y, bad, starts, ends, fill)
    del bad
    for name, values in extra.items():
        _check_covariate(label, name, cats, codes, ds, values, starts, ends, fill)
    _check_magnitude(label, cats, codes, ds, y, starts, lengths)
    if options.min_length is not None:
        short = lengths < options.min_length
        if short.any():
            i = int(np.argmax(short))
            raise QKANForecastError(
                f"{label}: series '{cats[codes[starts[i]]]}' has {int(lengths[i])} values but at least "
                f"{options.min_length} are needed ({int(short.sum())} of {len(lengths)} series too short)")
    frame = pd.DataFrame({
        "unique_id": pd.Categorical.from_codes(codes, categories=pd.Index(cats, dtype=object)),
        "ds": ds.view("datetime64[ns]"), "y": y, **extra}, copy=False)
    freq = ns_to_freq(step)
    report.update({
        "rows": int(len(frame)), "series": int(len(starts)), "freq": freq, "freq_inferred": inferred,
        "start": _ts(ds.min(), tz), "end": _ts(ds.max(), tz),
        "min_length": int(lengths.min()), "max_length": int(lengths.max()),
        "sorted_input": in_order, "duplicates_dropped": n_dup, "fill": fill.value,
        "missing_timestamps_filled": n_gaps, "nan_filled": n_bad - n_inf, "inf_filled": n_inf,
        "series_filled": int(len(problems)),
        "filled_examples": [
            {"unique_id": str(cats[codes[starts[i]]]), "missing_timestamps": int(gaps[i]),
             "nan_or_inf": int(bad_per[i])} for i in problems[:10]],
        "notes": notes + ([f"{n_dup} identical duplicate rows dropped"] if n_dup else []),
    })
    return Table(frame=frame, freq=freq, report=report, tz=tz, known_offsets=np.append(starts, len(ds)))


def _check_anchor(label: str, cats: np.ndarray, codes: np.ndarray, ds: np.ndarray, starts: np.ndarray,
                  options: IngestOptions, tz: str | None) -> None:
    """A weekly ``--freq`` anchored on a weekday (``W-SUN``): every series starts on that weekday."""
    anchor = weekday(options.freq) if options.freq is not None else None
    if anchor is None:
        return
    first = pd.DatetimeIndex(ds[starts].view("datetime64[ns]"))
    if tz is not None:
        first = first.tz_localize("UTC").tz_convert(tz)
    wrong = np.flatnonzero(np.asarray(first.day_of_week) != anchor)
    if len(wrong):
        i = int(wrong[0])
        raise QKANForecastError(
            f"{label}: series '{cats[codes[starts[i]]]}' starts on a {first[i].day_name()} ({first[i]}), but "
            f"--freq {options.freq} steps on {_DAYS[anchor]}s; pass --freq "
            f"W-{_DAYS[int(first[i].day_of_week)][:3].upper()} or 7D")


_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_BIG = 1e100  # below this no series of up to 1e100 rows can overflow its mean or variance


def _check_magnitude(label: str, cats: np.ndarray, codes: np.ndarray, ds: np.ndarray, y: np.ndarray,
                     starts: np.ndarray, lengths: np.ndarray) -> None:
    """Every series must have a finite mean and standard deviation (its scaled values must be finite):
    a value such as 1e308 would otherwise become an all-NaN forecast. One pass unless values are huge."""
    if not len(y) or max(float(y.max()), -float(y.min())) < _BIG:  # no temporary array: panels are large
        return
    with np.errstate(over="ignore", invalid="ignore"):
        mean = np.add.reduceat(y, starts) / lengths
        dev = y - np.repeat(mean, lengths)
        var = np.add.reduceat(dev * dev, starts) / lengths
    bad = np.flatnonzero(~(np.isfinite(mean) & np.isfinite(var)))
    if len(bad):
        s = int(bad[0])
        j = int(starts[s] + np.argmax(np.abs(y[starts[s]:starts[s] + lengths[s]])))
        raise QKANForecastError(
            f"{label}: series '{cats[codes[j]]}' value {y[j]:g} at {_ts(ds[j])} is too large to scale (the "
            "series' mean or standard deviation overflows); rescale the series, e.g. to other units")


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


def _check_covariate(label: str, name: str, cats: np.ndarray, codes: np.ndarray, ds: np.ndarray,
                     values: np.ndarray, starts: np.ndarray, ends: np.ndarray, fill: Fill) -> None:
    """A covariate's NaN, infinite values and the gaps ``_regrid`` left are filled like ``y``, or are an
    error naming the series and the first time (``fill`` none)."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return
    if fill is Fill.NONE:
        j = int(np.argmax(bad))
        i = int(np.searchsorted(starts, j, side="right") - 1)
        count = int(bad[starts[i]:ends[i]].sum())
        raise QKANForecastError(
            f"{label}: covariate column '{name}' of series '{cats[codes[j]]}' has {count} missing, NaN or "
            f"infinite value{'s' if count > 1 else ''} (first: {_ts(ds[j])}); pass --fill ffill, linear or "
            "zero")
    _fill(f"{label}: covariate column '{name}'", cats, codes, ds, values, bad, starts, ends, fill)


def _regrid(codes: np.ndarray, ds: np.ndarray, y: np.ndarray, bad: np.ndarray, starts: np.ndarray,
            grid: np.ndarray, step: int, extra: dict[str, np.ndarray]
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                       dict[str, np.ndarray]]:
    """Insert the missing timestamps of every series (their ``y`` and covariates are NaN, ``y`` is marked
    ``bad``)."""
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
    new_extra = {}
    for name, values in extra.items():
        new_extra[name] = np.full(total, np.nan)
        new_extra[name][pos] = values
    return new_codes, new_ds, new_y, new_bad, new_starts, new_starts + grid, new_extra


def _fill(label: str, cats: np.ndarray, codes: np.ndarray, ds: np.ndarray, y: np.ndarray, bad: np.ndarray,
          starts: np.ndarray, ends: np.ndarray, how: Fill) -> None:
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
    if how is Fill.ZERO:
        y[rows] = 0.0
        return
    before = prev < 0
    after = nxt >= len(y)
    fill = np.empty(len(rows))
    fill[before] = y[nxt[before]]
    if how is Fill.FFILL:
        fill[~before] = y[prev[~before]]
    else:
        fill[after] = y[prev[after]]
        mid = ~before & ~after
        p, q, r = prev[mid], nxt[mid], rows[mid]
        fill[mid] = y[p] + (y[q] - y[p]) * ((r - p) / (q - p))
    y[rows] = fill
