"""Covariates computed from timestamps: the calendar every model sees at each input and forecast step.

Notation: N windows, L lookback, H horizon, C = CALENDAR_SIZE.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CALENDAR_SIZE = 4  # sin and cos of the time of day, sin and cos of the time of week
_DAY_NS = 86_400 * 10**9
_MONDAY = 4  # 1970-01-01, day 0 of the epoch, was a Thursday: (day + 3) % 7 counts from Monday


def local_time(ns: np.ndarray, tz: str | None) -> np.ndarray:
    """UTC timestamps (int64 ns, any shape) as the wall-clock time of zone ``tz`` (int64 ns), so that a
    day starts at local midnight on both sides of a daylight-saving change; ``None``: unchanged."""
    ns = np.asarray(ns, dtype=np.int64)
    if tz is None:
        return ns
    index = pd.DatetimeIndex(ns.ravel().view("datetime64[ns]"), tz="UTC").tz_convert(tz).tz_localize(None)
    return np.asarray(index.as_unit("ns").asi8).reshape(ns.shape)


def calendar(ns: np.ndarray, tz: str | None = None) -> np.ndarray:
    """Timestamps (int64 ns since the epoch, any shape ``[...]``) -> ``[..., 4]`` float32: the time of
    day and the time of week as points on two circles, so 23:50 is next to 00:00 and Sunday to Monday.

    Naive timestamps are read as they are; with ``tz`` they are UTC and read as that zone's wall clock.
    """
    ns = local_time(ns, tz)
    day, within = np.divmod(ns, _DAY_NS)
    tod = within / _DAY_NS  # [0, 1)
    tow = ((day + _MONDAY - 1) % 7 + tod) / 7  # [0, 1), 0 = Monday 00:00
    a, b = 2 * np.pi * tod, 2 * np.pi * tow
    return np.stack([np.sin(a), np.cos(a), np.sin(b), np.cos(b)], axis=-1).astype(np.float32)


def step_times(first_target: np.ndarray, step_ns: int, start: int, stop: int) -> np.ndarray:
    """``[N, stop - start]`` int64 ns: the times ``first_target + k * step`` for ``k`` in ``[start, stop)``
    (negative ``k`` are the input steps of a window, ``0 .. H-1`` its forecast steps)."""
    k = np.arange(start, stop, dtype=np.int64) * np.int64(step_ns)
    return np.asarray(first_target, dtype=np.int64)[:, None] + k[None, :]
