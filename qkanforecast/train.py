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
from dataclasses import asdict, dataclass, replace
from typing import Any

import pandas as pd
import torch
from torch import nn

from qkanforecast.config import FAMILIES, ModelConfig, QKANSpec, to_dict
from qkanforecast.data import Table
from qkanforecast.errors import QKANForecastError
from qkanforecast.models import build_model, count_parameters
from qkanforecast.registry import Entry, Registry, check_name
from qkanforecast.windows import SeriesScaler, WindowDataset, make_datasets

# The fields that shape the network: a warm start must keep them.
ARCHITECTURE = ("model", "hidden_size", "num_layers", "reps", "readout", "horizon")


@dataclass(frozen=True)
class TrainConfig:
    model: str = "qkan-lstm"
    lookback: int = 64
    horizon: int = 1
    hidden_size: int | None = None  # None: the model family's default
    num_layers: int = 1
    reps: int = 3
    readout: str = "fast"
    epochs: int = 50
    batch_size: int = 128
    lr: float = 5e-3
    val_size: float = 0.1  # < 1: a fraction of each series; >= 1: a number of steps
    test_size: float = 0.0  # held out from training and validation altogether (for an honest evaluate)
    patience: int = 8
    scaler: str = "standard"
    seed: int = 0
    max_windows: int | None = None  # per epoch, a fresh random sample of this many training windows

    def __post_init__(self) -> None:
        if self.model not in FAMILIES:
            known = ", ".join(sorted(FAMILIES))
            raise QKANForecastError(f"unknown model {self.model!r}; choose from {known}")
        for name in ("lookback", "horizon", "epochs", "batch_size", "num_layers", "reps"):
            if getattr(self, name) < 1:
                raise QKANForecastError(
                    f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}"
                )
        if self.readout not in ("fast", "born"):
            raise QKANForecastError(f"unknown read-out {self.readout!r}; choose fast or born")
        for name in ("hidden_size", "max_windows"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise QKANForecastError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if not self.lr > 0:
            raise QKANForecastError(f"--lr must be positive, got {self.lr}")
        if self.patience < 0:
            raise QKANForecastError(f"--patience must not be negative, got {self.patience}")
        for name in ("val_size", "test_size"):
            size = getattr(self, name)
            if size < 0 or (size >= 1 and size != int(size)):
                raise QKANForecastError(
                    f"--{name.replace('_', '-')} must be a fraction in [0, 1) or a whole number of steps, "
                    f"got {size}"
                )

    def model_config(self, input_size: int = 1) -> ModelConfig:
        """The network of this run (hidden_size None: the family's default)."""
        qkan = QKANSpec(reps=self.reps, readout=self.readout)  # type: ignore[arg-type]
        return ModelConfig(self.model, input_size, self.horizon, self.hidden_size, self.num_layers, qkan=qkan)


@dataclass
class Epoch:
    epoch: int
    train_loss: float
    val_loss: float
    seconds: float
    windows_per_s: float


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
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    patience: int,
    seed: int = 0,
    max_windows: int | None = None,
    progress: ProgressFn | None = None,
) -> list[Epoch]:
    """Train in place with Adam + MSE; keep the weights of the best validation epoch (or the last).

    ``max_windows`` bounds an epoch on a large panel: each epoch trains on a fresh random sample of that
    many training windows.
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    best, best_state, stale, history = math.inf, copy.deepcopy(model.state_dict()), 0, []
    for epoch in range(1, epochs + 1):
        model.train()
        start, total, count, windows = time.perf_counter(), 0.0, 0, 0
        for x, y in train_ds.iter_batches(batch_size, shuffle=True, generator=gen, limit=max_windows):
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
            progress(record, epochs, improved)
        if patience and stale >= patience:
            break
    model.load_state_dict(best_state)
    return history


def config_from(entry: Entry, overrides: dict[str, Any]) -> TrainConfig:
    """The config of a warm start: the checkpoint's, updated by ``overrides`` that keep its architecture."""
    base = TrainConfig(**entry.manifest["training"]["config"])
    if base.hidden_size is None:  # trained with the family's default: compare with the size it had
        base = replace(base, hidden_size=entry.manifest["model"]["config"].get("hidden_size"))
    for key in ARCHITECTURE:
        if key in overrides and overrides[key] != getattr(base, key):
            raise QKANForecastError(
                f"--{key.replace('_', '-')} {overrides[key]} does not fit {entry.ref} "
                f"({key} {getattr(base, key)}); leave it out to keep the checkpoint's"
            )
    return replace(base, **overrides)


