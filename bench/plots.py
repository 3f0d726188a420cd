"""The reproduction's plots, drawn by the product's own figures (``qkanforecast.plots``, the same functions
as ``qkanforecast plot``): the forecasts of the test part as a backtest (truth and every model for the
first series, and the MAE by step ahead), and the learned edge functions of a trained QKAN-LSTM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.experiments import DataSpec
from qkanforecast.activations import EdgeCurves
from qkanforecast.plots import activations_figure, backtest_figure, save_figure

DPI = 110


def forecast_frame(data: DataSpec, forecasts: dict[str, dict[str, Any]], span: int) -> pd.DataFrame:
    """The first ``span`` test windows of the first series as a backtest table ``unique_id, ds, cutoff, y``
    and one column per model (every model forecasts the same test windows)."""
    first = next(iter(forecasts.values()))
    uid = first["unique_id"][0]
    sel = np.flatnonzero(first["unique_id"] == uid)[:span]
    start = first["ds"][sel]  # first target time of each window: [N]
    steps = np.arange(data.horizon)
    frame: dict[str, Any] = {
        "unique_id": str(uid),
        "ds": _x(data, start[:, None], steps[None, :]).ravel(),
        "cutoff": np.repeat(_x(data, start, np.array(-1)), data.horizon),
        "y": first["y"][sel].ravel(),
    }
    for label, f in forecasts.items():
        mine = np.flatnonzero(f["unique_id"] == uid)[:span]
        if not np.array_equal(f["ds"][mine], start):
            raise ValueError(f"{label} forecasts other test windows than {next(iter(forecasts))}")
        frame[label] = f["yhat"][mine].ravel()
    return pd.DataFrame(frame)


def plot_forecasts(data: DataSpec, forecasts: dict[str, dict[str, Any]], path: Path, span: int) -> None:
    frame = forecast_frame(data, forecasts, span)
    series = "" if data.synthetic else f", series {frame['unique_id'].iloc[0]}"
    title = f"{data.title}: test part{series}"
    fig = backtest_figure(frame, [frame["unique_id"].iloc[0]], ylabel=data.units, title=title)
    save_figure(fig, path, DPI)


def _x(data: DataSpec, ds: np.ndarray, step: np.ndarray) -> np.ndarray:
    """The time of ``step`` steps after ``ds``; a sample number for the synthetic sets (their stand-in
    clock is hourly: row k is sample k)."""
    if data.synthetic:
        return ((ds - np.datetime64("2000-01-01")) // np.timedelta64(1, "h")).astype(int) + step
    delta = np.timedelta64(10, "m") if data.source == "milan_internet" else np.timedelta64(1, "h")
    return ds + delta * step


def plot_activations(curves: list[EdgeCurves], title: str, path: Path) -> None:
    save_figure(activations_figure(curves, title), path, DPI)
