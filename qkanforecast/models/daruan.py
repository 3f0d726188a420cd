"""The DARUAN edge itself: exact single-qubit re-uploading circuits, their Fourier series, the read-outs.

Notation: r reps, K = 2r + 1 Fourier coefficients per edge. The math, the reference values and the closed
form are in ``shared/docs/qkan-math.md``.

- ``daruan_statevector``: propagates the state (alpha, beta) in real arithmetic, 4 floats per state,
  through the merged rotations RZ(theta_l0 + u_{l-1}) RY(theta_l1). Any settings.
- ``fourier_coefficients``: with frozen pre-activations (w = 1, b = 0) each edge is a trigonometric
  polynomial of degree r; its 2r + 1 coefficients come from 2r + 1 samples and a DFT (autograd flows
  through both).
- ``fast_from_born``: the fast read-out |alpha| - |beta| from the born one |alpha|^2 - |beta|^2.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..config import Readout

_SQRT_HALF = math.sqrt(0.5)


def _tiny(dtype: torch.dtype) -> float:
    """Floor inside square roots: eps^2, below one ulp of any result, so values stay exact."""
    return torch.finfo(dtype).eps ** 2


def _safe_sqrt(t: Tensor) -> Tensor:
    # clamp inside the root: sqrt'(0) is infinite; the clamp's gradient is 0 below the floor
    return torch.sqrt(torch.clamp(t, min=_tiny(t.dtype)))


def fast_readout_slope(a: Tensor, b: Tensor) -> Tensor:
    """dg/dz of the fast read-out from a = sqrt((1 + z)/2), b = sqrt((1 - z)/2).

    dg/dz = 1/(4a) + 1/(4b) is infinite at |z| = 1; the denominators are floored at sqrt(eps) of the
    dtype, which bounds the slope (float32: 1.5e3, float64: 3.4e7) and changes nothing for |z| < 1 - 2 eps.
    """
    floor = math.sqrt(torch.finfo(a.dtype).eps)
    return (a.clamp_min(floor).reciprocal_().add_(b.clamp_min(floor).reciprocal_())).mul_(0.25)


class _FastReadout(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: Tensor) -> Tensor:  # type: ignore[override]
        tiny = _tiny(z.dtype)
        a = (0.5 + 0.5 * z).clamp_min_(tiny).sqrt_()
        b = (0.5 - 0.5 * z).clamp_min_(tiny).sqrt_()
        ctx.save_for_backward(a, b)
        return a - b

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        a, b = ctx.saved_tensors
        return grad * fast_readout_slope(a, b)


def fast_from_born(z: Tensor) -> Tensor:
    """Fast read-out g = |alpha| - |beta| from the born one z = |alpha|^2 - |beta|^2, element-wise.

    g = sqrt((1 + z)/2) - sqrt((1 - z)/2) (= sign(z) sqrt(1 - sqrt(1 - z^2))). Roots are clamped at
    eps^2 and the slope is bounded (see ``fast_readout_slope``), so gradients stay finite at |z| = 1.
    """
    return cast(Tensor, _FastReadout.apply(z))


def daruan_statevector(theta: Tensor, u: Tensor, readout: Readout | str) -> Tensor:
    """Exact DARUAN output by real-arithmetic state propagation.

    theta: [..., r + 1, 2] angles (RZ, RY) per block; u: [..., r] data angles u_l = w_l x + b_l.
    The leading dimensions broadcast against each other. Returns [...] (born z or fast g).
    """
    reps = theta.shape[-2] - 1
    if u.shape[-1] != reps:
        raise ValueError(f"u.size(-1) must be equal to reps. Expected {reps}, got {u.shape[-1]}")
    # |+> = (1, 1)/sqrt(2); state (ar, ai, br, bi) = alpha, beta as real and imaginary parts
    one = theta.new_full((), _SQRT_HALF)
    ar: Tensor = one
    br: Tensor = one
    ai: Tensor = theta.new_zeros(())
    bi: Tensor = theta.new_zeros(())
    for layer in range(reps + 1):
        # the data gate RZ(u_{l-1}) and the next block's RZ(theta_l0) merge into one Z rotation
        a = theta[..., layer, 0] if layer == 0 else theta[..., layer, 0] + u[..., layer - 1]
        c, s = torch.cos(0.5 * a), torch.sin(0.5 * a)
        # RZ(a) = diag(e^{-ia/2}, e^{ia/2})
        ar, ai, br, bi = ar * c + ai * s, ai * c - ar * s, br * c - bi * s, bi * c + br * s
        c, s = torch.cos(0.5 * theta[..., layer, 1]), torch.sin(0.5 * theta[..., layer, 1])
        # RY(a) = [[c, -s], [s, c]]
        ar, br, ai, bi = c * ar - s * br, s * ar + c * br, c * ai - s * bi, s * ai + c * bi
    pa = ar * ar + ai * ai
    pb = br * br + bi * bi
    if readout == Readout.BORN:
        return pa - pb
    return _safe_sqrt(pa) - _safe_sqrt(pb)


def fourier_features(x: Tensor, reps: int) -> Tensor:
    """[..., n] -> [..., n, 2r]: (cos x, ..., cos rx, sin x, ..., sin rx), the non-constant basis."""
    k = torch.arange(1, reps + 1, dtype=x.dtype, device=x.device)
    angles = x.unsqueeze(-1) * k  # [..., n, r]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def _dft_matrix(reps: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Sample points x_j = 2 pi j / K and the [K, K] map from samples to (c0, a_1..a_r, b_1..b_r)."""
    n = 2 * reps + 1
    xs = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    k = torch.arange(1, reps + 1, dtype=torch.float64)
    rows = [torch.full((1, n), 1.0 / n, dtype=torch.float64)]
    rows.append(torch.cos(k[:, None] * xs) * (2.0 / n))
    rows.append(torch.sin(k[:, None] * xs) * (2.0 / n))
    return xs.to(dtype=dtype, device=device), torch.cat(rows).to(dtype=dtype, device=device)


def fourier_coefficients(theta: Tensor) -> Tensor:
    """Born-read-out coefficients of each edge with frozen pre-activations.

    theta: [..., r + 1, 2] -> [..., 2r + 1] as (c0, a_1..a_r, b_1..b_r), so that
    z(x) = c0 + sum_k a_k cos kx + b_k sin kx exactly (2r + 1 samples, then a DFT).
    """
    reps = theta.shape[-2] - 1
    xs, dft = _dft_matrix(reps, theta.dtype, theta.device)
    u = xs.view(-1, *([1] * (theta.dim() - 2)), 1).expand(-1, *theta.shape[:-2], reps)  # [K, ..., r]
    samples = daruan_statevector(theta.unsqueeze(0), u, Readout.BORN)  # [K, ...]
    return torch.tensordot(samples, dft, dims=([0], [1]))  # [..., K]
