"""Model-agnostic training: windows in, best weights out, then a registry version.

One global model is fitted over every series of a table: per-series scalers fitted on the training part,
windows as views, Adam on the MSE of the scaled targets, early stopping on the chronological validation
part with the best weights kept. Seeded once here, at the entry point; the same seed, data and thread count
give bitwise the same weights.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from qkanforecast.activations import input_ranges
from qkanforecast.baselines import season_length
from qkanforecast.checks import check_scaled
from qkanforecast.config import (
    ARCHITECTURE,
    INTERVAL_LEVELS,
    OPTIONS,
    Columns,
    Loss,
    Settings,
    TrainConfig,
)
from qkanforecast.covariates import Covariates, CovariateStats, fit_stats
from qkanforecast.covariates import sizes as covariate_sizes
from qkanforecast.data import Table
from qkanforecast.errors import QKANForecastError
from qkanforecast.manifest import Calibration, Epoch, InputRanges, Manifest, ScalerState, Schema, Training
from qkanforecast.models import Ensemble, Forecaster, build_model, count_parameters
from qkanforecast.registry import Entry, Registry, check_name
from qkanforecast.windows import Batch, SeriesScaler, WindowDataset, make_datasets, split_points

if TYPE_CHECKING:
    from qkanforecast.distributed import Dist

INPUTS = ("hist_exog", "futr_exog", "static", "holidays")  # what the network reads: fixed by a checkpoint
# (epoch record, total epochs, improved, validated: False when there is no validation part and the
# training loss stands in for it)
ProgressFn = Callable[[Epoch, int, bool, bool], None]


LOSSES: dict[Loss, Callable[..., torch.Tensor]] = {
    Loss.MSE: nn.functional.mse_loss,
    Loss.MAE: nn.functional.l1_loss,
    Loss.HUBER: nn.functional.huber_loss,  # delta 1 in scaled units
}


def sample_windows(n: int, limit: int, seed: int) -> np.ndarray | None:
    """A fixed random sample (sorted) of ``limit`` of ``n`` windows, the same for every call with the same
    arguments, or None (all windows) when ``limit`` is 0 or not below ``n``. Validation and calibration
    read it under ``max_windows``, so that early stopping compares epochs on the same windows."""
    if not limit or n <= limit:
        return None
    return np.sort(torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit].numpy())


def _batches(ds: WindowDataset, batch_size: int, index: np.ndarray | None) -> Iterator[Batch]:
    """Every window of ``ds`` in order, or the windows ``index``."""
    if index is None:
        yield from ds.iter_batches(batch_size)
        return
    for b in range(0, len(index), batch_size):
        yield ds.batch(index[b : b + batch_size])


@torch.no_grad()
def evaluate_loss(
    model: nn.Module,
    ds: WindowDataset,
    loss: Loss = Loss.MSE,
    batch_size: int = 1024,
    index: np.ndarray | None = None,
) -> float:
    """The mean ``loss`` over every window of ``ds`` (or over the windows ``index``)."""
    total, count = loss_sums(model, ds, loss, batch_size, index)
    return total / max(count, 1)


@torch.no_grad()
def loss_sums(
    model: nn.Module,
    ds: WindowDataset,
    loss: Loss = Loss.MSE,
    batch_size: int = 1024,
    index: np.ndarray | None = None,
) -> tuple[float, int]:
    """The summed ``loss`` and the number of target values it covers (ranks add these up)."""
    model.eval()
    loss_fn = LOSSES[loss]
    total, count = 0.0, 0
    for x, future, y in _batches(ds, batch_size, index):
        total += float(loss_fn(model(x, future), y, reduction="sum"))
        count += y.numel()
    return total, count


def _val_loss(model: nn.Module, ds: WindowDataset, loss: Loss, index: np.ndarray | None,
              dist: Dist | None) -> float:
    """The validation loss: this process', or the ranks' sums over their summed counts."""
    if dist is None:
        return evaluate_loss(model, ds, loss, index=index)
    total, count = dist.sum(list(loss_sums(model, ds, loss, index=index)))
    return total / max(count, 1)


def _windows(ds: WindowDataset | None, dist: Dist | None) -> int:
    """Windows of ``ds``, over every rank."""
    n = len(ds) if ds is not None else 0
    return n if dist is None else int(dist.sum([n])[0])


def fit(
    model: nn.Module,
    train_ds: WindowDataset,
    val_ds: WindowDataset | None,
    config: TrainConfig,
    progress: ProgressFn | None = None,
    dist: Dist | None = None,
) -> list[Epoch]:
    """Train in place with Adam on ``config.loss``; keep the weights of the best validation epoch (or the
    last).

    ``config.max_windows`` bounds an epoch on a large panel: each epoch trains on a fresh random sample
    of that many training windows and validates on one fixed sample of that many validation windows.
    Without validation windows the training loss chooses the epoch (``progress`` is told so).
    ``Epoch.windows_per_s`` counts training windows over the training time (validation left out).

    Under ``dist`` the model is wrapped in DistributedDataParallel, every rank takes the same number of
    steps (the fewest of any rank, as DDP needs), and the losses are summed over ranks, so that every rank
    keeps the same epoch.
    """
    gen = torch.Generator().manual_seed(config.seed)
    validated = _windows(val_ds, dist) > 0
    val_index = sample_windows(len(val_ds), config.max_windows, config.seed) if val_ds is not None else None
    loss_fn = LOSSES[config.loss]
    net = model if dist is None else dist.wrap(model)
    steps = None
    if dist is not None:
        limit = min(len(train_ds), config.max_windows or len(train_ds))
        steps = dist.min(math.ceil(limit / config.batch_size))
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    best, best_state, stale, history = math.inf, copy.deepcopy(model.state_dict()), 0, []
    for epoch in range(1, config.epochs + 1):
        model.train()
        start, total, count, windows = time.perf_counter(), 0.0, 0, 0
        for step, (x, future, y) in enumerate(train_ds.iter_batches(
            config.batch_size, shuffle=True, generator=gen, limit=config.max_windows or None
        )):
            if steps is not None and step >= steps:
                break
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(x, future), y)
            loss.backward()
            opt.step()
            total += loss.item() * y.numel()
            count += y.numel()
            windows += len(y)
        trained = time.perf_counter()
        if dist is not None:
            total, summed, summed_windows = dist.sum([total, count, windows])
            count, windows = int(summed), int(summed_windows)
        train_loss = total / max(count, 1)
        val_loss = train_loss
        if val_ds is not None and validated:
            val_loss = _val_loss(model, val_ds, config.loss, val_index, dist)
        seconds = time.perf_counter() - start
        record = Epoch(epoch, train_loss, val_loss, seconds, windows / max(trained - start, 1e-9))
        history.append(record)
        if not math.isfinite(train_loss):
            raise QKANForecastError(f"training diverged at epoch {epoch} (loss {train_loss}); lower --lr")
        improved = val_loss < best
        if improved:
            best, best_state, stale = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
        if progress is not None:
            progress(record, config.epochs, improved, validated)
        if config.patience and stale >= config.patience:
            break
    model.load_state_dict(best_state)
    return history


def warm_settings(entry: Entry, options: dict[str, Any]) -> Settings:
    """The settings of a warm start: the checkpoint's, updated by ``options`` that keep its architecture."""
    m = entry.manifest
    base = Settings(m.model, m.data, m.train)
    current = {**asdict(base.model), **asdict(base.model.qkan), **asdict(base.data)}
    for key in (*ARCHITECTURE, *INPUTS):
        if key in options and options[key] != current[key]:
            raise QKANForecastError(
                f"--{key.replace('_', '-')} {options[key]} does not fit {entry.ref} "
                f"({key} {current[key]}); leave it out to keep the checkpoint's"
            )
    return base.updated(
        {k: v for k, v in options.items() if OPTIONS[k] not in ("model", "qkan") and k not in INPUTS}
    )


