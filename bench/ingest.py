"""Ingest speed and memory on a synthetic long panel (default 10,000 series x 8,928 ten-minute steps).

    .venv/bin/python -m bench.ingest                      # the full 89 M-row table (~4.5 GB of CSV)
    .venv/bin/python -m bench.ingest --series 500         # a quick run
    .venv/bin/python -m bench.ingest --markdown bench/ingest_results.md

Every measurement runs in its own subprocess so its peak RSS (ru_maxrss) is its own:

- pandas.read_csv(path) with default options (the baseline; parses nothing but numbers);
- read_table(csv): pyarrow.csv multi-threaded read, date parsing, validation, canonical frame;
- read_table(parquet): the same table as a plain Parquet file, read row group by row group;
- write_table(parquet): writing the canonical table (zstd, 1 M-row groups, with metadata);
- load_canonical(parquet): loading that canonical file back;
- windows: make_datasets(lookback 64, horizon 1, val/test 10%) over the loaded table, and one batch.

Rows/s count input rows; "x canonical" is peak RSS over the in-memory size of the canonical table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]


def make_inputs(folder: Path, series: int, steps: int, seed: int = 0) -> tuple[Path, Path]:
    """Write the panel as CSV and as plain Parquet (no qkanforecast metadata), 100 series at a time."""
    rng = np.random.default_rng(seed)
    start = np.datetime64("2013-10-31T23:00:00", "s")
    stamps = start + np.arange(steps) * np.timedelta64(600, "s")
    ds_text = pa.array(np.datetime_as_string(stamps).astype(object)).cast(pa.string())
    ds_text = pa.compute.replace_substring(ds_text, "T", " ")
    ds_time = pa.array(stamps.astype("datetime64[ns]"))
    schema_csv = pa.schema([("unique_id", pa.string()), ("ds", pa.string()), ("y", pa.float64())])
    schema_pq = pa.schema([("unique_id", pa.string()), ("ds", pa.timestamp("ns")), ("y", pa.float64())])
    csv_path, pq_path = folder / "panel.csv", folder / "panel.parquet"
    t = np.arange(steps)
    plain = pacsv.WriteOptions(quoting_style="none")
    with pacsv.CSVWriter(csv_path, schema_csv, write_options=plain) as wc, \
            pq.ParquetWriter(pq_path, schema_pq, compression="zstd") as wp:
        for first in range(0, series, 100):
            k = min(100, series - first)
            ids = pa.array([f"cell_{i:05d}" for i in range(first, first + k)]).take(
                pa.array(np.repeat(np.arange(k), steps)))
            level = rng.uniform(50, 2000, (k, 1))
            y = level * (1 + 0.5 * np.sin(2 * np.pi * t / 144)) + rng.normal(0, 0.05, (k, steps)) * level
            y = pa.array(np.round(y, 4).ravel())
            tile = pa.array(np.tile(np.arange(steps), k))
            wc.write_table(pa.table([ids, ds_text.take(tile), y], schema=schema_csv))
            wp.write_table(pa.table([ids, ds_time.take(tile), y], schema=schema_pq), row_group_size=1 << 20)
    return csv_path, pq_path


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(mode: str, path: str, out: str) -> None:
    """One measurement; prints a JSON line."""
    import pandas as pd

    from qkanforecast.data import load_canonical, read_table, write_table

    if mode == "windows":  # torch only where it is needed: importing it slows pyarrow's first read
        from qkanforecast.windows import make_datasets
    result: dict[str, object] = {"mode": mode, "baseline_rss": _rss_now()}
    t0 = time.perf_counter()
    if mode == "pandas":
        frame = pd.read_csv(path)
        result["rows"] = len(frame)
    else:
        if mode in ("csv", "parquet"):
            table = read_table(path)
            result["rows"] = int(table.report["rows_read"])
            result["canonical_bytes"] = int(table.frame.memory_usage(deep=True).sum())
            if mode == "parquet":
                t1 = time.perf_counter()
                write_table(table, out)
                result["write_seconds"] = time.perf_counter() - t1
        elif mode == "load":
            table = load_canonical(path)
            result["rows"] = len(table.frame)
        elif mode == "windows":
            table = load_canonical(path)
            result["rows"] = len(table.frame)
            before = _rss_now()
            t1 = time.perf_counter()
            train, val, test, _ = make_datasets(table, 64, 1, val_size=0.1, test_size=0.1)
            x, _ = train.batch(np.arange(0, len(train), max(1, len(train) // 1024)))
            result["window_seconds"] = time.perf_counter() - t1
            result["windows"] = len(train) + len(val or []) + len(test or [])
            result["window_bytes"] = _rss_now() - before
            result["canonical_bytes"] = int(table.frame.memory_usage(deep=True).sum())
    result["seconds"] = time.perf_counter() - t0
    result["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(result))


def run(mode: str, path: Path, out: Path) -> dict[str, float]:
    proc = subprocess.run([sys.executable, "-m", "bench.ingest", "--child", mode, str(path), str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"{mode} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=8_928)
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the generated files")
    parser.add_argument("--skip-pandas", action="store_true")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="qkf-ingest-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        csv_path, pq_path = make_inputs(folder, args.series, args.steps)
        gen = time.perf_counter() - t0
        canonical = folder / "canonical.parquet"
        rows = args.series * args.steps
        csv_bytes = csv_path.stat().st_size
        print(f"generated {rows:,} rows in {gen:.0f} s: CSV {gib(csv_path.stat().st_size)}, "
              f"Parquet {gib(pq_path.stat().st_size)}", file=sys.stderr)
        results = {}
        steps = (("csv", csv_path), ("parquet", pq_path), ("load", canonical), ("windows", canonical),
                 ("pandas", csv_path))
        for mode, path in steps:
            if mode == "pandas" and args.skip_pandas:
                continue
            results[mode] = run(mode, path, canonical)
            print(json.dumps(results[mode]), file=sys.stderr)
    size = results["csv"]["canonical_bytes"]
    lines = [f"Synthetic panel: {args.series:,} series x {args.steps:,} steps = {rows:,} rows; "
             f"CSV {gib(csv_bytes)}; canonical table in memory {gib(size)}; "
             f"{os.cpu_count()} CPU cores.", "",
             "Peak RSS is the whole process; \"above start\" subtracts the RSS after imports "
             "(interpreter, numpy, pandas, pyarrow; torch for windows).", "",
             "| step | seconds | rows/s | peak RSS | above start | x canonical |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]

    def row(name: str, seconds: float, peak: float, base: float) -> None:
        lines.append(f"| {name} | {seconds:.1f} | {rows / seconds:,.0f} | {gib(peak)} | {gib(peak - base)} | "
                     f"{(peak - base) / size:.2f} |")

    def pick(r: dict[str, float]) -> tuple[float, float, float]:
        return r["seconds"], r["peak_rss"], r["baseline_rss"]

    if "pandas" in results:
        row("pandas.read_csv (default options)", *pick(results["pandas"]))
    row("read_table(csv)", *pick(results["csv"]))
    read_pq = results["parquet"]["seconds"] - results["parquet"]["write_seconds"]
    _, peak, base = pick(results["parquet"])
    row("read_table(parquet)", read_pq, peak, base)
    row("write_table(parquet) (same process)", results["parquet"]["write_seconds"], peak, base)
    row("load_canonical(parquet)", *pick(results["load"]))
    w = results["windows"]
    lines += ["", f"Windows (lookback 64, horizon 1, train/val/test): {w['windows']:,} windows built in "
              f"{w['window_seconds']:.2f} s; memory added {w['window_bytes'] / 2**20:.1f} MiB = "
              f"{100 * w['window_bytes'] / size:.2f}% of the canonical table."]
    if "pandas" in results:
        lines.append(f"read_table(csv) vs pandas.read_csv: "
                     f"{results['pandas']['seconds'] / results['csv']['seconds']:.2f}x the speed.")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(f"# bench/ingest.py\n\n`{' '.join(sys.argv)}`\n\n{text}\n")


if __name__ == "__main__":
    main()
