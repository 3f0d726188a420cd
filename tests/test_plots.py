"""qkanforecast plot: figures from the outputs of train, forecast and evaluate, with the panels they
promise, activation curves that are the layers' own outputs, and the errors of the image options."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import sine_panel
from typer.testing import CliRunner

from qkanforecast import plots
from qkanforecast.activations import edge_curves, qkan_cells, qkan_inputs
from qkanforecast.cli import app
from qkanforecast.forecast import Predictor
from qkanforecast.registry import Registry

GOLDEN = Path(__file__).parent / "golden"
FAST = ["--lookback", "16", "--epochs", "1", "--batch-size", "64", "--reps", "1", "-q"]
needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="matplotlib (the plot extra) is not installed"
)


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo's pipeline on a small panel: a QKAN-LSTM trained, a forecast with two interval levels,
    a three-cutoff backtest."""
    root = tmp_path_factory.mktemp("demo")
    data = root / "panel.csv"
    sine_panel(3).to_csv(data, index=False)
    reg = root / "registry"
    result = run("train", data, "--horizon", "6", "--hidden-size", "2", "--registry", reg, *FAST)
    assert result.exit_code == 0, result.stderr
    ref = result.stdout.strip()
    fc, bt = root / "forecast.csv", root / "backtest.csv"
    for args in (
        ("forecast", data, "-m", ref, "--level", "80", "--level", "95", "-o", fc),
        ("evaluate", data, "-m", ref, "--windows", "3", "-o", bt),
    ):
        result = run(*args, "--registry", reg, "-q")
        assert result.exit_code == 0, result.stderr
    return {"data": data, "registry": reg, "ref": ref, "forecast": fc, "backtest": bt, "root": root}


@pytest.fixture
def drawn(monkeypatch):
    """The figures the commands save, kept for inspection."""
    figures = []
    save = plots.save_figure

    def keep(fig, path, dpi=100):
        figures.append(fig)
        save(fig, path, dpi)

    monkeypatch.setattr(plots, "save_figure", keep)
    return figures


@needs_matplotlib
def test_forecast_plot_has_a_panel_per_series_with_the_forecast_and_its_intervals(demo, tmp_path, drawn):
    out = tmp_path / "fc.png"
    result = run(
        "plot",
        "forecast",
        demo["data"],
        demo["forecast"],
        "-o",
        out,
        "--series",
        "cell2,cell0",
        "--history",
        "50",
    )
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (fig,) = drawn
    assert len(fig.axes) == 2
    frame = pd.read_csv(demo["forecast"])
    for ax, uid in zip(fig.axes, ["cell2", "cell0"], strict=True):
        assert ax.get_title(loc="left") == uid
        lines = {line.get_label(): line for line in ax.get_lines()}
        np.testing.assert_allclose(lines["qkan-lstm"].get_ydata(), frame[frame.unique_id == uid]["qkan-lstm"])
        assert len(lines["history"].get_ydata()) == 50
        assert len(ax.collections) == 2  # the 80% and the 95% interval
    default = run("plot", "forecast", demo["data"], demo["forecast"], "-o", out, "--max-series", "2", "-q")
    assert default.exit_code == 0 and [a.get_title(loc="left") for a in drawn[1].axes] == ["cell0", "cell1"]


