"""Every model family in ``FAMILIES`` keeps the Forecaster contract; a new family needs no edit here.

Shapes, finite loss and gradients, a checkpoint round trip (state_dict through torch.save and
torch.load(weights_only=True), the config through to_dict/from_dict), and a fit of a noisy sine.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from qkanforecast.config import FAMILIES, ModelConfig, from_dict, to_dict
from qkanforecast.features import CALENDAR_SIZE
from qkanforecast.models import build_model

FAMILY_NAMES = list(FAMILIES)


@pytest.mark.parametrize("name", FAMILY_NAMES)
@pytest.mark.parametrize("features", [1, 3])
def test_shapes_finite_loss_and_gradients(name: str, features: int) -> None:
    torch.manual_seed(0)
    config = ModelConfig(name, input_size=features, horizon=4, season=3)
    model = build_model(config)
    assert model.config == config.resolved() and model.config.hidden_size == FAMILIES[name].hidden_size
    x = torch.randn(5, 9, features + CALENDAR_SIZE)  # [N, L, F + C]
    out = model(x, torch.randn(5, 4, CALENDAR_SIZE))
    assert out.shape == (5, 4)  # [N, H]
    loss = nn.functional.mse_loss(out, torch.randn(5, 4))
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_checkpoint_round_trip_gives_identical_forecasts(name: str) -> None:
    torch.manual_seed(1)
    model = build_model(ModelConfig(name, input_size=2, horizon=3, num_layers=2, season=4))
    with torch.no_grad():  # away from the initialisation, so that a weight left behind would show
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    torch.manual_seed(2)  # a fresh model with other weights
    again = build_model(from_dict(ModelConfig, to_dict(model.config)))
    assert again.config == model.config
    again.load_state_dict(state, strict=True)
    model.eval()
    again.eval()
    x, future = torch.randn(6, 9, 2 + CALENDAR_SIZE), torch.randn(6, 3, CALENDAR_SIZE)
    torch.testing.assert_close(again(x, future), model(x, future), atol=0, rtol=0)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_config_round_trip_gives_the_same_architecture(name: str) -> None:
    config = ModelConfig(name, input_size=3, horizon=2, hidden_size=5, num_layers=2, bias=False)
    a = build_model(config)
    b = build_model(from_dict(ModelConfig, to_dict(config)))
    shapes = {k: v.shape for k, v in a.state_dict().items()}
    assert shapes == {k: v.shape for k, v in b.state_dict().items()}
    assert repr(a) == repr(b) and a.config == b.config == config


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_fits_a_noisy_sine(name: str) -> None:
    torch.manual_seed(5)
    t = torch.arange(200, dtype=torch.float32)
    series = torch.sin(2 * math.pi * t / 25) + 0.05 * torch.randn(200)
    windows = series.unfold(0, 13, 1)  # [N, 13]: lookback 12, horizon 1
    x, y = windows[:, :12, None], windows[:, 12:]
    model = build_model(ModelConfig(name, calendar=False, skip="none", season=25))
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    losses = []
    for _ in range(80):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-5:]) < losses[0] / 10, (losses[0], losses[-5:])


@pytest.mark.parametrize("name", FAMILY_NAMES)
@pytest.mark.parametrize("skip", ["season", "last"])
def test_untrained_skip_is_exactly_the_baseline(name: str, skip: str) -> None:
    torch.manual_seed(3)
    model = build_model(ModelConfig(name, horizon=10, season=4, skip=skip))
    x, future = torch.randn(5, 12, 1 + CALENDAR_SIZE) * 50 + 200, torch.randn(5, 10, CALENDAR_SIZE)
    v = x[:, :, 0]
    expected = v[:, -4:][:, torch.arange(10) % 4] if skip == "season" else v[:, -1:].expand(-1, 10)
    torch.testing.assert_close(model(x, future), expected, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_window_normalisation_makes_forecasts_follow_scale_and_level(name: str) -> None:
    torch.manual_seed(4)
    model = _perturbed(build_model(ModelConfig(name, horizon=6, season=4)))
    x, future = torch.randn(5, 16, 1 + CALENDAR_SIZE), torch.randn(5, 6, CALENDAR_SIZE)
    moved = x.clone()
    moved[:, :, 0] = 10 * x[:, :, 0] + 3
    torch.testing.assert_close(model(moved, future), 10 * model(x, future) + 3, rtol=1e-4, atol=1e-3)
    plain = _perturbed(build_model(ModelConfig(name, horizon=6, season=4, norm="none")))
    assert not torch.allclose(plain(moved, future), 10 * plain(x, future) + 3, atol=1e-2)


def _perturbed(model: nn.Module) -> nn.Module:
    """A trained-looking model: every weight moved, so the correction to the skip is no longer zero."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model