@dataclass
class Fitted:
    """A trained network with its settings (resolved), scaler, history and the windows it was fitted on."""

    settings: Settings
    model: Forecaster | Ensemble
    scaler: SeriesScaler
    history: list[Epoch]
    train_windows: int
    val_windows: int
    trained_until: str  # the last timestamp training or validation read, over all series
    calibration: Calibration | None = None  # conformal half-widths from validation residuals
    covariates: CovariateStats | None = None  # the scaling of the exogenous covariates
    input_ranges: InputRanges | None = None  # what the QKAN layers met in training (activation plots)
    best: Epoch | None = None  # the kept weights' record (an ensemble's: its own validation loss)


@torch.no_grad()
def calibrate(
    model: nn.Module,
    val_ds: WindowDataset,
    batch_size: int = 1024,
    index: np.ndarray | None = None,
    dist: Dist | None = None,
) -> Calibration:
    """Split-conformal half-widths per horizon step, in scaled units, from absolute validation residuals
    (of every window, or of the windows ``index``).

    For level a and n residuals the half-width is the ceil((n + 1) a)-th smallest (the largest when n is too
    small). The validation part also chose the epoch, so coverage can fall slightly short of the level.
    Under ``dist`` the residuals of every rank are gathered first.
    """
    model.eval()
    batches = _batches(val_ds, batch_size, index)
    parts = [(model(x, f) - y).abs() for x, f, y in batches]
    if dist is not None:
        parts = [p for rank in dist.gather(parts) for p in rank]
    residuals = torch.cat(parts)  # [N, H]
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


