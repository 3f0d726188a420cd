"""Rolling-origin backtests against naive and seasonal-naive baselines."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from qkanforecast.baselines import BASELINES, naive, season_length, season_note, seasonal_naive
from qkanforecast.checks import skip_short
from qkanforecast.config import BacktestConfig
from qkanforecast.covariates import Covariates
from qkanforecast.data import Table
from qkanforecast.data.zones import to_zone
from qkanforecast.forecast import Predictor, raw_covariates, series_arrays
from qkanforecast.metrics import metrics_table, naive_scale

BACKTEST = BacktestConfig()


def backtest(predictor: Predictor, table: Table, config: BacktestConfig = BACKTEST) -> pd.DataFrame:
    """Forecast the last ``windows`` origins of every series, ``step`` apart (default: the horizon).

    Without ``refit`` the registered model forecasts every window as it is. With ``refit`` a fresh model is
    trained per window, with the registered training config, on the data before that window's cutoff.
    Returns ``unique_id, ds, cutoff, y, <model>, naive, seasonal_naive`` in original units.
    """
    windows, refit = config.windows, config.refit
    step = predictor.horizon if config.step is None else config.step
    predictor.check_freq(table)
    horizon, lookback = predictor.horizon, predictor.lookback
    season = season_length(table.freq)
    need, what = backtest_need(predictor, config)
    uids, values, stamps = series_arrays(table, need, what)
    cols: dict[str, list[np.ndarray]] = {
        c: [] for c in ("unique_id", "ds", "cutoff", "y", "model", "naive", "seasonal_naive")
    }
    for k in range(windows):
        back = (windows - 1 - k) * step + horizon  # steps after the cutoff in each series
        model = predictor
        if refit:
            model = _refit(predictor, table, back)
        for uid, v in zip(uids, values, strict=True):
            if not model.scaler.has(uid):
                model.scaler.fit_series(uid, v[: len(v) - back])
        hist = np.stack([v[len(v) - back - lookback : len(v) - back] for v in values])
        cut_ds = np.array([s[len(s) - back - 1] for s in stamps])
        raw = raw_covariates(model, table, table.lengths - back, horizon)
        pred = model.predict(uids, hist, cut_ds, horizon, raw)
        for i, (uid, v, s) in enumerate(zip(uids, values, stamps, strict=True)):
            cut = len(v) - back
            cols["unique_id"].append(np.repeat(uid, horizon))
            cols["ds"].append(s[cut : cut + horizon])
            cols["cutoff"].append(np.repeat(s[cut - 1], horizon))
            cols["y"].append(v[cut : cut + horizon])
            cols["model"].append(pred[i])
            cols["naive"].append(naive(v, [cut], horizon)[0])
            cols["seasonal_naive"].append(seasonal_naive(v, [cut], horizon, season)[0])
    frame = pd.DataFrame({c: np.concatenate(parts) for c, parts in cols.items()})
    frame = frame.rename(columns={"model": predictor.column})
    return frame.sort_values(["unique_id", "cutoff", "ds"], ignore_index=True)


def backtest_need(predictor: Predictor, config: BacktestConfig = BACKTEST) -> tuple[int, str]:
    """The steps a series needs for the backtest of ``config``, and what needs them (for messages)."""
    step = predictor.horizon if config.step is None else config.step
    need = predictor.lookback + predictor.horizon + (config.windows - 1) * step
    what = (f"{config.windows} backtest windows of lookback {predictor.lookback} + horizon "
            f"{predictor.horizon}, {step} apart,")
    return need, what


def _refit(predictor: Predictor, table: Table, back: int) -> Predictor:
    """Train the registered config afresh on every series without its last ``back`` steps."""
    from qkanforecast.config import Settings
    from qkanforecast.train import fit_table

    frame = table.frame
    keep = frame.groupby("unique_id", sort=False, observed=True).cumcount(ascending=False) >= back
    cut = replace(table, frame=frame[keep.to_numpy()].reset_index(drop=True))
    m = predictor.entry.manifest
    fitted = fit_table(cut, Settings(m.model, m.data, m.train))
    refitted = Predictor(predictor.entry, fitted.model, fitted.scaler)
    refitted.covariates = Covariates(m.data, fitted.covariates)  # scaled as this fit saw them
    return refitted


@dataclass
class Evaluation:
    backtest: pd.DataFrame  # unique_id, ds, cutoff, y, <model>, naive, seasonal_naive
    metrics: pd.DataFrame  # unique_id, model, mae, rmse, mse, smape, mase, r2
    notes: list[str] = field(default_factory=list)  # caveats a user should read next to the numbers
    skipped: list[str] = field(default_factory=list)  # series too short for the backtest (not strict)


def evaluate(
    predictor: Predictor,
    table: Table,
    config: BacktestConfig = BACKTEST,
    per_series: bool = False,
    strict: bool = True,
) -> Evaluation:
    """The backtest table and its metrics (model, naive, seasonal naive; overall and per series).

    Notes say when backtest targets fall on data the model was trained or validated on. A series too
    short for the backtest is an error when ``strict``, else it is skipped and named in a note. The
    backtest's ``ds`` and ``cutoff`` are in the table's zone when it has one.
    """
    trained = set(predictor.entry.manifest.scaler.unique_id)
    notes = []
    need, what = backtest_need(predictor, config)
    table, skipped, note = skip_short(table, need, what, strict)
    if note:
        notes.append(note)
    bt = backtest(predictor, table, config)
    trained_until = predictor.entry.manifest.schema.trained_until
    if not config.refit and trained_until is not None:
        seen = bt["unique_id"].isin(trained).to_numpy() & (bt["ds"] <= pd.Timestamp(trained_until)).to_numpy()
        if seen.any():
            until = f"{trained_until} UTC" if table.tz else trained_until  # the manifest keeps UTC
            notes.append(
                f"{int(seen.sum())} of {len(bt)} backtest targets are on or before {until}, data the "
                f"model was trained or validated on; train with --test-size for an out-of-sample backtest"
            )
    season = season_length(table.freq)
    if table.step_ns >= 86_400 * 10**9:  # the season of daily and weekly data is a choice: say which
        notes.append(season_note(table.freq))
    first_cut = bt.groupby("unique_id", sort=False)["cutoff"].min()
    scales = {}
    for uid, v, s in zip(*series_arrays(table, 1, "scoring"), strict=True):
        scales[uid] = naive_scale(v[s <= first_cut[uid].to_datetime64()], season)
    models = [predictor.column, *BASELINES]
    return Evaluation(to_zone(bt, table.tz), metrics_table(bt, models, scales, per_series), notes, skipped)
