"""The reference forecasts every model is scored against: naive and seasonal naive.

Both read the values before each forecast's first target. ``values`` holds one series, or several back
to back (a ``Table``'s ``values``); ``first`` is the row of each forecast's first target in it. Results
are in the units of ``values``: float64 ``[N, H]``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from qkanforecast.data.table import freq_to_ns

BASELINES = ("naive", "seasonal_naive")  # their names as forecast columns and model rows


def season_length(freq: str) -> int:
    """Steps per day for sub-daily data, 7 (a week) for daily data, 52 (a year) for weekly data, else 1
    (no season)."""
    step = pd.Timedelta(freq_to_ns(freq))
    day = pd.Timedelta("1D")
    if step < day and day % step == pd.Timedelta(0):
        return int(day // step)
    if step == day:
        return 7
    if step == 7 * day:
        return 52
    return 1


def season_note(freq: str) -> str:
    """What the season of ``freq`` data is, in words (the seasonal-naive forecast and the model use it)."""
    season = season_length(freq)
    step = pd.Timedelta(freq_to_ns(freq))
    if season == 1:
        return f"{freq} data has no season: the seasonal-naive forecast is the naive one"
    span = {7: "a week of days", 52: "a year of weeks (52 weeks, 364 days)"}.get(season, "a day")
    if step < pd.Timedelta("1D"):
        span = f"a day of {freq} steps"
    return f"season: {season} steps, {span}"


def naive(values: ArrayLike, first: ArrayLike, horizon: int) -> np.ndarray:
    """The last value before each first target, repeated over the horizon: ``[N, H]``."""
    rows = np.asarray(first, dtype=np.int64)
    return np.repeat(np.asarray(values)[rows - 1][:, None], horizon, axis=1)


def seasonal_naive(values: ArrayLike, first: ArrayLike, horizon: int, season: int,
                   history: ArrayLike | None = None) -> np.ndarray:
    """Each target's value one season earlier; beyond a season the last season repeats: ``[N, H]``.

    ``history`` is how many values of its own series precede each first target (default ``first``: one
    series). A forecast with less than a season of history is NaN.
    """
    rows = np.asarray(first, dtype=np.int64)
    seen = rows if history is None else np.asarray(history, dtype=np.int64)
    lag = rows[:, None] - season + (np.arange(horizon) % season)[None, :]  # [N, H]
    out = np.asarray(values, dtype=np.float64)[np.maximum(lag, 0)]
    out[seen < season] = np.nan
    return out
