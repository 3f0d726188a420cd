"""QKANLayer: reference values, solver agreement, gradients, parity with the `qkan` library, refine."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.func import functional_call

from qkanforecast.config import QKANSpec
from qkanforecast.models import QKANLayer, daruan_statevector, fast_from_born, fourier_coefficients

F64 = torch.float64
THETA = torch.tensor([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6], [0.7, 0.8]], dtype=F64)
X = torch.tensor([[0.5], [-1.2]], dtype=F64)
PRE_W = torch.tensor([1.5, -0.7, 2.0], dtype=F64)
PRE_B = torch.tensor([0.1, 0.2, -0.3], dtype=F64)


def _edge(readout: str, solver: str, preact: bool = False) -> QKANLayer:
    spec = QKANSpec(reps=3, readout=readout, solver=solver, preact_trainable=preact, base_weight=False)
    layer = QKANLayer(1, 1, spec)
    layer = layer.double()
    with torch.no_grad():
        layer.theta[0, 0] = THETA
        if preact:
            assert layer.preact_weight is not None and layer.preact_bias is not None
            layer.preact_weight[0, 0] = PRE_W
            layer.preact_bias[0, 0] = PRE_B
    return layer


@pytest.mark.parametrize("solver", ["spectral", "statevector"])
@pytest.mark.parametrize(
    ("readout", "expected"), [("born", [0.6049941972, 0.2350939194]), ("fast", [0.4514090388, 0.1674136834])]
)
def test_reference_values_frozen_preacts(readout: str, expected: list[float], solver: str) -> None:
    out = _edge(readout, solver)(X).flatten()
    # the table gives 10 decimals; the exact value must agree to the last one shown
    torch.testing.assert_close(out, torch.tensor(expected, dtype=F64), atol=1e-10, rtol=0)


@pytest.mark.parametrize(
    ("readout", "expected"), [("born", [0.577472, -0.440792]), ("fast", [0.428474, -0.319986])]
)
def test_reference_values_trainable_preacts(readout: str, expected: list[float]) -> None:
    layer = _edge(readout, "auto", preact=True)
    assert layer.resolved_solver == "statevector"
    torch.testing.assert_close(layer(X).flatten(), torch.tensor(expected, dtype=F64), atol=1e-6, rtol=0)


def test_reference_values_to_1e9() -> None:
    # the closed form and the state propagation are independent computations; at the reference points
    # they must agree far below the table's precision, and match the 10-decimal table to 1e-9
    for readout, expected in (("born", [0.6049941972, 0.2350939194]), ("fast", [0.4514090388, 0.1674136834])):
        a = _edge(readout, "spectral")(X).flatten()
        b = _edge(readout, "statevector")(X).flatten()
        torch.testing.assert_close(a, b, atol=1e-14, rtol=0)
        assert (a - torch.tensor(expected, dtype=F64)).abs().max() < 1e-9


def test_fourier_series_reproduces_circuit() -> None:
    torch.manual_seed(0)
    theta = torch.randn(4, 5, 2, dtype=F64)
    coeffs = fourier_coefficients(theta)  # [4, 9]
    x = torch.linspace(-7, 7, 31, dtype=F64)
    k = torch.arange(1, 5, dtype=F64)
    basis = torch.cat([torch.ones(31, 1, dtype=F64), torch.cos(x[:, None] * k), torch.sin(x[:, None] * k)], 1)
    series = basis @ coeffs.t()  # [31, 4]
    direct = daruan_statevector(theta, x[:, None, None].expand(31, 4, 4), "born")
    torch.testing.assert_close(series, direct, atol=1e-13, rtol=0)


def _pair(reps: int, readout: str, seed: int, **kw: bool) -> tuple[QKANLayer, QKANLayer]:
    torch.manual_seed(seed)
    a = QKANLayer(3, 4, QKANSpec(reps=reps, readout=readout, solver="spectral", **kw)).double()
    with torch.no_grad():
        a.theta.normal_(0, 1.0)  # far from the small init, so every frequency matters
        for p in (a.postact_weight, a.postact_bias, a.base_weight):
            if p is not None:
                p.normal_()
    b = QKANLayer(3, 4, QKANSpec(reps=reps, readout=readout, solver="statevector", **kw)).double()
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("readout", ["born", "fast"])
@pytest.mark.parametrize("reps", [1, 2, 3, 4, 5, 6])
def test_spectral_equals_statevector(reps: int, readout: str) -> None:
    a, b = _pair(reps, readout, seed=reps, postact_trainable=True)
    x = (torch.randn(2, 5, 3, dtype=F64) * 2).requires_grad_()
    ya, yb = a(x), b(x)
    assert ya.shape == (2, 5, 4)
    torch.testing.assert_close(ya, yb, atol=1e-10, rtol=0)
    w = torch.randn_like(ya)
    ga = torch.autograd.grad((ya * w).sum(), [x, *a.parameters()])
    gb = torch.autograd.grad((yb * w).sum(), [x, *b.parameters()])
    for u, v in zip(ga, gb, strict=True):
        torch.testing.assert_close(u, v, atol=1e-10, rtol=0)


@pytest.mark.parametrize(
    ("solver", "readout", "preact"),
    [
        ("spectral", "born", False),
        ("spectral", "fast", False),
        ("statevector", "born", True),
        ("statevector", "fast", True),
        ("statevector", "fast", False),
    ],
)
def test_gradcheck(solver: str, readout: str, preact: bool) -> None:
    torch.manual_seed(1)
    spec = QKANSpec(reps=2, readout=readout, solver=solver, preact_trainable=preact, postact_trainable=True)
    layer = QKANLayer(2, 2, spec).double()
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    x = torch.randn(3, 2, dtype=F64, requires_grad=True)

    def f(x: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        return functional_call(layer, dict(zip(names, ps, strict=True)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params))


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("solver", ["spectral", "statevector"])
def test_fast_readout_gradients_finite_at_pole(solver: str, dtype: torch.dtype) -> None:
    layer = QKANLayer(1, 2, QKANSpec(reps=3, readout="fast", solver=solver)).to(dtype)
    with torch.no_grad():
        layer.theta.zero_()
        layer.theta[0, 0, 0, 1] = -math.pi / 2  # RY(-pi/2)|+> = |0>: z = 1 for every x
        layer.theta[1, 0, 0, 1] = math.pi / 2  # |1>: z = -1
    x = torch.linspace(-3, 3, 7, dtype=dtype)[:, None].requires_grad_()
    y = layer(x)
    # near |z| = 1 the fast map turns a rounding error e of z into sqrt(e/2): ~3e-4 in float32 (spectral)
    tol = 1e-3 if dtype == torch.float32 else 1e-7
    expected = torch.tensor([[1.0, -1.0]], dtype=dtype).expand(7, 2)
    torch.testing.assert_close(y - 0.5 * torch.nn.functional.silu(x), expected, atol=tol, rtol=0)
    y.sum().backward()
    assert torch.isfinite(x.grad).all()  # type: ignore[arg-type]
    assert torch.isfinite(layer.theta.grad).all()  # type: ignore[arg-type]
    z = torch.tensor([-1.0, -1 + 1e-12, 0.3, 1 - 1e-12, 1.0], dtype=F64, requires_grad=True)
    fast_from_born(z).sum().backward()
    assert torch.isfinite(z.grad).all()  # type: ignore[arg-type]


@pytest.mark.parametrize("readout", ["born", "fast"])
def test_qkan_library_parity(readout: str) -> None:
    qkan = pytest.importorskip("qkan")
    torch.manual_seed(2)
    ref = qkan.QKANLayer(
        3,
        4,
        reps=3,
        solver="exact",
        fast_measure=readout == "fast",
        c_dtype=torch.complex128,
        p_dtype=torch.float64,
    )
    ours = QKANLayer(3, 4, QKANSpec(reps=3, readout=readout)).double()
    with torch.no_grad():
        ref.theta.normal_(0, 1.0)
        ref.base_weight.normal_()
        assert ref.theta.shape == ours.theta.shape
        ours.theta.copy_(ref.theta)
        ours.base_weight.copy_(ref.base_weight)  # type: ignore[union-attr]
    x = torch.randn(16, 3, dtype=F64) * 2
    torch.testing.assert_close(ours(x), ref(x), atol=1e-10, rtol=0)


@pytest.mark.parametrize(
    ("solver", "readout"), list(itertools.product(["spectral", "statevector"], ["born", "fast"]))
)
def test_refine_preserves_function(solver: str, readout: str) -> None:
    torch.manual_seed(3)
    preact = solver == "statevector"
    spec = QKANSpec(reps=2, readout=readout, solver=solver, preact_trainable=preact)
    layer = QKANLayer(3, 2, spec).double()
    with torch.no_grad():
        layer.theta.normal_()
        if layer.preact_weight is not None and layer.preact_bias is not None:
            layer.preact_weight.normal_()
            layer.preact_bias.normal_()
    x = torch.randn(6, 3, dtype=F64)
    finer = layer.refine(5)
    assert finer.spec.reps == 5 and finer.theta.shape == (2, 3, 6, 2)
    torch.testing.assert_close(finer(x), layer(x), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="new_reps must be greater"):
        layer.refine(2)


@pytest.mark.parametrize(("preact", "postact", "base"), list(itertools.product([False, True], repeat=3)))
def test_num_parameters_formula(preact: bool, postact: bool, base: bool) -> None:
    i, o, r = 3, 5, 4
    spec = QKANSpec(reps=r, preact_trainable=preact, postact_trainable=postact, base_weight=base)
    layer = QKANLayer(i, o, spec)
    expected = i * o * (2 * (r + 1) + 2 * r * preact + postact + postact + base)
    assert layer.num_parameters == expected
    assert sum(p.numel() for p in layer.parameters() if p.requires_grad) == expected


def test_validation_messages() -> None:
    layer = QKANLayer(3, 2)
    with pytest.raises(
        ValueError, match="input.size\\(-1\\) must be equal to in_features. Expected 3, got 2"
    ):
        layer(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="^readout 'exact' is unknown; choose from fast, born$"):
        QKANLayer(2, 2, QKANSpec(readout="exact"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs frozen pre-activations"):
        QKANLayer(2, 2, QKANSpec(solver="spectral", preact_trainable=True))  # type: ignore[arg-type]
    assert QKANLayer(2, 2, QKANSpec(preact_trainable=True)).resolved_solver == "statevector"
    assert QKANLayer(2, 2).resolved_solver == "spectral"
    assert QKANLayer(2, 3)(torch.zeros(7, 5, 2)).shape == (7, 5, 3)
