"""The benchmark leaderboard of issue 9: our three families against baselines and peers on real traffic.

    make leaderboard                                       # everything (results cached per contender)
    .venv/bin/python -m bench.leaderboard --only ours      # rerun our models only (after changing them)
    .venv/bin/python -m bench.leaderboard --train-args "--norm none" --label no-norm  # an ablation

Protocol (the same for every contender): the last 7 days of each series are held out; a model is fitted
once on everything before them and forecasts rolling origins inside the test week without refitting.
- Milan squares 4556 and 5161 (10-minute internet activity, each its own dataset): day-ahead (horizon 144,
  7 origins one day apart) and hour-ahead (horizon 6, 168 origins one hour apart).
- The 211 complete hourly Milan cells (``sample_data/milan_cdr_hourly.parquet``), one global model:
  day-ahead (horizon 24, 7 origins).
Our families run through the ``qkanforecast`` command line exactly as a user runs them (``train --horizon
H --test-size <7 days>``, then ``evaluate --windows K --step S``), so the board measures what a user gets
and keeps working when the internals change; the naive and seasonal-naive rows come from ``evaluate``'s
backtest. The peers run in their own environment (``make peers``) through ``bench/peers.py``. Every
backtest is checked against the protocol's origins and scored with ``qkanforecast.metrics`` as ``evaluate``
scores it: MAE, sMAPE (percent, 0-200) and MASE (each series' errors over its in-sample seasonal-naive MAE,
season one day, on the data up to the first origin).

Results are cached in ``results/leaderboard_runs.csv`` keyed by the run's inputs (for our models a hash of
the package source and the train arguments; for the peers a hash of ``bench/peers.py``, their versions
and settings), so a rerun only runs what changed. Writes ``results/leaderboard.md`` and ``.csv``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qkanforecast.baselines import season_length
from qkanforecast.config import FAMILIES
from qkanforecast.data import IngestOptions, Table, read_table, write_table
from qkanforecast.metrics import metrics_table, naive_scale

ROOT = Path(__file__).resolve().parents[1]

OURS = tuple(FAMILIES)
BASELINES = ("naive", "seasonal_naive")  # evaluate's column names
PEERS = ("nf-lstm", "nf-nhits", "nf-kan", "autoets", "mstl")
GROUPS = {"ours": OURS, "baselines": BASELINES, "peers": PEERS}
PEER_MAX_STEPS = 200  # NeuralForecast training steps, the same for every neural peer and task
RUNS_COLUMNS = [
    "dataset", "task", "contender", "label", "train_args", "key", "version",
    "mae", "smape", "mase", "parameters", "train_s", "forecast_s", "started", "finished", "jobs",
]  # fmt: skip


# -- protocol ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    name: str
    horizon: int
    windows: int
    step: int

    @property
    def test_size(self) -> int:
        """Steps held out at the end of each series: the last origin's horizon ends with the data."""
        return self.horizon + self.step * (self.windows - 1)


@dataclass(frozen=True)
class Dataset:
    name: str
    source: str  # path relative to the shared data folder ("shared:") or to the repository
    day: int  # steps per day
    tasks: tuple[Task, ...]


def day_ahead(day: int) -> Task:
    return Task("day-ahead", day, 7, day)


def hour_ahead(day: int) -> Task:
    hour = day // 24
    return Task("hour-ahead", hour, 7 * 24, hour)


SQUARE = "shared:milan_internet_10min/ts_full_square_{}.csv"
DATASETS = {
    "milan-4556": Dataset("milan-4556", SQUARE.format(4556), 144, (day_ahead(144), hour_ahead(144))),
    "milan-5161": Dataset("milan-5161", SQUARE.format(5161), 144, (day_ahead(144), hour_ahead(144))),
    "milan-cells": Dataset("milan-cells", "sample_data/milan_cdr_hourly.parquet", 24, (day_ahead(24),)),
}  # fmt: skip


def origins(stamps: np.ndarray, task: Task) -> np.ndarray:
    """The forecast origins (last observed timestamp before each window) of one series."""
    n = len(stamps)
    if n <= task.test_size:
        raise ValueError(f"a series of {n} steps is too short for a test part of {task.test_size}")
    return stamps[[n - task.test_size + k * task.step - 1 for k in range(task.windows)]]


