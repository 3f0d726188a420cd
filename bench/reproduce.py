"""Reproduce the QKAN-LSTM paper's experiments (arXiv 2512.05049) with the product's own code.

    .venv/bin/python bench/reproduce.py            # full run (make reproduce): 3 seeds, all datasets
    .venv/bin/python bench/reproduce.py --quick    # one seed, fewer epochs (make reproduce-quick)

Writes ``results/reproduce.csv`` (one row per dataset and model: mean and std over seeds),
``results/reproduce_runs.csv`` (one row per seed), ``results/reproduce.md`` (the tables) and PNG plots
(forecasts vs truth on the test part; the learned DARUAN activations of a trained QKAN-LSTM).

Datasets (``../shared/docs/qkan-math.md`` section 6):
- ``damped_shm``, ``bessel_j2``: the paper's synthetic series from ``qkanforecast.synthetic`` (min-max
  scaled to [-1, 1] over the whole series, as in the paper), window 4 -> next value, chronological
  80/20 train/test, Adam lr 1e-3, batch 2, 30 epochs, no validation part (as in the paper). Metrics in
  that [-1, 1] space. ``damped_shm_e150``, ``bessel_j2_e150``: the same with 150 epochs for every model.
- ``milan_internet_w4``, ``milan_internet_w64``: 10-minute internet activity of squares 4556 and 5161,
  one global model, one step ahead, lookback 4 or 64, chronological 70/10/20 train/val/test per square,
  min-max scaler fitted on each square's training part.
- ``milan_hourly_h1``, ``milan_hourly_h24``: the 211 complete cells of the hourly Milan set as one global
  model, lookback 24 -> 1 step and lookback 168 -> 24 steps, 50 days train / 5 val / 7 test per cell
  (the split of the set's publishers), min-max scaler on train; a random sample of training windows
  per epoch keeps the runtime bounded.
Telecom metrics are given in the scaled space (per-cell min-max of the training part, [-1, 1]) and in
original units.

Models: the LSTM baseline (hidden 5 on the synthetic sets, 16 on telecom), QKAN-LSTM and HQKAN-LSTM
sized automatically to at most 21% of that LSTM's trainable parameters, each with both read-outs
(fast, born), a QKAN-LSTM with about the LSTM's parameter count and an LSTM with about the small
QKAN-LSTM's, plus naive and seasonal-naive baselines. Every model gets the same data, optimiser,
learning rate, batch size and epoch budget per dataset.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from functools import cache
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from qkanforecast.data import IngestOptions, Table, read_table
from qkanforecast.metrics import mae, mse, r2
from qkanforecast.models import (
    build_model,
    count_parameters,
    daruan_statevector,
    fast_from_born,
    model_config_from_v1,
)
from qkanforecast.synthetic import as_frame, bessel_j2, damped_shm
from qkanforecast.train import fit
from qkanforecast.windows import SeriesScaler, WindowDataset, split_points

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_sample_data import milan_cdr_hourly  # noqa: E402  (the one parser of the raw hourly files)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SAMPLE = ROOT / "sample_data"
PARAM_RATIO = 0.21  # the paper: QKAN-LSTM has 79% fewer trainable parameters than the LSTM


# ---------------------------------------------------------------------------------------------------
# data


def _synthetic(name: str) -> Table:
    values = damped_shm() if name == "damped_shm" else bessel_j2()
    return Table.from_frame(as_frame(values, name), source=name)


def _milan_internet() -> tuple[Table, str]:
    folder = SHARED / "milan_internet_10min"
    files = [folder / f"ts_full_square_{square}.csv" for square in (4556, 5161)]
    if all(f.is_file() for f in files):
        opts = IngestOptions(id_col="square_id", time_col="time", target_col="internet")
        frames = [read_table(f, opts).frame for f in files]
        frame = pd.concat(frames, ignore_index=True)
        frame["unique_id"] = frame["unique_id"].astype(str)
        origin = "../shared/data/milan_internet_10min (62 days)"
        return Table.from_frame(frame, source="milan_internet"), origin
    return read_table(SAMPLE / "milan_internet.csv"), "sample_data/milan_internet.csv (14 days)"


def _milan_hourly() -> tuple[Table, str]:
    folder = SHARED / "milan_cdr_hourly"
    if (folder / "matrixTS.csv").is_file() and (folder / "ID_labels.csv").is_file():
        frame = milan_cdr_hourly(SHARED)  # the 211 complete lines (SOURCE.md)
        origin = "../shared/data/milan_cdr_hourly (211 complete cells)"
        return Table.from_frame(frame, source="milan_cdr_hourly"), origin
    return read_table(SAMPLE / "milan_cdr_hourly.parquet"), "sample_data/milan_cdr_hourly.parquet"


@cache
def load_source(source: str, max_series: int | None = None) -> tuple[Table, str]:
    """The table of a data source (cached per process) and where it came from."""
    if source in ("damped_shm", "bessel_j2"):
        table, origin = _synthetic(source), f"qkanforecast.synthetic.{source}()"
    elif source == "milan_internet":
        table, origin = _milan_internet()
    elif source == "milan_hourly":
        table, origin = _milan_hourly()
    else:
        raise ValueError(f"unknown source {source!r}")
    if max_series is not None and table.n_series > max_series:
        keep = table.ids[:max_series]
        frame = table.frame[table.frame["unique_id"].isin(keep)].copy()
        frame["unique_id"] = frame["unique_id"].astype(str)
        table = Table.from_frame(frame, source=source)
        origin += f", first {max_series} series"
    return table, origin


# ---------------------------------------------------------------------------------------------------
# experiment specs


@dataclass(frozen=True)
class DataSpec:
    key: str
    title: str
    source: str
    lookback: int
    horizon: int
    val_size: float | int
    test_size: float | int
    scaler: str
    season: int | None  # seasonal-naive period in steps; None: no seasonal baseline
    lstm_hidden: int
    epochs: int
    batch_size: int
    lr: float
    patience: int
    train_cap: int | None = None  # training windows sampled per epoch (None: all)
    val_step: int = 1
    test_step: int = 1
    units: str = ""  # what the original values are
    scaled_space: str = ""  # what the metrics' scaled space is


SYNTHETIC = dict(lookback=4, horizon=1, val_size=0, test_size=0.2, scaler="none", season=None, lstm_hidden=5,
                 epochs=30, batch_size=2, lr=1e-3, patience=0,
                 scaled_space="the paper's min-max [-1, 1] of the whole series")
TELECOM = dict(scaler="minmax", lstm_hidden=16, lr=5e-3,
               scaled_space="per-cell min-max of the training part, [-1, 1]")

DATASETS: dict[str, DataSpec] = {d.key: d for d in [
    DataSpec("damped_shm", "Damped SHM (pendulum angular velocity)", "damped_shm",
             units="[-1, 1] (already min-max scaled)", **SYNTHETIC),  # type: ignore[arg-type]
    DataSpec("bessel_j2", "Bessel J2", "bessel_j2",
             units="[-1, 1] (already min-max scaled)", **SYNTHETIC),  # type: ignore[arg-type]
    # the same with a longer budget for every model: the QKAN models converge more slowly per epoch
    DataSpec("damped_shm_e150", "Damped SHM, 150 epochs", "damped_shm",
             units="[-1, 1] (already min-max scaled)", **{**SYNTHETIC, "epochs": 150}),  # type: ignore[arg-type]
    DataSpec("bessel_j2_e150", "Bessel J2, 150 epochs", "bessel_j2",
             units="[-1, 1] (already min-max scaled)", **{**SYNTHETIC, "epochs": 150}),  # type: ignore[arg-type]
    DataSpec("milan_internet_w4", "Milan internet, 2 squares, 10 min, window 4 -> 1", "milan_internet",
             lookback=4, horizon=1, val_size=0.1, test_size=0.2, season=144, epochs=30, batch_size=128,
             patience=5, units="internet activity", **TELECOM),  # type: ignore[arg-type]
    DataSpec("milan_internet_w64", "Milan internet, 2 squares, 10 min, window 64 -> 1", "milan_internet",
             lookback=64, horizon=1, val_size=0.1, test_size=0.2, season=144, epochs=20, batch_size=128,
             patience=5, units="internet activity", **TELECOM),  # type: ignore[arg-type]
    DataSpec("milan_hourly_h1", "Milan hourly, 211 cells, global, lookback 24 -> 1", "milan_hourly",
             lookback=24, horizon=1, val_size=120, test_size=168, season=24, epochs=20, batch_size=256,
             patience=5, train_cap=32768, val_step=4, units="CDR count per hour", **TELECOM),  # type: ignore[arg-type]
    DataSpec("milan_hourly_h24", "Milan hourly, 211 cells, global, lookback 168 -> 24", "milan_hourly",
             lookback=168, horizon=24, val_size=120, test_size=168, season=24, epochs=16, batch_size=256,
             patience=5, train_cap=16384, val_step=8, units="CDR count per hour",
             **TELECOM),  # type: ignore[arg-type]
]}

QUICK = {  # --quick: one seed and a small budget everywhere
    "damped_shm": dict(epochs=10), "bessel_j2": dict(epochs=10),
    "damped_shm_e150": dict(epochs=15), "bessel_j2_e150": dict(epochs=15),
    "milan_internet_w4": dict(epochs=3, train_cap=4096),
    "milan_internet_w64": dict(epochs=3, train_cap=4096, val_step=8, test_step=4),
    "milan_hourly_h1": dict(epochs=3, train_cap=8192, val_step=16, test_step=4),
    "milan_hourly_h24": dict(epochs=3, train_cap=4096, val_step=40, test_step=24),
}


@dataclass(frozen=True)
class ModelSpec:
    family: str  # lstm | qkan-lstm | hqkan-lstm | naive | seasonal-naive
    variant: str  # paper size | <=21% of LSTM | ~LSTM params | ~QKAN-LSTM params | baseline
    kwargs: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def label(self) -> str:
        readout = self.kwargs.get("readout")
        return f"{self.family} ({readout})" if readout else self.family


def n_params(family: str, **kwargs: Any) -> int:
    return count_parameters(build_model(model_config_from_v1(family, dict(input_size=1, **kwargs))))


def _largest(family: str, budget: int, horizon: int, ladder: list[dict[str, Any]]) -> dict[str, Any]:
    """The first rung of ``ladder`` that fits ``budget`` at some hidden size, at its largest such size."""
    for rung in ladder:
        best = None
        for hidden in range(1, 65):
            if n_params(family, horizon=horizon, hidden_size=hidden, **rung) > budget:
                break
            best = hidden
        if best is not None:
            return dict(hidden_size=best, **rung)
    raise ValueError(f"no {family} fits in {budget} parameters")


# Preference when sizing a QKAN model down: the product defaults first (reps 3, residual base weight,
# gate bias), then fewer of them. QKAN-LSTM at hidden 1 and reps 1 without residual or bias is the
# paper's 34-parameter configuration.
QKAN_LADDER = [dict(reps=r, base_weight=bw, bias=b) for r in (3, 2, 1) for bw in (True, False)
               for b in (True, False)]
HQKAN_LADDER = [dict(reps=r, base_weight=bw) for r in (3, 2, 1) for bw in (True, False)]


@cache
def model_specs(lstm_hidden: int, horizon: int) -> tuple[ModelSpec, ...]:
    """The models of one dataset, QKAN sizes derived from the LSTM's parameter count."""
    lstm = dict(hidden_size=lstm_hidden)
    p_lstm = n_params("lstm", horizon=horizon, **lstm)
    budget = math.floor(PARAM_RATIO * p_lstm)
    small_q = _largest("qkan-lstm", budget, horizon, QKAN_LADDER)
    small_h = _largest("hqkan-lstm", budget, horizon, HQKAN_LADDER)
    p_small_q = n_params("qkan-lstm", horizon=horizon, **small_q)
    # a QKAN-LSTM with about the LSTM's count (residual kept, gate bias on or off): within 10% of it,
    # reps as close to the default 3 as possible, then the closest count
    cands = [dict(hidden_size=h, reps=r, bias=b)
             for h in range(1, 33) for r in (1, 2, 3, 4) for b in (True, False)]

    def rank(kw: dict[str, Any]) -> tuple[bool, int, int]:
        gap = abs(n_params("qkan-lstm", horizon=horizon, **kw) - p_lstm)
        return gap > 0.1 * p_lstm, abs(kw["reps"] - 3), gap

    equal_q = min(cands, key=rank)
    equal_l = min(range(1, 65),
                  key=lambda h: abs(n_params("lstm", horizon=horizon, hidden_size=h) - p_small_q))
    specs = [ModelSpec("lstm", "paper size", lstm)]
    for readout in ("fast", "born"):
        specs.append(ModelSpec("qkan-lstm", f"<={PARAM_RATIO:.0%} of LSTM", dict(small_q, readout=readout)))
    for readout in ("fast", "born"):
        specs.append(ModelSpec("hqkan-lstm", f"<={PARAM_RATIO:.0%} of LSTM", dict(small_h, readout=readout)))
    specs.append(ModelSpec("qkan-lstm", "~LSTM params", dict(equal_q, readout="fast")))
    specs.append(ModelSpec("lstm", "~QKAN-LSTM params", dict(hidden_size=equal_l)))
    return tuple(specs)


