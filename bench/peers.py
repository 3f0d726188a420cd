"""Run one peer forecaster over the leaderboard protocol; called by bench/leaderboard.py, never imported.

Runs under the benchmark-only environment ``.venv-peers`` (``make peers``: torch CPU, neuralforecast,
statsforecast), which has no qkanforecast: this script only fits and forecasts; the leaderboard scores the
backtest it writes with qkanforecast's own metrics, exactly as ``qkanforecast evaluate`` scores ours.

Protocol (the leaderboard passes it in): each series' last ``horizon + step * (windows - 1)`` steps are the
test part; the model is fitted once on everything before it and then forecasts ``windows`` origins ``step``
apart inside the test part without refitting, each origin seeing the actual data up to it.

- NeuralForecast LSTM, NHITS, KAN: documented defaults (learning rate, batch sizes, architecture), a fixed
  ``max_steps``, input windows of ``--input-size`` steps, each window normalised by NeuralForecast's
  temporal ``robust`` scaler (LSTM's documented default; NHITS and KAN default to none). Fitted with
  ``NeuralForecast.fit`` on the training part, then ``cross_validation(use_fitted=True)`` (no refit).
- statsforecast AutoETS (season: one day) and MSTL (the ``--seasons`` given, trend by its default
  AutoETS): ``StatsForecast.cross_validation(refit=False)`` fits on the training part and moves the fitted
  model forward through the windows (``--history``: only the last steps before each origin, its
  ``input_size``; MSTL decomposes that history again at every origin).

Writes ``<out>/backtest.parquet`` (``unique_id, ds, cutoff, y, <contender>``) and ``<out>/meta.json``
(parameters, train and forecast seconds, versions, settings).

Example::

    .venv-peers/bin/python bench/peers.py build/leaderboard/data/milan-4556.parquet --contender nhits \\
        --freq 10min --horizon 144 --windows 7 --step 144 --season 144 --seasons 144,1008 \\
        --input-size 288 --max-steps 500 --out /tmp/nhits
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

NEURAL = ("nf-lstm", "nf-nhits", "nf-kan")
STATS = ("autoets", "mstl")
CONTENDERS = NEURAL + STATS
SCALER = "robust"  # NeuralForecast's temporal (per input window) scaler, LSTM's documented default


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="canonical Parquet table (unique_id, ds, y)")
    p.add_argument("--contender", choices=CONTENDERS, required=True)
    p.add_argument("--freq", required=True, help="pandas frequency of the table, e.g. 10min or h")
    p.add_argument("--horizon", type=int, required=True)
    p.add_argument("--windows", type=int, required=True)
    p.add_argument("--step", type=int, required=True)
    p.add_argument("--season", type=int, required=True, help="one day in steps (AutoETS' season)")
    p.add_argument("--seasons", default="", help="MSTL seasons in steps, comma-separated")
    p.add_argument("--input-size", type=int, default=0, help="NeuralForecast input window in steps")
    p.add_argument("--history", type=int, default=0, help="statsforecast: steps seen at each origin (0: all)")
    p.add_argument("--max-steps", type=int, default=500, help="NeuralForecast training steps")
    p.add_argument("--seed", type=int, default=1, help="NeuralForecast random_seed (its default is 1)")
    p.add_argument("--out", required=True, help="output folder")
    return p.parse_args(argv)


def test_size(args: argparse.Namespace) -> int:
    return args.horizon + args.step * (args.windows - 1)


def read(path: str) -> pd.DataFrame:
    df = pd.read_parquet(path, columns=["unique_id", "ds", "y"])
    df["unique_id"] = df["unique_id"].astype(str)
    return df.sort_values(["unique_id", "ds"], ignore_index=True)


def training_part(df: pd.DataFrame, size: int) -> pd.DataFrame:
    """Every series without its last ``size`` steps."""
    back = df.groupby("unique_id", sort=False).cumcount(ascending=False)
    return df[back.to_numpy() >= size].reset_index(drop=True)


def run_neural(args: argparse.Namespace, df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    import torch
    from neuralforecast import NeuralForecast
    from neuralforecast.models import KAN, LSTM, NHITS

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    cls = {"nf-lstm": LSTM, "nf-nhits": NHITS, "nf-kan": KAN}[args.contender]
    quiet = {"enable_progress_bar": False, "logger": False, "enable_model_summary": False}
    model = cls(
        h=args.horizon,
        input_size=args.input_size,
        max_steps=args.max_steps,
        scaler_type=SCALER,
        random_seed=args.seed,
        accelerator="cpu",
        alias=args.contender,
        **quiet,
    )
    nf = NeuralForecast(models=[model], freq=args.freq)
    start = time.perf_counter()
    nf.fit(training_part(df, test_size(args)), val_size=0)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    cv = nf.cross_validation(df, n_windows=args.windows, step_size=args.step, use_fitted=True)
    forecast_s = time.perf_counter() - start
    params = sum(p.numel() for p in nf.models[0].parameters())
    meta = {
        "parameters": int(params),
        "train_s": train_s,
        "forecast_s": forecast_s,
        "settings": {
            "input_size": args.input_size,
            "max_steps": args.max_steps,
            "scaler_type": SCALER,
            "random_seed": args.seed,
            "other": "NeuralForecast defaults",
        },
    }
    return cv, meta


class _Timed:
    """Adds up the seconds a statsforecast model spends in fit (once per series) and how many parameters
    and states those fits estimated; the rest of cross-validation is forecasting."""

    fit_seconds = 0.0
    parameters = 0

    def fit(self, *a: Any, **kw: Any) -> Any:
        start = time.perf_counter()
        fitted = super().fit(*a, **kw)  # type: ignore[misc]
        _Timed.fit_seconds += time.perf_counter() - start
        _Timed.parameters += _count(fitted)
        return fitted


def _count(model: Any) -> int:
    """ETS: smoothing parameters and initial states (``par``); MSTL: its trend model's plus the last
    period of each seasonal component (the state it repeats)."""
    fit = model.model_
    if isinstance(fit, dict) and "par" in fit:
        return int(np.isfinite(np.asarray(fit["par"], dtype=float)).sum())
    trend = getattr(model, "trend_forecaster", None)
    seasons = model.season_length if isinstance(model.season_length, list) else [model.season_length]
    return int(sum(seasons)) + (_count(trend) if trend is not None and hasattr(trend, "model_") else 0)


def run_stats(args: argparse.Namespace, df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    from statsforecast import StatsForecast
    from statsforecast.models import MSTL, AutoETS

    class TimedETS(_Timed, AutoETS):
        pass

    class TimedMSTL(_Timed, MSTL):
        pass

    seasons = [int(s) for s in args.seasons.split(",") if s]
    if args.contender == "autoets":
        model: Any = TimedETS(season_length=args.season, alias=args.contender)
        settings: dict[str, Any] = {"season_length": args.season, "other": "AutoETS defaults (model='ZZZ')"}
    else:
        model = TimedMSTL(season_length=seasons or [args.season], alias=args.contender)
        settings = {"season_length": seasons or [args.season], "other": "MSTL defaults (trend: AutoETS)"}
    settings["history"] = args.history or "all"
    sf = StatsForecast(models=[model], freq=args.freq, n_jobs=1)
    start = time.perf_counter()
    history = args.history or None
    cv = sf.cross_validation(
        df=df, h=args.horizon, n_windows=args.windows, step_size=args.step, input_size=history, refit=False
    )
    total = time.perf_counter() - start
    meta = {
        "parameters": _Timed.parameters,
        "train_s": _Timed.fit_seconds,
        "forecast_s": max(total - _Timed.fit_seconds, 0.0),
        "settings": settings,
    }
    return cv, meta


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    df = read(args.data)
    runner = run_neural if args.contender in NEURAL else run_stats
    cv, meta = runner(args, df)
    cv = cv.reset_index() if "unique_id" not in cv.columns else cv
    cv["unique_id"] = cv["unique_id"].astype(str)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cv[["unique_id", "ds", "cutoff", "y", args.contender]].to_parquet(out / "backtest.parquet", index=False)
    packages = ("neuralforecast", "statsforecast", "torch", "numpy", "pandas")
    meta["versions"] = {name: version(name) for name in packages}
    (out / "meta.json").write_text(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
