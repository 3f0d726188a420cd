"""The canonical table (``Table``), the ingest options (``IngestOptions``) and frequency strings.

Shared by ``data`` (reading and writing files), ``convert`` (Arrow chunks to numpy columns) and
``validate`` (checks and the canonical form); see ``qkanforecast.data`` for the table's invariants and
the policy for problems.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from qkanforecast.errors import QKANForecastError

FILLS = ("none", "ffill", "linear", "zero")


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
        from qkanforecast.convert import _from_arrow  # convert imports this module

        options = options or IngestOptions()
        return _from_arrow(source, [pa.Table.from_pandas(frame, preserve_index=False)], options, "row", 1)
