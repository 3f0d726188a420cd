"""QKAN-LSTM, HQKAN-LSTM, LSTM: shapes, fused scan vs autograd, refine, counts (every family: conformance)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

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


def _daruan_reference(theta: torch.Tensor, u: torch.Tensor, readout: str) -> torch.Tensor:
    """One edge from its definition, with complex 2x2 matrices: |+>, then RZ(theta_l0) RY(theta_l1) and the
    data gate RZ(u_l) per block, a final RZ RY block, read out as <Z> (born) or |alpha| - |beta| (fast).
    theta [r + 1, 2], u [r] -> a scalar (independent of daruan.py's merged real-arithmetic form)."""

    def rz(a: torch.Tensor) -> torch.Tensor:
        z = torch.zeros((), dtype=torch.complex128)
        return torch.stack([torch.stack([torch.exp(-0.5j * a), z]), torch.stack([z, torch.exp(0.5j * a)])])

    def ry(a: torch.Tensor) -> torch.Tensor:
        c, s = torch.cos(a / 2).to(torch.complex128), torch.sin(a / 2).to(torch.complex128)
        return torch.stack([torch.stack([c, -s]), torch.stack([s, c])])

    state = torch.tensor([1.0, 1.0], dtype=torch.complex128) / math.sqrt(2)
    reps = theta.shape[0] - 1
    for layer in range(reps + 1):
        state = ry(theta[layer, 1]) @ (rz(theta[layer, 0]) @ state)
        if layer < reps:
            state = rz(u[layer]) @ state
    alpha, beta = state.abs()
    return alpha**2 - beta**2 if readout == "born" else alpha - beta


def _qkan_reference(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """y_j = sum_i pw_ji (phi_ji(w_ji x_i + b_ji) + pb_ji) + bw_ji silu(x_i), per edge: [N, I] -> [N, O]."""
    o, i, r = layer.theta.shape[0], layer.theta.shape[1], layer.theta.shape[2] - 1
    out = torch.zeros(x.shape[0], o, dtype=F64)
    for n in range(x.shape[0]):
        for j in range(o):
            for k in range(i):
                w = layer.preact_weight[j, k] if layer.preact_weight is not None else torch.ones(r, dtype=F64)
                b = layer.preact_bias[j, k] if layer.preact_bias is not None else torch.zeros(r, dtype=F64)
                phi = _daruan_reference(layer.theta[j, k], w * x[n, k] + b, layer.spec.readout.value)
                if layer.postact_weight is not None:
                    phi = layer.postact_weight[j, k] * (phi + layer.postact_bias[j, k])
                base = layer.base_weight[j, k] * F.silu(x[n, k]) if layer.base_weight is not None else 0.0
                out[n, j] += phi + base
    return out


def _lstm_reference(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _cell_reference(
    cell: nn.Module, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """One step of a QKAN-LSTM or HQKAN-LSTM cell from the paper's equations."""
    xh = torch.cat([x, h], dim=-1)
    if isinstance(cell, QKANLSTMCell):
        gates = _qkan_reference(cell.layer, xh) + (cell.bias if cell.bias is not None else 0.0)
    else:
        gates = cell.decoder(_qkan_reference(cell.latent, cell.encoder(xh)))
    return _lstm_reference(gates, c)


@torch.no_grad()
@pytest.mark.parametrize(
    "make",
    [
        lambda: QKANLSTMCell(2, 3, spec=QKANSpec(reps=2, preact_trainable=True, postact_trainable=True)),
        lambda: QKANLSTMCell(2, 3, spec=QKANSpec(reps=2, readout="fast")),  # spectral solver, fused scan
        lambda: QKANLSTMCell(2, 3, spec=QKANSpec(reps=3)),
        lambda: HQKANLSTMCell(2, 3, spec=QKANSpec(reps=2)),
    ],
    ids=["statevector", "spectral-fast", "spectral-born", "hqkan"],
)
def test_cell_matches_sequence_and_statevector_path(make) -> None:
    torch.manual_seed(2)
    cell = make().double()
    for p in cell.parameters():
        p.add_(0.5 * torch.randn_like(p))  # away from the initial values (zero biases, unit weights)
    x = torch.randn(3, 4, 2, dtype=F64)  # [N, L, F]
    h0, c0 = torch.randn(3, 3, dtype=F64), torch.randn(3, 3, dtype=F64)
    h, c, expected = h0, c0, []
    for t in range(4):  # the reference, step by step
        h, c = _cell_reference(cell, x[:, t], h, c)
        expected.append(h)
    h1, c1 = cell(x[:, 0], (h0, c0))  # one step, like nn.LSTMCell
    torch.testing.assert_close(h1, expected[0], atol=1e-12, rtol=0)
    out, hn, cn = cell.scan(x, h0, c0)  # the whole sequence (fused where the solver is spectral)
    torch.testing.assert_close(out, torch.stack(expected, dim=1), atol=1e-12, rtol=0)
    torch.testing.assert_close((hn, cn), (h, c), atol=1e-12, rtol=0)
    unbatched = cell(x[0, 0], (h0[0], c0[0]))[0]
    torch.testing.assert_close(unbatched, expected[0][0], atol=1e-12, rtol=0)


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
