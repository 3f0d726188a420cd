"""Regenerate sample_data/ from the generators and from ../shared/data (the real Milan extracts).

    .venv/bin/python bench/make_sample_data.py [--shared ../shared/data] [--out sample_data]

- damped_shm.csv, bessel_j2.csv: qkanforecast.synthetic (qkan-math.md section 6).
- milan_internet.csv: the first 14 days (2016 ten-minute slots, UTC) of squares 4556 and 5161 from
  milan_internet_10min/ts_full_square_<id>.csv, long format unique_id, ds, y.
- milan_cdr_hourly.parquet: the 211 complete (1,488-value) lines of milan_cdr_hourly/matrixTS.csv with
  the square ids of ID_labels.csv, hourly from 2013-11-01 00:00 (local time), canonical Parquet.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from qkanforecast.data import IngestOptions, from_frame, write_table
from qkanforecast.synthetic import write_synthetic

ROOT = Path(__file__).resolve().parents[1]
INTERNET_DAYS = 14
CDR_LENGTH = 1488  # 62 days x 24 h


def milan_internet(shared: Path) -> pd.DataFrame:
    frames = []
    for square in (4556, 5161):
        raw = pd.read_csv(shared / "milan_internet_10min" / f"ts_full_square_{square}.csv")
        raw = raw.iloc[: INTERNET_DAYS * 144]
        frames.append(pd.DataFrame({"unique_id": raw["square_id"].astype(str),
                                    "ds": pd.to_datetime(raw["time"]), "y": raw["internet"].astype(float)}))
    return pd.concat(frames, ignore_index=True)


def milan_cdr_hourly(shared: Path) -> pd.DataFrame:
    folder = shared / "milan_cdr_hourly"
    ids = [str(int(float(v))) for v in (folder / "ID_labels.csv").read_text().split()]
    lines = (folder / "matrixTS.csv").read_text().splitlines()
    ds = pd.date_range("2013-11-01 00:00", periods=CDR_LENGTH, freq="h")
    frames = []
    for uid, line in zip(ids, lines, strict=True):
        values = np.array([float(v) for v in line.strip().strip(",").split(",")])
        if len(values) == CDR_LENGTH:
            frames.append(pd.DataFrame({"unique_id": uid, "ds": ds, "y": values}))
    return pd.concat(frames, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="Regenerate sample_data/")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "sample_data")
    args = parser.parse_args()
    for path in write_synthetic(args.out):
        print(path)
    internet = from_frame(milan_internet(args.shared), IngestOptions(), source="milan_internet")
    write_table(internet, args.out / "milan_internet.csv")
    cdr = from_frame(milan_cdr_hourly(args.shared), IngestOptions(), source="milan_cdr_hourly")
    write_table(cdr, args.out / "milan_cdr_hourly.parquet")
    for name, t in (("milan_internet.csv", internet), ("milan_cdr_hourly.parquet", cdr)):
        print(args.out / name, f"{t.n_series} series x {t.lengths.min()}..{t.lengths.max()} steps, {t.freq}")


if __name__ == "__main__":
    main()
