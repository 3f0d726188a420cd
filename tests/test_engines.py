"""Forecasts and backtests bucket by bucket: the Ray engine gives exactly the local engine's results, a
partitioned table gives the single file's, and a worker killed mid-run leaves nothing a reader accepts."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import sine_panel
from typer.testing import CliRunner

from qkanforecast import batch
from qkanforecast.cli import app
from qkanforecast.config import BacktestConfig
from qkanforecast.data import Dataset, from_frame, read_source, write_partitioned, write_table
from qkanforecast.data.partitioned import MARKER, open_partitioned
from qkanforecast.engine import Engine
from qkanforecast.errors import QKANForecastError
from qkanforecast.forecast import Predictor
from qkanforecast.metrics import Sums, sums
from qkanforecast.registry import Registry

FAST = ["--lookback", "16", "--hidden-size", "4", "--epochs", "2", "--batch-size", "64", "--reps", "1",
        "--horizon", "6", "--max-windows", "512"]
runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 14-series panel as one file and as 4 buckets, and a model trained on 10 of its series (the
    other 4 are scaled with their own history)."""
    root = tmp_path_factory.mktemp("world")
    frame = sine_panel(14, 400, ids="site-{}")
    table = from_frame(frame)
    write_table(table, root / "all.parquet")
    write_partitioned(table, root / "parts", 4)
    trained = frame[frame["unique_id"].isin([f"site-{k}" for k in range(10)])]
    trained.to_csv(root / "train.csv", index=False)
    result = runner.invoke(app, ["train", str(root / "train.csv"), *FAST, "--registry", str(root / "reg"),
                                 "-q"])
    assert result.exit_code == 0, result.output
    return {"root": root, "registry": str(root / "reg"), "ref": result.stdout.strip()}


def predictor(world: dict[str, Any]) -> Predictor:
    return Predictor.load(world["ref"], Registry(world["registry"]))


@pytest.fixture(scope="module")
def ray_local() -> Any:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    yield ray
    ray.shutdown()


def parts_frame(path: Path, order: list[str]) -> pd.DataFrame:
    data = Dataset.open(path)
    frame = pd.concat([data.read_frame(p) for p in data.parts], ignore_index=True)
    return frame.sort_values(order, kind="stable", ignore_index=True)


def test_forecast_on_ray_equals_the_local_engine(world: dict[str, Any], ray_local: Any,
                                                 tmp_path: Path) -> None:
    parts = Dataset.open(world["root"] / "parts")
    frames = {}
    for engine in Engine:
        out = tmp_path / f"{engine.value}.parquet"
        done = batch.run_forecast(predictor(world), parts, str(out), levels=[90], engine=engine)
        assert done.rows == 14 * 6 and done.series == 14
        frames[engine] = pd.read_parquet(out)
        batch.run_forecast(predictor(world), parts, str(tmp_path / f"{engine.value}-dir"), levels=[90],
                           engine=engine)
    pd.testing.assert_frame_equal(frames[Engine.RAY], frames[Engine.LOCAL], check_exact=True)
    assert list(frames[Engine.LOCAL].columns) == ["unique_id", "ds", "qkan-lstm", "qkan-lstm-lo-90",
                                                  "qkan-lstm-hi-90"]
    for engine in Engine:  # the parts hold the same rows
        pd.testing.assert_frame_equal(parts_frame(tmp_path / f"{engine.value}-dir", ["unique_id"]),
                                      frames[Engine.LOCAL], check_exact=True)


def test_evaluate_on_ray_equals_the_local_engine(world: dict[str, Any], ray_local: Any,
                                                 tmp_path: Path) -> None:
    parts = Dataset.open(world["root"] / "parts")
    config = BacktestConfig(windows=3, step=6)
    runs = {e: batch.run_evaluate(predictor(world), parts, config, True, str(tmp_path / f"{e.value}.parquet"),
                                  engine=e) for e in Engine}
    local, ray = runs[Engine.LOCAL], runs[Engine.RAY]
    assert local.evaluation is not None and ray.evaluation is not None
    pd.testing.assert_frame_equal(ray.evaluation.metrics, local.evaluation.metrics, check_exact=True)
    assert ray.evaluation.notes == local.evaluation.notes
    counts = (local.rows, local.series, local.cutoffs)
    assert (ray.rows, ray.series, ray.cutoffs) == counts == (14 * 18, 14, 3)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ray.parquet"),
                                  pd.read_parquet(tmp_path / "local.parquet"), check_exact=True)
    assert len(local.evaluation.metrics) == 3 + 14 * 3  # overall and per series, every model


def test_the_cli_runs_on_ray(world: dict[str, Any], ray_local: Any, tmp_path: Path) -> None:
    args = ["-m", world["ref"], "--registry", world["registry"], "--windows", "2"]
    out = {}
    for engine in ("local", "ray"):
        result = runner.invoke(app, ["evaluate", str(world["root"] / "parts"), *args, "--engine", engine])
        assert result.exit_code == 0, result.output
        out[engine] = result.stdout
    assert out["ray"] == out["local"] and out["local"].count("(all)") == 3