def auto_lookback(season: int, horizon: int, train_length: int) -> int:
    """The default lookback: a week of steps (7 seasons), else two days, else one, whichever leaves the
    shortest series' training part room for a few windows (lookback + 2 horizons); else what fits."""
    for days in (7, 2, 1):
        if days * season + 2 * horizon <= train_length:
            return days * season
    return max(1, min(season, train_length - 2 * horizon))


def shortest_train(settings: Settings, table: Table) -> int:
    """The fewest training steps of any series of ``table`` (the lookback's default depends on it)."""
    data = settings.data
    train_end, _ = split_points(table.lengths, data.part_size("val_size"), data.part_size("test_size"),
                                ids=table.ids)
    return int(train_end.min())


def resolve(settings: Settings, table: Table, shortest: int | None = None) -> Settings:
    """The settings with every data-dependent default made concrete (and so recorded in the manifest):
    the season from the frequency, the lookback, the recurrence's length and the skip. ``shortest``: the
    fewest training steps of any series, where ``table`` holds only some of them."""
    data, model = settings.data, settings.model
    season = season_length(table.freq)
    if data.lookback is None:
        fewest = shortest_train(settings, table) if shortest is None else shortest
        data = replace(data, lookback=auto_lookback(season, data.horizon, fewest))
    assert data.lookback is not None
    past, future = covariate_sizes(data)
    model = replace(model, season=season, input_size=1 + past, future_size=future)
    if model.recurrent_steps is None:
        model = replace(model, recurrent_steps=min(data.lookback, max(2 * season, 168)))
    model = replace(model, skip=model.skip_base, lags=model.uses_lags, ensemble=model.members)
    if len(model.members) == 1:  # one member: a single model reading that many days of lags
        model = replace(model, lag_days=model.members[0], ensemble=[])
    return Settings(model, data, settings.train)


