"""Windows against a naive reference, leakage across splits, scalers, forecast inputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import sine_panel

from qkanforecast.data import Table, from_frame
from qkanforecast.errors import QKANForecastError
from qkanforecast.features import CALENDAR_SIZE, calendar
from qkanforecast.forecast import predict_windows
from qkanforecast.windows import (
    SCALERS,
    SeriesScaler,
    WindowDataset,
    last_windows,
    make_datasets,
    split_points,
)


def make_table(lengths: list[int], seed: int = 0, freq: str = "h") -> Table:
    return from_frame(sine_panel(steps=lengths, freq=freq, seed=seed, start="2020-01-01", ids="s{}"))


def reference_windows(
    table: Table,
    lookback: int,
    horizon: int,
    step: int,
    part: str,
    train_end: np.ndarray,
    val_end: np.ndarray,
    scaler: SeriesScaler,
) -> list[tuple]:
    """Plain Python: every (series, t) whose targets lie in the part, in series then time order."""
    out = []
    for i, uid in enumerate(table.ids):
        y = table.series(uid)["y"].tolist()
        lo, hi = {
            "train": (0, train_end[i]),
            "val": (train_end[i], val_end[i]),
            "test": (val_end[i], len(y)),
        }[part]
        t = max(lo, lookback)
        while t + horizon <= hi:
            loc, scale = scaler.stats(uid)
            x = [(v - loc) / scale for v in y[t - lookback : t]]
            tgt = [(v - loc) / scale for v in y[t : t + horizon]]
            out.append((uid, t, x, tgt))
            t += step
    return out


@pytest.mark.parametrize(("lookback", "horizon", "step"), [(4, 1, 1), (5, 3, 2), (1, 1, 3), (12, 6, 1)])
@pytest.mark.parametrize("part", ["train", "val", "test"])
def test_windows_match_naive_reference(lookback: int, horizon: int, step: int, part: str) -> None:
    table = make_table([40, 25, 60, 33])
    train, val, test, scaler = make_datasets(table, lookback, horizon, step, val_size=0.2, test_size=8)
    ds = {"train": train, "val": val, "test": test}[part]
    assert ds is not None
    ref = reference_windows(table, lookback, horizon, step, part, ds.train_end, ds.val_end, scaler)
    assert len(ds) == len(ref)
    x, future, y = ds.batch(np.arange(len(ds)))
    assert x.shape == (len(ref), lookback, 1) and y.shape == (len(ref), horizon) and x.dtype == torch.float32
    assert future.shape == (len(ref), horizon, 0)
    np.testing.assert_allclose(x[..., 0].numpy(), np.array([r[2] for r in ref]), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(y.numpy(), np.array([r[3] for r in ref]), rtol=1e-6, atol=1e-6)
    assert ds.series_of(np.arange(len(ds))) == [r[0] for r in ref]
    assert ds.locate(np.arange(len(ds)))[1].tolist() == [r[1] for r in ref]
    xi, _, yi = ds[len(ds) - 1]
    torch.testing.assert_close(xi, x[-1])
    torch.testing.assert_close(yi, y[-1])
    # targets in original units and the window table line up with the reference
    np.testing.assert_allclose(
        scaler.inverse_transform(y.double().numpy(), ds.series_of(np.arange(len(ds)))),
        ds.targets(),
        rtol=1e-6,
    )
    frame = ds.window_frame()
    assert (frame["ds"] - frame["cutoff"] == pd.Timedelta("1h")).all()


def test_no_leakage_across_splits() -> None:
    table = make_table([50, 37])
    lookback, horizon = 6, 3
    train, val, test, _ = make_datasets(table, lookback, horizon, 1, val_size=10, test_size=0.25)
    assert val is not None and test is not None
    for ds, lo, hi in (
        (train, 0 * train.train_end, train.train_end),
        (val, train.train_end, train.val_end),
        (test, train.val_end, table.lengths),
    ):
        s, t = ds.locate(np.arange(len(ds)))
        assert (t >= lo[s]).all() and (t + horizon <= hi[s]).all()  # every target inside its part
        assert (t - lookback >= 0).all()  # inputs only from the past
    # behavioural check: changing every value from the validation part on leaves train batches alone,
    # and changing the test part leaves validation batches alone
    y = table.values.copy()
    before_train, before_val = train.batch(np.arange(len(train))), val.batch(np.arange(len(val)))
    mutated = table.frame.copy()
    off = table.offsets
    for i in range(table.n_series):
        y[off[i] + train.train_end[i] : off[i + 1]] += 1000.0
    mutated["y"] = y
    t2 = Table(frame=mutated, freq=table.freq)
    train2 = WindowDataset(
        t2, lookback, horizon, part="train", scaler=train.scaler, splits=(train.train_end, train.val_end)
    )
    torch.testing.assert_close(train2.batch(np.arange(len(train2))), before_train)
    y = table.values.copy()
    for i in range(table.n_series):
        y[off[i] + train.val_end[i] : off[i + 1]] += 1000.0
    mutated["y"] = y
    val2 = WindowDataset(
        Table(frame=mutated, freq=table.freq),
        lookback,
        horizon,
        part="val",
        scaler=val.scaler,
        splits=(train.train_end, train.val_end),
    )
    torch.testing.assert_close(val2.batch(np.arange(len(val2))), before_val)


def test_scaler_fitted_on_train_part_only() -> None:
    table = make_table([30])
    train, _, _, scaler = make_datasets(table, 4, 1, val_size=5, test_size=5)
    y = table.values
    assert scaler.stats("s0") == pytest.approx((y[:20].mean(), y[:20].std()))


def test_windows_are_views_of_the_table() -> None:
    table = make_table([100, 80])
    ds = WindowDataset(table, 8, 2)
    assert ds._values.data_ptr() == table.values.__array_interface__["data"][0]
    assert ds._windows.shape == (180 - 10 + 1, 10) and ds._windows.stride() == (1, 1)


def test_split_points() -> None:
    train_end, val_end = split_points([100, 50], val_size=0.1, test_size=0.2)
    assert train_end.tolist() == [70, 35] and val_end.tolist() == [80, 40]
    train_end, val_end = split_points([100, 50], val_size=5, test_size=10)
    assert train_end.tolist() == [85, 35] and val_end.tolist() == [90, 40]
    with pytest.raises(
        QKANForecastError,
        match=r"^series 1 has 10 values: val_size 5 and test_size 5 leave no "
        r"training values$",
    ):
        split_points([100, 10], 5, 5)
    with pytest.raises(QKANForecastError, match=r"^series 'b' has 10 values: val_size 5 and "):
        split_points([100, 10], 5, 5, ids=["a", "b"])
    with pytest.raises(QKANForecastError, match=r"^test_size must be a number of steps or a fraction in"):
        split_points([100], 0, 1.5)


def test_too_short_for_windows() -> None:
    table = make_table([10, 12])
    with pytest.raises(
        QKANForecastError,
        match=r"^no val windows: with lookback 4 and horizon 3 every series' val "
        r"part is too short \(longest series 12 values, val part up to 2\)",
    ):
        make_datasets(table, 4, 3, val_size=2)
    assert len(WindowDataset(table, 20, 1, allow_empty=True)) == 0
    with pytest.raises(
        QKANForecastError, match=r"^lookback, horizon and step must be at least 1, got 0, 1, 1$"
    ):
        WindowDataset(table, 0)


def test_val_and_test_steps_thin_out_their_parts_alone() -> None:
    table = make_table([40, 25, 60])
    train, val, test, _ = make_datasets(table, 4, 2, val_size=0.2, test_size=9)
    train3, val3, test2, _ = make_datasets(table, 4, 2, val_size=0.2, test_size=9, val_step=3, test_step=2)
    assert val is not None and test is not None and val3 is not None and test2 is not None
    assert train3.step == 1 and len(train3) == len(train)
    for every, thin, step in ((val, val3, 3), (test, test2, 2)):
        s, t = every.locate(np.arange(len(every)))
        keep = (t - every.first_t[s]) % step == 0  # every step-th window of each series, from its first
        s3, t3 = thin.locate(np.arange(len(thin)))
        assert s3.tolist() == s[keep].tolist() and t3.tolist() == t[keep].tolist()


def test_predict_windows_forecasts_every_window_in_order() -> None:
    table = make_table([30, 20])
    ds = WindowDataset(table, 5, 2)
    torch.manual_seed(0)
    model = _FlatLinear(5, 2)
    x, future, _ = ds.batch(np.arange(len(ds)))
    ref = model(x, future).detach().double().numpy()
    for batch_size in (1, 7, len(ds)):
        pred = predict_windows(model, ds, batch_size)
        assert pred.dtype == np.float64
        np.testing.assert_array_equal(pred, ref)


def test_iter_batches_cover_every_window_once() -> None:
    table = make_table([30, 20])
    ds = WindowDataset(table, 3, 1)
    g = torch.Generator().manual_seed(0)
    xs = torch.cat([x for x, _, _ in ds.iter_batches(7, shuffle=True, generator=g)])
    ref = ds.batch(np.arange(len(ds)))[0]
    assert xs.shape == ref.shape
    assert sorted(map(tuple, xs[..., 0].tolist())) == sorted(map(tuple, ref[..., 0].tolist()))
    assert sum(1 for _ in ds.iter_batches(7, drop_last=True)) == len(ds) // 7


@pytest.mark.parametrize("kind", SCALERS)
def test_scalers_invert_exactly_and_serialise(kind: str) -> None:
    rng = np.random.default_rng(1)
    data = {"a": rng.normal(5, 3, 200), "b": rng.lognormal(2, 1, 200), "flat": np.full(50, 7.0)}
    scaler = SeriesScaler(kind).fit(data)
    for uid, v in data.items():
        z = scaler.transform(v, uid)
        np.testing.assert_allclose(scaler.inverse_transform(z, uid), v, rtol=1e-14, atol=1e-12)
        assert np.isfinite(z).all()
    if kind == "standard":
        z = scaler.transform(data["a"], "a")
        assert z.mean() == pytest.approx(0, abs=1e-12) and z.std() == pytest.approx(1)
    if kind == "minmax":
        z = scaler.transform(data["b"], "b")
        assert (z.min(), z.max()) == pytest.approx((-1, 1))
    state = json.loads(json.dumps(scaler.state_dict()))
    again = SeriesScaler.from_state_dict(state)
    assert again.kind == kind and again.state_dict() == scaler.state_dict()
    rows = np.stack([data["a"][:10], data["b"][:10]])  # one series per row, torch in torch out
    t = torch.from_numpy(rows).float()
    out = again.inverse_transform(again.transform(t, ["a", "b"]), ["a", "b"])
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, t, rtol=1e-6, atol=1e-5)


def test_scaler_errors_and_unseen_series() -> None:
    scaler = SeriesScaler("standard").fit({"a": [1.0, 2.0, 3.0]})
    assert scaler.has("a") and not scaler.has("b")
    with pytest.raises(QKANForecastError, match=r"^the scaler has no statistics for series 'b'; fit it on"):
        scaler.transform([1.0], "b")
    with pytest.raises(
        QKANForecastError, match=r"^unknown scaler 'z'; choose from standard, robust, minmax, none$"
    ):
        SeriesScaler("z")
    scaler.fit_series("b", [10.0, 20.0])
    assert scaler.stats("b") == (15.0, 5.0)


def test_last_windows_and_future_timestamps() -> None:
    table = make_table([30, 20], freq="10min")
    _, _, _, scaler = make_datasets(table, 5, 2)
    new = make_table([12, 12, 9], seed=3, freq="10min")  # s2 is unseen
    inputs = last_windows(new, 5, scaler)
    assert inputs.x.shape == (3, 5, 1) and inputs.unique_id == ["s0", "s1", "s2"] and scaler.has("s2")
    expected = scaler.transform(new.series("s2")["y"].to_numpy()[-5:], "s2")
    np.testing.assert_allclose(inputs.x[2, :, 0].numpy(), expected, rtol=1e-6)
    history = new.series("s2")["y"].to_numpy()
    assert scaler.stats("s2") == pytest.approx((history.mean(), history.std()))
    future = inputs.future_ds(2)
    assert future.shape == (3, 2)
    assert pd.Timestamp(future[0, 0]) == new.series("s0")["ds"].iloc[-1] + pd.Timedelta("10min")
    with pytest.raises(QKANForecastError, match=r"^the scaler has no statistics for series 'x'"):
        last_windows(
            from_frame(
                pd.DataFrame({"unique_id": "x", "ds": pd.date_range("2020", periods=6, freq="h"), "y": 1.0})
            ),
            5,
            scaler,
            fit_unseen=False,
        )
    with pytest.raises(
        QKANForecastError, match=r"^series 's2' has 9 values but the model needs the last 10$"
    ):
        last_windows(new, 10, scaler)


class _FlatLinear(torch.nn.Module):
    def __init__(self, lookback: int, horizon: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(lookback, horizon)

    def forward(self, x: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        return self.linear(x[:, :, 0])


def test_calendar_of_every_input_and_target_step() -> None:
    table = make_table([60, 50], freq="h")
    ds = WindowDataset(table, 5, 3, calendar=True)
    x, future, _ = ds.batch(np.arange(len(ds)))
    assert x.shape == (len(ds), 5, 1 + CALENDAR_SIZE) and future.shape == (len(ds), 3, CALENDAR_SIZE)
    s, t = ds.locate(np.arange(len(ds)))
    ds_ns = table.ds_ns
    for k in (0, 17, len(ds) - 1):
        row = table.offsets[s[k]] + t[k]  # the first target's row
        np.testing.assert_array_equal(x[k, :, 1:].numpy(), calendar(ds_ns[row - 5 : row]))
        np.testing.assert_array_equal(future[k].numpy(), calendar(ds_ns[row : row + 3]))
    plain = WindowDataset(table, 5, 3)
    torch.testing.assert_close(plain.batch(np.arange(len(ds)))[0], x[:, :, :1])


@pytest.mark.parametrize("kind", ["standard", "minmax", "robust", "none"])
def test_fitting_many_series_at_once_gives_the_one_by_one_statistics(kind: str) -> None:
    """``fit_rows`` (blocks of equally long series) equals ``fit_series`` per series bit for bit, keeps
    the order of the ids, and names the first series in that order that cannot be fitted."""
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 40, 200)
    off = np.concatenate([[0], np.cumsum(lengths)])
    y = rng.normal(5, 3, off[-1]) * 1e3
    ids = [f"s{i}" for i in range(200)][::-1]
    one = SeriesScaler(kind)
    for i, uid in enumerate(ids):
        one.fit_series(uid, y[off[i]:off[i + 1]])
    many = SeriesScaler(kind).fit_rows(ids, y, off[:-1], off[1:])
    assert many.state_dict() == one.state_dict()
    y[off[9]], y[off[4] + lengths[4] - 1] = np.nan, np.inf
    with pytest.raises(QKANForecastError, match="series 's195'"):
        SeriesScaler(kind).fit_rows(ids, y, off[:-1], off[1:])