def all_specs(data: DataSpec) -> list[ModelSpec]:
    specs = [ModelSpec("naive", "baseline")]
    if data.season:
        specs.append(ModelSpec("seasonal-naive", "baseline", dict(season=data.season)))
    return specs + list(model_specs(data.lstm_hidden, data.horizon))


# ---------------------------------------------------------------------------------------------------
# running one experiment


@dataclass
class Parts:
    train: WindowDataset
    val: WindowDataset | None
    test: WindowDataset
    scaler: SeriesScaler


def make_parts(data: DataSpec, max_series: int | None) -> Parts:
    table, _ = load_source(data.source, max_series)
    splits = split_points(table.lengths, data.val_size, data.test_size, ids=table.ids)
    scaler = SeriesScaler(data.scaler).fit(table, until=splits[0])
    kw: dict[str, Any] = dict(lookback=data.lookback, horizon=data.horizon, scaler=scaler, splits=splits)
    train = WindowDataset(table, part="train", **kw)
    has_val = bool((splits[1] > splits[0]).any())
    val = WindowDataset(table, part="val", step=data.val_step, **kw) if has_val else None
    test = WindowDataset(table, part="test", step=data.test_step, **kw)
    return Parts(train, val, test, scaler)


def _scaled(ds: WindowDataset, values: np.ndarray) -> np.ndarray:
    return np.asarray(ds.scaler.transform(values, ds.series_of(np.arange(len(ds)))))