@needs_matplotlib
def test_backtest_plot_has_a_panel_per_series_and_the_mae_by_step(demo, tmp_path, drawn):
    out = tmp_path / "bt.svg"
    result = run("plot", "backtest", demo["backtest"], "-o", out)
    assert result.exit_code == 0, result.stderr
    assert out.read_text().lstrip().startswith("<?xml")
    (fig,) = drawn
    assert len(fig.axes) == 3 + 1
    frame = pd.read_csv(demo["backtest"])
    step = frame.groupby(["unique_id", "cutoff"]).cumcount() + 1
    mae_panel = {line.get_label(): line for line in fig.axes[-1].get_lines()}
    assert set(mae_panel) == {"qkan-lstm", "naive", "seasonal_naive"}
    for model, line in mae_panel.items():
        expected = (frame[model] - frame["y"]).abs().groupby(step).mean()
        np.testing.assert_array_equal(line.get_xdata(), np.arange(1, 7))
        np.testing.assert_allclose(line.get_ydata(), expected.to_numpy())
    # each cutoff's forecast is its own segment: the actuals, 3 cutoffs x 3 models, 3 cutoff markers
    assert len(fig.axes[0].get_lines()) == 1 + 3 * 3 + 3
    run(
        "plot",
        "backtest",
        demo["backtest"],
        "-o",
        tmp_path / "bt.pdf",
        "--lead",
        "2",
        "--max-series",
        "1",
        "-q",
    )
    assert (tmp_path / "bt.pdf").read_bytes()[:4] == b"%PDF"
    assert len(drawn[1].axes) == 2 and len(drawn[1].axes[0].get_lines()) == 1 + 3 + 3


@needs_matplotlib
def test_activation_curves_drawn_are_the_layers_own_outputs(demo, tmp_path, drawn):
    result = run(
        "plot",
        "activations",
        "-m",
        demo["ref"],
        "--registry",
        demo["registry"],
        "-o",
        tmp_path / "act.png",
        "--points",
        "25",
    )
    assert result.exit_code == 0, result.stderr
    (fig,) = drawn
    predictor = Predictor.load(demo["ref"], Registry(demo["registry"]))
    layer = qkan_cells(predictor.model)[0].qkan
    d, n_in = 2, layer.in_features  # hidden 2; inputs: y, 4 calendar values, h1, h2
    assert n_in == 1 + 4 + d and len(fig.axes) == 4 * n_in
    ranges = Registry(demo["registry"]).get(demo["ref"]).manifest.input_ranges
    grid = np.zeros((n_in, 25))
    values = np.zeros((4 * d, n_in, 25))
    for k, ax in enumerate(fig.axes):  # row: gate, column: input; one curve per hidden unit
        gate, i = divmod(k, n_in)
        lines = ax.get_lines()
        assert len(lines) == d
        for j, line in enumerate(lines):
            grid[i] = line.get_xdata()
            values[gate * d + j, i] = line.get_ydata()
    np.testing.assert_allclose(grid[:, 0], ranges.low[0], rtol=1e-6)
    np.testing.assert_allclose(grid[:, -1], ranges.high[0], rtol=1e-6)
    # at inputs whose every coordinate is on its own grid, the layer's output is the sum of the curves
    with torch.no_grad():
        out = layer(torch.as_tensor(grid.T, dtype=torch.float32)).double().numpy()  # [G, 4D]
    np.testing.assert_allclose(out, values.sum(axis=1).T, atol=2e-5)
    # and each curve alone: only input i moves, the others stay at the first grid point
    for i in range(n_in):
        x = np.repeat(grid[:, :1].T, 25, axis=0)
        x[:, i] = grid[i]
        with torch.no_grad():
            moved = layer(torch.as_tensor(x, dtype=torch.float32)).double().numpy()
        np.testing.assert_allclose(moved - moved[:1], (values[:, i] - values[:, i, :1]).T, atol=2e-5)


@needs_matplotlib
def test_hqkan_and_stacked_layers_draw_every_latent_edge(tmp_path):
    data = tmp_path / "panel.csv"
    sine_panel().to_csv(data, index=False)
    reg = tmp_path / "reg"
    result = run(
        "train",
        data,
        "--model",
        "hqkan-lstm",
        "--num-layers",
        "2",
        "--hidden-size",
        "2",
        "--registry",
        reg,
        *FAST,
    )
    assert result.exit_code == 0, result.stderr
    predictor = Predictor.load(result.stdout.strip(), Registry(reg))
    ranges = Registry(reg).get(result.stdout.strip()).manifest.input_ranges
    curves = edge_curves(predictor.model, ranges, 9)
    fig = plots.activations_figure(curves)
    cells = qkan_cells(predictor.model)
    assert len(fig.axes) == sum(c.latent_in for c in cells)
    for c, cell in zip(curves, cells, strict=True):
        with torch.no_grad():
            out = cell.qkan(torch.as_tensor(c.grid.T, dtype=torch.float32)).double().numpy()
        np.testing.assert_allclose(out, c.values.sum(axis=1).T, atol=2e-5)