def fit_table(
    table: Table,
    settings: Settings,
    *,
    initial_state: dict[str, torch.Tensor] | None = None,
    progress: ProgressFn | None = None,
    dist: Dist | None = None,
) -> Fitted:
    """Fit one global model on every series of ``table`` (seeded here, at the entry point). Under ``dist``
    ``table`` holds this rank's series and ``settings`` come resolved over every rank's series."""
    settings = resolve(settings, table)
    data = settings.data
    assert data.lookback is not None
    torch.manual_seed(settings.train.seed)
    val_size, test_size = data.part_size("val_size"), data.part_size("test_size")
    train_end, _ = split_points(table.lengths, val_size, test_size, ids=table.ids)
    stats = fit_stats(table, data, train_end, dist)
    train_ds, val_ds, _, scaler = make_datasets(
        table,
        data.lookback,
        data.horizon,
        val_size=val_size,
        test_size=test_size,
        scaler=data.scaler.value,
        calendar=settings.model.calendar,
        covariates=Covariates(data, stats),
    )
    check_scaled(table, scaler)
    model = build_model(settings.model)
    if initial_state is not None:
        model.load_state_dict(initial_state)
    history, best = fit_members(model, train_ds, val_ds, settings.train, progress, dist)
    budget = (settings.train.max_windows, settings.train.seed)  # validation's sample, again for calibration
    last_seen = table.ds_ns[table.offsets[:-1] + train_ds.val_end - 1].max()
    return Fitted(
        settings,
        model,
        scaler,
        history,
        len(train_ds),
        len(val_ds) if val_ds is not None else 0,
        pd.Timestamp(last_seen).isoformat(),
        calibrate(model, val_ds, index=sample_windows(len(val_ds), *budget), dist=dist)
        if val_ds is not None and _windows(val_ds, dist)
        else None,
        stats,
        input_ranges(model, train_ds, seed=settings.train.seed),
        best,
    )


def fit_members(
    model: Forecaster | Ensemble,
    train_ds: WindowDataset,
    val_ds: WindowDataset | None,
    config: TrainConfig,
    progress: ProgressFn | None = None,
    dist: Dist | None = None,
) -> tuple[list[Epoch], Epoch]:
    """``fit`` a model, or each member of an ensemble in turn (apart, each with its own early stopping;
    epochs numbered on across members). Returns the history and the record of the kept weights: for an
    ensemble the last member's best epoch with the ensemble's own validation loss."""
    members = list(model.members) if isinstance(model, Ensemble) else [model]
    history: list[Epoch] = []
    for k, member in enumerate(members):
        offset, left = len(history), len(members) - k

        def shown(record: Epoch, total: int, improved: bool, validated: bool, offset: int = offset,
                  left: int = left) -> None:
            if progress is not None:
                progress(replace(record, epoch=record.epoch + offset), offset + total * left, improved,
                         validated)

        records = fit(member, train_ds, val_ds, config, shown, dist)
        history += [replace(r, epoch=r.epoch + offset) for r in records]
    best = min(history[offset:], key=lambda e: e.val_loss)
    if isinstance(model, Ensemble) and val_ds is not None and _windows(val_ds, dist):
        index = sample_windows(len(val_ds), config.max_windows, config.seed)
        choose_weights(model, val_ds, config.loss, index, dist)
        best = replace(best, val_loss=_val_loss(model, val_ds, config.loss, index, dist))
    return history, best


WEIGHT_STEP = 0.1  # the grid of ensemble weights tried on the validation windows


