"""The default ensemble: members that read 7 and 2 days of lags, trained apart, averaged."""

import pytest
import torch
from conftest import sine_panel
from typer.testing import CliRunner

from qkanforecast.cli import app
from qkanforecast.config import Settings
from qkanforecast.data import from_frame
from qkanforecast.forecast import Predictor
from qkanforecast.models import Ensemble, Forecaster
from qkanforecast.registry import Registry
from qkanforecast.train import train

SMALL = dict(model="lstm", horizon=24, lookback=24 * 8, hidden_size=4, epochs=2, batch_size=64)


@pytest.fixture(scope="module")
def hourly():
    return from_frame(sine_panel(2, 24 * 14, freq="h"))


def test_day_ahead_default_is_an_ensemble_of_lag_contexts_trained_apart(hourly, tmp_path):
    registry = Registry(tmp_path)
    entry = train(hourly, Settings().updated(SMALL), registry=registry)
    assert entry.manifest.model.ensemble == [7, 2]
    p = Predictor.load(entry.ref, registry)
    assert isinstance(p.model, Ensemble) and [m.config.lag_days for m in p.model.members] == [7, 2]
    assert entry.manifest.num_parameters == sum(x.numel() for x in p.model.parameters())

    # member 1 is exactly the single model the same seed trains: the members are trained apart
    single = train(hourly, Settings().updated({**SMALL, "ensemble": []}), registry=registry)
    one = Predictor.load(single.ref, registry)
    assert isinstance(one.model, Forecaster) and one.model.config.ensemble == []
    for (k, a), (_, b) in zip(p.model.members[0].state_dict().items(), one.model.state_dict().items(),
                              strict=True):
        assert torch.equal(a, b), k

    # the forecast is the members' weighted sum; the 2-day member differs from the 7-day one
    w = p.model.weights
    assert float(w.sum()) == pytest.approx(1.0) and bool((w >= 0).all())
    x = torch.randn(3, SMALL["lookback"], 1 + 4)
    future = torch.randn(3, 24, 4)
    with torch.no_grad():
        outs = [m(x, future) for m in p.model.members]
        assert not torch.allclose(outs[0], outs[1])
        torch.testing.assert_close(p.model(x, future), w[0] * outs[0] + w[1] * outs[1])


def test_ensemble_weights_minimise_the_validation_loss(hourly):
    from qkanforecast.config import Loss
    from qkanforecast.models import build_model
    from qkanforecast.train import choose_weights, evaluate_loss
    from qkanforecast.windows import make_datasets

    settings = Settings().updated({**SMALL, "ensemble": [7, 2]})
    _, val, _, _ = make_datasets(hourly, SMALL["lookback"], 24, val_size=0.2, calendar=True)
    torch.manual_seed(0)
    model = build_model(settings.model)
    with torch.no_grad():  # member 2 with its weights scaled 50x: a much worse forecaster
        for p in model.members[1].parameters():
            p.mul_(50.0)
    choose_weights(model, val, Loss.MAE, None)
    chosen = evaluate_loss(model, val, Loss.MAE)
    for w0 in (0.0, 0.3, 0.5, 0.8, 1.0):
        model.weights.copy_(torch.tensor([w0, 1 - w0]))
        assert chosen <= evaluate_loss(model, val, Loss.MAE) + 1e-9


def test_ensemble_option(hourly, tmp_path):
    path = tmp_path / "h.csv"
    hourly.frame.to_csv(path, index=False)
    args = ["train", str(path), "--model", "lstm", "--horizon", "24", "--lookback", "48",
            "--hidden-size", "4", "--epochs", "1", "--registry", str(tmp_path / "r"), "-q"]
    result = CliRunner().invoke(app, [*args, "--ensemble", "none"])
    assert result.exit_code == 0, result.stderr
    assert Registry(tmp_path / "r").get(result.stdout.strip()).manifest.model.ensemble == []
    result = CliRunner().invoke(app, [*args, "--ensemble", "7,x"])
    assert result.exit_code == 1 and result.stderr.startswith("Error: --ensemble takes auto, none or days")
    short = CliRunner().invoke(app, [*args[:5], "1", *args[6:]])  # an hour ahead: no lags, one model
    assert short.exit_code == 0, short.stderr
    assert Registry(tmp_path / "r").get(short.stdout.strip()).manifest.model.ensemble == []


def test_activations_of_an_ensemble_draw_its_first_member(hourly, tmp_path):
    pytest.importorskip("matplotlib")
    from qkanforecast.activations import edge_curves, qkan_cells

    registry = Registry(tmp_path)
    entry = train(hourly, Settings().updated({**SMALL, "model": "qkan-lstm", "reps": 1}), registry=registry)
    p = Predictor.load(entry.ref, registry)
    assert isinstance(p.model, Ensemble) and entry.manifest.input_ranges is not None
    first = p.model.members[0]
    assert qkan_cells(p.model) == list(first.core.cells)
    curves = edge_curves(p.model, entry.manifest.input_ranges)
    torch.testing.assert_close(torch.from_numpy(curves[0].values),
                               torch.from_numpy(edge_curves(first, entry.manifest.input_ranges)[0].values))
    out = tmp_path / "a.png"
    args = ["plot", "activations", "--model", entry.ref, "--registry", str(tmp_path), "-o", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert out.is_file() and "ensemble of 2 models" in result.stderr
