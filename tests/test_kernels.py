"""The numba kernels of the QKAN-LSTM recurrence against the torch path, and when each path runs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from qkanforecast.config import QKANSpec
from qkanforecast.models import HQKANLSTM, QKANLSTM, kernel_scan, product_scan, scan

F64 = torch.float64
needs_numba = pytest.mark.skipif(not kernel_scan.numba_available(), reason="numba (the [fast] extra) absent")
EXTRAS = [dict(), dict(postact_trainable=True, base_weight=False)]


def _grads(model: nn.Module, x: torch.Tensor, dtype: torch.dtype = F64) -> list[torch.Tensor]:
    """Outputs, states and every gradient (input, initial state, parameters) of one backward."""
    model = copy.deepcopy(model).to(dtype)
    xx = x.to(dtype).clone().requires_grad_()
    n = x.shape[0]
    cells = len(model.cells)  # type: ignore[arg-type]
    h0, c0 = (torch.linspace(-0.5, 0.5, cells * n * model.hidden_size, dtype=dtype)  # type: ignore[operator]
              .view(cells, n, -1).requires_grad_() for _ in range(2))  # fmt: skip
    out, (h, c) = model(xx, (h0, c0))
    w = torch.sin(torch.arange(out.numel(), dtype=dtype)).view_as(out)
    ((out * w).sum() + h.pow(2).sum() + c.sum()).backward()
    grads = [xx.grad, h0.grad, c0.grad] + [p.grad for p in model.parameters()]
    return [t.detach().double() for t in [out, h, c, *grads]]  # type: ignore[union-attr]


def _model(readout: str, extras: dict[str, bool], scale: float = 0.3, hidden: int = 3) -> nn.Module:
    torch.manual_seed(0)
    spec = QKANSpec(readout=readout, **extras)  # type: ignore[arg-type]
    model = QKANLSTM(2, hidden, num_layers=2, bias=not extras, spec=spec)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model


@needs_numba
@pytest.mark.parametrize("readout", ["born", "fast"])
@pytest.mark.parametrize("extras", EXTRAS)
def test_kernels_match_the_torch_path_in_float64(monkeypatch, readout: str, extras: dict[str, bool]) -> None:
    model, x = _model(readout, extras), torch.randn(5, 9, 2, dtype=F64)
    monkeypatch.setenv("QKANFORECAST_KERNEL", "numba")
    kernel = _grads(model, x)
    monkeypatch.setenv("QKANFORECAST_KERNEL", "torch")
    torch_path = _grads(model, x)
    for a, b in zip(kernel, torch_path, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@needs_numba
@pytest.mark.parametrize("readout", ["born", "fast"])
def test_kernels_match_the_torch_path_in_float32(monkeypatch, readout: str) -> None:
    """To 1e-6 at the default initialisation, and never further from the float64 result than the torch
    path itself (float32 rounding, amplified by the recurrence, is what separates the two)."""
    model, x = _model(readout, {}, scale=0.0, hidden=4), torch.randn(16, 12, 2)
    monkeypatch.setenv("QKANFORECAST_KERNEL", "torch")
    exact = _grads(model, x, F64)
    torch_path = _grads(model, x, torch.float32)
    monkeypatch.setenv("QKANFORECAST_KERNEL", "numba")
    kernel = _grads(model, x, torch.float32)
    kernel += _forecast(model, x, torch.float32)
    monkeypatch.setenv("QKANFORECAST_KERNEL", "torch")
    torch_path += _forecast(model, x, torch.float32)
    exact += _forecast(model, x, F64)
    for a, b, ref in zip(kernel, torch_path, exact, strict=True):
        scale = ref.abs().max().item()
        torch.testing.assert_close(a, b, atol=1e-6 * max(scale, 1.0), rtol=1e-6)
        assert (a - ref).abs().max() <= 2 * (b - ref).abs().max() + 1e-7 * scale


def _forecast(model: nn.Module, x: Tensor, dtype: torch.dtype = F64, scale: float = 0.5) -> list[Tensor]:
    """Outputs and states under no_grad (a forecast), from initial states in [-scale, scale]."""
    model = copy.deepcopy(model).to(dtype)
    cells, n = len(model.cells), x.shape[0]  # type: ignore[arg-type]
    h0, c0 = (torch.linspace(-scale, scale, cells * n * model.hidden_size, dtype=dtype)  # type: ignore[operator]
              .view(cells, n, -1) for _ in range(2))  # fmt: skip
    with torch.no_grad():
        out, (h, c) = model(x.to(dtype), (h0, c0))
    return [t.double() for t in (out, h, c)]


@needs_numba
@pytest.mark.parametrize("readout", ["born", "fast"])
def test_a_forecast_keeps_one_step_and_matches_training(monkeypatch, readout: str) -> None:
    """Under no_grad the product scan keeps one step's features, not every step's, and its outputs and
    states are those of a training run and of the torch path to 1e-12 in float64, from initial states
    inside and beyond |h| <= 1."""
    from qkanforecast.models import kernels

    real = kernels.born_features
    buffers: list[int] = []  # the address of each step's features

    def spy(*args: np.ndarray) -> None:
        buffers.append(args[-1].ctypes.data)
        real(*args)

    monkeypatch.setattr(kernels, "born_features", spy)
    model, x = _model(readout, {}), torch.randn(3, 6, 2, dtype=F64)
    for scale in (0.5, 3.0):  # 3.0: the first step's features by libm
        monkeypatch.setenv("QKANFORECAST_KERNEL", "numba")
        buffers.clear()
        forecast = _forecast(model, x, scale=scale)
        assert len(buffers) == 12 and len(set(buffers[:6])) == 1  # two layers of six steps, one buffer
        monkeypatch.setenv("QKANFORECAST_KERNEL", "torch")
        torch_path = _forecast(model, x, scale=scale)
        for a, b in zip(forecast, torch_path, strict=True):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    monkeypatch.setenv("QKANFORECAST_KERNEL", "numba")
    buffers.clear()
    trained = _grads(model, x)[:3]
    assert len(set(buffers[:6])) == 6  # training keeps every step's features
    for a, b in zip(_forecast(model, x), trained, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@needs_numba
@pytest.mark.parametrize("readout", ["born", "fast"])
def test_threads_split_the_batch_without_changing_a_bit(monkeypatch, readout: str) -> None:
    monkeypatch.setenv("QKANFORECAST_KERNEL", "numba")
    model, x = _model(readout, {}), torch.randn(37, 5, 2, dtype=F64)  # 37: parts of uneven length
    monkeypatch.setattr(product_scan, "_BLOCK", 8)  # the forecast's product per block of 8 samples
    one = _grads(model, x) + _forecast(model, x)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # the scan's products on one thread
    three = _grads(model, x) + _forecast(model, x)
    for a, b in zip(one, three, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def _which_path(monkeypatch, model: nn.Module) -> list[str]:
    """Run a forward and backward; return which scan ran for each layer ('numba' or 'torch')."""
    ran: list[str] = []
    real_torch, real_product = scan.FusedScan.apply, product_scan.product_scan

    def product(*args: object) -> object:
        ran.append("numba")
        return real_product(*args)  # type: ignore[arg-type]

    def torch_path(*args: object) -> object:
        ran.append("torch")
        return real_torch(*args)

    monkeypatch.setattr(product_scan, "product_scan", product)
    monkeypatch.setattr(scan.FusedScan, "apply", torch_path)
    model(torch.randn(2, 4, 2))[0].sum().backward()
    return ran


def test_the_torch_path_runs_without_numba(monkeypatch) -> None:
    monkeypatch.delenv("QKANFORECAST_KERNEL", raising=False)
    monkeypatch.setattr(kernel_scan, "numba_available", lambda: False)
    assert _which_path(monkeypatch, QKANLSTM(2, 3, num_layers=2)) == ["torch", "torch"]
    monkeypatch.setenv("QKANFORECAST_KERNEL", "numba")
    with pytest.raises(RuntimeError, match="numba is not installed"):
        QKANLSTM(2, 3)(torch.randn(2, 4, 2))


@needs_numba
def test_the_kernels_are_chosen_where_they_apply(monkeypatch) -> None:
    monkeypatch.delenv("QKANFORECAST_KERNEL", raising=False)
    assert _which_path(monkeypatch, QKANLSTM(2, 3, num_layers=2)) == ["numba", "numba"]
    assert _which_path(monkeypatch, HQKANLSTM(2, 3)) == ["torch"]  # encoder and decoder: not covered
    monkeypatch.setenv("QKANFORECAST_KERNEL", "torch")
    assert _which_path(monkeypatch, QKANLSTM(2, 3)) == ["torch"]
    monkeypatch.setenv("QKANFORECAST_KERNEL", "numba")
    with pytest.raises(RuntimeError, match="do not cover"):
        HQKANLSTM(2, 3)(torch.randn(2, 4, 2))
    monkeypatch.setenv("QKANFORECAST_KERNEL", "fastest")
    with pytest.raises(ValueError, match="QKANFORECAST_KERNEL must be one of auto, numba, torch"):
        QKANLSTM(2, 3)(torch.randn(2, 4, 2))


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vectorised_math_is_within_a_few_ulps_of_numpy(dtype: type) -> None:
    from numba import njit

    from qkanforecast.models.vecmath import vcos1, vexp, vsigmoid, vsin1, vtanh

    @njit
    def apply(x: np.ndarray, out: np.ndarray) -> None:
        for i in range(x.shape[0]):
            out[0, i], out[1, i], out[2, i] = vexp(x[i]), vsigmoid(x[i]), vtanh(x[i])
            y = x[i] / 30  # |y| <= 1
            out[3, i], out[4, i] = vsin1(y), vcos1(y)

    x = np.linspace(-30, 30, 20001).astype(dtype)
    out = np.empty((5, x.size), dtype=dtype)
    apply(x, out)
    x64, y64 = x.astype(np.float64), x.astype(np.float64) / 30
    refs = [np.exp(x64), 1 / (1 + np.exp(-x64)), np.tanh(x64), np.sin(y64), np.cos(y64)]
    for got, ref in zip(out, refs, strict=True):
        # ulps of the result, and of 1 for tanh and the sigmoid near 0 (their absolute error is what counts)
        unit = np.spacing(np.maximum(np.abs(ref), 1.0 if ref is not refs[0] else 0.0).astype(dtype))
        assert np.max(np.abs(got - ref) / unit.astype(np.float64)) <= 4
