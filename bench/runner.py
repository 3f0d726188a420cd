"""One run of the reproduction: one model on one dataset with one seed, scored on the test part.

Every step is the library's: ``make_datasets`` cuts the windows and fits the scaler, ``fit`` trains,
``predict_windows`` forecasts and ``qkanforecast.baselines`` gives the naive forecasts.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import numpy as np
import torch

from bench.experiments import DataSpec, ModelSpec, build, load_source
from qkanforecast.activations import edge_curves, input_ranges
from qkanforecast.baselines import naive, seasonal_naive
from qkanforecast.config import Loss, TrainConfig  # the paper trains on the MSE
from qkanforecast.forecast import predict_windows
from qkanforecast.metrics import mae, mse, r2
from qkanforecast.models import count_parameters, daruan_statevector, fast_from_born
from qkanforecast.train import fit
from qkanforecast.windows import WindowDataset, make_datasets


def make_parts(data: DataSpec, max_series: int | None
               ) -> tuple[WindowDataset, WindowDataset | None, WindowDataset]:
    """Train, validation (None without one) and test windows of a dataset, one scaler fitted on train."""
    table, _ = load_source(data.source, max_series)
    train, val, test, _ = make_datasets(table, data.lookback, data.horizon, val_size=data.val_size,
                                        test_size=data.test_size, scaler=data.scaler,
                                        val_step=data.val_step, test_step=data.test_step)
    if test is None:
        raise ValueError(f"{data.key} has no test part")
    return train, val, test


def baseline_forecast(spec: ModelSpec, data: DataSpec, test: WindowDataset) -> np.ndarray:
    """The naive or seasonal-naive forecast of every test window, in original units: ``[N, H]``."""
    s, t = test.locate(np.arange(len(test)))
    first = test.table.offsets[s] + t  # row of each window's first target
    if spec.family == "naive":
        return naive(test.table.values, first, test.horizon)
    if data.season is None:
        raise ValueError(f"{data.key} has no season for a seasonal-naive forecast")
    return seasonal_naive(test.table.values, first, test.horizon, data.season, history=t)


def solver_gap(model: torch.nn.Module, grid: np.ndarray) -> float | None:
    """The largest gap on ``grid`` between the learned DARUAN phi_ji(x) of every edge of the first
    QKAN-LSTM cell by the statevector solver (``daruan_statevector``, the reference, float64) and by the
    spectral closed form (``QKANLayer.coefficients`` + ``fast_from_born``); None where the spectral form
    does not apply (trainable pre-activations)."""
    core: Any = model.core
    layer = copy.deepcopy(core.cells[0].layer).double()
    if layer.spec.preact_trainable:
        return None
    readout, reps = layer.spec.readout.value, layer.spec.reps
    x = torch.as_tensor(grid, dtype=torch.float64)
    with torch.no_grad():
        o, i, r1, _ = layer.theta.shape
        u = x.view(-1, 1, 1, 1).expand(-1, o, i, r1 - 1)
        phi = daruan_statevector(layer.theta.unsqueeze(0), u, readout)  # [G, O, I]
        c = layer.coefficients()  # [O, I, 2r + 1]
        k = torch.arange(1, reps + 1, dtype=x.dtype)
        ang = x.view(-1, 1) * k  # [G, r]
        z = c[..., 0] + torch.einsum("gk,oik->goi", torch.cos(ang), c[..., 1:reps + 1]) \
            + torch.einsum("gk,oik->goi", torch.sin(ang), c[..., reps + 1:])
        spectral = z if readout == "born" else fast_from_born(z)
    return float((spectral - phi).abs().max())


def gate_activations(model: torch.nn.Module, train: WindowDataset) -> dict[str, Any]:
    """The learned edge functions of every gate (``qkanforecast.activations``, as ``qkanforecast plot
    activations`` draws them) over the inputs met on the training windows, and the solver check."""
    curves = edge_curves(model, input_ranges(model, train))
    return {"curves": curves, "solver_gap": solver_gap(model, np.linspace(-math.pi, math.pi, 241))}


def run_one(data: DataSpec, spec: ModelSpec, seed: int, max_series: int | None, keep: bool,
            activations: bool, threads: int) -> dict[str, Any]:
    """Train (or compute) one model on one dataset with one seed and score it on the test part.

    ``keep``: return the forecasts (for the plots); ``activations``: the learned DARUAN activations.
    """
    torch.set_num_threads(threads)
    train, val, test = make_parts(data, max_series)
    idx = np.arange(len(test))
    series = test.series_of(idx)
    y_orig = test.targets(idx)  # [N, H]
    row: dict[str, Any] = dict(dataset=data.key, model=spec.family, label=spec.label, variant=spec.variant,
                               seed=seed, **spec.columns(), params=0, train_seconds=0.0, epochs_run=0,
                               train_windows=len(train), test_windows=len(test))
    extra: dict[str, Any] = {}
    if spec.config is None:
        pred_orig = baseline_forecast(spec, data, test)
        pred = np.asarray(test.scaler.transform(pred_orig, series))
    else:
        torch.manual_seed(seed)
        model = build(spec.config)
        row["params"] = count_parameters(model)
        row["train_windows"] = min(len(train), data.train_cap or len(train))
        start = time.perf_counter()
        budget = TrainConfig(epochs=data.epochs, batch_size=data.batch_size, lr=data.lr, loss=Loss.MSE,
                             patience=data.patience, seed=seed, max_windows=data.train_cap or 0)
        history = fit(model, train, val, budget)
        row["train_seconds"] = time.perf_counter() - start
        row["epochs_run"] = len(history)
        start = time.perf_counter()
        pred = predict_windows(model, test)
        row["predict_seconds"] = time.perf_counter() - start
        pred_orig = np.asarray(test.scaler.inverse_transform(pred, series))
        if activations:
            extra["activations"] = gate_activations(model, train)
    y = np.asarray(test.scaler.transform(y_orig, series))
    row.update(mse=mse(y, pred), mae=mae(y, pred), r2=r2(y, pred), mse_orig=mse(y_orig, pred_orig),
               mae_orig=mae(y_orig, pred_orig), r2_orig=r2(y_orig, pred_orig))
    if keep:
        frame = test.window_frame(idx)
        extra["forecast"] = dict(unique_id=frame["unique_id"].to_numpy(), ds=frame["ds"].to_numpy(),
                                 y=y_orig, yhat=pred_orig)
    row["_extra"] = extra
    return row
