"""Load a registered model and forecast the steps after the end of every series of a table."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from qkanforecast.checks import check_scaled
from qkanforecast.config import MAX_STEPS
from qkanforecast.covariates import Covariates, check_static
from qkanforecast.data import Table
from qkanforecast.data.table import freq_to_ns
from qkanforecast.data.zones import to_zone
from qkanforecast.errors import QKANForecastError
from qkanforecast.models import Ensemble, Forecaster, build_model
from qkanforecast.registry import Entry, Registry
from qkanforecast.windows import (
    RawCovariates,
    SeriesScaler,
    WindowDataset,
    last_windows,
    table_covariates,
    window_calendar,
)

CHUNK = 1024  # series forecast at once


@dataclass
class Predictor:
    """A registered model ready to predict: network in eval mode, its scaler and its data schema.

    ``column`` is the forecast column's name (the model family); ``lookback``, ``horizon`` and ``freq``
    are the ones it was trained with.
    """

    entry: Entry
    model: Forecaster | Ensemble
    scaler: SeriesScaler
    column: str = field(init=False)
    lookback: int = field(init=False)
    horizon: int = field(init=False)
    freq: str = field(init=False)
    step_ns: int = field(init=False)
    covariates: Covariates = field(init=False)

    def __post_init__(self) -> None:
        m = self.entry.manifest
        lookback = m.data.lookback
        if lookback is None:  # training records the lookback it used
            raise QKANForecastError(f"{self.entry.path}: the manifest records no lookback")
        self.column, self.lookback, self.horizon = m.model.model, lookback, m.data.horizon
        self.freq, self.step_ns = m.schema.freq, freq_to_ns(m.schema.freq)
        self.covariates = Covariates(m.data, m.covariates)
        if m.data.covariates and m.covariates is None:
            raise QKANForecastError(
                f"{self.entry.path}: the manifest names covariates but has no scaling for them"
            )
        self.model.eval()

    @classmethod
    def load(cls, ref: str, registry: Registry | None = None, with_scaler: bool = True) -> Predictor:
        """``with_scaler=False``: without the per-series statistics of a format-4 version (read per
        bucket)."""
        registry = registry or Registry()
        entry = registry.get(ref, scaler=with_scaler)
        try:
            model = build_model(entry.manifest.model)
            model.load_state_dict(registry.load_state_dict(entry))
            scaler = SeriesScaler.from_state_dict(asdict(entry.manifest.scaler))
        except (KeyError, TypeError, RuntimeError) as exc:
            raise QKANForecastError(
                f"{entry.path}: cannot rebuild the model from its manifest ({exc})"
            ) from None
        return cls(entry, model, scaler)

    def check_freq(self, table: Table) -> None:
        if table.freq != self.freq:
            raise QKANForecastError(
                f"data frequency is {table.freq} but {self.entry.ref} was trained on {self.freq} data"
            )

    def predict(
        self, uids: list[str], histories: np.ndarray, last_ds: np.ndarray, steps: int | None = None,
        raw: RawCovariates | None = None,
    ) -> np.ndarray:
        """Forecast ``steps`` values after each history, in original units.

        ``histories`` is ``[S, >= lookback]`` in original units, one row per series of ``uids``, and
        ``last_ds`` the time of each history's last value (int64 ns or datetime64[ns]); ``raw`` the
        covariates of a model trained with them (their ``future`` covering ``steps``). Beyond the model's
        horizon the forecast is recursive: predictions are fed back as inputs.
        """
        window = self.scaler.transform(histories[:, -self.lookback :], uids)  # [S, L]
        return self.scaler.inverse_transform(self.rollout(window, last_ds, steps, raw), uids)

    @torch.no_grad()
    def rollout(self, window: np.ndarray, last_ds: np.ndarray, steps: int | None = None,
                raw: RawCovariates | None = None) -> np.ndarray:
        """``steps`` scaled values after each scaled window ``[S, >= lookback]`` whose last value is at
        ``last_ds``: float64 ``[S, steps]``."""
        steps = steps or self.horizon
        self.check_steps(steps)
        window = window[:, -self.lookback :].astype(np.float32)
        first = np.asarray(last_ds).astype("datetime64[ns]").view(np.int64) + self.step_ns  # [S]
        past = None if raw is None else raw.past[:, -self.lookback :]
        out = []
        done = 0
        while done < steps:
            now = None
            if raw is not None and past is not None:
                now = RawCovariates(past, raw.future[:, done : done + self.horizon], raw.static)
            # chunks bound the recurrence's buffers and the calendar: [S, H]
            chunks = [slice(i, i + CHUNK) for i in range(0, len(window), CHUNK)] or [slice(0, 0)]
            pred = np.concatenate(
                [self._predict(window[c], first[c], None if now is None else now[c]) for c in chunks]
            )
            out.append(pred)
            done += pred.shape[1]
            window = np.concatenate([window, pred], axis=1)[:, -self.lookback :]
            if now is not None and past is not None and done < steps:  # no historical ones: check_steps
                past = np.concatenate([past, now.future], axis=1)[:, -self.lookback :]
            first = first + self.horizon * self.step_ns
        return np.concatenate(out, axis=1)[:, :steps].astype(np.float64)

    def check_steps(self, steps: int) -> None:
        """Beyond the horizon the forecast feeds itself back; historical covariates cannot follow."""
        if steps > self.horizon and self.entry.manifest.data.hist_exog:
            raise QKANForecastError(
                f"--steps {steps} is beyond the horizon ({self.horizon}) of {self.entry.ref}, which reads "
                f"historical covariates ({', '.join(self.entry.manifest.data.hist_exog)}) that are unknown "
                f"past the forecast origin; use --steps {self.horizon} or fewer"
            )

    def _predict(self, window: np.ndarray, first: np.ndarray, raw: RawCovariates | None) -> np.ndarray:
        """One horizon after scaled float32 windows ``[n, L]`` whose first target falls at ``first``."""
        calendar = self.model.config.calendar
        past, future = window_calendar(first, self.step_ns, self.lookback, self.horizon, calendar,
                                       self.covariates, raw, self.entry.manifest.schema.tz)
        x = torch.cat([torch.from_numpy(np.ascontiguousarray(window)[:, :, None]), past], dim=-1)
        return self.model(x, future).numpy()

    def interval_width(self, level: int) -> np.ndarray:
        """Half-width of the ``level``% conformal interval per horizon step, in scaled units: ``[H]``."""
        calibration = self.entry.manifest.calibration
        if not calibration:
            raise QKANForecastError(
                f"{self.entry.ref} has no calibration residuals (trained without a validation part or by an "
                "older qkanforecast); retrain it with --val-size > 0 for prediction intervals"
            )
        levels = calibration.levels
        if level not in levels:
            raise QKANForecastError(
                f"--level {level} is not calibrated; choose from {', '.join(map(str, levels))}"
            )
        return np.asarray(calibration.half_widths[levels.index(level)], dtype=np.float64)


@torch.no_grad()
def predict_windows(model: nn.Module, ds: WindowDataset, batch_size: int = 1024) -> np.ndarray:
    """The model's forecast of every window of ``ds``, in its scaled units: float64 ``[N, H]``.

    ``ds.scaler.inverse_transform(pred, ds.series_of(range(len(ds))))`` gives original units.
    """
    model.eval()
    out = [model(x, future).double().numpy() for x, future, _ in ds.iter_batches(batch_size)]
    return np.concatenate(out) if out else np.zeros((0, ds.horizon))


def check_lengths(table: Table, min_length: int, what: str) -> None:
    """Raise on the first series shorter than ``min_length``, naming ``what`` needs it."""
    lengths = table.lengths
    if len(lengths) and lengths.min() < min_length:
        i = int(np.argmax(lengths < min_length))
        raise QKANForecastError(
            f"series {table.ids[i]!r} has {lengths[i]} steps; {what} needs at least {min_length}"
        )


def series_arrays(
    table: Table, min_length: int, what: str
) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Per series: id, values and timestamps (views).

    Raises on the first series shorter than ``min_length``.
    """
    check_lengths(table, min_length, what)
    y, ds, off = table.values, table.frame["ds"].to_numpy(), table.offsets
    return (
        list(table.ids),
        [y[a:b] for a, b in zip(off[:-1], off[1:], strict=True)],
        [ds[a:b] for a, b in zip(off[:-1], off[1:], strict=True)],
    )