@torch.no_grad()
def choose_weights(model: Ensemble, val_ds: WindowDataset, loss: Loss, index: np.ndarray | None,
                   dist: Dist | None = None) -> None:
    """Set the ensemble's weights to the point of a 0.1 grid on the simplex (two or three members; more
    keep equal weights) with the lowest validation loss; ties go to the most even weights. Under ``dist``
    the losses are the ranks' sums over their summed counts."""
    k = len(model.members)
    if k > 3:
        return
    model.eval()
    outs, ys = [], []
    for x, future, y in _batches(val_ds, 1024, index):
        outs.append(torch.stack([m(x, future) for m in model.members], dim=-1))  # [N, H, K]
        ys.append(y)
    stacked, target = torch.cat(outs).double(), torch.cat(ys).double()
    steps = round(1 / WEIGHT_STEP)
    grid = [w for w in itertools.product(range(steps + 1), repeat=k) if sum(w) == steps]
    candidates = torch.tensor(grid, dtype=torch.float64) / steps  # [G, K]
    if dist is None:
        losses = torch.stack([LOSSES[loss](stacked @ w, target) for w in candidates])
    else:
        sums = [float(LOSSES[loss](stacked @ w, target, reduction="sum")) for w in candidates]
        *summed, count = dist.sum([*sums, target.numel()])
        losses = torch.tensor(summed, dtype=torch.float64) / max(count, 1)
    spread = (candidates - 1.0 / k).abs().sum(1)
    best = min(range(len(grid)), key=lambda g: (round(float(losses[g]), 12), float(spread[g])))
    model.weights.copy_(candidates[best].to(model.weights.dtype))


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
    dist: Dist | None = None,
) -> Entry:
    """Fit one global model on every series of ``table`` and publish it as a new registry version.

    ``source`` and ``columns`` (the input's id, time and target columns) are recorded in the manifest;
    forecasts and backtests default to the same column names. Under ``dist`` (torchrun) each rank fits
    its share of the series, and rank 0 publishes the version, with every rank's scalers, and returns it
    to every rank.
    """
    registry = registry or Registry()
    name = check_name(name or settings.model.model)
    registry.check_writable(name)  # found out now, not after the whole training
    initial_state = None
    if warm_start is not None:
        if warm_start.manifest.schema.freq != table.freq:
            raise QKANForecastError(
                f"data frequency is {table.freq} but {warm_start.ref} was trained on "
                f"{warm_start.manifest.schema.freq} data"
            )
        initial_state = registry.load_state_dict(warm_start)
    started = time.perf_counter()
    if dist is None:
        fitted = fit_table(table, settings, initial_state=initial_state, progress=progress)
    else:
        fitted = _fit_shard(table, settings, initial_state, progress, dist)
    best = fitted.best or min(fitted.history, key=lambda e: e.val_loss)
    manifest = Manifest(
        name=name,
        model=fitted.model.config,
        data=fitted.settings.data,
        train=fitted.settings.train,
        schema=Schema(
            freq=table.freq,
            series=table.n_series if dist is None else dist.series(table),
            source=source,
            trained_until=fitted.trained_until,
            columns=columns or Columns(),
            tz=table.tz,
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
        covariates=fitted.covariates,
        input_ranges=fitted.input_ranges,
    )
    if dist is None:
        return registry.publish(name, fitted.model.state_dict(), manifest)
    entry = registry.publish(name, fitted.model.state_dict(), manifest) if dist.rank == 0 else None
    return dist.broadcast(entry)  # type: ignore[return-value]


def _fit_shard(table: Table, settings: Settings, initial_state: dict[str, torch.Tensor] | None,
               progress: ProgressFn | None, dist: Dist) -> Fitted:
    """``fit_table`` on this rank's series, with the scalers, window counts and last timestamp of every
    rank. Settings are resolved with the shortest series of any rank, so that every rank builds the same
    network."""
    from qkanforecast.distributed import record_digest

    shard = dist.shard(table)
    shortest = dist.min(shortest_train(settings, shard)) if settings.data.lookback is None else None
    fitted = fit_table(shard, resolve(settings, shard, shortest), initial_state=initial_state,
                       progress=progress, dist=dist)
    record_digest(dist, fitted.model.state_dict(), list(shard.ids))
    stats: dict[str, Any] = {}
    for state in dist.gather(fitted.scaler.state_dict()):
        stats.update(zip(state["unique_id"], zip(state["loc"], state["scale"], strict=True), strict=True))
    ids = sorted(stats) if dist.own_buckets else [u for u in table.ids if u in stats]
    scaler = SeriesScaler(fitted.scaler.kind).load_state_dict(
        {"kind": fitted.scaler.kind, "unique_id": ids, "loc": [stats[u][0] for u in ids],
         "scale": [stats[u][1] for u in ids]})
    train_windows, val_windows = dist.sum([fitted.train_windows, fitted.val_windows])
    return replace(fitted, scaler=scaler, train_windows=int(train_windows),
                   val_windows=int(val_windows), trained_until=max(dist.gather(fitted.trained_until)))
