"""QKAN-LSTM, HQKAN-LSTM, LSTM and the forecasters: shapes, fused scan vs autograd, counts, fitting."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from qkanforecast.errors import QKANForecastError
from qkanforecast.models import (
    HQKANLSTM,
    LSTM,
    MODELS,
    QKANLSTM,
    HQKANLSTMCell,
    QKANLSTMCell,
    build_model,
    count_parameters,
)

F64 = torch.float64
RECURRENT = [QKANLSTM, HQKANLSTM, LSTM]


@pytest.mark.parametrize("cls", RECURRENT)
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_shapes_match_nn_lstm(cls: type[nn.Module], batch_first: bool, num_layers: int) -> None:
    kw = dict(num_layers=num_layers, batch_first=batch_first)
    ours, ref = cls(3, 5, **kw), nn.LSTM(3, 5, **kw)
    x = torch.randn(4, 6, 3)
    hx = (
        torch.randn(num_layers, 4 if batch_first else 6, 5),
        torch.randn(num_layers, 4 if batch_first else 6, 5),
    )
    for args in ((x,), (x, hx)):
        (o1, (h1, c1)), (o2, (h2, c2)) = ours(*args), ref(*args)
        assert o1.shape == o2.shape and h1.shape == h2.shape and c1.shape == c2.shape
    unbatched = torch.randn(6, 3)
    (o1, (h1, c1)), (o2, (h2, c2)) = ours(unbatched), ref(unbatched)
    assert o1.shape == o2.shape and h1.shape == h2.shape and c1.shape == c2.shape


def test_default_batch_first_and_errors() -> None:
    m = QKANLSTM(1, 4)
    assert m.batch_first and LSTM(1, 4).batch_first
    with pytest.raises(ValueError, match="input.size\\(-1\\) must be equal to input_size. Expected 1, got 3"):
        m(torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match="Expected hidden size \\(1, 2, 4\\) for h0"):
        m(torch.zeros(2, 5, 1), (torch.zeros(1, 3, 4), torch.zeros(1, 2, 4)))
    with pytest.raises(ValueError, match="Expected input to be 2D or 3D"):
        m(torch.zeros(5))


def _grads(model: nn.Module, x: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
    model.zero_grad()
    xx = x.clone().requires_grad_()
    h0, c0 = (t.clone().requires_grad_() for t in hx)
    out, (h, c) = model(xx, (h0, c0))
    w = torch.sin(torch.arange(out.numel(), dtype=F64)).view_as(out)
    ((out * w).sum() + h.pow(2).sum() + c.sum()).backward()
    return [out.detach(), h.detach(), xx.grad, h0.grad, c0.grad] + [p.grad for p in model.parameters()]  # type: ignore[list-item]


@pytest.mark.parametrize("cls", [QKANLSTM, HQKANLSTM])
@pytest.mark.parametrize("readout", ["born", "fast"])
@pytest.mark.parametrize("extras", [dict(), dict(postact_trainable=True, bias=False, base_weight=False)])
def test_fused_scan_matches_autograd(cls: type[nn.Module], readout: str, extras: dict[str, bool]) -> None:
    torch.manual_seed(0)
    model = cls(2, 3, num_layers=2, readout=readout, **extras).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(4, 7, 2, dtype=F64)
    hx = (torch.randn(2, 4, 3, dtype=F64), torch.randn(2, 4, 3, dtype=F64))
    fused = _grads(model, x, hx)
    for cell in model.cells:  # type: ignore[attr-defined]
        cell.fused = False
    plain = _grads(model, x, hx)
    for a, b in zip(fused, plain, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("cls", [QKANLSTM, HQKANLSTM])
def test_gradcheck_fused_scan(cls: type[nn.Module]) -> None:
    torch.manual_seed(1)
    model = cls(1, 2, reps=2).double()
    x = torch.randn(2, 3, 1, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: model(x)[0], (x,))


def test_cell_matches_sequence_and_statevector_path() -> None:
    torch.manual_seed(2)
    for cell in (QKANLSTMCell(2, 3, preact_trainable=True).double(), HQKANLSTMCell(2, 3).double()):
        x = torch.randn(4, 2, dtype=F64)
        h, c = cell(x)
        assert h.shape == c.shape == (4, 3)
        h1, c1 = cell(x[0])
        torch.testing.assert_close(h1, h[0])


@pytest.mark.parametrize("cls", [QKANLSTM, HQKANLSTM])
def test_refine_preserves_outputs(cls: type[nn.Module]) -> None:
    torch.manual_seed(3)
    model = cls(2, 3, reps=2).double()
    x = torch.randn(3, 5, 2, dtype=F64)
    finer = model.refine(4)  # type: ignore[operator]
    torch.testing.assert_close(finer(x)[0], model(x)[0], atol=1e-12, rtol=0)


def test_parameter_counts() -> None:
    f, d, r = 2, 5, 3
    c = 2 * (r + 1) + 1  # theta + base weight
    assert count_parameters(QKANLSTM(f, d, reps=r)) == 4 * d * (f + d) * c + 4 * d
    cell = HQKANLSTMCell(f, d, reps=r)
    a, b = math.ceil(math.log2(f + d)), math.ceil(math.log2(4 * d))
    assert (cell.latent_in, cell.latent_out) == (a, b)
    assert count_parameters(cell) == (f + d) * a + a + a * b * c + b * 4 * d + 4 * d
    assert (
        count_parameters(HQKANLSTMCell(f, d, latent_in=7, latent_out=9))
        == (f + d) * 7 + 7 + 63 * c + 9 * 4 * d + 4 * d
    )
    assert count_parameters(LSTM(f, d)) == 4 * (d * f + d * d + 2 * d)
    # the paper's comparison: LSTM H=5 with head 166, QKAN-LSTM H=1, r=1 (no base weight, no bias) 34
    assert count_parameters(build_model("lstm", hidden_size=5)) == 166
    paper = build_model("qkan-lstm", hidden_size=1, reps=1, base_weight=False, bias=False)
    assert count_parameters(paper) == 34


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forecaster_config_roundtrip(name: str) -> None:
    torch.manual_seed(4)
    model = build_model(name, input_size=2, horizon=3)
    config = json.loads(json.dumps(model.config))  # type: ignore[arg-type]
    again = MODELS[name](**config)
    again.load_state_dict(model.state_dict())
    x = torch.randn(5, 8, 2)
    out = model(x)
    assert out.shape == (5, 3)
    torch.testing.assert_close(again(x), out)


def test_build_model_unknown_name() -> None:
    with pytest.raises(
        QKANForecastError, match="^unknown model 'x'; choose from hqkan-lstm, lstm, qkan-lstm$"
    ):
        build_model("x")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forecaster_fits_noisy_sine(name: str) -> None:
    torch.manual_seed(5)
    t = torch.arange(200, dtype=torch.float32)
    series = torch.sin(2 * math.pi * t / 25) + 0.05 * torch.randn(200)
    windows = series.unfold(0, 13, 1)  # [N, 13]: lookback 12, horizon 1
    x, y = windows[:, :12, None], windows[:, 12:]
    model = build_model(name)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    losses = []
    for _ in range(80):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-5:]) < losses[0] / 10, (losses[0], losses[-5:])
