"""Exogenous covariates and holidays: the columns a model reads besides its target, their scaling, and
their values at the input and forecast steps of windows.

A model trained with ``--hist-exog a --futr-exog b --static s --holidays dates.csv`` sees (after its
target, in this order) at every input step ``a, b, s, holiday`` and at every forecast step
``b, s, holiday`` (after the calendar). ``a`` is known only up to the forecast origin, ``b`` ahead of it
(``forecast --futr FILE`` supplies it), ``s`` is one value per series, ``holiday`` is 1 on the listed
dates. Columns are standardised by one mean and standard deviation each, fitted on the training rows of
every series (so a series never seen in training, and a static value, are scaled the same way).

Notation: N windows, L lookback, H horizon, P past covariates, F future covariates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from qkanforecast.config import DataConfig
from qkanforecast.data import Table
from qkanforecast.errors import QKANForecastError

if TYPE_CHECKING:
    from qkanforecast.distributed import Dist

_DAY_NS = 86_400 * 10**9


@dataclass(frozen=True)
class CovariateStats:
    """Per covariate column (``DataConfig.covariates`` order): ``(v - loc) / scale``."""

    columns: list[str]
    loc: list[float]
    scale: list[float]

    def __post_init__(self) -> None:
        if not len(self.columns) == len(self.loc) == len(self.scale):
            raise QKANForecastError(
                f"covariate statistics: {len(self.columns)} columns but {len(self.loc)} locations and "
                f"{len(self.scale)} scales")
        if not all(math.isfinite(v) for v in self.loc) or not all(
                math.isfinite(v) and v > 0 for v in self.scale):
            raise QKANForecastError("covariate statistics: locations must be finite and scales positive")


def sizes(data: DataConfig) -> tuple[int, int]:
    """``(P, F)``: the covariates at every input step and at every forecast step."""
    holiday = int(bool(data.holidays))
    return (len(data.hist_exog) + len(data.futr_exog) + len(data.static) + holiday,
            len(data.futr_exog) + len(data.static) + holiday)


def check_static(table: Table, columns: list[str]) -> None:
    """Each static column holds one value per series."""
    off = table.offsets
    for name in columns:
        v = table.column(name)
        first = np.repeat(v[off[:-1]], table.lengths)
        differs = np.flatnonzero(v != first)
        if len(differs):
            i = int(np.searchsorted(off, differs[0], side="right") - 1)
            raise QKANForecastError(
                f"static column '{name}' changes within series '{table.ids[i]}' (at "
                f"{table.frame['ds'].iloc[int(differs[0])]}); a static covariate holds one value per series")


def fit_stats(table: Table, data: DataConfig, train_end: np.ndarray,
              dist: Dist | None = None) -> CovariateStats | None:
    """Mean and standard deviation of every covariate column over the training rows of every series
    (a constant column gets scale 1); ``None`` without covariates. Under ``dist`` (torchrun), over the
    training rows of every rank: the sums and then the squared deviations from the common mean are added
    over ranks in rank order, so every rank gets the same statistics (equal to one process' up to
    rounding)."""
    if not data.covariates:
        return None
    check_static(table, data.static)
    off = table.offsets
    rows = np.concatenate([np.arange(a, a + int(n)) for a, n in zip(off[:-1], train_end, strict=True)])
    loc, scale = [], []
    for name in data.covariates:
        v = table.column(name)[rows]
        if dist is None:
            mean, std = float(v.mean()), float(v.std())
        else:
            total, count = dist.sum([float(v.sum()), float(v.size)])
            mean = total / count
            std = math.sqrt(dist.sum([float(np.square(v - mean).sum())])[0] / count)
        if not (math.isfinite(mean) and math.isfinite(std)):
            raise QKANForecastError(
                f"covariate column '{name}' is too large to scale (mean {mean}, std {std})")
        loc.append(mean)
        scale.append(std if std > 0 else 1.0)
    return CovariateStats(list(data.covariates), loc, scale)


def holiday_flags(ns: np.ndarray, holidays: list[str]) -> np.ndarray:
    """1.0 where the timestamp's date (int64 ns, any shape) is one of ``holidays`` (ISO dates), else 0."""
    days = np.array([np.datetime64(d, "D").astype(np.int64) for d in holidays], dtype=np.int64)
    return np.isin(np.floor_divide(ns, _DAY_NS), days).astype(np.float32)


def read_holidays(path: str) -> list[str]:
    """ISO dates from a file with one date per line (a header line such as ``date`` or ``ds`` is allowed;
    further comma-separated columns, such as a holiday's name, are ignored)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.split(",")[0].strip().strip('"') for line in f]
    except OSError as exc:
        raise QKANForecastError(f"{path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise QKANForecastError(f"{path}: not a text file of dates") from None
    dates = []
    for number, text in enumerate(lines, 1):
        if not text or (number == 1 and not text[:1].isdigit()):
            continue  # blank lines and the header
        try:
            dates.append(str(np.datetime64(text[:10], "D")))
        except ValueError:
            raise QKANForecastError(
                f"{path}: line {number}: '{text[:40]}' is not a date such as 2013-12-25") from None
    if not dates:
        raise QKANForecastError(f"{path}: no dates")
    return sorted(set(dates))


@dataclass(frozen=True)
class Covariates:
    """Scaling and layout of a model's covariates (``DataConfig`` columns, fitted ``CovariateStats``)."""

    data: DataConfig
    stats: CovariateStats | None

    @property
    def any(self) -> bool:
        return bool(self.data.covariates or self.data.holidays)

    def _scaled(self, values: np.ndarray, columns: list[str]) -> np.ndarray:
        if not columns:
            return values.astype(np.float32)
        assert self.stats is not None
        index = [self.stats.columns.index(c) for c in columns]
        loc = np.asarray(self.stats.loc, dtype=np.float64)[index]
        scale = np.asarray(self.stats.scale, dtype=np.float64)[index]
        return ((values - loc) / scale).astype(np.float32)

    def windows(self, past: np.ndarray, future: np.ndarray, static: np.ndarray, times: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """The covariates of windows: ``past [N, L, P]`` and ``future [N, H, F]`` float32.

        ``past`` holds the historical and future columns at the input steps ``[N, L, hist + futr]``,
        ``future`` the future columns at the forecast steps ``[N, H, futr]``, ``static`` ``[N, static]``,
        all in original units; ``times`` the timestamps of the input and forecast steps ``[N, L + H]``.
        """
        d = self.data
        n, lookback = past.shape[0], past.shape[1]
        horizon = times.shape[1] - lookback
        st = self._scaled(static, d.static)  # [N, s]
        parts_past = [self._scaled(past, [*d.hist_exog, *d.futr_exog]),
                      np.broadcast_to(st[:, None], (n, lookback, st.shape[1]))]
        parts_future = [self._scaled(future, d.futr_exog),
                        np.broadcast_to(st[:, None], (n, horizon, st.shape[1]))]
        if d.holidays:
            flags = holiday_flags(times, d.holidays)[..., None]  # [N, L + H, 1]
            parts_past.append(flags[:, :lookback])
            parts_future.append(flags[:, lookback:])
        return (np.concatenate(parts_past, axis=-1).astype(np.float32),
                np.concatenate(parts_future, axis=-1).astype(np.float32))