def test_recorded_hidden_inputs_are_the_cells_states_step_by_step(demo):
    """The QKAN inputs behind the ranges are [x_t; h_{t-1}]: the core's input and the hidden state of the
    cell stepped one time step at a time (nn.LSTMCell's calling convention)."""
    predictor = Predictor.load(demo["ref"], Registry(demo["registry"]))
    model = predictor.model
    x = torch.randn(3, 16, 5)
    future = torch.randn(3, 6, 4)
    (v,) = qkan_inputs(model, x, future)
    cell = qkan_cells(model)[0]
    seen = []
    model.core.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    with torch.no_grad():
        model(x, future)
        feats = seen[0]
        h = c = torch.zeros(3, 2)
        hs = []
        for t in range(feats.shape[1]):
            hs.append(h)
            h, c = cell(feats[:, t], (h, c))
    expected = torch.stack(hs, 1).reshape(-1, 2)
    torch.testing.assert_close(v[:, 5:], expected)
    torch.testing.assert_close(v[:, :5], feats.reshape(-1, 5))


@needs_matplotlib
def test_models_trained_before_ranges_are_drawn_over_one_period(tmp_path):
    out = tmp_path / "golden.png"
    result = run("plot", "activations", "-m", "golden@v1", "--registry", GOLDEN / "registry", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert "trained before input ranges were recorded" in result.stderr and out.stat().st_size > 0


def test_lstm_has_no_activations(demo, tmp_path):
    reg = tmp_path / "reg"
    trained = run("train", demo["data"], "--model", "lstm", "--name", "lstm", "--registry", reg, *FAST)
    result = run(
        "plot", "activations", "-m", trained.stdout.strip(), "--registry", reg, "-o", tmp_path / "a.png"
    )
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: lstm@v1 (family lstm) has no QKAN layers: activation plots are for qkan-lstm and hqkan-lstm "
        "models\n"
    )


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("-", "Error: a plot is an image, not text: give -o a file name ending in .png, .svg or .pdf\n"),
        ("fig.jpg", "Error: {out}: unknown image type .jpg; use a name ending in .png, .svg or .pdf\n"),
    ],
)
def test_images_only(demo, tmp_path, output, message):
    out = output if output == "-" else tmp_path / output
    result = run("plot", "backtest", demo["backtest"], "-o", out)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == message.format(out=out)
    assert list(tmp_path.iterdir()) == []


def test_unknown_series_and_tables_that_are_not_backtests(demo, tmp_path):
    result = run(
        "plot", "forecast", demo["data"], demo["forecast"], "-o", tmp_path / "f.png", "--series", "x"
    )
    assert result.exit_code == 1
    assert (
        result.stderr
        == f"Error: series 'x' is not in the forecast {demo['forecast']} (it has cell0, cell1, cell2)\n"
    )
    result = run("plot", "forecast", "-", "-", "-o", tmp_path / "f.png")
    assert result.exit_code == 1
    assert result.stderr == "Error: DATA and FORECAST cannot both be stdin (-); give one of them as a file\n"
    result = run("plot", "backtest", demo["forecast"], "-o", tmp_path / "b.png")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {demo['forecast']}: no column 'cutoff'; a backtest table has unique_id, ds, cutoff, y and a "
        "column per model\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_without_matplotlib_the_error_says_how_to_install_it(demo, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    for args in (
        ("backtest", demo["backtest"]),
        ("forecast", demo["data"], demo["forecast"]),
        ("activations", "-m", demo["ref"], "--registry", demo["registry"]),
    ):
        result = run("plot", *args, "-o", tmp_path / "x.png")
        assert result.exit_code == 1, args
        assert result.stderr == (
            "Error: plots need matplotlib, which is not installed: pip install 'qkanforecast[plot]' "
            "(make install does)\n"
        )
    assert list(tmp_path.iterdir()) == []