def expected_keys(table: Table, task: Task) -> pd.DataFrame:
    """``unique_id, ds, cutoff`` of every forecast the protocol asks for, sorted."""
    parts = []
    for uid, start, end in zip(table.ids, table.offsets[:-1], table.offsets[1:], strict=True):
        stamps = table.frame["ds"].to_numpy()[start:end]
        for cut in origins(stamps, task):
            i = int(np.searchsorted(stamps, cut))
            ds = stamps[i + 1 : i + 1 + task.horizon]
            parts.append(pd.DataFrame({"unique_id": uid, "ds": ds, "cutoff": cut}))
    return pd.concat(parts, ignore_index=True).sort_values(["unique_id", "cutoff", "ds"], ignore_index=True)


def mase_scales(table: Table, task: Task) -> dict[str, float]:
    """Each series' MASE denominator as ``evaluate`` computes it: the in-sample seasonal-naive MAE (season
    from the frequency, one day here) on the data up to and including the first origin."""
    season = season_length(table.freq)
    scales = {}
    for uid, start, end in zip(table.ids, table.offsets[:-1], table.offsets[1:], strict=True):
        stamps, values = table.frame["ds"].to_numpy()[start:end], table.values[start:end]
        scales[uid] = naive_scale(values[stamps <= origins(stamps, task)[0]], season)
    return scales


def score(backtest: pd.DataFrame, column: str, table: Table, task: Task) -> dict[str, float]:
    """MAE, sMAPE and MASE of one forecast column, after checking it covers exactly the protocol's
    forecasts (same series, origins and target timestamps) with finite values."""
    bt = backtest.assign(unique_id=backtest["unique_id"].astype(str))
    bt = bt.sort_values(["unique_id", "cutoff", "ds"], ignore_index=True)
    want = expected_keys(table, task)
    got = bt[["unique_id", "ds", "cutoff"]]
    if len(got) != len(want) or not (got.to_numpy() == want.to_numpy()).all():
        raise ValueError(f"{column}: the backtest's origins or timestamps differ from the protocol's")
    if not np.isfinite(bt[column].to_numpy(float)).all():
        raise ValueError(f"{column}: the backtest has missing or infinite forecasts")
    row = metrics_table(bt, [column], mase_scales(table, task)).iloc[0]
    return {"mae": float(row["mae"]), "smape": float(row["smape"]), "mase": float(row["mase"])}


# -- cache -----------------------------------------------------------------------------------------------
def digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def source_hash(root: Path = ROOT) -> str:
    """A hash of the package source: our models' results are reused only while it is unchanged."""
    files = sorted((root / "qkanforecast").rglob("*.py"))
    return digest([(str(f.relative_to(root)), f.read_bytes().hex()) for f in files])


def peers_hash(peers_python: Path) -> str:
    """A hash of bench/peers.py and the peer packages' versions (from their dist-info folder names)."""
    site = sorted(p.name for p in peers_python.parent.parent.glob("lib/python*/site-packages/*.dist-info"))
    wanted = [n for n in site if n.split("-")[0].lower() in ("neuralforecast", "statsforecast", "torch")]
    return digest((ROOT / "bench" / "peers.py").read_text(), wanted)