def baseline_forecast(spec: ModelSpec, test: WindowDataset) -> np.ndarray:
    """Naive (last value) or seasonal-naive (same step one season earlier) in original units: [N, H]."""
    s, t = test.locate(np.arange(len(test)))
    first = test.table.offsets[s] + t  # row of the first target
    steps = np.arange(test.horizon)[None, :]
    y = test.table.values
    if spec.family == "naive":
        return np.repeat(y[first - 1][:, None], test.horizon, axis=1)
    m = int(spec.kwargs["season"])
    if test.horizon > m or (t < m).any():
        raise ValueError("seasonal naive needs horizon <= season and a season of history")
    return y[first[:, None] + steps - m]


@torch.no_grad()
def predict(model: torch.nn.Module, ds: WindowDataset, batch_size: int = 2048) -> np.ndarray:
    model.eval()
    out = [model(x).double().numpy() for x, _ in ds.iter_batches(batch_size)]
    return np.concatenate(out) if out else np.zeros((0, ds.horizon))


def gate_activations(model: torch.nn.Module, grid: np.ndarray) -> dict[str, Any]:
    """The learned DARUAN phi_ji(x) of every edge of the first QKAN-LSTM cell on ``grid``.

    Evaluated in float64 with the statevector solver (``daruan_statevector``, the reference) and checked
    against the spectral closed form (``QKANLayer.coefficients`` + ``fast_from_born``).
    """
    layer = copy.deepcopy(model.core.cells[0].layer).double()  # type: ignore[union-attr,index]
    readout, reps = layer.spec.readout.value, layer.spec.reps
    x = torch.as_tensor(grid, dtype=torch.float64)
    with torch.no_grad():
        o, i, r1, _ = layer.theta.shape
        u = x.view(-1, 1, 1, 1).expand(-1, o, i, r1 - 1)
        if layer.preact_weight is not None:
            u = u * layer.preact_weight + layer.preact_bias
        phi = daruan_statevector(layer.theta.unsqueeze(0), u, readout)  # [G, O, I]
        spectral = None
        if not layer.spec.preact_trainable:
            c = layer.coefficients()  # [O, I, 2r + 1]
            k = torch.arange(1, reps + 1, dtype=x.dtype)
            ang = x.view(-1, 1) * k  # [G, r]
            z = c[..., 0] + torch.einsum("gk,oik->goi", torch.cos(ang), c[..., 1:reps + 1]) \
                + torch.einsum("gk,oik->goi", torch.sin(ang), c[..., reps + 1:])
            spectral = z if readout == "born" else fast_from_born(z)
        base = None if layer.base_weight is None else layer.base_weight.numpy().copy()
    return {"grid": np.asarray(grid), "phi": phi.numpy(), "base_weight": base, "readout": readout,
            "reps": reps, "input_size": model.core.input_size, "hidden_size": model.core.hidden_size,
            "solver_gap": None if spectral is None else float((spectral - phi).abs().max())}