def raw_covariates(
    predictor: Predictor, table: Table, ends: np.ndarray, steps: int, future: Table | None = None
) -> RawCovariates | None:
    """The covariates of forecasts whose origin is row ``ends[i] - 1`` of series ``i``: the
    ``lookback`` input rows before it, the ``steps`` rows after it (from ``future`` where given, else from
    ``table``) and the static values. ``None`` for a model without covariates."""
    d = predictor.entry.manifest.data
    if not predictor.covariates.any:
        return None
    check_static(table, d.static)
    series = np.arange(table.n_series)
    first = table.offsets[:-1] + ends  # the row of each forecast's first step
    given = future is not None and bool(d.futr_exog)  # the future columns' values come from ``future``
    raw = table_covariates(table, d, series, first, predictor.lookback, 0 if given else steps)
    if future is not None and given:
        raw.future = future_values(table, future, d.futr_exog, steps)
    return raw


def future_values(table: Table, future: Table, columns: list[str], steps: int) -> np.ndarray:
    """The ``columns`` of ``future`` (its ``y`` is the first of them) at the ``steps`` timestamps after
    each series' last one in ``table``: ``[S, steps, len(columns)]``. A missing row is an error naming the
    series and the timestamps."""
    step, source = table.step_ns, future.report.get("source", "the future values")
    columns_of_future = [future.values, *(future.column(c) for c in columns[1:])]
    last = table.ds_ns[table.offsets[1:] - 1]
    out = np.empty((table.n_series, steps, len(columns)))
    for i, uid in enumerate(table.ids):
        want = last[i] + step  # the first forecast step
        if uid in future:
            j = future.index_of(uid)
            a, b = int(future.offsets[j]), int(future.offsets[j + 1])
            gap = int(want - future.ds_ns[a])
            if gap % step:
                raise QKANForecastError(
                    f"{source}: series '{uid}' starts at {pd.Timestamp(int(future.ds_ns[a]))}, off the "
                    f"{table.freq} grid of the data (its next step is {pd.Timestamp(int(want))})"
                )
            p = gap // step
            if p >= 0 and p + steps <= b - a:
                out[i] = np.stack([v[a + p : a + p + steps] for v in columns_of_future], -1)
                continue
            have = np.arange(a + max(p, 0), a + min(p + steps, b - a)) - a - p  # steps it holds
            missing = np.setdiff1d(np.arange(steps), have)
        else:
            missing = np.arange(steps)
        times = [str(pd.Timestamp(int(want + k * step))) for k in missing[:3]]
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise QKANForecastError(
            f"{source}: no future values of {', '.join(columns)} for series '{uid}' at "
            f"{', '.join(times)}{more}; --futr must cover the {steps} steps after each series' last timestamp"
        )
    return out


