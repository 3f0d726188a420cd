"""Regenerate sample_data/ from the generators and from ../shared/data (the real Milan extracts).

    .venv/bin/python -m bench.make_sample_data [--shared ../shared/data] [--out sample_data]

- damped_shm.csv, bessel_j2.csv: qkanforecast.synthetic (qkan-math.md section 6).
- milan_internet.csv: the first 14 days (2016 ten-minute slots, UTC) of squares 4556 and 5161 from
  milan_internet_10min/ts_full_square_<id>.csv, long format unique_id, ds, y.
- milan_cdr_hourly.parquet: the 211 complete (1,488-value) lines of milan_cdr_hourly/matrixTS.csv with
  the square ids of ID_labels.csv, hourly from 2013-11-01 00:00 (local time), canonical Parquet.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from qkanforecast.data import write_table
from qkanforecast.datasets import milan_cdr_hourly, milan_internet
from qkanforecast.synthetic import write_synthetic

ROOT = Path(__file__).resolve().parents[1]
INTERNET_DAYS = 14


def main() -> None:
    parser = argparse.ArgumentParser(description="Regenerate sample_data/")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "sample_data")
    args = parser.parse_args()
    for path in write_synthetic(args.out):
        print(path)
    internet = milan_internet(args.shared / "milan_internet_10min", days=INTERNET_DAYS)
    write_table(internet, args.out / "milan_internet.csv")
    cdr = milan_cdr_hourly(args.shared / "milan_cdr_hourly")
    write_table(cdr, args.out / "milan_cdr_hourly.parquet")
    for name, t in (("milan_internet.csv", internet), ("milan_cdr_hourly.parquet", cdr)):
        print(args.out / name, f"{t.n_series} series x {t.lengths.min()}..{t.lengths.max()} steps, {t.freq}")


if __name__ == "__main__":
    main()
