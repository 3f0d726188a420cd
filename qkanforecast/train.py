"""Model-agnostic training: windows in, best weights out, then a registry version.

One global model is fitted over every series of a table: per-series scalers fitted on the training part,
windows as views, Adam on the MSE of the scaled targets, early stopping on the chronological validation
part with the best weights kept. Seeded once here, at the entry point; the same seed, data and thread count
give bitwise the same weights.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import torch
from torch import nn

from qkanforecast.config import (
    ARCHITECTURE,
    INTERVAL_LEVELS,
    OPTIONS,
    Columns,
    Settings,
    TrainConfig,
)
from qkanforecast.data import Table
from qkanforecast.errors import QKANForecastError
from qkanforecast.manifest import Calibration, Epoch, Manifest, ScalerState, Schema, Training
from qkanforecast.models import Forecaster, build_model, count_parameters
from qkanforecast.registry import Entry, Registry, check_name
from qkanforecast.windows import SeriesScaler, WindowDataset, make_datasets

ProgressFn = Callable[[Epoch, int, bool], None]  # (epoch record, total epochs, improved)


@torch.no_grad()
def evaluate_loss(model: nn.Module, ds: WindowDataset, batch_size: int = 1024) -> float:
    model.eval()
    total, count = 0.0, 0
    for x, y in ds.iter_batches(batch_size):
        total += float(nn.functional.mse_loss(model(x), y, reduction="sum"))
        count += y.numel()
    return total / max(count, 1)


def fit(
    model: nn.Module,
    train_ds: WindowDataset,
    val_ds: WindowDataset | None,
    config: TrainConfig,
    progress: ProgressFn | None = None,
) -> list[Epoch]:
    """Train in place with Adam + MSE; keep the weights of the best validation epoch (or the last).

    ``config.max_windows`` bounds an epoch on a large panel: each epoch trains on a fresh random sample
    of that many training windows.
    """
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    best, best_state, stale, history = math.inf, copy.deepcopy(model.state_dict()), 0, []
    for epoch in range(1, config.epochs + 1):
        model.train()
        start, total, count, windows = time.perf_counter(), 0.0, 0, 0
        for x, y in train_ds.iter_batches(
            config.batch_size, shuffle=True, generator=gen, limit=config.max_windows
        ):
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            total += loss.item() * y.numel()
            count += y.numel()
            windows += len(y)
        train_loss = total / max(count, 1)
        val_loss = evaluate_loss(model, val_ds) if val_ds is not None and len(val_ds) else train_loss
        seconds = time.perf_counter() - start
        record = Epoch(epoch, train_loss, val_loss, seconds, windows / max(seconds, 1e-9))
        history.append(record)
        if not math.isfinite(train_loss):
            raise QKANForecastError(f"training diverged at epoch {epoch} (loss {train_loss}); lower --lr")
        improved = val_loss < best
        if improved:
            best, best_state, stale = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
        if progress is not None:
            progress(record, config.epochs, improved)
        if config.patience and stale >= config.patience:
            break
    model.load_state_dict(best_state)
    return history


def warm_settings(entry: Entry, options: dict[str, Any]) -> Settings:
    """The settings of a warm start: the checkpoint's, updated by ``options`` that keep its architecture."""
    m = entry.manifest
    base = Settings(m.model, m.data, m.train)
    current = {**asdict(base.model), **asdict(base.model.qkan), "horizon": base.data.horizon}
    for key in ARCHITECTURE:
        if key in options and options[key] != current[key]:
            raise QKANForecastError(
                f"--{key.replace('_', '-')} {options[key]} does not fit {entry.ref} "
                f"({key} {current[key]}); leave it out to keep the checkpoint's"
            )
    return base.updated({k: v for k, v in options.items() if OPTIONS[k] not in ("model", "qkan")})


@dataclass
class Fitted:
    """A trained network with its scaler, history and the windows it was fitted on."""

    model: Forecaster
    scaler: SeriesScaler
    history: list[Epoch]
    train_windows: int
    val_windows: int
    trained_until: str  # the last timestamp training or validation read, over all series
    calibration: Calibration | None = None  # conformal half-widths from validation residuals