def forecast(
    predictor: Predictor, table: Table, steps: int | None = None, levels: list[int] | None = None,
    future: Table | None = None,
) -> pd.DataFrame:
    """The next ``steps`` (default: the model's horizon) after each series' last timestamp.

    A model trained with future covariates reads their values at the forecast steps from ``future``
    (a table whose ``y`` is the first future column and whose covariates are the others).
    Series the model never saw are scaled with statistics of their own history. Returns a long table
    ``unique_id, ds, <model>`` in original units, plus ``<model>-lo-<level>`` and ``<model>-hi-<level>``
    for every split-conformal prediction interval asked for in ``levels`` (within the model's horizon).
    ``ds`` is in the table's zone when it has one (``Table.tz``). A series shorter than the lookback is
    an error (``checks.skip_short`` drops such series first).
    """
    predictor.check_freq(table)
    steps = steps or predictor.horizon
    if steps > MAX_STEPS:
        raise QKANForecastError(f"--steps {steps} is more than {MAX_STEPS:,}, the most one forecast makes")
    levels = sorted(set(levels or []))
    if levels and steps > predictor.horizon:
        raise QKANForecastError(
            f"prediction intervals cover the model's horizon ({predictor.horizon} steps); use --steps "
            f"{predictor.horizon} or fewer, or leave out --level"
        )
    widths = {level: predictor.interval_width(level)[:steps] for level in levels}
    predictor.check_steps(steps)
    futr = predictor.entry.manifest.data.futr_exog
    if futr and future is None:
        raise QKANForecastError(
            f"{predictor.entry.ref} reads future covariates ({', '.join(futr)}): give their values at the "
            f"forecast steps with --futr FILE"
        )
    check_lengths(table, predictor.lookback, f"a lookback of {predictor.lookback}")
    inputs = last_windows(table, predictor.lookback, predictor.scaler)  # fits series never seen in training
    uids = inputs.unique_id
    check_scaled(table, predictor.scaler, last=predictor.lookback)
    _check_end(inputs.unique_id, inputs.last_ds, steps, predictor)
    raw = raw_covariates(predictor, table, table.lengths, steps, future)
    scaled = predictor.rollout(inputs.x[:, :, 0].numpy(), inputs.last_ds, steps, raw)  # [S, steps]
    out = {
        "unique_id": np.repeat(uids, steps),
        "ds": inputs.future_ds(steps).reshape(-1),
        predictor.column: predictor.scaler.inverse_transform(scaled, uids).reshape(-1),
    }
    for level, width in widths.items():  # scalers are increasing affine maps: bounds stay ordered
        out[f"{predictor.column}-lo-{level}"] = predictor.scaler.inverse_transform(
            scaled - width, uids
        ).reshape(-1)
        out[f"{predictor.column}-hi-{level}"] = predictor.scaler.inverse_transform(
            scaled + width, uids
        ).reshape(-1)
    return to_zone(pd.DataFrame(out), table.tz)


def _check_end(uids: list[str], last_ds: np.ndarray, steps: int, predictor: Predictor) -> None:
    """The last forecast date must be a timestamp (at most 2262-04-11), or the dates would wrap round."""
    if not len(uids):
        return
    i = int(np.argmax(last_ds))
    end = int(last_ds.view(np.int64)[i]) + steps * predictor.step_ns  # a Python int: no overflow
    if end > pd.Timestamp.max.value:
        raise QKANForecastError(
            f"the forecast of series '{uids[i]}' would end after 2262-04-11, the last date a timestamp holds "
            f"({steps} steps of {predictor.freq} after {pd.Timestamp(last_ds[i])}); forecast fewer steps"
        )
