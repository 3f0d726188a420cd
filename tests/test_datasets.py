"""The reproduction's data sets: the parsers of the Milan files give the committed sample tables."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qkanforecast.data import read_table
from qkanforecast.datasets import milan_cdr_hourly, milan_internet, synthetic
from qkanforecast.errors import QKANForecastError
from qkanforecast.synthetic import bessel_j2

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SAMPLE = ROOT / "sample_data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is absent")


def test_synthetic_is_one_named_series():
    t = synthetic("bessel_j2")
    assert t.ids == ["bessel_j2"] and t.freq == "h"
    np.testing.assert_array_equal(t.values, bessel_j2())
    with pytest.raises(QKANForecastError, match="unknown synthetic series 'nope'"):
        synthetic("nope")


@needs_shared
def test_milan_internet_first_days_are_the_sample():
    t = milan_internet(SHARED / "milan_internet_10min", days=14)
    pd.testing.assert_frame_equal(t.frame, read_table(SAMPLE / "milan_internet.csv").frame)
    full = milan_internet(SHARED / "milan_internet_10min")
    assert full.lengths.tolist() == [8928, 8928] and full.freq == "10min"


@needs_shared
def test_milan_cdr_hourly_is_the_sample():
    t = milan_cdr_hourly(SHARED / "milan_cdr_hourly")
    pd.testing.assert_frame_equal(t.frame, read_table(SAMPLE / "milan_cdr_hourly.parquet").frame)
    assert t.n_series == 211 and t.freq == "h"
