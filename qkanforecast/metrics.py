"""Point-forecast metrics: MAE, RMSE, MSE, sMAPE, MASE and R², overall and per series."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

METRICS = ("mae", "rmse", "mse", "smape", "mase", "r2")


def mae(y: np.ndarray, yhat: np.ndarray) -> float:
    return float(np.mean(np.abs(y - yhat)))


def mse(y: np.ndarray, yhat: np.ndarray) -> float:
    return float(np.mean((y - yhat) ** 2))


def rmse(y: np.ndarray, yhat: np.ndarray) -> float:
    return float(np.sqrt(mse(y, yhat)))


def smape(y: np.ndarray, yhat: np.ndarray) -> float:
    """Symmetric MAPE in percent (0..200); a term whose actual and forecast are both 0 counts as 0."""
    denom = np.abs(y) + np.abs(yhat)
    ratio = np.divide(2.0 * np.abs(y - yhat), denom, out=np.zeros_like(denom, dtype=float), where=denom > 0)
    return float(100.0 * np.mean(ratio))


def r2(y: np.ndarray, yhat: np.ndarray) -> float:
    """Coefficient of determination; NaN when the actuals are constant."""
    ss_tot = float(np.sum((y - np.mean(y)) ** 2))
    if ss_tot == 0.0:
        return float("nan")
    return 1.0 - float(np.sum((y - yhat) ** 2)) / ss_tot


def mase(y: np.ndarray, yhat: np.ndarray, scale: float) -> float:
    """MAE divided by ``scale``, the in-sample MAE of the seasonal-naive forecast; NaN if it is 0."""
    if not np.isfinite(scale) or scale <= 0:
        return float("nan")
    return mae(y, yhat) / scale


def naive_scale(history: np.ndarray, season: int) -> float:
    """In-sample MAE of the seasonal-naive forecast (season 1 = naive), the MASE denominator."""
    m = season if len(history) > season else 1
    if len(history) <= m:
        return float("nan")
    return float(np.mean(np.abs(history[m:] - history[:-m])))


def score(y: np.ndarray, yhat: np.ndarray, scale: float) -> dict[str, float]:
    """All metrics of one forecast column against the actuals (NaN everywhere when there are none)."""
    if len(y) == 0:
        return dict.fromkeys(METRICS, float("nan"))
    return {
        "mae": mae(y, yhat),
        "rmse": rmse(y, yhat),
        "mse": mse(y, yhat),
        "smape": smape(y, yhat),
        "mase": mase(y, yhat, scale),
        "r2": r2(y, yhat),
    }


@dataclass(frozen=True)
class Sums:
    """The sums behind one column's overall metrics, so that parts scored apart (buckets, on any engine)
    combine into the same table: ``a + b`` in a fixed order. The spread of ``y`` combines exactly as in
    Chan et al.'s parallel variance (count, mean, sum of squared deviations), not as ``sum(y**2)``,
    which cancels badly."""

    n: int = 0
    abs_err: float = 0.0  # sum |y - yhat|
    sq_err: float = 0.0  # sum (y - yhat)^2
    smape: float = 0.0  # sum of the sMAPE terms (0..2)
    mean_y: float = 0.0
    m2_y: float = 0.0  # sum (y - mean_y)^2
    scaled: float = 0.0  # sum of |y - yhat| / scale over the rows with a finite scale
    scaled_n: int = 0

    def __add__(self, other: Sums) -> Sums:
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean_y - self.mean_y
        return Sums(n, self.abs_err + other.abs_err, self.sq_err + other.sq_err, self.smape + other.smape,
                    self.mean_y + delta * other.n / n,
                    self.m2_y + other.m2_y + delta * delta * self.n * other.n / n,
                    self.scaled + other.scaled, self.scaled_n + other.scaled_n)

    def metrics(self) -> dict[str, float]:
        """MAE, RMSE, MSE, sMAPE, MASE (mean scaled error) and R² (NaN where undefined)."""
        if self.n == 0:
            return dict.fromkeys(METRICS, float("nan"))
        mse_ = self.sq_err / self.n
        return {"mae": self.abs_err / self.n, "rmse": float(np.sqrt(mse_)), "mse": mse_,
                "smape": 100.0 * (self.smape / self.n),
                "mase": self.scaled / self.scaled_n if self.scaled_n else float("nan"),
                "r2": 1.0 - self.sq_err / self.m2_y if self.m2_y != 0.0 else float("nan")}


def sums(y: np.ndarray, yhat: np.ndarray, scale: np.ndarray) -> Sums:
    """The ``Sums`` of one forecast column; ``scale`` is each row's MASE denominator."""
    if len(y) == 0:
        return Sums()
    err = y - yhat
    denom = np.abs(y) + np.abs(yhat)
    ratio = np.divide(2.0 * np.abs(err), denom, out=np.zeros_like(denom, dtype=float), where=denom > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.abs(err) / scale
    finite = np.isfinite(scaled)
    mean_y = float(np.mean(y))
    return Sums(len(y), float(np.sum(np.abs(err))), float(np.sum(err**2)), float(np.sum(ratio)), mean_y,
                float(np.sum((y - mean_y) ** 2)), float(np.sum(scaled[finite])), int(finite.sum()))


def column_sums(backtest: pd.DataFrame, models: list[str], scales: dict[str, float]) -> dict[str, Sums]:
    """Per forecast column of a backtest table, its ``Sums``; rows where the column has no forecast (NaN:
    a seasonal naive without a full season of history) are left out of that column."""
    out = {}
    for model in models:
        part = backtest[np.isfinite(backtest[model].to_numpy(float))]  # a baseline may lack history
        out[model] = sums(part["y"].to_numpy(float), part[model].to_numpy(float),
                          part["unique_id"].map(scales).to_numpy(float))
    return out


def series_rows(backtest: pd.DataFrame, models: list[str], scales: dict[str, float]) -> list[dict[str, Any]]:
    """One metrics row per series (sorted by id) and model."""
    rows = []
    for uid, part in backtest.groupby("unique_id", sort=True, observed=True):
        for model in models:
            ok = part[np.isfinite(part[model].to_numpy(float))]
            y, yhat = ok["y"].to_numpy(float), ok[model].to_numpy(float)
            rows.append({"unique_id": uid, "model": model, **score(y, yhat, scales[uid])})
    return rows


def combine(parts: list[dict[str, Sums]], models: list[str], series: list[dict[str, Any]] | None = None
            ) -> pd.DataFrame:
    """The metrics table from the ``column_sums`` of parts, added in their order (overall rows first),
    and the per-series rows of every part (sorted by id), if any."""
    rows = []
    for model in models:
        total = Sums()
        for part in parts:
            total = total + part[model]
        rows.append({"unique_id": "(all)", "model": model, **total.metrics()})
    if series:
        rows.extend(sorted(series, key=lambda r: str(r["unique_id"])))  # stable: models keep their order
    return pd.DataFrame(rows, columns=["unique_id", "model", *METRICS])


def metrics_table(
    backtest: pd.DataFrame, models: list[str], scales: dict[str, float], per_series: bool = False
) -> pd.DataFrame:
    """Score each forecast column of a backtest table (``unique_id, ds, cutoff, y, <models>...``).

    Rows where a column has no forecast (NaN: a seasonal naive without a full season of history) are left
    out of that column's scores.
    Overall MASE scales each series' absolute errors by that series' own scale before averaging, so
    busy and quiet cells weigh the same. Returns one row per model (and per series when asked).
    """
    series = series_rows(backtest, models, scales) if per_series else None
    return combine([column_sums(backtest, models, scales)], models, series)
