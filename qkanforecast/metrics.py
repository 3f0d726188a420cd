"""Point-forecast metrics: MAE, RMSE, MSE, sMAPE, MASE and R², overall and per series."""

from __future__ import annotations

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


def metrics_table(
    backtest: pd.DataFrame, models: list[str], scales: dict[str, float], per_series: bool = False
) -> pd.DataFrame:
    """Score each forecast column of a backtest table (``unique_id, ds, cutoff, y, <models>...``).

    Rows where a column has no forecast (NaN: a seasonal naive without a full season of history) are left
    out of that column's scores.
    Overall MASE scales each series' absolute errors by that series' own scale before averaging, so
    busy and quiet cells weigh the same. Returns one row per model (and per series when asked).
    """
    rows = []
    for model in models:
        part = backtest[np.isfinite(backtest[model].to_numpy(float))]  # a baseline may lack history
        y, yhat = part["y"].to_numpy(float), part[model].to_numpy(float)
        row = {"unique_id": "(all)", "model": model, **score(y, yhat, 1.0)}
        with np.errstate(divide="ignore", invalid="ignore"):
            scaled = np.abs(y - yhat) / part["unique_id"].map(scales).to_numpy(float)
        finite = np.isfinite(scaled)
        row["mase"] = float(np.mean(scaled[finite])) if finite.any() else float("nan")
        rows.append(row)
    if per_series:
        for uid, part in backtest.groupby("unique_id", sort=True, observed=True):
            for model in models:
                ok = part[np.isfinite(part[model].to_numpy(float))]
                y, yhat = ok["y"].to_numpy(float), ok[model].to_numpy(float)
                rows.append({"unique_id": uid, "model": model, **score(y, yhat, scales[uid])})
    return pd.DataFrame(rows, columns=["unique_id", "model", *METRICS])
