"""QKAN-LSTM, HQKAN-LSTM, LSTM: shapes, fused scan vs autograd, refine, counts (every family: conformance)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from qkanforecast.config import PLAIN, ConfigError, ModelConfig, QKANSpec
from qkanforecast.models import (
    HQKANLSTM,
    LSTM,
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
@pytest.mark.parametrize("extras", [dict(), dict(postact_trainable=True, base_weight=False)])
def test_fused_scan_matches_autograd(cls: type[nn.Module], readout: str, extras: dict[str, bool]) -> None:
    torch.manual_seed(0)
    spec = QKANSpec(readout=readout, **extras)  # type: ignore[arg-type]
    model = cls(2, 3, num_layers=2, bias=not extras, spec=spec).double()
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
    model = cls(1, 2, spec=QKANSpec(reps=2)).double()
    x = torch.randn(2, 3, 1, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: model(x)[0], (x,))


def test_cell_matches_sequence_and_statevector_path() -> None:
    torch.manual_seed(2)
    statevector = QKANLSTMCell(2, 3, spec=QKANSpec(preact_trainable=True))
    for cell in (statevector.double(), HQKANLSTMCell(2, 3).double()):
        x = torch.randn(4, 2, dtype=F64)
        h, c = cell(x)
        assert h.shape == c.shape == (4, 3)
        h1, c1 = cell(x[0])
        torch.testing.assert_close(h1, h[0])


@pytest.mark.parametrize("cls", [QKANLSTM, HQKANLSTM])
def test_refine_preserves_outputs(cls: type[nn.Module]) -> None:
    torch.manual_seed(3)
    model = cls(2, 3, spec=QKANSpec(reps=2)).double()
    x = torch.randn(3, 5, 2, dtype=F64)
    finer = model.refine(4)  # type: ignore[operator]
    torch.testing.assert_close(finer(x)[0], model(x)[0], atol=1e-12, rtol=0)


def test_parameter_counts() -> None:
    f, d, r = 2, 5, 3
    c = 2 * (r + 1) + 1  # theta + base weight
    assert count_parameters(QKANLSTM(f, d, spec=QKANSpec(reps=r))) == 4 * d * (f + d) * c + 4 * d
    cell = HQKANLSTMCell(f, d, spec=QKANSpec(reps=r))
    a, b = math.ceil(math.log2(f + d)), math.ceil(math.log2(4 * d))
    assert (cell.latent_in, cell.latent_out) == (a, b)
    assert count_parameters(cell) == (f + d) * a + a + a * b * c + b * 4 * d + 4 * d
    assert (
        count_parameters(HQKANLSTMCell(f, d, latent_in=7, latent_out=9))
        == (f + d) * 7 + 7 + 63 * c + 9 * 4 * d + 4 * d
    )
    assert count_parameters(LSTM(f, d)) == 4 * (d * f + d * d + 2 * d)
    # the paper's comparison: LSTM H=5 with head 166, QKAN-LSTM H=1, r=1 (no base weight, no bias) 34
    assert count_parameters(build_model(ModelConfig("lstm", hidden_size=5, **PLAIN))) == 166
    spec = QKANSpec(reps=1, base_weight=False)
    paper = build_model(ModelConfig("qkan-lstm", hidden_size=1, bias=False, qkan=spec, **PLAIN))
    assert count_parameters(paper) == 34


def test_build_model_unknown_name() -> None:
    with pytest.raises(ConfigError, match="^model 'x' is unknown; choose from qkan-lstm, hqkan-lstm, lstm$"):
        build_model(ModelConfig("x"))