def _steps_or_fraction(size: float) -> float | int:
    """1 and above is a number of steps, below 1 a fraction of each series."""
    return int(size) if size >= 1 else float(size)


@dataclass
class Fitted:
    """A trained network with its scaler, history and the windows it was fitted on."""

    model: nn.Module
    scaler: SeriesScaler
    history: list[Epoch]
    train_windows: int
    val_windows: int
    trained_until: str  # the last timestamp training or validation read, over all series
    calibration: dict[str, Any] | None = None  # conformal half-widths from validation residuals


INTERVAL_LEVELS = (50, 80, 90, 95, 99)


@torch.no_grad()
def calibrate(model: nn.Module, val_ds: WindowDataset, batch_size: int = 1024) -> dict[str, Any]:
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
    return {
        "method": "split conformal, absolute residuals per horizon step, scaled units",
        "windows": n,
        "levels": list(INTERVAL_LEVELS),
        "half_widths": widths,
    }


def fit_table(
    table: Table,
    config: TrainConfig,
    *,
    initial_state: dict[str, torch.Tensor] | None = None,
    progress: ProgressFn | None = None,
) -> Fitted:
    """Fit one global model on every series of ``table`` (seeded here, at the entry point)."""
    torch.manual_seed(config.seed)
    train_ds, val_ds, _, scaler = make_datasets(
        table,
        config.lookback,
        config.horizon,
        val_size=_steps_or_fraction(config.val_size),
        test_size=_steps_or_fraction(config.test_size),
        scaler=config.scaler,
    )
    model = build_model(config.model_config())
    if initial_state is not None:
        model.load_state_dict(initial_state)
    history = fit(
        model,
        train_ds,
        val_ds,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        patience=config.patience,
        seed=config.seed,
        max_windows=config.max_windows,
        progress=progress,
    )
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
    config: TrainConfig,
    *,
    name: str | None = None,
    registry: Registry | None = None,
    warm_start: Entry | None = None,
    source: str | None = None,
    columns: dict[str, str] | None = None,
    progress: ProgressFn | None = None,
) -> Entry:
    """Fit one global model on every series of ``table`` and publish it as a new registry version.

    ``source`` and ``columns`` (the input's ``id_col``, ``time_col`` and ``target_col``) are recorded in the
    manifest; forecasts and backtests default to the same column names.
    """
    registry = registry or Registry()
    name = check_name(name or config.model)
    initial_state = None
    if warm_start is not None:
        if warm_start.manifest["data"]["freq"] != table.freq:
            raise QKANForecastError(
                f"data frequency is {table.freq} but {warm_start.ref} was trained on "
                f"{warm_start.manifest['data']['freq']} data"
            )
        initial_state = registry.load_state_dict(warm_start)
    started = time.perf_counter()
    fitted = fit_table(table, config, initial_state=initial_state, progress=progress)
    best = min(fitted.history, key=lambda e: e.val_loss)
    manifest = {
        "model": {
            "name": config.model,
            "config": to_dict(fitted.model.config),
            "num_parameters": count_parameters(fitted.model),
        },
        "data": {
            "freq": table.freq,
            "lookback": config.lookback,
            "horizon": config.horizon,
            "series": table.n_series,
            "source": source,
            "trained_until": fitted.trained_until,
            "columns": columns or {"id_col": "unique_id", "time_col": "ds", "target_col": "y"},
        },
        "scaler": fitted.scaler.state_dict(),
        "training": {
            "config": asdict(config),
            "warm_start": warm_start.ref if warm_start else None,
            "train_windows": fitted.train_windows,
            "val_windows": fitted.val_windows,
            "seconds": round(time.perf_counter() - started, 3),
        },
        "history": [asdict(e) for e in fitted.history],
        "metrics": {"best_epoch": best.epoch, "train_loss": best.train_loss, "val_loss": best.val_loss},
        "calibration": fitted.calibration,
    }
    return registry.publish(name, fitted.model.state_dict(), manifest)
