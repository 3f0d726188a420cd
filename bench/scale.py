"""Scale: ingest, forecast and backtest throughput of a synthetic hourly panel, partitioned by bucket, on
the local engine and on Ray with 2 workers, with the peak memory of every process.

    .venv/bin/python -m bench.scale --buckets 32          # 100,000 series x 2 weeks (the README's table)
    .venv/bin/python -m bench.scale --series 1000000 --direct --only forecast   # the issue's target
    .venv/bin/python -m bench.scale --series 2000 --buckets 16 --only train     # DDP: 2 ranks vs 1
    .venv/bin/python -m bench.scale --series 1000000      # the issue's size through one 336 M-row file
    .venv/bin/python -m bench.scale --series 2000 --buckets 16   # a quick run

A bucket of the issue's 1,000,000 series in 256 buckets holds about 3,900 series; 100,000 series in 32
buckets hold 3,125, about the same, so the per-bucket costs (reading a part, the scaler rows, writing a
part: ~20 ms a bucket here) weigh about as much as at full size. Memory per process follows the bucket's
size, not the table's.

Every measurement runs in its own subprocess, so its peak RSS (ru_maxrss) is its own; Ray workers report
theirs from the buckets they ran. The baseline is today's path: the whole table as one canonical file,
forecast in one process (``forecast panel.parquet``). The model is a small qkan-lstm (lookback 48, horizon
24) trained on 200 of the series for one epoch: its accuracy is not the point, its cost per series is the
product's. The panel is also forecast at a quarter of the series, to show whether memory grows with them.
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
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
STEPS = 336  # two weeks of hours


def make_panel(path: Path, series: int, seed: int = 0) -> None:
    """A canonical Parquet file of ``series`` noisy daily cycles, two weeks of hours each."""
    from qkanforecast.data import Table, write_table

    ids = np.array([f"cell_{i:07d}" for i in range(series)], dtype=object)
    y = _cycles(np.random.default_rng(seed), series)
    stamps = np.datetime64("2026-11-01T00:00", "ns") + np.arange(STEPS) * np.timedelta64(3600, "s")
    codes = np.repeat(np.arange(series, dtype=np.int32), STEPS)
    uid = pd.Categorical.from_codes(codes, categories=pd.Index(ids, dtype=object))
    frame = pd.DataFrame({"unique_id": uid, "ds": np.tile(stamps, series), "y": y.ravel()}, copy=False)
    write_table(Table(frame=frame, freq="h", known_offsets=np.arange(series + 1) * STEPS), path)


def _cycles(rng: np.random.Generator, series: int) -> np.ndarray:
    t = np.arange(STEPS)
    level = rng.uniform(10, 1000, (series, 1))
    return level * (1 + 0.5 * np.sin(2 * np.pi * t / 24)) + rng.normal(0, 0.05, (series, STEPS)) * level


def make_buckets(path: Path, series: int, buckets: int, seed: int = 0) -> None:
    """The same kind of panel written straight into ``buckets`` buckets (as ``ingest --buckets`` would
    place its series), one bucket in memory at a time: the issue's 1,000,000 series without an 8 GB
    single file to ingest."""
    from qkanforecast.data import Table
    from qkanforecast.data.partitioned import Writer, bucket_of

    ids = np.array([f"cell_{i:07d}" for i in range(series)], dtype=object)
    where = bucket_of(list(ids), buckets)
    stamps = np.datetime64("2026-11-01T00:00", "ns") + np.arange(STEPS) * np.timedelta64(3600, "s")
    writer = Writer(str(path)).begin()
    parts = []
    for k in range(buckets):
        mine = ids[where == k]
        n = len(mine)
        y = _cycles(np.random.default_rng([seed, k]), n)
        uid = pd.Categorical.from_codes(np.repeat(np.arange(n, dtype=np.int32), STEPS),
                                        categories=pd.Index(mine, dtype=object))
        frame = pd.DataFrame({"unique_id": uid, "ds": np.tile(stamps, n), "y": y.ravel()}, copy=False)
        table = Table(frame=frame, freq="h", known_offsets=np.arange(n + 1) * STEPS)
        parts.append(writer.write_table(table, k))
    writer.commit("canonical", buckets, parts, "h")


def child(what: str, args: list[str]) -> dict[str, float]:
    """One measurement in this process: returns seconds, this process' and the workers' peak RSS."""
    from qkanforecast.batch import run_evaluate, run_forecast
    from qkanforecast.config import BacktestConfig
    from qkanforecast.data import Dataset, IngestOptions, load_canonical
    from qkanforecast.data.bucketed import ingest_partitioned
    from qkanforecast.engine import Engine
    from qkanforecast.forecast import Predictor
    from qkanforecast.registry import Registry

    start = time.perf_counter()
    worker, ray_start = 0.0, 0.0
    if what == "panel":
        make_panel(Path(args[0]), int(args[1]))
    elif what == "buckets":
        make_buckets(Path(args[0]), int(args[1]), int(args[2]))
    elif what == "train":
        train_model(Path(args[0]), Path(args[1]))
    elif what == "ingest":
        src, out, buckets = args
        ingest_partitioned(src, IngestOptions(), out, int(buckets))
    else:
        data, registry, out, engine = args
        if engine == "ray":
            import logging

            import ray

            ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
            ray_start = time.perf_counter() - start
        source = Dataset.open(data) if Path(data).is_dir() else load_canonical(data)
        predictor = Predictor.load("scale", Registry(registry), with_scaler=not Path(data).is_dir())
        run = Engine(engine if engine != "single" else "local")
        if what == "forecast":
            done = run_forecast(predictor, source, out, engine=run)
        else:
            done = run_evaluate(predictor, source, BacktestConfig(windows=2, step=24), output=out, engine=run)
        worker = done.worker_rss_mb
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "rss_mb": rss, "worker_rss_mb": worker, "ray_start": ray_start}


def measure(what: str, *args: str) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "bench.scale", "--child", what, *args], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{what} {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def train_ddp(parts: Path, registry: Path, ranks: int, epochs: int) -> dict[str, float]:
    """``train`` on a partitioned panel, plainly (1) or under torchrun with ``ranks`` processes (one thread
    each), with the product's default model; the training windows per second are the median over epochs
    of the manifest's history (windows of every rank, over the time of the training steps)."""
    from qkanforecast.registry import Registry

    name = f"ddp{ranks}"
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
    launcher = launcher if ranks > 1 else []
    cmd = [sys.executable, *launcher, "-m", "qkanforecast", "train", str(parts), "--epochs", str(epochs),
           "--patience", "0", "--registry", str(registry), "--name", name, "-q"]
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                         text=True)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    seconds = time.perf_counter() - start
    manifest = Registry(registry).get(f"{name}@v1").manifest
    rates = sorted(e.windows_per_s for e in manifest.history)
    return {"seconds": seconds, "windows_per_s": rates[len(rates) // 2], "series": manifest.schema.series}


def train_model(panel: Path, registry: Path) -> None:
    from qkanforecast.config import DataConfig, ModelConfig, Settings, TrainConfig
    from qkanforecast.data import from_frame, load_canonical
    from qkanforecast.registry import Registry
    from qkanforecast.train import train

    if panel.is_dir():  # a partitioned panel: its first bucket
        from qkanforecast.data import Dataset

        data = Dataset.open(panel)
        table = data.read_part(data.parts[0])
    else:
        table = load_canonical(panel)
    few = table.frame[table.frame["unique_id"].cat.codes < 200].copy()
    few["unique_id"] = few["unique_id"].astype(str)
    settings = Settings(ModelConfig("qkan-lstm"), DataConfig(lookback=48, horizon=24),
                        TrainConfig(epochs=1, max_windows=1024))
    train(from_frame(few), settings, name="scale", registry=Registry(registry))


def train_table(series: int, buckets: int, epochs: int = 3) -> None:
    """DDP training throughput: 1 process against torchrun with 2, each rank reading its own buckets."""
    with tempfile.TemporaryDirectory(prefix="qkf-scale-") as tmp:
        parts = Path(tmp) / "parts"
        measure("buckets", str(parts), str(series), str(buckets))
        runs = {ranks: train_ddp(parts, Path(tmp) / "reg", ranks, epochs) for ranks in (1, 2)}
    print(f"train on {series:,} series x {STEPS} hourly steps in {buckets} buckets, the default model, "
          f"{epochs} epochs; load average {os.getloadavg()[0]:.1f} at the end; {os.cpu_count()} cores")
    print("| processes | seconds (whole run) | training windows/s (median epoch) | vs 1 process |")
    print("|---:|---:|---:|---:|")
    for ranks, r in runs.items():
        print(f"| {ranks} | {r['seconds']:.1f} | {r['windows_per_s']:,.0f} | "
              f"{r['windows_per_s'] / runs[1]['windows_per_s']:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=100_000)
    parser.add_argument("--buckets", type=int, default=256)
    parser.add_argument("--direct", action="store_true",
                        help="generate the panel straight into buckets (no single file, no ingest, no "
                        "one-file baseline); the quarter-size panel gets a quarter of the buckets")
    parser.add_argument("--only", choices=("forecast", "evaluate", "train"),
                        help="measure this command only (train: DDP with 2 ranks against 1 process)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        print(json.dumps(child(opts.child[0], opts.child[1:])))
        return
    if opts.only == "train":
        train_table(opts.series, opts.buckets)
        return
    rows = []
    whats = ("forecast", "evaluate") if opts.only is None else (opts.only,)
    with tempfile.TemporaryDirectory(prefix="qkf-scale-") as tmp:
        folder = Path(tmp)
        quarter = max(opts.buckets // 4, 1) if opts.direct else opts.buckets
        sizes = {"full": (opts.series, opts.buckets), "quarter": (max(opts.series // 4, 1), quarter)}
        for size, (series, buckets) in sizes.items():  # in children: this process stays small
            if opts.direct:
                measure("buckets", str(folder / f"{size}-parts"), str(series), str(buckets))
            else:
                measure("panel", str(folder / f"{size}.parquet"), str(series))
        measure("train", str(folder / ("full-parts" if opts.direct else "full.parquet")), str(folder / "reg"))
        reg = str(folder / "reg")
        for size, (series, buckets) in sizes.items():
            panel, parts = folder / f"{size}.parquet", folder / f"{size}-parts"
            runs: list[tuple[str, str, dict[str, float]]] = []
            if not opts.direct:
                runs.append(("ingest --buckets (streamed, one process)", "local",
                             measure("ingest", str(panel), str(parts), str(buckets))))
            for what in whats:
                if not opts.direct:
                    runs.append((f"{what}, one file (today)", "local",
                                 measure(what, str(panel), reg, str(folder / f"{what}.parquet"), "single")))
                for engine in ("local", "ray"):
                    runs.append((f"{what}, {buckets} buckets", engine,
                                 measure(what, str(parts), reg, str(folder / f"{what}-{engine}"), engine)))
            for name, engine, r in runs:
                rows.append({"series": series, "step": name, "engine": engine if "buckets" in name and
                             "ingest" not in name else "local", **r})
    print(f"hourly panel, {STEPS} steps a series; qkan-lstm lookback 48, horizon 24; backtest 2 windows; "
          f"load average {os.getloadavg()[0]:.1f} at the end; {os.cpu_count()} cores")
    print("| series | step | engine | seconds | of which Ray start | series/s | peak RSS driver MB | "
          "peak RSS worker MB |")
    print("|---:|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        ray = r["engine"] == "ray"
        worker = f"{r['worker_rss_mb']:.0f}" if ray else "(same process)"
        start = f"{r['ray_start']:.1f}" if ray else ""
        print(f"| {r['series']:,} | {r['step']} | {r['engine']} | {r['seconds']:.1f} | {start} | "
              f"{r['series'] / r['seconds']:,.0f} | {r['rss_mb']:.0f} | {worker} |")
    base = {(r["series"], r["step"].split(",")[0]): r["seconds"] for r in rows if "today" in r["step"]}
    print()
    for r in rows:
        key = (r["series"], r["step"].split(",")[0])
        if key in base and "buckets" in r["step"]:
            ratio = base[key] / r["seconds"]
            print(f"{r['series']:,} series, {r['step']} on {r['engine']}: {ratio:.2f}x the speed of one file")


if __name__ == "__main__":
    main()
