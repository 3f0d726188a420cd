"""The canonical table (``Table``), a value type, and frequency strings.

The bottom of the data package: it imports nothing else from it. ``canonical`` builds tables from
numpy columns, ``arrow`` from Arrow chunks, ``readers`` from files; ``writers`` writes them. See
``qkanforecast.data`` for the table's invariants and the policy for problems.
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from qkanforecast.errors import QKANForecastError

CALENDAR_FREQ = ("calendar frequencies (months, quarters, years: MS, ME, QS, YS...) are not supported: "
                 "qkanforecast needs a fixed step such as 10min, h, D or W")
_WEEK_NS = 7 * 86_400 * 10**9


def freq_to_ns(freq: str) -> int:
    """Length of a fixed frequency (``10min``, ``h``, ``D``, ``W``...) in nanoseconds.

    Weekly frequencies (``W``, ``W-SUN``...) are a fixed step of 7 days (``weekday`` checks the anchor);
    month, quarter and year frequencies have no fixed length and are refused, saying so.
    """
    try:
        offset = pd.tseries.frequencies.to_offset(freq)
    except (ValueError, TypeError):
        raise QKANForecastError(
            f"invalid frequency '{freq}'; use a fixed step such as 5min, 10min, h, D or W"
        ) from None
    if isinstance(offset, pd.offsets.Week) and offset.n >= 1:
        return int(offset.n) * _WEEK_NS
    try:
        ns = int(pd.Timedelta(offset).value)
    except (ValueError, TypeError):
        raise QKANForecastError(f"--freq {freq}: {CALENDAR_FREQ}") from None
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


def weekday(freq: str) -> int | None:
    """The weekday (Monday 0) a weekly frequency is anchored on (``W-SUN``: 6); None for other steps."""
    try:
        offset = pd.tseries.frequencies.to_offset(freq)
    except (ValueError, TypeError):
        return None
    return offset.weekday if isinstance(offset, pd.offsets.Week) else None


@dataclass(frozen=True, eq=False)
class Table:
    """A canonical table: ``frame`` (``unique_id`` categorical, ``ds``, ``y``, then any covariate columns,
    float64), its ``freq``, the ingest ``report`` and the data's time zone ``tz``. Series ``i`` is
    ``frame.iloc[offsets[i]:offsets[i + 1]]``.

    ``ds`` is always naive: UTC when ``tz`` is set (an IANA name such as ``Europe/Rome``, or ``UTC`` for
    input with bare offsets), the input's own times when ``tz`` is None (naive input without ``--tz``).
    Outputs are written in ``tz`` with its offset (``data.zones.to_zone``); local-time features (the
    calendar) read ``tz`` to convert.

    The arrays below are computed once, here; ``known_offsets`` skips the pass over the ids when the
    builder already has them. A changed table is a new one (``dataclasses.replace(table, frame=...)``).
    """

    frame: pd.DataFrame
    freq: str
    report: dict[str, Any] = field(default_factory=dict)
    tz: str | None = None
    known_offsets: InitVar[np.ndarray | None] = None
    offsets: np.ndarray = field(init=False, repr=False)  # first row of each series, then the rows: [S + 1]
    ids: list[str] = field(init=False, repr=False)  # series names in table order: [S]
    lengths: np.ndarray = field(init=False, repr=False)  # rows of each series: [S]
    values: np.ndarray = field(init=False, repr=False)  # ``y`` as float64 (a read-only view): [rows]
    ds_ns: np.ndarray = field(init=False, repr=False)  # ``ds`` as int64 nanoseconds (a view): [rows]
    step_ns: int = field(init=False, repr=False)  # ``freq`` in nanoseconds
    covariates: tuple[str, ...] = field(init=False, repr=False)  # the columns after ``y``
    _index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self, known_offsets: np.ndarray | None) -> None:
        uid = self.frame["unique_id"]
        if not isinstance(uid.dtype, pd.CategoricalDtype):
            raise QKANForecastError("Table: column 'unique_id' must be categorical; build tables with "
                                    "read_table or from_frame")
        codes = uid.array.codes  # a view of the categorical's codes (``.cat.codes`` copies them)
        if known_offsets is None:
            cuts = np.flatnonzero(codes[1:] != codes[:-1]) + 1
            known_offsets = np.concatenate([[0], cuts, [len(codes)]])
        offsets = np.asarray(known_offsets, dtype=np.int64)
        cats = uid.cat.categories
        ids = [str(cats[c]) for c in codes[offsets[:-1]]] if len(codes) else []
        derived = {"offsets": offsets, "ids": ids, "lengths": np.diff(offsets),
                   "values": self.frame["y"].to_numpy(), "ds_ns": self.frame["ds"].to_numpy().view(np.int64),
                   "step_ns": freq_to_ns(self.freq), "_index": {u: i for i, u in enumerate(ids)},
                   "covariates": tuple(str(c) for c in self.frame.columns[3:])}
        for name, value in derived.items():
            object.__setattr__(self, name, value)  # the frozen dataclass' way to set its own fields

    @property
    def n_series(self) -> int:
        return len(self.offsets) - 1

    def __contains__(self, unique_id: object) -> bool:
        """Whether the table has a series of that name."""
        return unique_id in self._index

    def index_of(self, unique_id: str) -> int:
        try:
            return self._index[unique_id]
        except KeyError:
            raise QKANForecastError(f"no series '{unique_id}' in the table") from None

    def column(self, name: str) -> np.ndarray:
        """A covariate column as float64 ``[rows]`` (a view)."""
        if name not in self.covariates:
            have = ", ".join(self.covariates) or "none"
            raise QKANForecastError(f"no covariate column '{name}' in the table (covariates: {have})")
        return self.frame[name].to_numpy(dtype=np.float64)

    def series(self, unique_id: str) -> pd.DataFrame:
        i = self.index_of(unique_id)
        return self.frame.iloc[self.offsets[i]:self.offsets[i + 1]]

    def spans(self) -> pd.DataFrame:
        """One row per series: ``unique_id, start, end, length``."""
        ds = self.frame["ds"].to_numpy()
        return pd.DataFrame({"unique_id": self.ids, "start": ds[self.offsets[:-1]],
                             "end": ds[self.offsets[1:] - 1], "length": self.lengths})