def test_a_partitioned_table_forecasts_and_scores_as_the_single_file(world: dict[str, Any]) -> None:
    single = read_source(world["root"] / "all.parquet")
    parts = Dataset.open(world["root"] / "parts")
    a = batch.run_forecast(predictor(world), single, "-", engine=Engine.LOCAL)
    config = BacktestConfig(windows=3, step=6)
    b = batch.run_forecast(predictor(world), parts, "-", engine=Engine.LOCAL)
    assert a.frame is not None and b.frame is not None
    pd.testing.assert_frame_equal(b.frame, a.frame, rtol=1e-6)  # batches of other series: float32 rounding
    ea = batch.run_evaluate(predictor(world), single, config, True).evaluation
    eb = batch.run_evaluate(predictor(world), parts, config, True).evaluation
    assert ea is not None and eb is not None
    pd.testing.assert_frame_equal(eb.metrics, ea.metrics, rtol=1e-6)
    assert eb.notes == ea.notes


def test_metric_sums_combine_as_the_whole(world: dict[str, Any]) -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(1e6, 3.0, 1000)  # a large level: R² through sum(y**2) would cancel to noise
    yhat = y + rng.normal(0, 1.0, 1000)
    scale = rng.uniform(0.5, 2, 1000)
    whole = sums(y, yhat, scale).metrics()
    cuts = [0, 10, 300, 301, 1000]
    total = Sums()
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        total = total + sums(y[a:b], yhat[a:b], scale[a:b])
    for key, value in total.metrics().items():
        assert value == pytest.approx(whole[key], rel=1e-9), key
    assert 0.8 < whole["r2"] < 0.95
    assert (Sums() + sums(y, yhat, scale)).metrics() == whole  # an empty part changes nothing


def test_a_killed_worker_leaves_no_result_a_reader_accepts(
    world: dict[str, Any], ray_local: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = Dataset.open(world["root"] / "parts")
    out = tmp_path / "forecast"
    fresh = tmp_path / "fresh"
    batch.run_forecast(predictor(world), parts, str(out), engine=Engine.LOCAL)  # an earlier complete run
    before = parts_frame(out, ["unique_id"])
    real = batch.forecast_bucket
    victim = parts.parts[1].bucket

    def dies_after_writing(job: batch.Job, unit: batch.Unit) -> batch.Done:
        done = real(job, unit)  # its part is written...
        if unit.bucket == victim:
            os._exit(1)  # ...and the worker process dies before reporting it
        return done

    monkeypatch.setattr(batch, "forecast_bucket", dies_after_writing)
    for target in (out, fresh):
        with pytest.raises(QKANForecastError, match="a Ray worker was lost"):
            batch.run_forecast(predictor(world), parts, str(target), levels=[50], engine=Engine.RAY)
    assert not (fresh / MARKER).exists() and open_partitioned(fresh) is None
    with pytest.raises(QKANForecastError, match=f"no {MARKER} marker"):
        Dataset.open(fresh)
    pd.testing.assert_frame_equal(parts_frame(out, ["unique_id"]), before)  # the earlier run, whole
    assert "qkan-lstm-lo-50" not in before.columns


def test_engine_ray_without_ray_says_how_to_install(world: dict[str, Any],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    result = runner.invoke(app, ["forecast", str(world["root"] / "parts"), "-m", world["ref"], "--registry",
                                 world["registry"], "--engine", "ray", "-o", "-"])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == ("Error: --engine ray needs Ray, an optional extra: "
                             "pip install 'qkanforecast[ray]'\n")


def test_an_address_where_nothing_answers_is_one_error_at_once(world: dict[str, Any], tmp_path: Path) -> None:
    """Ray retries an unreachable cluster for minutes; the command refuses it at once."""
    pytest.importorskip("ray")
    import socket

    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "fc.csv"
    cmd = [sys.executable, "-m", "qkanforecast", "forecast", str(world["root"] / "parts"), "-m",
           world["ref"], "--registry", world["registry"], "--engine", "ray", "--address", f"127.0.0.1:{port}",
           "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and done.stdout == "" and not out.exists()
    assert done.stderr.startswith(f"Error: cannot reach Ray at 127.0.0.1:{port}: ")
    assert done.stderr.count("\n") == 1


@pytest.mark.slow
def test_the_command_starts_and_stops_its_own_ray(world: dict[str, Any], tmp_path: Path) -> None:
    pytest.importorskip("ray")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    outputs = {}
    for engine in ("local", "ray"):
        out = tmp_path / f"{engine}.csv"
        cmd = [sys.executable, "-m", "qkanforecast", "forecast", str(world["root"] / "parts"), "-m",
               world["ref"], "--registry", world["registry"], "--engine", engine, "-o", str(out), "-q"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        outputs[engine] = out.read_bytes()
    assert outputs["ray"] == outputs["local"] and outputs["local"].count(b"\n") == 1 + 14 * 6


def test_a_partitioned_input_may_write_a_directory_a_file_input_may_not(world: dict[str, Any],
                                                                        tmp_path: Path) -> None:
    args = ["-m", world["ref"], "--registry", world["registry"], "-q"]
    parts = str(world["root"] / "parts")
    result = runner.invoke(app, ["forecast", parts, *args, "-o", f"{tmp_path / 'fc'}/"])
    assert result.exit_code == 0, result.output
    assert Dataset.open(tmp_path / "fc").marker.rows == 14 * 6
    single = str(world["root"] / "all.parquet")
    result = runner.invoke(app, ["forecast", single, *args, "-o", f"{tmp_path / 'x'}/"])
    assert result.exit_code == 1 and "unknown output format" in result.stderr  # a file is expected
    assert not (tmp_path / "x").exists()