def run_one(data: DataSpec, spec: ModelSpec, seed: int, max_series: int | None, keep: bool,
            activations: bool, threads: int) -> dict[str, Any]:
    """Train (or compute) one model on one dataset with one seed and score it on the test part."""
    torch.set_num_threads(threads)
    parts = make_parts(data, max_series)
    test = parts.test
    idx = np.arange(len(test))
    y_orig = test.targets(idx)  # [N, H]
    kw = spec.kwargs
    row: dict[str, Any] = dict(dataset=data.key, model=spec.family, label=spec.label, variant=spec.variant,
                               seed=seed, hidden_size=kw.get("hidden_size"), reps=kw.get("reps"),
                               readout=kw.get("readout"), base_weight=kw.get("base_weight"),
                               gate_bias=kw.get("bias"), params=0, train_seconds=0.0, epochs_run=0,
                               train_windows=len(parts.train), test_windows=len(test))
    extra: dict[str, Any] = {}
    if spec.family in ("naive", "seasonal-naive"):
        pred_orig = baseline_forecast(spec, test)
        pred = _scaled(test, pred_orig)
    else:
        torch.manual_seed(seed)
        config = model_config_from_v1(spec.family, dict(input_size=1, horizon=data.horizon, **spec.kwargs))
        model = build_model(config)
        row["params"] = count_parameters(model)
        row["train_windows"] = min(len(parts.train), data.train_cap or len(parts.train))
        start = time.perf_counter()
        history = fit(model, parts.train, parts.val, epochs=data.epochs, batch_size=data.batch_size,
                      lr=data.lr, patience=data.patience, seed=seed, max_windows=data.train_cap)
        row["train_seconds"] = time.perf_counter() - start
        row["epochs_run"] = len(history)
        start = time.perf_counter()
        pred = predict(model, test)
        row["predict_seconds"] = time.perf_counter() - start
        pred_orig = np.asarray(test.scaler.inverse_transform(pred, test.series_of(idx)))
        if activations:
            extra["activations"] = gate_activations(model, np.linspace(-math.pi, math.pi, 241))
    y = _scaled(test, y_orig)
    row.update(mse=mse(y, pred), mae=mae(y, pred), r2=r2(y, pred), mse_orig=mse(y_orig, pred_orig),
               mae_orig=mae(y_orig, pred_orig), r2_orig=r2(y_orig, pred_orig))
    if keep:
        frame = test.window_frame(idx)
        extra["forecast"] = dict(unique_id=frame["unique_id"].to_numpy(), ds=frame["ds"].to_numpy(),
                                 y=y_orig, yhat=pred_orig)
    row["_extra"] = extra
    return row


# ---------------------------------------------------------------------------------------------------
# tables


AGG = ("mse", "mae", "r2", "mse_orig", "mae_orig", "r2_orig", "train_seconds", "epochs_run")


