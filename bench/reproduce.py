"""Reproduce the QKAN-LSTM paper's experiments (arXiv 2512.05049) with the product's own code.

    .venv/bin/python -m bench.reproduce            # full run (make reproduce): 3 seeds, all datasets
    .venv/bin/python -m bench.reproduce --quick    # one seed, fewer epochs (make reproduce-quick)

Writes ``results/reproduce.csv`` (one row per dataset and model: mean and std over seeds),
``results/reproduce_runs.csv`` (one row per seed), ``results/reproduce.md`` (the tables) and PNG plots
(forecasts vs truth on the test part; the learned DARUAN activations of a trained QKAN-LSTM).

Datasets (``../shared/docs/qkan-math.md`` section 6; ``bench/experiments.py``):
- ``damped_shm``, ``bessel_j2``: the paper's synthetic series from ``qkanforecast.datasets`` (min-max
  scaled to [-1, 1] over the whole series, as in the paper), window 4 -> next value, chronological
  80/20 train/test, Adam lr 1e-3, batch 2, 30 epochs, no validation part (as in the paper). Metrics in
  that [-1, 1] space. ``damped_shm_e150``, ``bessel_j2_e150``: the same with 150 epochs for every model.
- ``milan_internet_w4``, ``milan_internet_w64``: 10-minute internet activity of squares 4556 and 5161,
  one global model, one step ahead, lookback 4 or 64, chronological 70/10/20 train/val/test per square,
  min-max scaler fitted on each square's training part.
- ``milan_hourly_h1``, ``milan_hourly_h24``: the 211 complete cells of the hourly Milan set as one global
  model, lookback 24 -> 1 step and lookback 168 -> 24 steps, 50 days train / 5 val / 7 test per cell
  (the split of the set's publishers), min-max scaler on train; a random sample of training windows
  per epoch keeps the runtime bounded.
Telecom metrics are given in the scaled space (per-cell min-max of the training part, [-1, 1]) and in
original units.

Models: the LSTM baseline (hidden 5 on the synthetic sets, 16 on telecom), QKAN-LSTM and HQKAN-LSTM
sized automatically to at most ``PARAM_RATIO`` (21%) of that LSTM's trainable parameters, each with both
read-outs (fast, born), a QKAN-LSTM with about the LSTM's parameter count and an LSTM with about the small
QKAN-LSTM's, plus the naive and seasonal-naive baselines of ``qkanforecast.baselines``. Every model gets
the same data, optimiser, learning rate, batch size and epoch budget per dataset.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bench.experiments import DATASETS, QUICK, ROOT, SMALL, DataSpec, ModelSpec, all_specs, load_source
from bench.plots import plot_activations, plot_forecasts
from bench.report import markdown, summarise
from bench.runner import run_one
from qkanforecast.baselines import BASELINES

Job = tuple[DataSpec, ModelSpec, int, int | None, bool, bool, int]  # run_one's arguments
Extra = dict[str, Any]  # what a run returns besides its row: forecasts, activations


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.reproduce", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one seed, fewer epochs and windows")
    p.add_argument("--datasets", default=None,
                   help="comma-separated subset of " + ", ".join(DATASETS)
                   + " (default: all; --quick leaves out the 150-epoch ones)")
    p.add_argument("--models", default="",
                   help="only these families (e.g. lstm,qkan-lstm); the baselines always run")
    p.add_argument("--seeds", type=int, default=None, help="seeds per model (default 3, --quick 1)")
    p.add_argument("--epochs", type=int, default=None, help="override every dataset's epoch budget")
    p.add_argument("--train-cap", type=int, default=None, help="override: training windows sampled per epoch")
    p.add_argument("--max-series", type=int, default=None, help="use only the first N series of each table")
    p.add_argument("--jobs", type=int, default=min(os.cpu_count() or 1, 4),
                   help="worker processes (default: the CPU count, at most 4)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--out", type=Path, default=ROOT / "results")
    p.add_argument("--no-plots", action="store_true")
    return p.parse_args(argv)


def chosen_datasets(args: argparse.Namespace) -> list[DataSpec]:
    """The datasets asked for, with the --quick budget and the overrides applied."""
    if args.datasets is None:
        keys = [k for k in DATASETS if not (args.quick and k.endswith("_e150"))]
    else:
        keys = [k.strip() for k in args.datasets.split(",") if k.strip()]
    unknown = [k for k in keys if k not in DATASETS]
    if unknown:
        raise ValueError(f"unknown dataset(s) {', '.join(unknown)}; choose from {', '.join(DATASETS)}")
    datasets = []
    for k in keys:
        data = DATASETS[k]
        if args.quick:
            data = replace(data, **QUICK.get(k, {}))  # type: ignore[arg-type]
        if args.epochs is not None:
            data = replace(data, epochs=args.epochs)
        if args.train_cap is not None:
            data = replace(data, train_cap=args.train_cap)
        datasets.append(data)
    return datasets


def plan(datasets: list[DataSpec], args: argparse.Namespace, seeds: int, plots: bool) -> list[Job]:
    """Every run, slowest first so that parallel workers finish together."""
    families = {m.strip() for m in args.models.split(",") if m.strip()}
    # the forecast plots use seed 0 of these; the activation plot one QKAN-LSTM
    show = {"lstm": "paper size", "qkan-lstm": SMALL, "hqkan-lstm": SMALL}
    act_of = dict.fromkeys(("damped_shm", "damped_shm_e150", "milan_internet_w64"), SMALL)
    jobs: list[Job] = []
    for data in datasets:
        naive = BASELINES[0] if data.horizon == 1 else BASELINES[1]  # the baseline worth showing
        for spec in all_specs(data):
            baseline = spec.config is None
            if families and not baseline and spec.family not in families:
                continue
            for seed in range(1 if baseline else seeds):
                first_fast = plots and seed == 0 and (spec.qkan is None or spec.qkan.readout == "fast")
                keep = first_fast and (show.get(spec.family) == spec.variant or spec.family == naive)
                act = first_fast and spec.family == "qkan-lstm" and act_of.get(data.key) == spec.variant
                jobs.append((data, spec, seed, args.max_series, keep, act, args.threads))

    def cost(job: Job) -> float:
        data, spec = job[0], job[1]
        return data.lookback * data.epochs * (data.train_cap or 12500) * (spec.family != "lstm")

    return sorted(jobs, key=cost, reverse=True)


def execute(jobs: list[Job], workers: int, done: Callable[[dict[str, Any]], None]) -> None:
    """Run every job, in ``workers`` spawned processes when more than one; ``done`` gets each row."""
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(run_one, *j) for j in jobs]
            for fut in as_completed(futures):
                done(fut.result())
    else:
        for j in jobs:
            done(run_one(*j))


def write_plots(datasets: list[DataSpec], extras: list[tuple[dict[str, Any], Extra]], out: Path
                ) -> tuple[list[str], list[float]]:
    """The forecast and activation plots; returns their file names and the solver gaps checked."""
    plot_files, gaps = [], []
    for data in datasets:
        forecasts = {}
        for r, e in extras:
            if r["dataset"] == data.key and "forecast" in e:
                name = r["label"] if r["model"] in BASELINES else f"{r['label']}, {r['params']} params"
                forecasts[name] = e["forecast"]
        order = sorted(forecasts, key=lambda k: ("naive" not in k, k))
        if forecasts:
            path = out / f"forecast_{data.key}.png"
            span = 48 if data.synthetic else (288 if data.horizon == 1 else 168)
            plot_forecasts(data, {k: forecasts[k] for k in order}, path, span)
            plot_files.append(path.name)
        for r, e in extras:
            if r["dataset"] == data.key and "activations" in e:
                path = out / f"activations_{data.key}.png"
                title = (f"Learned edge functions, QKAN-LSTM ({r['params']} params, "
                         f"seed {r['seed']}) trained on {data.key}")
                plot_activations(e["activations"]["curves"], title, path)
                plot_files.append(path.name)
                if e["activations"]["solver_gap"] is not None:
                    gaps.append(e["activations"]["solver_gap"])
    return plot_files, gaps


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    torch.set_num_threads(args.threads)
    seeds = args.seeds or (1 if args.quick else 3)
    try:
        datasets = chosen_datasets(args)
    except ValueError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    plots = not args.no_plots
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("matplotlib is not installed (pip install -e '.[plot]'): no plots", file=sys.stderr)
            plots = False
    jobs = plan(datasets, args, seeds, plots)
    started = time.perf_counter()
    print(f"{len(jobs)} runs, {args.jobs} worker(s), {seeds} seed(s)", flush=True)
    rows: list[dict[str, Any]] = []
    args.out.mkdir(parents=True, exist_ok=True)
    partial = args.out / "reproduce_runs.csv.tmp"  # progress so far, removed at the end

    def done(row: dict[str, Any]) -> None:
        rows.append(row)
        plain = [{k: v for k, v in r.items() if k != "_extra"} for r in rows]
        pd.DataFrame(plain).to_csv(partial, index=False)
        print(f"[{time.perf_counter() - started:7.1f}s {len(rows)}/{len(jobs)}] {row['dataset']:20s} "
              f"{row['label']:20s} "
              f"{row['variant']:18s} seed {row['seed']} params {row['params']:5d} mse {row['mse']:.4g} "
              f"mae {row['mae']:.4g} r2 {row['r2']:.4f} train {row['train_seconds']:.1f}s", flush=True)

    execute(jobs, args.jobs, done)
    wall = time.perf_counter() - started
    partial.unlink(missing_ok=True)
    extras = [(r, r.pop("_extra")) for r in rows]
    runs = pd.DataFrame([r for r, _ in extras])
    runs = runs.sort_values(["dataset", "model", "variant", "readout", "seed"], na_position="first")
    runs.to_csv(args.out / "reproduce_runs.csv", index=False, float_format="%.6g")
    summary = summarise(runs, datasets)
    summary.to_csv(args.out / "reproduce.csv", index=False, float_format="%.6g")
    plot_files, gaps = write_plots(datasets, extras, args.out) if plots else ([], [])
    origins = {d.source: load_source(d.source, args.max_series)[1] for d in datasets}
    given = sys.argv[1:] if argv is None else argv
    meta = dict(command=" ".join(["python -m bench.reproduce", *given]),
                when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                machine=f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {args.jobs} worker(s) x "
                        f"{args.threads} thread(s)", seeds=seeds, wall_minutes=wall / 60, origins=origins,
                plots=plot_files, solver_gaps=gaps)
    (args.out / "reproduce.md").write_text(markdown(summary, datasets, meta) + "\n")
    print(f"wrote {args.out / 'reproduce.csv'}, {args.out / 'reproduce.md'} ({wall / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