@needs_matplotlib
def test_activation_panels_name_the_covariates(tmp_path, drawn):
    frame = sine_panel()
    frame["temp"] = np.sin(np.arange(len(frame)) / 50.0)
    data = tmp_path / "panel.csv"
    frame.to_csv(data, index=False)
    reg = tmp_path / "reg"
    trained = run("train", data, "--hist-exog", "temp", "--hidden-size", "1", "--registry", reg, *FAST)
    assert trained.exit_code == 0, trained.stderr
    result = run(
        "plot", "activations", "-m", trained.stdout.strip(), "--registry", reg, "-o", tmp_path / "a.png"
    )
    assert result.exit_code == 0, result.stderr
    titles = [ax.get_title() for ax in drawn[0].axes[:7]]
    assert titles == ["<- y", "<- sin day", "<- cos day", "<- sin week", "<- cos week", "<- temp", "<- h1"]


@needs_matplotlib
def test_times_are_drawn_on_the_datas_clock(tmp_path, drawn):
    """Naive times read as Europe/Rome's clock are stored in UTC and written with offsets; the plots draw
    them on Rome's clock again (a backtest CSV, whose offsets name no zone, in UTC unless --tz says)."""
    frame = sine_panel(2, 300)
    data = tmp_path / "panel.csv"
    frame.to_csv(data, index=False)
    reg, zone = tmp_path / "reg", ["--tz", "Europe/Rome"]
    ref = run(
        "train", data, "--model", "lstm", "--horizon", "4", "--registry", reg, *zone, *FAST
    ).stdout.strip()
    for args in (
        ("forecast", "-o", tmp_path / "fc.csv"),
        ("evaluate", "--windows", "2", "-o", tmp_path / "bt.csv"),
        ("evaluate", "--windows", "2", "-o", tmp_path / "bt.parquet"),
    ):
        result = run(args[0], data, "-m", ref, "--registry", reg, *zone, *args[1:], "-q")
        assert result.exit_code == 0, result.stderr
    assert "+01:00" in (tmp_path / "fc.csv").read_text().splitlines()[1]
    local = pd.to_datetime(frame[frame.unique_id == "cell0"]["ds"]).to_numpy()  # Rome's clock
    step = np.timedelta64(10, "m")

    def first_panel(*args):
        result = run("plot", *args, "-o", tmp_path / "fig.png", "--max-series", "1", "-q")
        assert result.exit_code == 0, result.stderr
        ax = drawn[-1].axes[0]
        return [np.asarray(line.get_xdata()) for line in ax.get_lines()], drawn[-1].axes

    (history, forecast), axes = first_panel("forecast", data, tmp_path / "fc.csv", "--history", "20", *zone)
    np.testing.assert_array_equal(history, local[-20:])
    np.testing.assert_array_equal(forecast, local[-1] + step * np.arange(1, 5))
    assert axes[-1].get_xlabel() == "time (Europe/Rome)"
    (actual, *_), axes = first_panel("backtest", tmp_path / "bt.csv")
    np.testing.assert_array_equal(actual, local[-8:] - np.timedelta64(1, "h"))
    assert axes[0].get_xlabel() == "time (UTC)"
    for args in (("backtest", tmp_path / "bt.csv", *zone), ("backtest", tmp_path / "bt.parquet")):
        (actual, *_), axes = first_panel(*args)
        np.testing.assert_array_equal(actual, local[-8:])
        assert axes[0].get_xlabel() == "time (Europe/Rome)"
    bad = run("plot", "backtest", tmp_path / "bt.csv", "-o", tmp_path / "c.png", "--tz", "Mars/Olympus")
    assert bad.exit_code == 1 and not (tmp_path / "c.png").exists()
    assert bad.stderr.startswith("Error: unknown time zone 'Mars/Olympus'")
