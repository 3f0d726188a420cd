"""The command line, through CliRunner (stdout and stderr apart) and one real shell pipeline."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from conftest import sine_panel
from typer.testing import CliRunner

from qkanforecast import __version__
from qkanforecast.cli import app

FAST = ["--lookback", "16", "--hidden-size", "4", "--epochs", "2", "--batch-size", "64", "--reps", "1"]


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def registry(tmp_path):
    return str(tmp_path / "registry")


def run(runner, *args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def train_ref(runner, data, registry, *extra):
    result = run(runner, "train", data, *FAST, "--registry", registry, "-q", *extra)
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip()


def test_version_and_help(runner):
    assert run(runner, "--version").stdout == f"qkanforecast {__version__}\n"
    commands = [[], ["ingest"], ["train"], ["forecast"], ["evaluate"], ["models"]]
    commands += [["models", c] for c in ("list", "show", "rm", "path")]
    for cmd in commands:
        result = run(runner, *cmd, "-h")
        assert result.exit_code == 0
        last = result.stdout.rstrip().split("\n\n")[-2:]
        assert last[0].strip() == "Example:" and "qkanforecast" in last[1], cmd


def test_ingest_writes_canonical_parquet(runner, panel_csv, tmp_path):
    out = tmp_path / "panel.parquet"
    result = run(runner, "ingest", panel_csv, "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert json.loads(result.stderr)["series"] == 2
    frame = pd.read_parquet(out)
    assert list(frame.columns) == ["unique_id", "ds", "y"] and len(frame) == 800


def test_ingest_to_stdout_from_stdin(runner, panel_csv):
    result = run(runner, "ingest", "-", "-q", input=panel_csv.read_text())
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0] == "unique_id,ds,y"
    assert len(result.stdout.splitlines()) == 801


@pytest.mark.parametrize("model", ["qkan-lstm", "hqkan-lstm", "lstm"])
def test_train_forecast_evaluate(runner, panel_csv, registry, tmp_path, model):
    ref = train_ref(runner, panel_csv, registry, "--model", model, "--horizon", "3", "--name", "net")
    assert ref == "net@v1"
    out = tmp_path / "fc.parquet"
    result = run(runner, "forecast", panel_csv, "--model", ref, "--registry", registry, "-o", out)
    assert result.exit_code == 0, result.stderr
    fc = pd.read_parquet(out)
    assert list(fc.columns) == ["unique_id", "ds", model]
    assert len(fc) == 6 and fc["ds"].min() == pd.Timestamp("2024-01-01") + 400 * pd.Timedelta("10min")
    assert fc[model].between(20, 180).all()  # original units, not scaled ones

    bt_path = tmp_path / "bt.csv"
    result = run(
        runner,
        "evaluate",
        panel_csv,
        "-m",
        ref,
        "--registry",
        registry,
        "--windows",
        "2",
        "-o",
        bt_path,
        "--json",
        "--per-series",
    )
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {(r["unique_id"], r["model"]) for r in rows} >= {
        ("(all)", model),
        ("(all)", "naive"),
        ("cell1", "seasonal_naive"),
    }
    bt = pd.read_csv(bt_path)
    assert list(bt.columns) == ["unique_id", "ds", "cutoff", "y", model, "naive", "seasonal_naive"]
    assert len(bt) == 2 * 2 * 3 and bt["cutoff"].nunique() == 2


def test_forecast_to_stdout_and_more_steps_than_horizon(runner, panel_csv, registry):
    ref = train_ref(runner, panel_csv, registry, "--model", "lstm")
    result = run(runner, "forecast", panel_csv, "-m", ref, "--registry", registry, "--steps", "5")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "unique_id,ds,lstm" and len(lines) == 11


def test_forecast_series_never_seen(runner, panel_csv, registry, tmp_path):
    ref = train_ref(runner, panel_csv, registry, "--model", "lstm")
    other = sine_panel(n_series=3, seed=5)
    other["unique_id"] = other["unique_id"].str.replace("cell", "new")
    path = tmp_path / "new.csv"
    other.to_csv(path, index=False)
    result = run(runner, "forecast", path, "-m", ref, "--registry", registry, "--format", "jsonl")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["unique_id"] for r in rows] == ["new0", "new1", "new2"]


def test_warm_start_checks_architecture(runner, panel_csv, registry):
    ref = train_ref(runner, panel_csv, registry, "--model", "lstm", "--name", "base")
    result = run(runner, "train", panel_csv, "--from", ref, "--epochs", "1", "--registry", registry, "-q")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "base@v2\n"
    result = run(runner, "train", panel_csv, "--from", ref, "--hidden-size", "9", "--registry", registry)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: --hidden-size 9 does not fit base@v1 (hidden_size 4); leave it out to keep the checkpoint's"
    )


def test_models_list_show_path_rm(runner, panel_csv, registry):
    ref = train_ref(runner, panel_csv, registry, "--model", "lstm", "--name", "m")
    listing = run(runner, "models", "list", "--registry", registry, "--json")
    assert [json.loads(line)["ref"] for line in listing.stdout.splitlines()] == ["m@v1"]
    shown = json.loads(run(runner, "models", "show", ref, "--registry", registry).stdout)
    assert shown["model"]["model"] == "lstm" and shown["data"]["lookback"] == 16
    path = run(runner, "models", "path", ref, "--registry", registry).stdout.strip()
    assert os.path.isfile(os.path.join(path, "manifest.json"))
    assert run(runner, "models", "rm", ref, "--registry", registry).exit_code == 0
    assert run(runner, "models", "list", "--registry", registry, "--json").stdout == ""


def test_same_seed_gives_identical_weights(runner, panel_csv, registry):
    import torch

    refs = [train_ref(runner, panel_csv, registry, "--model", "qkan-lstm", "--name", "d") for _ in range(2)]
    paths = [run(runner, "models", "path", r, "--registry", registry).stdout.strip() for r in refs]
    a, b = (torch.load(os.path.join(p, "model.pt"), weights_only=True) for p in paths)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "missing.csv"], "Error: missing.csv: file not found"),
        (["forecast", "{data}", "-m", "nope"], "Error: unknown model 'nope' in registry"),
        (
            ["ingest", "{data}", "-o", "{tmp}/no/dir/out.csv"],
            "Error: {tmp}/no/dir/out.csv: directory {tmp}/no/dir",
        ),
        (
            ["train", "{data}", "--lookback", "500"],
            "Error: no train windows: with lookback 500 and horizon 1",
        ),
        (["train", "{data}", "--lr", "0"], "Error: --lr must be positive, got 0.0"),
        (["train", "{data}", "--name", "../up"], "Error: invalid model name '../up'"),
    ],
)
def test_user_errors_are_one_line(runner, panel_csv, registry, tmp_path, args, message):
    args = [a.format(data=panel_csv, tmp=tmp_path) for a in args]
    message = message.format(tmp=tmp_path)
    result = run(runner, *args, *(["--registry", registry] if args[0] != "ingest" else []))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr


def test_usage_errors_exit_2(runner, panel_csv):
    assert run(runner, "train", panel_csv, "--model", "gru").exit_code == 2
    assert run(runner, "forecast", panel_csv).exit_code == 2  # --model is required


def test_frequency_mismatch_and_no_partial_output(runner, panel_csv, registry, tmp_path):
    ref = train_ref(runner, panel_csv, registry, "--model", "lstm")
    hourly = tmp_path / "hourly.csv"
    sine_panel(freq="h").to_csv(hourly, index=False)
    out = tmp_path / "fc.csv"
    result = run(runner, "forecast", hourly, "-m", ref, "--registry", registry, "-o", out)
    assert result.exit_code == 1
    assert result.stderr == f"Error: data frequency is h but {ref} was trained on 10min data\n"
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".fc")]


@pytest.mark.slow
def test_shell_pipeline(panel_csv, tmp_path):
    env = {**os.environ, "QKANFORECAST_HOME": str(tmp_path / "home")}
    exe = [sys.executable, "-m", "qkanforecast"]
    ref = subprocess.run(
        [*exe, "train", str(panel_csv), *FAST, "--model", "lstm", "-q"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert ref.stderr == "" and ref.stdout == "panel@v1\n"  # named after the data file
    shell = f"{' '.join(exe)} forecast {panel_csv} --model {ref.stdout.strip()} --steps 4 -o - | head -n 3"
    out = subprocess.run(shell, shell=True, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[0] == "unique_id,ds,lstm" and len(out.stdout.splitlines()) == 3


def test_forecast_defaults_to_the_training_column_names(runner, tmp_path, registry):
    frame = sine_panel().rename(columns={"unique_id": "cell", "ds": "time", "y": "internet"})
    path = tmp_path / "cells.csv"
    frame.to_csv(path, index=False)
    cols = ["--id-col", "cell", "--time-col", "time", "--target-col", "internet"]
    ref = train_ref(runner, path, registry, "--model", "lstm", *cols)
    result = run(runner, "forecast", path, "-m", ref, "--registry", registry)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0] == "unique_id,ds,lstm" and len(result.stdout.splitlines()) == 3


@pytest.mark.slow
def test_two_trainings_of_one_name_at_once_get_their_own_versions(panel_csv, tmp_path):
    env = {**os.environ, "QKANFORECAST_HOME": str(tmp_path / "home")}
    cmd = [
        sys.executable,
        "-m",
        "qkanforecast",
        "train",
        str(panel_csv),
        *FAST,
        "--model",
        "lstm",
        "--name",
        "cron",
        "-q",
    ]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    refs = sorted(p.communicate(timeout=300)[0].strip() for p in procs)
    assert [p.returncode for p in procs] == [0, 0]
    assert refs == ["cron@v1", "cron@v2"]


def test_train_help_shows_the_real_defaults(runner):
    from dataclasses import asdict

    from qkanforecast.cli.app import shown
    from qkanforecast.config import OPTIONS, Settings

    defaults = {**asdict(Settings().train), **asdict(Settings().data), **asdict(Settings().model.qkan)}
    defaults.update(model=Settings().model.model, num_layers=Settings().model.num_layers)
    text = " ".join(run(runner, "train", "-h").stdout.split())
    checked = 0
    for name, value in defaults.items():
        option = "--" + name.replace("_", "-")
        if name not in OPTIONS or option not in text or value is None:
            continue
        after = text.split(option, 1)[1]
        assert f"[default: {shown(value)}]" in after.split(" --")[0], option
        checked += 1
    assert checked >= 14


def test_forecast_with_prediction_intervals(runner, panel_csv, registry):
    ref = train_ref(runner, panel_csv, registry, "--model", "lstm", "--horizon", "2")
    result = run(
        runner, "forecast", panel_csv, "-m", ref, "--registry", registry, "--level", "80", "--level", "95"
    )
    assert result.exit_code == 0, result.stderr
    header = result.stdout.splitlines()[0]
    assert header == "unique_id,ds,lstm,lstm-lo-80,lstm-hi-80,lstm-lo-95,lstm-hi-95"
    result = run(
        runner, "forecast", panel_csv, "-m", ref, "--registry", registry, "--level", "90", "--steps", "3"
    )
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("Error: prediction intervals cover the model's horizon (2 steps)")


def test_threads_default_to_one_unless_asked(runner, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert run(runner, "models", "path").exit_code == 0
    assert os.environ["OMP_NUM_THREADS"] == "1"  # set before torch is imported by a command
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    run(runner, "models", "path")
    assert os.environ["OMP_NUM_THREADS"] == "2"  # the user's own setting is kept
    run(runner, "--threads", "3", "models", "path")
    assert os.environ["OMP_NUM_THREADS"] == "3"


@pytest.mark.parametrize(("args", "code", "out", "err"), [
    (["--version"], 0, f"qkanforecast {__version__}\n", ""),
    (["forecast", "absent.csv", "--model", "x@v1"], 1, "", "Error: "),
    (["forecast"], 2, "", "Missing argument"),
])
def test_the_command_status_is_the_process_status_whatever_the_teardown(tmp_path, args, code, out, err):
    """Once a command has returned, native teardown at interpreter exit (pyarrow's thread pools) cannot
    turn its status into an abort: the entry point flushes and ends the process. An atexit handler that
    aborts stands in for such a teardown."""
    script = ("import atexit, os, sys; atexit.register(os.abort); sys.argv[0] = 'qkanforecast'; "
              "from qkanforecast.cli import main; main()")
    env = {**os.environ, "QKANFORECAST_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script, *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == code, done.stderr
    assert done.stdout == out
    assert err in done.stderr
