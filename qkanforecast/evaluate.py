"""Rolling-origin backtests against naive and seasonal-naive baselines."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from qkanforecast.baselines import BASELINES, naive, season_length, season_note, seasonal_naive
from qkanforecast.checks import short_note, skip_short
from qkanforecast.config import BacktestConfig
from qkanforecast.covariates import Covariates
from qkanforecast.data import Table
from qkanforecast.data.zones import to_zone
from qkanforecast.errors import QKANForecastError
from qkanforecast.forecast import Predictor, raw_covariates, series_arrays
from qkanforecast.metrics import Sums, column_sums, naive_scale, series_rows
from qkanforecast.metrics import combine as combine_metrics

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


@dataclass
class Scored:
    """One part of the series (a bucket) backtested and scored: what combines into the metrics table."""

    backtest: pd.DataFrame  # in the table's zone
    sums: dict[str, Sums]  # per forecast column
    series_rows: list[dict[str, Any]] | None  # per-series metric rows, when asked for
    series: int  # series backtested
    rows: int  # backtest rows
    seen: int  # of them, targets on data the model was trained or validated on
    cutoffs: list[Any]  # the distinct cutoffs
    skipped: list[str]  # series too short for the backtest
    freq: str
    tz: str | None


def score_part(
    predictor: Predictor,
    table: Table,
    config: BacktestConfig = BACKTEST,
    per_series: bool = False,
    strict: bool = True,
    trained: set[str] | None = None,
    bucket: bool = False,
) -> Scored:
    """Backtest and score the series of ``table``: all of them, or one ``bucket`` of a partitioned table
    (whose series may all be too short: the other buckets may not be). ``trained`` names the series the
    model was trained on (default: those in its manifest)."""
    if trained is None:
        trained = set(predictor.entry.manifest.scaler.unique_id)
    need, what = backtest_need(predictor, config)
    if bucket and not strict and len(table.lengths) and (table.lengths < need).all():
        table, skipped = replace(table, frame=table.frame.iloc[:0]), list(table.ids)
    else:
        table, skipped, _ = skip_short(table, need, what, strict)
    bt = backtest(predictor, table, config)
    seen = 0
    trained_until = predictor.entry.manifest.schema.trained_until
    if not config.refit and trained_until is not None:
        on_trained = bt["unique_id"].isin(trained).to_numpy()
        seen = int((on_trained & (bt["ds"] <= pd.Timestamp(trained_until)).to_numpy()).sum())
    season = season_length(table.freq)
    first_cut = bt.groupby("unique_id", sort=False)["cutoff"].min()
    scales = {}
    for uid, v, s in zip(*series_arrays(table, 1, "scoring"), strict=True):
        scales[uid] = naive_scale(v[s <= first_cut[uid].to_datetime64()], season)
    models = [predictor.column, *BASELINES]
    return Scored(
        to_zone(bt, table.tz),
        column_sums(bt, models, scales),
        series_rows(bt, models, scales) if per_series else None,
        int(bt["unique_id"].nunique()),
        len(bt),
        seen,
        sorted(bt["cutoff"].unique().tolist()),
        skipped,
        table.freq,
        table.tz,
    )


def combine(predictor: Predictor, parts: list[Scored], backtest: pd.DataFrame,
            config: BacktestConfig = BACKTEST) -> Evaluation:
    """The metrics table and notes of scored parts, summed in their order, next to ``backtest``."""
    models = [predictor.column, *BASELINES]
    skipped = [u for p in parts for u in p.skipped]
    if parts and not any(p.series for p in parts):
        need, what = backtest_need(predictor, config)
        raise QKANForecastError(f"series {skipped[0]!r} is too short; {what} needs at least {need} steps; "
                                f"all {len(skipped)} series are shorter")
    notes = [short_note(skipped, *backtest_need(predictor, config))] if skipped else []
    per_series = bool(parts) and parts[0].series_rows is not None
    rows = [row for p in parts for row in p.series_rows or []]
    metrics = combine_metrics([p.sums for p in parts], models, rows if per_series else None)
    seen, total = sum(p.seen for p in parts), sum(p.rows for p in parts)
    tz, freq = (parts[0].tz, parts[0].freq) if parts else (None, predictor.freq)
    if seen:
        trained_until = predictor.entry.manifest.schema.trained_until
        until = f"{trained_until} UTC" if tz else trained_until  # the manifest keeps UTC
        notes.append(
            f"{seen} of {total} backtest targets are on or before {until}, data the "
            f"model was trained or validated on; train with --test-size for an out-of-sample backtest"
        )
    if pd.Timedelta(pd.tseries.frequencies.to_offset(freq)).value >= 86_400 * 10**9:
        notes.append(season_note(freq))  # the season of daily and weekly data is a choice: say which
    return Evaluation(backtest, metrics, notes, skipped)


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
    part = score_part(predictor, table, config, per_series, strict)
    return combine(predictor, [part], part.backtest, config)
