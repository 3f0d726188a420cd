"""Load a registered model and forecast the steps after the end of every series of a table."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from qkanforecast.config import MAX_STEPS
from qkanforecast.data import Table
from qkanforecast.data.table import freq_to_ns
from qkanforecast.errors import QKANForecastError
from qkanforecast.models import Forecaster, build_model
from qkanforecast.registry import Entry, Registry
from qkanforecast.windows import SeriesScaler, WindowDataset, last_windows, window_calendar

CHUNK = 1024  # series forecast at once


@dataclass
class Predictor:
    """A registered model ready to predict: network in eval mode, its scaler and its data schema.

    ``column`` is the forecast column's name (the model family); ``lookback``, ``horizon`` and ``freq``
    are the ones it was trained with.
    """

    entry: Entry
    model: Forecaster
    scaler: SeriesScaler
    column: str = field(init=False)
    lookback: int = field(init=False)
    horizon: int = field(init=False)
    freq: str = field(init=False)
    step_ns: int = field(init=False)

    def __post_init__(self) -> None:
        m = self.entry.manifest
        lookback = m.data.lookback
        assert lookback is not None  # training records the lookback it used
        self.column, self.lookback, self.horizon = m.model.model, lookback, m.data.horizon
        self.freq, self.step_ns = m.schema.freq, freq_to_ns(m.schema.freq)
        self.model.eval()

    @classmethod
    def load(cls, ref: str, registry: Registry | None = None) -> Predictor:
        registry = registry or Registry()
        entry = registry.get(ref)
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
        self, uids: list[str], histories: np.ndarray, last_ds: np.ndarray, steps: int | None = None
    ) -> np.ndarray:
        """Forecast ``steps`` values after each history, in original units.

        ``histories`` is ``[S, >= lookback]`` in original units, one row per series of ``uids``, and
        ``last_ds`` the time of each history's last value (int64 ns or datetime64[ns]). Beyond the
        model's horizon the forecast is recursive: predictions are fed back as inputs.
        """
        window = self.scaler.transform(histories[:, -self.lookback :], uids)  # [S, L]
        return self.scaler.inverse_transform(self.rollout(window, last_ds, steps), uids)

    @torch.no_grad()
    def rollout(self, window: np.ndarray, last_ds: np.ndarray, steps: int | None = None) -> np.ndarray:
        """``steps`` scaled values after each scaled window ``[S, >= lookback]`` whose last value is at
        ``last_ds``: float64 ``[S, steps]``."""
        steps = steps or self.horizon
        window = window[:, -self.lookback :].astype(np.float32)
        first = np.asarray(last_ds).astype("datetime64[ns]").view(np.int64) + self.step_ns  # [S]
        out = []
        done = 0
        while done < steps:
            # chunks bound the recurrence's buffers and the calendar: [S, H]
            chunks = [slice(i, i + CHUNK) for i in range(0, len(window), CHUNK)] or [slice(0, 0)]
            pred = np.concatenate([self._predict(window[c], first[c]) for c in chunks])
            out.append(pred)
            done += pred.shape[1]
            window = np.concatenate([window, pred], axis=1)[:, -self.lookback :]
            first = first + self.horizon * self.step_ns
        return np.concatenate(out, axis=1)[:, :steps].astype(np.float64)

    def _predict(self, window: np.ndarray, first: np.ndarray) -> np.ndarray:
        """One horizon after scaled float32 windows ``[n, L]`` whose first target falls at ``first``."""
        calendar = self.model.config.calendar
        past, future = window_calendar(first, self.step_ns, self.lookback, self.horizon, calendar)
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


def forecast(
    predictor: Predictor, table: Table, steps: int | None = None, levels: list[int] | None = None
) -> pd.DataFrame:
    """The next ``steps`` (default: the model's horizon) after each series' last timestamp.

    Series the model never saw are scaled with statistics of their own history. Returns a long table
    ``unique_id, ds, <model>`` in original units, plus ``<model>-lo-<level>`` and ``<model>-hi-<level>``
    for every split-conformal prediction interval asked for in ``levels`` (within the model's horizon).
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
    check_lengths(table, predictor.lookback, f"a lookback of {predictor.lookback}")
    inputs = last_windows(table, predictor.lookback, predictor.scaler)  # fits series never seen in training
    uids = inputs.unique_id
    scaled = predictor.rollout(inputs.x[:, :, 0].numpy(), inputs.last_ds, steps)  # [S, steps]
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
    return pd.DataFrame(out)