def load_runs(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame(columns=RUNS_COLUMNS)
    runs = pd.read_csv(path, dtype={"key": str, "version": str, "label": str, "train_args": str})
    return runs.reindex(columns=RUNS_COLUMNS).fillna({"label": "", "train_args": ""})


def cached(runs: pd.DataFrame, key: str) -> dict[str, Any] | None:
    hit = runs[runs["key"] == key]
    return None if hit.empty else hit.iloc[-1].to_dict()


# -- contenders ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    dataset: Dataset
    task: Task
    contender: str  # one of ours, a peer, or "baselines" (a throwaway model only for evaluate's baselines)
    label: str = ""
    train_args: tuple[str, ...] = ()


@dataclass
class Env:
    python: Path
    peers_python: Path
    work: Path
    max_steps: int
    jobs: int
    src: str = ""
    peers: str = ""
    started: str = ""  # when this invocation started (UTC), recorded with its results

    def data(self, dataset: Dataset) -> Path:
        return self.work / "data" / f"{dataset.name}.parquet"

    def key(self, job: Job, contender: str) -> tuple[str, str]:
        """(cache key, version) of one contender's result."""
        if contender in PEERS:
            settings = peer_args(job, contender, self)
            return digest(self.peers, job.dataset, job.task, contender, settings), self.peers
        extra = job.train_args if contender in OURS else ()
        return digest(self.src, job.dataset, job.task, contender, extra), self.src


def run(cmd: list[str], env: Env) -> tuple[str, float]:
    """Run a command with one thread and this checkout first on the path; (stdout, seconds)."""
    child = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=child, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout, seconds


def find_parameters(manifest: Any) -> int:
    """The model's parameter count wherever the manifest keeps it (``num_parameters``)."""
    if isinstance(manifest, dict):
        if isinstance(manifest.get("num_parameters"), int):
            return int(manifest["num_parameters"])
        for value in manifest.values():
            found = find_parameters(value)
            if found >= 0:
                return found
    return -1


def run_ours(job: Job, env: Env) -> list[dict[str, Any]]:
    """Train and evaluate one family through the CLI; rows for it and for evaluate's baselines."""
    data, t = env.data(job.dataset), job.task
    registry = env.work / "registry"
    tag = digest(job.dataset.name, t.name, job.contender, job.train_args)[:8]
    name = f"{job.dataset.name}-{t.name}-{job.contender}-{tag}"
    qf = [str(env.python), "-m", "qkanforecast"]
    if job.contender == "baselines":  # any model gives evaluate's baselines; the cheapest will do
        extra: tuple[str, ...] = ("--model", "lstm", "--epochs", "1", "--max-windows", "128")
    else:
        extra = ("--model", job.contender, *job.train_args)
    train = [*qf, "train", str(data), "--horizon", str(t.horizon), "--test-size", str(t.test_size)]
    ref, train_s = run([*train, *extra, "--registry", str(registry), "--name", name, "-q"], env)
    ref = ref.strip().splitlines()[-1]
    out = env.work / "backtests" / f"{name}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    evaluate = [*qf, "evaluate", str(data), "--model", ref, "--windows", f"{t.windows}", f"--step={t.step}"]
    _, forecast_s = run([*evaluate, "--registry", str(registry), "-o", str(out), "-q"], env)
    shown, _ = run([*qf, "models", "show", ref, "--registry", str(registry)], env)
    bt = pd.read_csv(out, parse_dates=["ds", "cutoff"], dtype={"unique_id": str})
    table = read_table(str(data))
    rows = []
    for base in BASELINES:
        rows.append({"contender": base, **score(bt, base, table, t), "parameters": 0})
    if job.contender != "baselines":
        fixed = {"unique_id", "ds", "cutoff", "y", *BASELINES}
        (column,) = [c for c in bt.columns if c not in fixed and "-lo-" not in c and "-hi-" not in c]
        params = find_parameters(json.loads(shown))
        timing = {"parameters": params, "train_s": train_s, "forecast_s": forecast_s}
        rows.append({"contender": job.contender, **score(bt, column, table, t), **timing})
    return rows


def peer_args(job: Job, contender: str, env: Env) -> list[str]:
    """The peer's settings: NeuralForecast sees two days per input window; AutoETS the whole history;
    MSTL, which decomposes its history again at every origin, the last 4 weeks with daily and weekly
    seasons at 7 origins, the last 2 weeks with the daily season at more origins (hour-ahead)."""
    day, t = job.dataset.day, job.task
    args = ["--season", str(day)]
    if contender.startswith("nf-"):
        args += ["--input-size", str(2 * day), "--max-steps", str(env.max_steps)]
    elif contender == "mstl":
        weekly = t.windows <= 7
        seasons = f"{day},{7 * day}" if weekly else str(day)
        args += ["--seasons", seasons, "--history", str((28 if weekly else 14) * day)]
    return args


def run_peer(job: Job, env: Env) -> list[dict[str, Any]]:
    data, t, c = env.data(job.dataset), job.task, job.contender
    out = env.work / "peers" / f"{job.dataset.name}-{t.name}-{c}"
    cmd = [str(env.peers_python), str(ROOT / "bench" / "peers.py"), str(data), "--contender", c]
    cmd += ["--horizon", str(t.horizon), "--windows", str(t.windows), "--step", str(t.step)]
    table = read_table(str(data))
    run([*cmd, "--freq", table.freq, *peer_args(job, c, env), "--out", str(out)], env)
    meta = json.loads((out / "meta.json").read_text())
    bt = pd.read_parquet(out / "backtest.parquet")
    timing = {k: meta[k] for k in ("parameters", "train_s", "forecast_s")}
    return [{"contender": c, **score(bt, c, table, t), **timing}]


# -- the board -------------------------------------------------------------------------------------------
def prepare(dataset: Dataset, env: Env, shared: Path) -> Path:
    """The dataset as a canonical Parquet table in the work folder (read and validated by the library)."""
    path = env.data(dataset)
    if path.is_file():
        return path
    if dataset.source.startswith("shared:"):
        source = shared / dataset.source.removeprefix("shared:")
        if not source.is_file():
            raise SystemExit(f"{source} is missing: pass --shared DIR, or --datasets milan-cells")
        options = IngestOptions(id_col="square_id", time_col="time", target_col="internet")
        table = read_table(str(source), options)
    else:
        table = read_table(str(ROOT / dataset.source))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_table(table, str(path))
    return path


def plan(args: argparse.Namespace, runs: pd.DataFrame, env: Env) -> list[Job]:
    """The jobs whose results are not cached (or all selected ones with --force), longest first."""
    wanted = select(args)
    train_args = tuple(shlex.split(args.train_args))
    jobs = []
    for dataset in (DATASETS[d] for d in args.datasets.split(",")):
        for task in dataset.tasks:
            if args.tasks and task.name not in args.tasks.split(","):
                continue
            probe = Job(dataset, task, "", args.label, train_args)
            missing = [c for c in wanted if args.force or cached(runs, env.key(probe, c)[0]) is None]
            jobs += [Job(dataset, task, c, args.label, train_args) for c in missing if c in OURS]
            jobs += [Job(dataset, task, c) for c in missing if c in PEERS]
            if any(c in BASELINES for c in missing) and not any(c in OURS for c in missing):
                jobs.append(Job(dataset, task, "baselines"))
    cost = {"milan-cells": 3, "nf-lstm": 2, "qkan-lstm": 2, "hqkan-lstm": 2}
    return sorted(jobs, key=lambda j: -cost.get(j.dataset.name, 1) * cost.get(j.contender, 1))


def select(args: argparse.Namespace) -> list[str]:
    if args.contenders:
        return args.contenders.split(",")
    if args.only:
        return [c for group in args.only.split(",") for c in GROUPS[group]]
    return list(OURS) if args.train_args else [*BASELINES, *PEERS, *OURS]


def execute(jobs: list[Job], env: Env, runs_path: Path) -> list[str]:
    """Run the jobs (``env.jobs`` at a time), appending each result to the cache as it comes; failures
    are reported and skipped."""
    failures = []
    with ThreadPoolExecutor(max_workers=env.jobs) as pool:
        futures = {pool.submit(run_peer if j.contender in PEERS else run_ours, j, env): j for j in jobs}
        for future in as_completed(futures):
            job = futures[future]
            what = f"{job.dataset.name} {job.task.name} {job.contender} {job.label}".strip()
            try:
                rows = future.result()
            except Exception as exc:  # one failing contender must not cost the others' results
                failures.append(f"{what}: {exc}")
                print(f"FAILED {what}: {exc}", file=sys.stderr)
                continue
            record(rows, job, env, runs_path)
            mase = ", ".join(f"{r['contender']} {r['mase']:.3f}" for r in rows)
            print(f"done {what}: MASE {mase}", file=sys.stderr)
    return failures


def record(rows: list[dict[str, Any]], job: Job, env: Env, runs_path: Path) -> None:
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    out = []
    for row in rows:
        c = row["contender"]
        key, version = env.key(job, c)
        ours = c in OURS
        out.append({
            "dataset": job.dataset.name, "task": job.task.name, "label": job.label if ours else "",
            "train_args": shlex.join(job.train_args) if ours else "", "key": key, "version": version,
            "started": env.started, "finished": now, "jobs": env.jobs,
            "train_s": np.nan, "forecast_s": np.nan, **row,
        })  # fmt: skip
    frame = pd.DataFrame(out, columns=RUNS_COLUMNS)
    runs_path.parent.mkdir(parents=True, exist_ok=True)
    if runs_path.is_file() and pd.read_csv(runs_path, nrows=0).columns.tolist() != RUNS_COLUMNS:
        frame = pd.concat([load_runs(runs_path), frame])  # written by an older version: rewrite it whole
        runs_path.unlink()
    frame.to_csv(runs_path, mode="a", header=not runs_path.is_file(), index=False, float_format="%.6g")


def current(runs: pd.DataFrame, env: Env) -> pd.DataFrame:
    """The newest cached result of every contender that is valid for today's code and peers."""
    valid = np.where(runs["contender"].isin(PEERS), runs["version"] == env.peers, runs["version"] == env.src)
    rows = runs[valid].drop_duplicates("key", keep="last")
    rows = rows.drop_duplicates(["dataset", "task", "contender", "label", "train_args"], keep="last")
    return rows.sort_values(["dataset", "task", "mase"], ignore_index=True)


def display_name(row: pd.Series) -> str:
    if row["contender"] in OURS and row["train_args"]:
        return f"{row['contender']} [{row['label'] or row['train_args']}]"
    return str(row["contender"]).replace("_", " ")


def last_batch(board: pd.DataFrame) -> str:
    """How long the latest invocation that produced rows of the board took, from start to its last row."""
    batches = board.dropna(subset=["started"])
    if batches.empty:
        return ""
    started = batches["started"].max()
    batch = batches[batches["started"] == started]
    minutes = (pd.Timestamp(batch["finished"].max()) - pd.Timestamp(started)).total_seconds() / 60
    return f"the last run ({len(batch)} rows, started {started}) took {minutes:.1f} min; "


def markdown(board: pd.DataFrame, env: Env) -> str:
    cpus = [ln.split(":", 1)[1].strip() for ln in _cpuinfo() if ln.startswith("model name")]
    compute = float(board[["train_s", "forecast_s"]].sum().sum()) / 60
    when = last_batch(board)
    lines = [
        "# Leaderboard (issue 9)", "",
        f"Machine: {platform.system()} {platform.machine()}, {os.cpu_count()} cores "
        f"({cpus[0] if cpus else platform.processor()}); every run single-threaded (OMP_NUM_THREADS=1), "
        f"{env.jobs} runs at a time; {dt.date.today().isoformat()}; {when}the board's rows took "
        f"{compute:.1f} min of single-threaded time.", "",
        "Protocol: the last 7 days of each series held out; each model fitted once on everything before "
        "them, then rolling origins inside the test week without refitting (day-ahead: 7 origins a day "
        "apart; hour-ahead: 168 origins an hour apart). MAE in the data's units; sMAPE in percent (0-200); "
        "MASE scales each series' errors by its in-sample seasonal-naive MAE (season one day) up to the "
        "first origin, as `qkanforecast evaluate` does. Parameters: trainable weights (statsforecast: "
        "estimated parameters and states, summed over series). Seconds: wall time of single-threaded runs; "
        "ours include process start (`train`, then `evaluate`).", "",
        "Our models: the `qkanforecast` CLI at its defaults. NeuralForecast LSTM, NHITS, KAN: defaults, "
        f"`max_steps` {env.max_steps}, input window two days, each window scaled by the `robust` temporal "
        "scaler. statsforecast AutoETS: season one day, whole history. MSTL (it decomposes its history again "
        "at every origin): daily and weekly seasons on the last 4 weeks at the 7 day-ahead origins, "
        "the daily season on the last 2 weeks at the 168 hour-ahead origins.", "",
        "Rerun: `make leaderboard`; only our models: `.venv/bin/python -m bench.leaderboard --only ours`; an "
        'ablation: `... --train-args "--lookback 288" --label lookback-2d`.',
    ]  # fmt: skip
    variant = board["train_args"].fillna("").astype(str) != ""
    main = board[~variant]
    lines += ["", "## MASE by dataset and task (lower is better)", "", *summary(main)]
    ablation = board[board["contender"].eq("qkan-lstm")]
    if variant.any():
        lines += ["", "## Ablation: qkan-lstm with one part changed (MASE)", "",
                  "Each row is the default qkan-lstm with the `train` arguments of its label; `-`: not run.",
                  "", *summary(ablation)]  # fmt: skip
    for (dataset, task), part in main.groupby(["dataset", "task"], sort=False):
        lines += ["", f"## {dataset}, {task}", "",
                  "| contender | MAE | sMAPE (0-200) | MASE | parameters | train s | forecast s |",
                  "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for _, r in part.iterrows():
            cells = [display_name(r), f"{r['mae']:.4g}", f"{r['smape']:.2f}", f"{r['mase']:.3f}",
                     _int(r["parameters"]), _sec(r["train_s"]), _sec(r["forecast_s"])]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary(board: pd.DataFrame) -> list[str]:
    """One Markdown row per contender, one MASE column per dataset and task, rows by mean rank."""
    if board.empty:
        return []
    named = board.assign(name=board.apply(display_name, axis=1), where=board["dataset"] + " " + board["task"])
    wide = named.pivot_table(index="name", columns="where", values="mase", sort=False)
    wide = wide.loc[wide.rank().mean(axis=1).sort_values().index]
    rows = ["| contender | " + " | ".join(wide.columns) + " |", "|---|" + "---:|" * len(wide.columns)]
    for name, values in wide.iterrows():
        rows.append(f"| {name} | " + " | ".join("-" if pd.isna(v) else f"{v:.3f}" for v in values) + " |")
    return rows


def _cpuinfo() -> list[str]:
    path = Path("/proc/cpuinfo")
    return path.read_text().splitlines() if path.is_file() else []


def _int(v: Any) -> str:
    return "-" if pd.isna(v) or v < 0 else f"{int(v):,}"


def _sec(v: Any) -> str:
    return "-" if pd.isna(v) else f"{v:.1f}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    every = (*OURS, *BASELINES, *PEERS)
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--only", help="ours, peers and/or baselines, comma-separated")
    p.add_argument("--contenders", help=f"comma-separated, from {', '.join(every)}")
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated")
    p.add_argument("--tasks", default="", help="day-ahead and/or hour-ahead (default: every task)")
    p.add_argument("--train-args", default="", help='added to our train commands, e.g. "--lookback 288"')
    p.add_argument("--label", default="", help="the ablation's name on the board (default: the train args)")
    p.add_argument("--force", action="store_true", help="rerun the selected contenders even when cached")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (each single-threaded)")
    p.add_argument("--max-steps", type=int, default=PEER_MAX_STEPS, help="NeuralForecast training steps")
    p.add_argument("--python", default=str(ROOT / ".venv/bin/python"), help="python with qkanforecast")
    p.add_argument("--peers-python", default=str(ROOT / ".venv-peers/bin/python"))
    p.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"), help="the shared data folder")
    p.add_argument("--work", default=str(ROOT / "build" / "leaderboard"), help="data, registry, backtests")
    p.add_argument("--results", default=str(ROOT / "results"))
    args = p.parse_args(argv)
    for flag, given, known in (("--only", args.only, GROUPS), ("--contenders", args.contenders, every),
                               ("--datasets", args.datasets, DATASETS)):  # fmt: skip
        bad = [v for v in (given or "").split(",") if v and v not in known]
        if bad:
            p.error(f"{flag}: unknown {bad[0]!r}; choose from {', '.join(known)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    env = Env(Path(args.python), Path(args.peers_python), Path(args.work), args.max_steps, args.jobs)
    env.started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    env.src = source_hash()
    env.peers = peers_hash(env.peers_python) if env.peers_python.is_file() else "no-peers-env"
    results = Path(args.results)
    runs_path = results / "leaderboard_runs.csv"
    for name in args.datasets.split(","):
        prepare(DATASETS[name], env, Path(args.shared))
    jobs = plan(args, load_runs(runs_path), env)
    if any(j.contender in PEERS for j in jobs) and not env.peers_python.is_file():
        raise SystemExit(f"{env.peers_python} is missing: run `make peers` (or pass --only ours)")
    print(f"{len(jobs)} runs to do, {env.jobs} at a time", file=sys.stderr)
    start = time.perf_counter()
    failures = execute(jobs, env, runs_path)
    wall = time.perf_counter() - start if jobs else None
    board = current(load_runs(runs_path), env)
    csv = board.drop(columns=["key", "version"])
    csv.to_csv(results / "leaderboard.csv", index=False, float_format="%.6g")
    (results / "leaderboard.md").write_text(markdown(board, env))
    print(f"wrote {results}/leaderboard.md: {len(board)} rows, {(wall or 0) / 60:.1f} min", file=sys.stderr)
    if failures:
        raise SystemExit(f"{len(failures)} runs failed:\n" + "\n".join(failures))


if __name__ == "__main__":
    main()
