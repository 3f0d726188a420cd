import numpy as np
import pandas as pd
import pytest

from qkanforecast.features import calendar, step_times


def _ns(*stamps: str) -> np.ndarray:
    return pd.to_datetime(list(stamps)).values.astype("datetime64[ns]").view(np.int64)


def test_calendar_of_known_timestamps() -> None:
    # 2024-01-01 was a Monday: time of day and of week start at 0 (sin 0, cos 1)
    got = calendar(_ns("2024-01-01 00:00", "2024-01-01 06:00", "2024-01-03 18:00", "2024-01-07 12:00"))
    tod = np.array([0, 0.25, 0.75, 0.5])
    tow = np.array([0, 0.25 / 7, 2.75 / 7, 6.5 / 7])
    expected = np.stack([np.sin(2 * np.pi * tod), np.cos(2 * np.pi * tod),
                         np.sin(2 * np.pi * tow), np.cos(2 * np.pi * tow)], -1)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert got.dtype == np.float32 and got.shape == (4, 4)


def test_calendar_repeats_every_week_and_is_continuous_at_midnight() -> None:
    a, b = _ns("2024-03-05 13:10"), _ns("2024-03-12 13:10")
    np.testing.assert_allclose(calendar(a), calendar(b), atol=1e-6)
    before, after = calendar(_ns("2024-03-05 23:59:59", "2024-03-06 00:00:00"))
    assert np.abs(before - after).max() < 1e-3


@pytest.mark.parametrize("start, stop", [(-3, 2), (0, 4)])
def test_step_times(start: int, stop: int) -> None:
    first = _ns("2024-01-01 00:00", "2024-02-01 12:00")
    got = step_times(first, 600 * 10**9, start, stop)
    assert got.shape == (2, stop - start)
    np.testing.assert_array_equal(np.diff(got, axis=1), 600 * 10**9)
    np.testing.assert_array_equal(got[:, -start] if start < 0 else got[:, 0], first)


def test_calendar_in_a_time_zone_reads_the_local_wall_clock():
    # 2024-03-31 is the spring daylight-saving change in Rome: 00:30 UTC is 01:30 local (CET, +1) and
    # 01:30 UTC is 03:30 local (CEST, +2); 2024-01-01 00:00 UTC is a Monday 01:00 in Rome
    utc = pd.to_datetime(["2024-03-31 00:30", "2024-03-31 01:30", "2024-01-01 00:00"]).as_unit("ns").asi8
    local = pd.to_datetime(["2024-03-31 01:30", "2024-03-31 03:30", "2024-01-01 01:00"]).as_unit("ns").asi8
    np.testing.assert_array_equal(calendar(utc, "Europe/Rome"), calendar(local))
    assert not np.allclose(calendar(utc, "Europe/Rome"), calendar(utc))
    tod = np.arctan2(*calendar(utc, "Europe/Rome")[:, :2].T) / (2 * np.pi) % 1 * 24  # hours of the day
    np.testing.assert_allclose(tod, [1.5, 3.5, 1.0], atol=1e-4)
