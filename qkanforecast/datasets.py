"""The data sets of the paper reproduction and of ``sample_data/``, as canonical tables.

- ``synthetic(name)``: the paper's two synthetic series (``qkanforecast.synthetic``), min-max scaled to
  [-1, 1], on a stand-in hourly clock.
- ``milan_internet(folder)``: 10-minute internet activity of Milan squares 4556 and 5161, from the
  ``ts_full_square_<id>.csv`` files of ``milan_internet_10min/`` (columns ``square_id``, ``time``,
  ``internet``); ``days`` keeps only the first days.
- ``milan_cdr_hourly(folder)``: the complete lines (1,488 hourly values, 62 days) of ``matrixTS.csv`` in
  ``milan_cdr_hourly/``, named by ``ID_labels.csv``, hourly from 2013-11-01 00:00.

Provenance and licence of the Milan files: ``sample_data/README.md`` and ``../shared/data/*/SOURCE.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from qkanforecast.data import IngestOptions, Table, from_frame
from qkanforecast.errors import QKANForecastError
from qkanforecast.synthetic import as_frame, bessel_j2, damped_shm

SYNTHETIC: dict[str, Callable[..., np.ndarray]] = {"damped_shm": damped_shm, "bessel_j2": bessel_j2}
MILAN_SQUARES = (4556, 5161)
INTERNET_STEPS_PER_DAY = 144  # 10-minute slots
CDR_LENGTH = 1488  # 62 days x 24 h: a complete line of matrixTS.csv
CDR_START = "2013-11-01 00:00"


def synthetic(name: str) -> Table:
    """``damped_shm`` or ``bessel_j2`` as a one-series table named after itself."""
    if name not in SYNTHETIC:
        raise QKANForecastError(f"unknown synthetic series {name!r}; choose from {', '.join(SYNTHETIC)}")
    return from_frame(as_frame(SYNTHETIC[name](), name), source=name)


def milan_internet(folder: str | Path, squares: tuple[int, ...] = MILAN_SQUARES,
                   days: int | None = None) -> Table:
    """Internet activity per 10 minutes of ``squares`` (all of it, or the first ``days`` days)."""
    frames = []
    for square in squares:
        raw = pd.read_csv(Path(folder) / f"ts_full_square_{square}.csv")
        if days is not None:
            raw = raw.iloc[: days * INTERNET_STEPS_PER_DAY]
        frames.append(pd.DataFrame({"unique_id": raw["square_id"].astype(str),
                                    "ds": pd.to_datetime(raw["time"]), "y": raw["internet"].astype(float)}))
    return from_frame(pd.concat(frames, ignore_index=True), IngestOptions(), source="milan_internet")


def milan_cdr_hourly(folder: str | Path) -> Table:
    """The hourly traffic load (CDR counts) of every complete square: 211 series x 1,488 hours."""
    folder = Path(folder)
    ids = [str(int(float(v))) for v in (folder / "ID_labels.csv").read_text().split()]
    lines = (folder / "matrixTS.csv").read_text().splitlines()
    ds = pd.date_range(CDR_START, periods=CDR_LENGTH, freq="h")
    frames = []
    for uid, line in zip(ids, lines, strict=True):
        values = np.array([float(v) for v in line.strip().strip(",").split(",")])
        if len(values) == CDR_LENGTH:
            frames.append(pd.DataFrame({"unique_id": uid, "ds": ds, "y": values}))
    return from_frame(pd.concat(frames, ignore_index=True), IngestOptions(), source="milan_cdr_hourly")