def summarise(runs: pd.DataFrame, datasets: list[DataSpec]) -> pd.DataFrame:
    rows = []
    for data in datasets:
        part = runs[runs["dataset"] == data.key]
        p_lstm = None
        for spec in all_specs(data):
            r = part[(part["label"] == spec.label) & (part["variant"] == spec.variant)]
            if r.empty:
                continue
            kw = spec.kwargs
            qkan = spec.family.endswith("qkan-lstm")
            row: dict[str, Any] = dict(dataset=data.key, model=spec.family, variant=spec.variant,
                                       readout=kw.get("readout", ""), hidden_size=kw.get("hidden_size"),
                                       reps=kw.get("reps"),
                                       base_weight=kw.get("base_weight", True) if qkan else None,
                                       gate_bias=kw.get("bias", True) if qkan else None,
                                       lookback=data.lookback, horizon=data.horizon,
                                       params=int(r["params"].iloc[0]), seeds=int(r["seed"].nunique()))
            if spec.family == "lstm" and spec.variant == "paper size":
                p_lstm = row["params"]
            row["params_pct_of_lstm"] = (100.0 * row["params"] / p_lstm) if p_lstm and row["params"] else None
            for key in AGG:
                v = r[key].to_numpy(float)
                row[f"{key}_mean"] = float(np.mean(v))
                row[f"{key}_std"] = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
            row["train_windows_per_epoch"] = int(r["train_windows"].iloc[0])
            row["test_windows"] = int(r["test_windows"].iloc[0])
            rows.append(row)
    return pd.DataFrame(rows)


def _pm(mean: float, std: float, fmt: str = ".3g") -> str:
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:{fmt}} ± {std:.2g}" if std else f"{mean:{fmt}}"


def markdown(summary: pd.DataFrame, datasets: list[DataSpec], meta: dict[str, Any]) -> str:
    out = ["# QKAN-LSTM paper reproduction", "",
           f"Produced by `{meta['command']}` on {meta['when']} ({meta['machine']}); "
           f"{meta['seeds']} seed(s) per model; wall time {meta['wall_minutes']:.1f} min. "
           "Mean ± standard deviation over seeds; test part only (chronological). "
           "Parameters are trainable parameters including the linear forecasting head; "
           "`% LSTM` is relative to the paper-size LSTM of the same dataset.", ""]
    out += overview(summary, datasets)
    for data in datasets:
        part = summary[summary["dataset"] == data.key]
        if part.empty:
            continue
        origin = meta["origins"].get(data.source, "")
        out += [f"## {data.title} (`{data.key}`)", "",
                f"Data: {origin}. Lookback {data.lookback}, horizon {data.horizon}; "
                f"chronological split per series: validation {_part(data.val_size)}, "
                f"test {_part(data.test_size)}; "
                + ("no further scaling" if data.scaler == "none" else f"{data.scaler} scaler fitted on train")
                + f"; Adam lr {data.lr}, batch {data.batch_size}, up to {data.epochs} epochs"
                + (f" (patience {data.patience} on validation MSE, best weights kept)"
                   if data.patience else "")
                + (f", {data.train_cap} training windows sampled per epoch" if data.train_cap else "")
                + (f", every {data.test_step}th test window" if data.test_step > 1 else "")
                + f". MSE / MAE / R² in {data.scaled_space}"
                + (f"; MAE and R² also in original units ({data.units})" if data.scaler != "none" else "")
                + ".", ""]
        head = ["model", "variant", "hidden", "reps", "read-out", "params", "% LSTM", "test MSE", "test MAE",
                "test R²"]
        if data.scaler != "none":
            head += ["MAE (orig.)", "R² (orig.)"]
        head += ["train s", "epochs"]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for _, r in part.iterrows():
            hidden = "" if pd.isna(r["hidden_size"]) else str(int(r["hidden_size"]))
            cells = [r["model"], r["variant"], hidden,
                     "" if pd.isna(r["reps"]) else str(int(r["reps"])), r["readout"] or "",
                     str(r["params"]) if r["params"] else "",
                     "" if pd.isna(r["params_pct_of_lstm"]) else f"{r['params_pct_of_lstm']:.0f}%",
                     _pm(r["mse_mean"], r["mse_std"]), _pm(r["mae_mean"], r["mae_std"]),
                     _pm(r["r2_mean"], r["r2_std"], ".4f")]
            if data.scaler != "none":
                cells += [_pm(r["mae_orig_mean"], r["mae_orig_std"]),
                          _pm(r["r2_orig_mean"], r["r2_orig_std"], ".4f")]
            trained = r["params"] > 0
            cells += [_pm(r["train_seconds_mean"], r["train_seconds_std"], ".1f") if trained else "",
                      f"{r['epochs_run_mean']:.3g}" if trained else ""]
            out.append("| " + " | ".join(cells) + " |")
        out += ["", *verdict(part)]
        if data.source in PAPER:
            out.append(f"- The paper reports (secondary sources; its LSTM's numbers are not given here): "
                       f"{PAPER[data.source]}.")
        out.append("")
    if meta.get("plots"):
        out += ["## Plots", ""] + [f"- `{p}`" for p in meta["plots"]] + [""]
    if meta.get("solver_gaps"):
        out += ["DARUAN activations: the statevector and spectral solvers agree to "
                f"{max(meta['solver_gaps']):.1e} on the plotted grids (float64).", ""]
    return "\n".join(out)