@torch.no_grad()
def calibrate(model: nn.Module, val_ds: WindowDataset, batch_size: int = 1024) -> Calibration:
    """Split-conformal half-widths per horizon step, in scaled units, from absolute validation residuals.

    For level a and n residuals the half-width is the ceil((n + 1) a)-th smallest (the largest when n is too
    small). The validation part also chose the epoch, so coverage can fall slightly short of the level.
    """
    model.eval()
    residuals = torch.cat([(model(x) - y).abs() for x, y in val_ds.iter_batches(batch_size)])  # [N, H]
    ordered, _ = residuals.double().sort(dim=0)
    n = len(ordered)
    widths = []
    for level in INTERVAL_LEVELS:
        k = min(math.ceil((n + 1) * level / 100), n) - 1
        widths.append(ordered[k].tolist())
    return Calibration(
        method="split conformal, absolute residuals per horizon step, scaled units",
        windows=n,
        levels=list(INTERVAL_LEVELS),
        half_widths=widths,
    )


def fit_table(
    table: Table,
    settings: Settings,
    *,
    initial_state: dict[str, torch.Tensor] | None = None,
    progress: ProgressFn | None = None,
) -> Fitted:
    """Fit one global model on every series of ``table`` (seeded here, at the entry point)."""
    data = settings.data
    torch.manual_seed(settings.train.seed)
    train_ds, val_ds, _, scaler = make_datasets(
        table,
        data.lookback,
        data.horizon,
        val_size=data.part_size("val_size"),
        test_size=data.part_size("test_size"),
        scaler=data.scaler.value,
    )
    model = build_model(settings.model)
    if initial_state is not None:
        model.load_state_dict(initial_state)
    history = fit(model, train_ds, val_ds, settings.train, progress)
    last_seen = table.ds_ns[table.offsets[:-1] + train_ds.val_end - 1].max()
    return Fitted(
        model,
        scaler,
        history,
        len(train_ds),
        len(val_ds) if val_ds is not None else 0,
        pd.Timestamp(last_seen).isoformat(),
        calibrate(model, val_ds) if val_ds is not None and len(val_ds) else None,
    )


def train(
    table: Table,
    settings: Settings,
    *,
    name: str | None = None,
    registry: Registry | None = None,
    warm_start: Entry | None = None,
    source: str | None = None,
    columns: Columns | None = None,
    progress: ProgressFn | None = None,
) -> Entry:
    """Fit one global model on every series of ``table`` and publish it as a new registry version.

    ``source`` and ``columns`` (the input's id, time and target columns) are recorded in the manifest;
    forecasts and backtests default to the same column names.
    """
    registry = registry or Registry()
    name = check_name(name or settings.model.model)
    initial_state = None
    if warm_start is not None:
        if warm_start.manifest.schema.freq != table.freq:
            raise QKANForecastError(
                f"data frequency is {table.freq} but {warm_start.ref} was trained on "
                f"{warm_start.manifest.schema.freq} data"
            )
        initial_state = registry.load_state_dict(warm_start)
    started = time.perf_counter()
    fitted = fit_table(table, settings, initial_state=initial_state, progress=progress)
    best = min(fitted.history, key=lambda e: e.val_loss)
    manifest = Manifest(
        name=name,
        model=fitted.model.config,
        data=settings.data,
        train=settings.train,
        schema=Schema(
            freq=table.freq,
            series=table.n_series,
            source=source,
            trained_until=fitted.trained_until,
            columns=columns or Columns(),
        ),
        num_parameters=count_parameters(fitted.model),
        scaler=ScalerState(**fitted.scaler.state_dict()),
        training=Training(
            warm_start=warm_start.ref if warm_start else None,
            train_windows=fitted.train_windows,
            val_windows=fitted.val_windows,
            seconds=round(time.perf_counter() - started, 3),
            best_epoch=best.epoch,
            train_loss=best.train_loss,
            val_loss=best.val_loss,
        ),
        history=fitted.history,
        calibration=fitted.calibration,
    )
    return registry.publish(name, fitted.model.state_dict(), manifest)
