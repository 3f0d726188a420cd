"""Windowed datasets over a canonical ``Table``, chronological splits and per-series scalers.

Notation: S series, L lookback, H horizon, N windows in a batch.

A window of series ``i`` with first target at position ``t`` (0-based within the series) has inputs
``y[t - L : t]`` and targets ``y[t : t + H]``. Splits are per series: ``train = [0, train_end)``,
``val = [train_end, val_end)``, ``test = [val_end, n)``. A window belongs to the part holding all its
targets; its inputs may reach back into earlier parts (a validation window may read the end of train)
but never forward, so train windows never see validation or test values and validation windows never
see test values.

Windows are views: the dataset keeps one tensor over the table's ``y`` (no copy), ``unfold`` gives the
``[rows - L - H + 1, L + H]`` view of every run of ``L + H`` values, and only the start row of each part's
first window per series is stored. Scaling happens per batch, so building a dataset allocates O(S) memory.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from qkanforecast.config import DataConfig, Scaler
from qkanforecast.covariates import Covariates
from qkanforecast.data import Table
from qkanforecast.errors import QKANForecastError
from qkanforecast.features import calendar, local_time, step_times

SCALERS = tuple(k.value for k in Scaler)
PARTS = ("train", "val", "test")


class SeriesScaler:
    """Per-series affine scaling ``(v - loc) / scale``, fitted on training values only.

    ``standard``: mean and standard deviation; ``robust``: median and inter-quartile range; ``minmax``:
    maps the training range to [-1, 1] (as the QKAN-LSTM paper does); ``none``: identity. A constant
    series gets scale 1. Statistics are float64 and serialise exactly through JSON.
    """

    def __init__(self, kind: str = "standard") -> None:
        if kind not in SCALERS:
            raise QKANForecastError(f"unknown scaler '{kind}'; choose from {', '.join(SCALERS)}")
        self.kind = kind
        self._stats: dict[str, tuple[float, float]] = {}

    def __repr__(self) -> str:
        return f"SeriesScaler(kind={self.kind!r}, series={len(self._stats)})"

    def __len__(self) -> int:
        return len(self._stats)

    def has(self, unique_id: str) -> bool:
        return unique_id in self._stats

    def stats(self, unique_id: str) -> tuple[float, float]:
        """``(loc, scale)`` of a series."""
        try:
            return self._stats[unique_id]
        except KeyError:
            raise QKANForecastError(
                f"the scaler has no statistics for series '{unique_id}'; fit it on that series' history "
                "(SeriesScaler.fit_series) to forecast a series unseen in training") from None

    def fit_series(self, unique_id: str, values: Any) -> SeriesScaler:
        """Fit (or refit) one series on ``values`` (its training part, or its own history)."""
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.size == 0 or not np.isfinite(v).all():
            raise QKANForecastError(
                f"cannot fit the scaler on series '{unique_id}': no values or non-finite values")
        if self.kind == "standard":
            loc, scale = float(v.mean()), float(v.std())
        elif self.kind == "robust":
            q1, med, q3 = np.quantile(v, [0.25, 0.5, 0.75])
            loc, scale = float(med), float(q3 - q1)
            if not scale > 0:
                scale = float(v.std())
        elif self.kind == "minmax":
            lo, hi = float(v.min()), float(v.max())
            loc, scale = (hi + lo) / 2, (hi - lo) / 2
        else:
            loc, scale = 0.0, 1.0
        if not (scale > 0 and math.isfinite(scale)):
            scale = 1.0
        self._stats[str(unique_id)] = (loc, scale)
        return self

    def fit_rows(self, ids: Sequence[str], y: np.ndarray, starts: Any, ends: Any) -> SeriesScaler:
        """Fit series ``ids[i]`` on ``y[starts[i]:ends[i]]``, as ``fit_series`` does one by one (bitwise the
        same statistics), but a block of equally long series at a time: one reduction over a 2-D array
        instead of a Python call per series (most of a large forecast's time otherwise)."""
        starts, ends = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
        if self.kind not in ("standard", "minmax"):
            for uid, lo, hi in zip(ids, starts, ends, strict=True):
                self.fit_series(uid, y[lo:hi])
            return self
        sizes = ends - starts
        locs, scales, bad = np.zeros(len(sizes)), np.ones(len(sizes)), np.zeros(len(sizes), dtype=bool)
        for n in np.unique(sizes):
            members = np.flatnonzero(sizes == n)
            block = max(1, (1 << 22) // max(int(n), 1))  # about 32 MB of float64 at a time
            for b in range(0, len(members), block):
                rows = members[b:b + block]
                v = np.asarray(y[starts[rows, None] + np.arange(n)[None, :]], dtype=np.float64)
                bad[rows] = ~np.isfinite(v).all(axis=1) if n else True
                if bad[rows].any():
                    continue  # reported below, the first in the order of ids
                if self.kind == "standard":
                    loc, scale = v.mean(axis=1), v.std(axis=1)
                else:
                    lo, hi = v.min(axis=1), v.max(axis=1)
                    loc, scale = (hi + lo) / 2, (hi - lo) / 2
                locs[rows], scales[rows] = loc, np.where((scale > 0) & np.isfinite(scale), scale, 1.0)
        if bad.any():
            uid = ids[int(np.argmax(bad))]
            raise QKANForecastError(f"cannot fit the scaler on series '{uid}': no values or non-finite "
                                    "values")
        for uid, a, b in zip(ids, locs.tolist(), scales.tolist(), strict=True):  # in the order of ids
            self._stats[str(uid)] = (a, b)
        return self

    def fit(self, data: Table | pd.DataFrame | Mapping[str, Any],
            until: Sequence[int] | np.ndarray | None = None) -> SeriesScaler:
        """Fit every series: a ``Table`` (first ``until[i]`` values of series ``i``, default all), a
        long DataFrame ``unique_id, y`` or a mapping ``{unique_id: values}``."""
        if isinstance(data, Table):
            off = data.offsets
            ends = off[1:] if until is None else off[:-1] + np.asarray(until, dtype=np.int64)
            self.fit_rows(data.ids, data.values, off[:-1], ends)
        elif isinstance(data, pd.DataFrame):
            for uid, group in data.groupby("unique_id", sort=False, observed=True):
                self.fit_series(str(uid), group["y"].to_numpy())
        else:
            for uid, values in data.items():
                self.fit_series(str(uid), values)
        return self

    def _loc_scale(self, unique_id: str | Sequence[str], ndim: int) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(unique_id, str):
            loc, scale = self.stats(unique_id)
            return np.float64(loc), np.float64(scale)
        pairs = np.array([self.stats(str(u)) for u in unique_id], dtype=np.float64).reshape(-1, 2)
        shape = (-1,) + (1,) * (ndim - 1)
        return pairs[:, 0].reshape(shape), pairs[:, 1].reshape(shape)

    def transform(self, values: Any, unique_id: str | Sequence[str]) -> Any:
        """Scale ``values`` of one series (``unique_id`` a string) or of one series per row
        (``unique_id`` a sequence as long as ``values``' first axis). numpy in, numpy out; torch in,
        torch out (same dtype)."""
        return self._apply(values, unique_id, inverse=False)

    def inverse_transform(self, values: Any, unique_id: str | Sequence[str]) -> Any:
        """Back to original units: ``v * scale + loc``."""
        return self._apply(values, unique_id, inverse=True)

    def _apply(self, values: Any, unique_id: str | Sequence[str], inverse: bool) -> Any:
        if isinstance(values, torch.Tensor):
            loc, scale = self._loc_scale(unique_id, max(values.dim(), 1))
            lt = torch.as_tensor(loc, dtype=torch.float64)
            st = torch.as_tensor(scale, dtype=torch.float64)
            tv = values.to(torch.float64)
            out = tv * st + lt if inverse else (tv - lt) / st
            return out.to(values.dtype)
        v = np.asarray(values, dtype=np.float64)
        loc, scale = self._loc_scale(unique_id, max(v.ndim, 1))
        return v * scale + loc if inverse else (v - loc) / scale

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: ``{"kind", "unique_id", "loc", "scale"}``."""
        ids = list(self._stats)
        return {"kind": self.kind, "unique_id": ids, "loc": [self._stats[u][0] for u in ids],
                "scale": [self._stats[u][1] for u in ids]}

    def load_state_dict(self, state: Mapping[str, Any]) -> SeriesScaler:
        if state.get("kind") not in SCALERS:
            raise QKANForecastError(f"bad scaler state: unknown kind {state.get('kind')!r}")
        self.kind = state["kind"]
        self._stats = {str(u): (float(a), float(b))
                       for u, a, b in zip(state["unique_id"], state["loc"], state["scale"], strict=True)}
        return self

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> SeriesScaler:
        return cls().load_state_dict(state)


def _size(value: float | int, n: int, name: str) -> int:
    """A part size in steps: an int is steps, a float in [0, 1) a fraction of ``n`` (rounded)."""
    if isinstance(value, bool) or value < 0:
        raise QKANForecastError(f"{name} must be a number of steps or a fraction in [0, 1), got {value}")
    if isinstance(value, float) and not value.is_integer():
        if value >= 1:
            raise QKANForecastError(f"{name} must be a number of steps or a fraction in [0, 1), got {value}")
        return int(round(value * n))
    return int(value)


def split_points(lengths: Iterable[int], val_size: float | int = 0, test_size: float | int = 0,
                 ids: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-series ``(train_end, val_end)``: train ``[0, train_end)``, val ``[train_end, val_end)``,
    test ``[val_end, n)``. Sizes are steps (int) or fractions of each series' length (float < 1)."""
    n = np.asarray(list(lengths), dtype=np.int64)
    test = np.array([_size(test_size, int(m), "test_size") for m in n], dtype=np.int64)
    val = np.array([_size(val_size, int(m), "val_size") for m in n], dtype=np.int64)
    train_end = n - test - val
    if (train_end < 1).any():
        i = int(np.argmax(train_end < 1))
        name = f"series '{ids[i]}'" if ids is not None else f"series {i}"
        raise QKANForecastError(
            f"{name} has {int(n[i])} values: val_size {val_size} and test_size {test_size} leave no "
            "training values")
    return train_end, n - test


@dataclass
class ForecastInputs:
    """The last ``lookback`` scaled values of every series, ready for a model."""

    unique_id: list[str]
    x: torch.Tensor  # [S, L, 1]
    last_ds: np.ndarray  # datetime64[ns] [S]
    freq: str

    def future_ds(self, horizon: int) -> np.ndarray:
        """Timestamps of the next ``horizon`` steps of every series: datetime64[ns] ``[S, H]``."""
        step = pd.Timedelta(pd.tseries.frequencies.to_offset(self.freq)).value
        k = np.arange(1, horizon + 1, dtype=np.int64) * step
        return (self.last_ds.view(np.int64)[:, None] + k[None, :]).view("datetime64[ns]")


@dataclass
class RawCovariates:
    """Covariate values of N windows in original units (see ``Covariates.windows``): the historical and
    future columns at the input steps ``past [N, L, hist + futr]``, the future columns at the forecast
    steps ``future [N, H, futr]`` and the static columns ``static [N, static]``."""

    past: np.ndarray
    future: np.ndarray
    static: np.ndarray

    def __getitem__(self, rows: slice) -> RawCovariates:
        return RawCovariates(self.past[rows], self.future[rows], self.static[rows])


def table_covariates(table: Table, data: DataConfig, series: np.ndarray, first: np.ndarray, lookback: int,
                     horizon: int) -> RawCovariates:
    """The covariates of ``data`` for windows of series ``series`` whose first target is at table row
    ``first`` (``[N]`` each): the ``lookback`` rows before it, the ``horizon`` rows from it (future
    columns only; 0 to leave them to the caller) and the series' static values. Only these rows are read."""
    n = len(first)
    rows = first[:, None] - lookback + np.arange(lookback + horizon)[None, :]  # [N, L + H]

    def gather(columns: list[str], at: np.ndarray) -> np.ndarray:
        if not columns:
            return np.zeros((*at.shape, 0))
        return np.stack([table.column(c)[at] for c in columns], axis=-1)

    return RawCovariates(gather([*data.hist_exog, *data.futr_exog], rows[:, :lookback]),
                         gather(data.futr_exog, rows[:, lookback:]),
                         gather(data.static, table.offsets[series]) if data.static else np.zeros((n, 0)))


def window_calendar(first_target: np.ndarray, step_ns: int, lookback: int, horizon: int,
                    on: bool = True, covariates: Covariates | None = None,
                    raw: RawCovariates | None = None, tz: str | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """What a model reads besides the target at the input steps ``[N, L, C + P]`` and at the forecast
    steps ``[N, H, C + F]`` of windows whose first target falls at ``first_target`` (int64 ns): the
    calendar (C = 0 when not ``on``), then the covariates (P = F = 0 without ``covariates``). With ``tz``
    the timestamps are UTC and the calendar and holidays read that zone's wall clock."""
    n = len(first_target)
    past, future = [torch.zeros(n, lookback, 0)], [torch.zeros(n, horizon, 0)]
    extra = covariates is not None and covariates.any
    if not (on or extra):
        return past[0], future[0]
    times = local_time(step_times(first_target, step_ns, -lookback, horizon), tz)  # [N, L + H]
    if on:
        cal = torch.from_numpy(calendar(times))
        past.append(cal[:, :lookback])
        future.append(cal[:, lookback:])
    if covariates is not None and extra:
        if raw is None:
            raw = RawCovariates(np.zeros((n, lookback, 0)), np.zeros((n, horizon, 0)), np.zeros((n, 0)))
        cp, cf = covariates.windows(raw.past, raw.future, raw.static, times)
        past.append(torch.from_numpy(cp))
        future.append(torch.from_numpy(cf))
    return torch.cat(past, dim=-1), torch.cat(future, dim=-1)


def _tensor(values: np.ndarray) -> torch.Tensor:
    """A torch view of a (possibly read-only) numpy array; it is never written to."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(values)


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (x [N, L, F], future [N, H, C], y [N, H])


class WindowDataset(Dataset[Batch]):
    """Windows of ``lookback`` inputs and ``horizon`` targets from one part of every series.

    ``dataset.batch(idx) -> (x [N, L, F], future [N, H, C], y [N, H])`` float32, scaled: ``x`` holds the
    target and, with ``calendar``, the calendar of every input step (F = 1 + C); ``future`` the calendar of
    every target step (C = 0 without it). ``dataset[k]`` is one window without the batch axis;
    ``iter_batches(batch_size, shuffle, generator)`` yields batches without a DataLoader.
    """

    def __init__(self, table: Table, lookback: int, horizon: int = 1, step: int = 1, part: str = "train",
                 val_size: float | int = 0, test_size: float | int = 0, scaler: SeriesScaler | None = None,
                 splits: tuple[np.ndarray, np.ndarray] | None = None, allow_empty: bool = False,
                 calendar: bool = False, covariates: Covariates | None = None) -> None:
        if lookback < 1 or horizon < 1 or step < 1:
            raise QKANForecastError(
                f"lookback, horizon and step must be at least 1, got {lookback}, {horizon}, {step}")
        if part not in PARTS:
            raise QKANForecastError(f"unknown part '{part}'; choose from {', '.join(PARTS)}")
        self.table, self.lookback, self.horizon, self.step, self.part = table, lookback, horizon, step, part
        self.calendar, self.covariates = calendar, covariates
        lengths = table.lengths
        if splits is None:
            splits = split_points(lengths, val_size, test_size, ids=table.ids)
        self.train_end, self.val_end = splits
        if scaler is None:
            scaler = SeriesScaler("standard").fit(table, until=self.train_end)
        self.scaler = scaler
        loc_scale = np.array([scaler.stats(u) for u in table.ids], dtype=np.float64).reshape(-1, 2)
        self._loc = torch.from_numpy(loc_scale[:, 0].copy())
        self._scale = torch.from_numpy(loc_scale[:, 1].copy())
        # the part's target range per series, then the first target position and the window count
        lo = {"train": np.zeros_like(lengths), "val": self.train_end, "test": self.val_end}[part]
        hi = {"train": self.train_end, "val": self.val_end, "test": lengths}[part]
        first = np.maximum(lo, lookback)
        last = hi - horizon  # last allowed first-target position
        counts = np.where(last >= first, (last - first) // step + 1, 0).astype(np.int64)
        self.first_t = first.astype(np.int64)
        self.counts = counts
        self.cum = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        if self.cum[-1] == 0 and not allow_empty:
            raise QKANForecastError(
                f"no {part} windows: with lookback {lookback} and horizon {horizon} every series' "
                f"{part} part is too short (longest series {int(lengths.max())} values, {part} part up to "
                f"{int((hi - lo).max())}); use a shorter lookback or a larger {part} part")
        self._values = _tensor(table.values)  # [rows] float64, shares memory with the table
        width = lookback + horizon
        if len(self._values) >= width:
            self._windows = self._values.unfold(0, width, 1)  # [rows - L - H + 1, L + H] view
        else:
            self._windows = self._values.new_zeros((0, width))

    def __len__(self) -> int:
        return int(self.cum[-1])

    def locate(self, index: Any) -> tuple[np.ndarray, np.ndarray]:
        """Series number and first-target position (within the series) of windows ``index``: ``[N]``."""
        k = np.asarray(index, dtype=np.int64)
        if k.size and (k.min() < -len(self) or k.max() >= len(self)):
            raise IndexError(f"window index out of range for {len(self)} windows")
        k = np.where(k < 0, k + len(self), k)
        s = np.searchsorted(self.cum, k, side="right") - 1
        return s, self.first_t[s] + (k - self.cum[s]) * self.step

    def batch(self, index: Any) -> Batch:
        """``(x, future, y)`` float32 for window numbers ``index`` (only these are copied)."""
        s, t = self.locate(np.atleast_1d(np.asarray(index)))
        first = self.table.offsets[s] + t  # row of each window's first target
        w = self._windows[torch.from_numpy(first - self.lookback)]  # [N, L + H] float64 gather
        st = torch.from_numpy(s)
        w = ((w - self._loc[st, None]) / self._scale[st, None]).to(torch.float32)
        x, y = w[:, :self.lookback, None], w[:, self.lookback:]
        past, future = window_calendar(self.table.ds_ns[first], self.table.step_ns, self.lookback,
                                       self.horizon, self.calendar, self.covariates, self._raw(s, first),
                                       self.table.tz)
        return torch.cat([x, past], dim=-1), future, y

    def _raw(self, s: np.ndarray, first: np.ndarray) -> RawCovariates | None:
        """The covariates of windows of series ``s`` whose first target is at row ``first``."""
        if self.covariates is None or not self.covariates.any:
            return None
        return table_covariates(self.table, self.covariates.data, s, first, self.lookback, self.horizon)

    def __getitem__(self, index: int) -> Batch:
        x, future, y = self.batch([index])
        return x[0], future[0], y[0]

    def iter_batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                     drop_last: bool = False, limit: int | None = None
                     ) -> Iterator[Batch]:
        """Batches over every window, or over the first ``limit`` of the (shuffled) order."""
        order = torch.randperm(len(self), generator=generator).numpy() if shuffle else np.arange(len(self))
        order = order[:limit]
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            if drop_last and len(idx) < batch_size:
                break
            yield self.batch(idx)

    def window_frame(self, index: Any = None) -> pd.DataFrame:
        """``unique_id, cutoff`` (last input time), ``ds`` (first target time) of windows ``index``."""
        idx = np.arange(len(self)) if index is None else np.asarray(index)
        s, t = self.locate(idx)
        ds = self.table.ds_ns
        rows = self.table.offsets[s] + t
        ids = np.asarray(self.table.ids, dtype=object)
        return pd.DataFrame({"unique_id": ids[s], "cutoff": ds[rows - 1].view("datetime64[ns]"),
                             "ds": ds[rows].view("datetime64[ns]")})

    def targets(self, index: Any = None) -> np.ndarray:
        """Targets of windows ``index`` in original units: float64 ``[N, H]``."""
        idx = np.arange(len(self)) if index is None else np.asarray(index)
        s, t = self.locate(idx)
        rows = self.table.offsets[s] + t
        return self.table.values[rows[:, None] + np.arange(self.horizon)[None, :]]

    def series_of(self, index: Any) -> list[str]:
        s, _ = self.locate(np.atleast_1d(np.asarray(index)))
        ids = self.table.ids
        return [ids[i] for i in s]


def make_datasets(table: Table, lookback: int, horizon: int = 1, step: int = 1, val_size: float | int = 0,
                  test_size: float | int = 0, scaler: str | SeriesScaler = "standard", *,
                  val_step: int | None = None, test_step: int | None = None, calendar: bool = False,
                  covariates: Covariates | None = None
                  ) -> tuple[WindowDataset, WindowDataset | None, WindowDataset | None, SeriesScaler]:
    """Train / val / test datasets sharing one split and one scaler fitted on the training parts.
    Val or test is ``None`` when its size is 0. Windows start ``step`` apart; ``val_step`` and
    ``test_step`` (default ``step``) thin out the validation and test windows alone. ``calendar`` adds
    the calendar covariates to every window, ``covariates`` the exogenous ones."""
    splits = split_points(table.lengths, val_size, test_size, ids=table.ids)
    if isinstance(scaler, str):
        scaler = SeriesScaler(scaler).fit(table, until=splits[0])

    def part(name: str, part_step: int | None) -> WindowDataset:
        every = step if part_step is None else part_step
        return WindowDataset(table, lookback, horizon, every, name, scaler=scaler, splits=splits,
                             calendar=calendar, covariates=covariates)

    train = part("train", step)
    val = part("val", val_step) if (splits[1] > splits[0]).any() else None
    test = part("test", test_step) if (table.lengths > splits[1]).any() else None
    return train, val, test, scaler


def last_windows(table: Table, lookback: int, scaler: SeriesScaler,
                 fit_unseen: bool = True) -> ForecastInputs:
    """Per series, the last ``lookback`` values scaled: ``x [S, L, 1]`` float32.

    Series the scaler has never seen are fitted on their own history when ``fit_unseen`` (the scaler
    is updated), otherwise they are an error.
    """
    lengths = table.lengths
    if (lengths < lookback).any():
        i = int(np.argmax(lengths < lookback))
        raise QKANForecastError(
            f"series '{table.ids[i]}' has {int(lengths[i])} values but the model needs the last {lookback}")
    y, off = table.values, table.offsets
    unseen = [i for i, uid in enumerate(table.ids) if not scaler.has(uid)]
    if unseen:
        if not fit_unseen:
            scaler.stats(table.ids[unseen[0]])  # raises
        scaler.fit_rows([table.ids[i] for i in unseen], y, off[unseen], off[np.asarray(unseen) + 1])
    rows = off[1:, None] - lookback + np.arange(lookback)[None, :]  # [S, L]
    x = scaler.transform(y[rows], table.ids)
    last = table.ds_ns[off[1:] - 1].view("datetime64[ns]")
    return ForecastInputs(unique_id=list(table.ids), x=torch.from_numpy(x.astype(np.float32)).unsqueeze(-1),
                          last_ds=last, freq=table.freq)