# qkan-math.md section 6: what the paper reports (secondary sources)
PAPER = {"damped_shm": "QKAN-LSTM test MSE 1.02e-3, R² 0.9771",
         "bessel_j2": "QKAN-LSTM test MSE 3.27e-4, R² 0.9861; HQKAN-LSTM 3.21e-4, R² 0.9863"}

OVERVIEW = [("best naive", None, None, None), ("LSTM", "lstm", "paper size", ""),
            ("QKAN-LSTM fast", "qkan-lstm", "<=21% of LSTM", "fast"),
            ("QKAN-LSTM born", "qkan-lstm", "<=21% of LSTM", "born"),
            ("HQKAN-LSTM fast", "hqkan-lstm", "<=21% of LSTM", "fast"),
            ("HQKAN-LSTM born", "hqkan-lstm", "<=21% of LSTM", "born"),
            ("QKAN-LSTM ≈ LSTM size", "qkan-lstm", "~LSTM params", "fast"),
            ("LSTM ≈ QKAN-LSTM size", "lstm", "~QKAN-LSTM params", "")]


def overview(summary: pd.DataFrame, datasets: list[DataSpec]) -> list[str]:
    """One line per dataset: mean test MSE (scaled space) of each model row, the lowest in bold."""
    head = ["dataset", *[name for name, *_ in OVERVIEW]]
    out = ["## Overview: test MSE (mean over seeds; parameters in brackets)", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for data in datasets:
        part = summary[summary["dataset"] == data.key]
        if part.empty:
            continue
        cells, values = [], []
        for _, family, variant, readout in OVERVIEW:
            if family is None:
                r = part[part["model"].isin(["naive", "seasonal-naive"])]
                r = r.loc[[r["mse_mean"].idxmin()]] if not r.empty else r
            else:
                r = part[(part["model"] == family) & (part["variant"] == variant)
                         & (part["readout"] == readout)]
            if r.empty:
                cells.append("")
                values.append(math.inf)
                continue
            row = r.iloc[0]
            label = f" ({row['model']})" if family is None else f" ({row['params']})"
            cells.append(f"{row['mse_mean']:.3g}{label}")
            values.append(row["mse_mean"])
        best = int(np.argmin(values))
        cells[best] = f"**{cells[best]}**"
        out.append(f"| `{data.key}` | " + " | ".join(cells) + " |")
    return out + [""]


def _part(size: float | int) -> str:
    if not size:
        return "none"
    return f"last {size:.0%}" if isinstance(size, float) and size < 1 else f"last {size} steps"


def _spread(a: pd.Series, b: pd.Series) -> str:
    """A caveat when two means differ by less than the larger seed standard deviation."""
    if a["seeds"] > 1 and abs(a["mse_mean"] - b["mse_mean"]) < max(a["mse_std"], b["mse_std"]):
        return ", within the spread over seeds"
    return ""


def verdict(part: pd.DataFrame) -> list[str]:
    """Plain statements of who wins on test MSE (mean over seeds)."""
    def get(model: str, variant: str, readout: str = "") -> pd.Series | None:
        r = part[(part["model"] == model) & (part["variant"] == variant) & (part["readout"] == readout)]
        return None if r.empty else r.iloc[0]

    lines = []
    best = part.loc[part["mse_mean"].idxmin()]
    lines.append(f"- Lowest test MSE: {best['model']}" + (f" ({best['readout']})" if best["readout"] else "")
                 + f", {best['variant']} ({best['mse_mean']:.3g}).")
    lstm = get("lstm", "paper size")
    if lstm is None:
        return lines
    small = "<=21% of LSTM"
    for model, variant, readout in [("qkan-lstm", small, "fast"), ("qkan-lstm", small, "born"),
                                    ("hqkan-lstm", small, "fast"), ("hqkan-lstm", small, "born"),
                                    ("qkan-lstm", "~LSTM params", "fast")]:
        r = get(model, variant, readout)
        if r is None:
            continue
        ratio = r["mse_mean"] / lstm["mse_mean"]
        word = "beats" if ratio < 1 else "does not beat"
        lines.append(f"- {model} ({readout}, {variant}, {r['params']} params) {word} the LSTM "
                     f"({lstm['params']} params): test MSE {r['mse_mean']:.3g} vs {lstm['mse_mean']:.3g} "
                     f"(ratio {ratio:.2f}){_spread(r, lstm)}.")
    small_l, small_q = get("lstm", "~QKAN-LSTM params"), get("qkan-lstm", "<=21% of LSTM", "fast")
    if small_l is not None and small_q is not None:
        word = "beats" if small_q["mse_mean"] < small_l["mse_mean"] else "does not beat"
        lines.append(f"- At equal size, qkan-lstm (fast, {small_q['params']} params) {word} an LSTM of "
                     f"{small_l['params']} params: {small_q['mse_mean']:.3g} vs {small_l['mse_mean']:.3g}"
                     f"{_spread(small_q, small_l)}.")
    for name in ("naive", "seasonal-naive"):
        r = get(name, "baseline")
        if r is not None:
            beaten = part[(part["params"] > 0) & (part["mse_mean"] < r["mse_mean"])]
            lines.append(f"- {len(beaten)} of {int((part['params'] > 0).sum())} trained models beat {name} "
                         f"({r['mse_mean']:.3g}).")
    return lines


# ---------------------------------------------------------------------------------------------------
# plots


def plot_forecasts(data: DataSpec, forecasts: dict[str, dict[str, Any]], path: Path, span: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(forecasts.values()))
    uid = first["unique_id"][0]  # the first series
    fig, ax = plt.subplots(figsize=(10, 3.8))
    step = 0 if data.horizon == 1 else data.horizon - 1  # plot the last step of each horizon
    for k, (label, f) in enumerate(forecasts.items()):
        sel = np.flatnonzero(f["unique_id"] == uid)[:span]
        ds = f["ds"][sel]
        if k == 0:
            ax.plot(_x(data, ds, step), f["y"][sel, step], color="black", lw=2.0, label="truth")
        ax.plot(_x(data, ds, step), f["yhat"][sel, step], lw=1.2, label=label)
    what = "one step ahead" if data.horizon == 1 else f"{data.horizon} steps ahead (last step of each window)"
    series = "" if data.source in ("damped_shm", "bessel_j2") else f", series {uid}"
    ax.set_title(f"{data.title}: test part, {what}{series}", fontsize=10)
    ax.set_xlabel("sample" if data.source in ("damped_shm", "bessel_j2") else "time")
    ax.set_ylabel(data.units)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _x(data: DataSpec, ds: np.ndarray, step: int) -> np.ndarray:
    if data.source in ("damped_shm", "bessel_j2"):  # stand-in hourly clock: row k is sample k
        return ((ds - np.datetime64("2000-01-01")) // np.timedelta64(1, "h")).astype(int) + step
    return ds + _step_delta(data) * step


def _step_delta(data: DataSpec) -> np.timedelta64:
    return np.timedelta64(10, "m") if data.source == "milan_internet" else np.timedelta64(1, "h")


def plot_activations(act: dict[str, Any], title: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid, phi = act["grid"], act["phi"]  # [G], [G, 4D, F + D]
    d, f = act["hidden_size"], act["input_size"]
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.4), sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for g, (ax, gate) in enumerate(zip(axes, ("input i", "forget f", "cell g", "output o"), strict=True)):
        for j in range(d):
            for i in range(f + d):
                src = "x_t" if i < f else f"h_{i - f + 1}"
                ax.plot(grid, phi[:, g * d + j, i], color=colors[(j * (f + d) + i) % len(colors)],
                        ls="-" if i < f else "--", lw=1.3, label=f"unit {j + 1} <- {src}")
        ax.axvspan(-1, 1, color="0.92", zorder=0)
        ax.set_title(f"gate {gate}", fontsize=10)
        ax.set_xlabel("edge input x")
    axes[0].set_ylabel(f"phi_ji(x) ({act['readout']} read-out)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7)
    fig.suptitle(f"{title} - reps {act['reps']}; shaded: the [-1, 1] range of the scaled inputs",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.86, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one seed, fewer epochs and windows")
    p.add_argument("--datasets", default=None,
                   help="comma-separated subset of " + ", ".join(DATASETS)
                   + " (default: all; --quick leaves out the 150-epoch ones)")
    p.add_argument("--models", default="",
                   help="only these families (e.g. lstm,qkan-lstm); the baselines always run")
    p.add_argument("--seeds", type=int, default=None, help="seeds per model (default 3, --quick 1)")
    p.add_argument("--epochs", type=int, default=None, help="override every dataset's epoch budget")
    p.add_argument("--train-cap", type=int, default=None, help="override: training windows sampled per epoch")
    p.add_argument("--max-series", type=int, default=None, help="use only the first N series of each table")
    p.add_argument("--jobs", type=int, default=min(os.cpu_count() or 1, 4),
                   help="worker processes (default: the CPU count, at most 4)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--out", type=Path, default=ROOT / "results")
    p.add_argument("--no-plots", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    torch.set_num_threads(args.threads)
    seeds = args.seeds or (1 if args.quick else 3)
    if args.datasets is None:
        keys = [k for k in DATASETS if not (args.quick and k.endswith("_e150"))]
    else:
        keys = [k.strip() for k in args.datasets.split(",") if k.strip()]
    unknown = [k for k in keys if k not in DATASETS]
    if unknown:
        print(f"Error: unknown dataset(s) {', '.join(unknown)}; choose from {', '.join(DATASETS)}",
              file=sys.stderr)
        return 1
    families = {m.strip() for m in args.models.split(",") if m.strip()}
    datasets = []
    for k in keys:
        data = DATASETS[k]
        if args.quick:
            data = replace(data, **QUICK.get(k, {}))  # type: ignore[arg-type]
        if args.epochs is not None:
            data = replace(data, epochs=args.epochs)
        if args.train_cap is not None:
            data = replace(data, train_cap=args.train_cap)
        datasets.append(data)
    plots = not args.no_plots
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("matplotlib is not installed (pip install -e '.[plot]'): no plots", file=sys.stderr)
            plots = False
    # the forecast plots use seed 0 of these; the activation plot one QKAN-LSTM
    show = {"lstm": "paper size", "qkan-lstm": "<=21% of LSTM", "hqkan-lstm": "<=21% of LSTM"}
    act_of = {k: "<=21% of LSTM" for k in ("damped_shm", "damped_shm_e150", "milan_internet_w64")}
    jobs = []
    for data in datasets:
        for spec in all_specs(data):
            if families and spec.family not in families and spec.family not in ("naive", "seasonal-naive"):
                continue
            baseline = spec.family in ("naive", "seasonal-naive")
            for seed in range(1 if baseline else seeds):
                first_fast = plots and seed == 0 and spec.kwargs.get("readout", "fast") == "fast"
                naive = "naive" if data.horizon == 1 else "seasonal-naive"  # the one worth showing
                keep = first_fast and (show.get(spec.family) == spec.variant or spec.family == naive)
                act = first_fast and spec.family == "qkan-lstm" and act_of.get(data.key) == spec.variant
                jobs.append((data, spec, seed, args.max_series, keep, act, args.threads))
    # slowest first so that parallel workers finish together
    def cost(job: tuple[Any, ...]) -> float:
        data, spec = job[0], job[1]
        return data.lookback * data.epochs * (data.train_cap or 12500) * (spec.family != "lstm")

    jobs.sort(key=cost, reverse=True)
    started = time.perf_counter()
    print(f"{len(jobs)} runs, {args.jobs} worker(s), {seeds} seed(s)", flush=True)
    rows: list[dict[str, Any]] = []

    args.out.mkdir(parents=True, exist_ok=True)
    partial = args.out / "reproduce_runs.csv.tmp"  # progress so far, removed at the end

    def done(row: dict[str, Any]) -> None:
        rows.append(row)
        plain = [{k: v for k, v in r.items() if k != "_extra"} for r in rows]
        pd.DataFrame(plain).to_csv(partial, index=False)
        print(f"[{time.perf_counter() - started:7.1f}s {len(rows)}/{len(jobs)}] {row['dataset']:20s} "
              f"{row['label']:20s} "
              f"{row['variant']:18s} seed {row['seed']} params {row['params']:5d} mse {row['mse']:.4g} "
              f"mae {row['mae']:.4g} r2 {row['r2']:.4f} train {row['train_seconds']:.1f}s", flush=True)

    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(run_one, *j) for j in jobs]
            for fut in as_completed(futures):
                done(fut.result())
    else:
        for j in jobs:
            done(run_one(*j))
    wall = time.perf_counter() - started

    partial.unlink(missing_ok=True)
    extras = [(r, r.pop("_extra")) for r in rows]
    runs = pd.DataFrame([r for r, _ in extras])
    runs = runs.sort_values(["dataset", "model", "variant", "readout", "seed"], na_position="first")
    runs.to_csv(args.out / "reproduce_runs.csv", index=False, float_format="%.6g")
    summary = summarise(runs, datasets)
    summary.to_csv(args.out / "reproduce.csv", index=False, float_format="%.6g")
    plot_files, gaps = [], []
    if plots:
        for data in datasets:
            forecasts = {}
            for r, e in extras:
                if r["dataset"] == data.key and "forecast" in e:
                    name = r["label"] if r["model"] in ("naive", "seasonal-naive") else \
                        f"{r['label']}, {r['params']} params"
                    forecasts[name] = e["forecast"]
            order = sorted(forecasts, key=lambda k: ("naive" not in k, k))
            if forecasts:
                path = args.out / f"forecast_{data.key}.png"
                synthetic = data.source in ("damped_shm", "bessel_j2")
                span = 48 if synthetic else (288 if data.horizon == 1 else 168)
                plot_forecasts(data, {k: forecasts[k] for k in order}, path, span)
                plot_files.append(path.name)
            for r, e in extras:
                if r["dataset"] == data.key and "activations" in e:
                    path = args.out / f"activations_{data.key}.png"
                    title = (f"Learned DARUAN activations, QKAN-LSTM ({r['params']} params, "
                             f"seed {r['seed']}) trained on {data.key}")
                    plot_activations(e["activations"], title, path)
                    plot_files.append(path.name)
                    if e["activations"]["solver_gap"] is not None:
                        gaps.append(e["activations"]["solver_gap"])
    origins = {d.source: load_source(d.source, args.max_series)[1] for d in datasets}
    given = sys.argv[1:] if argv is None else argv
    cmd = " ".join(["python bench/reproduce.py", *given])
    meta = dict(command=cmd, when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                machine=f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {args.jobs} worker(s) x "
                        f"{args.threads} thread(s)", seeds=seeds, wall_minutes=wall / 60, origins=origins,
                plots=plot_files, solver_gaps=gaps)
    (args.out / "reproduce.md").write_text(markdown(summary, datasets, meta) + "\n")
    print(f"wrote {args.out / 'reproduce.csv'}, {args.out / 'reproduce.md'} ({wall / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
