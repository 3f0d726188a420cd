import math

import numpy as np
import pandas as pd
import pytest

from qkanforecast.metrics import mae, mase, metrics_table, naive_scale, r2, rmse, score, smape


def test_hand_computed_values():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    yhat = np.array([1.0, 3.0, 2.0, 4.0])
    assert mae(y, yhat) == 0.5
    assert rmse(y, yhat) == pytest.approx(math.sqrt(0.5))
    assert r2(y, yhat) == pytest.approx(1 - 2 / 5)
    assert smape(y, yhat) == pytest.approx(100 * (2 / 5 + 2 / 5) / 4)
    assert smape(np.zeros(2), np.zeros(2)) == 0.0
    # in-sample naive errors of [1, 2, 4, 7] are 1, 2, 3 -> scale 2; with season 2: 3, 5 -> 4
    assert naive_scale(np.array([1.0, 2.0, 4.0, 7.0]), 1) == 2.0
    assert naive_scale(np.array([1.0, 2.0, 4.0, 7.0]), 2) == 4.0
    assert mase(y, yhat, 2.0) == 0.25
    assert math.isnan(mase(y, yhat, 0.0))
    assert math.isnan(r2(np.ones(3), np.zeros(3)))
    assert all(math.isnan(v) for v in score(np.array([]), np.array([]), 1.0).values())


def test_metrics_table_skips_missing_baseline_rows_and_scales_mase_per_series():
    bt = pd.DataFrame(
        {
            "unique_id": ["a", "a", "b", "b"],
            "y": [1.0, 2.0, 10.0, 20.0],
            "m": [2.0, 2.0, 10.0, 30.0],
            "naive": [1.0, np.nan, 10.0, 10.0],
        }
    )
    table = metrics_table(bt, ["m", "naive"], {"a": 1.0, "b": 10.0}, per_series=True)
    overall = table[table.unique_id == "(all)"].set_index("model")
    assert overall.loc["m", "mae"] == pytest.approx((1 + 0 + 0 + 10) / 4)
    assert overall.loc["m", "mase"] == pytest.approx((1 / 1 + 0 + 0 + 10 / 10) / 4)
    assert overall.loc["naive", "mae"] == pytest.approx(10 / 3)  # the NaN row is left out
    per = table[table.unique_id == "b"].set_index("model")
    assert per.loc["m", "mase"] == pytest.approx(0.5)
    assert list(table.columns) == ["unique_id", "model", "mae", "rmse", "mse", "smape", "mase", "r2"]
