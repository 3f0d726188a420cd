"""Naive and seasonal-naive forecasts against hand-written values, and the season of a frequency."""

import numpy as np

from qkanforecast.baselines import naive, season_length, seasonal_naive

# two series back to back: a = 0..9 (rows 0-9), b = 100..105 (rows 10-15)
VALUES = np.concatenate([np.arange(10.0), 100.0 + np.arange(6.0)])


def test_naive_repeats_the_value_before_the_first_target():
    out = naive(VALUES, [4, 13], 3)
    np.testing.assert_array_equal(out, [[3, 3, 3], [102, 102, 102]])
    assert out.dtype == np.float64


def test_seasonal_naive_takes_the_step_one_season_earlier():
    out = seasonal_naive(VALUES, [6, 8], 2, season=4)
    np.testing.assert_array_equal(out, [[2, 3], [4, 5]])


def test_seasonal_naive_repeats_the_last_season_beyond_it():
    np.testing.assert_array_equal(seasonal_naive(VALUES, [9], 5, season=3), [[6, 7, 8, 6, 7]])


def test_seasonal_naive_without_a_season_of_history_is_nan():
    # row 13 is b's fourth value: one season (4) back is row 9, series a, so no forecast
    out = seasonal_naive(VALUES, [13, 14, 8], 1, season=4, history=[3, 4, 8])
    np.testing.assert_array_equal(out, [[np.nan], [100], [4]])
    assert np.isnan(seasonal_naive(VALUES, [2], 2, season=3)).all()  # one series: history = first


def test_season_length():
    assert season_length("10min") == 144 and season_length("h") == 24 and season_length("D") == 7
    assert season_length("7D") == 52 and season_length("W-SUN") == 52  # weekly data: a year of weeks
    assert season_length("14D") == 1 and season_length("7min") == 1
