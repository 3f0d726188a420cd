"""QKAN layers: one DARUAN (single-qubit data re-uploading circuit) per edge, solved exactly on a CPU.

Notation: B batch, I in_features, O out_features, r reps, K = 2r + 1 Fourier coefficients per edge.
The math, the reference values and the closed form are in ``shared/docs/qkan-math.md``.

Two exact solvers:

- ``statevector``: propagates the state (alpha, beta) in real arithmetic, 4 floats per state, through
  the merged rotations RZ(theta_l0 + u_{l-1}) RY(theta_l1). Any settings, trainable pre-activations too.
- ``spectral``: with frozen pre-activations (w = 1, b = 0) each edge is a trigonometric polynomial of
  degree r. Its 2r + 1 coefficients come from 2r + 1 samples and a DFT (autograd flows through both);
  the batch then only needs the features [1, cos kx, sin kx]: one matrix product for the born read-out,
  one batched product plus the element-wise read-out map for the fast one.
"""

from __future__ import annotations

import math
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

Readout = Literal["born", "fast"]
Solver = Literal["auto", "spectral", "statevector"]
READOUTS: tuple[str, ...] = ("born", "fast")
SOLVERS: tuple[str, ...] = ("auto", "spectral", "statevector")

_SQRT_HALF = math.sqrt(0.5)


def _tiny(dtype: torch.dtype) -> float:
    """Floor inside square roots: eps^2, below one ulp of any result, so values stay exact."""
    return torch.finfo(dtype).eps ** 2


def _safe_sqrt(t: Tensor) -> Tensor:
    # clamp inside the root: sqrt'(0) is infinite; the clamp's gradient is 0 below the floor
    return torch.sqrt(torch.clamp(t, min=_tiny(t.dtype)))


def fast_readout_slope(a: Tensor, b: Tensor, inplace: bool = False) -> Tensor:
    """dg/dz of the fast read-out from a = sqrt((1 + z)/2), b = sqrt((1 - z)/2).

    dg/dz = 1/(4a) + 1/(4b) is infinite at |z| = 1; the denominators are floored at sqrt(eps) of the
    dtype, which bounds the slope (float32: 1.5e3, float64: 3.4e7) and changes nothing for |z| < 1 - 2 eps.
    """
    floor = math.sqrt(torch.finfo(a.dtype).eps)
    if inplace:  # overwrites a and b
        return a.clamp_min_(floor).reciprocal_().add_(b.clamp_min_(floor).reciprocal_()).mul_(0.25)
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


def daruan_statevector(theta: Tensor, u: Tensor, readout: Readout) -> Tensor:
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
    if readout == "born":
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
    samples = daruan_statevector(theta.unsqueeze(0), u, "born")  # [K, ...]
    return torch.tensordot(samples, dft, dims=([0], [1]))  # [..., K]


class EdgeBlock:
    """What a layer computes for a contiguous slice of its inputs, with the per-call work done once.

    Built by ``QKANLayer.blocks``; call it on x [B, n] to get that slice's contribution [B, O] to the
    layer output. Recurrent models build the blocks once per sequence and call them every time step.
    """

    def __init__(self, layer: QKANLayer, start: int, stop: int, coeffs: Tensor | None) -> None:
        self.reps = layer.reps
        self.readout = layer.readout
        sl = slice(start, stop)
        self.pw = None if layer.postact_weight is None else layer.postact_weight[:, sl]  # [O, n]
        pb = None if layer.postact_bias is None else layer.postact_bias[:, sl]
        self.bw = None if layer.base_weight is None else layer.base_weight[:, sl]  # [O, n]
        self.coeffs = coeffs
        if coeffs is None:  # statevector
            self.theta = layer.theta[:, sl]
            self.pre_w = None if layer.preact_weight is None else layer.preact_weight[:, sl]
            self.pre_b = None if layer.preact_bias is None else layer.preact_bias[:, sl]
            self.bias: Tensor | None = None
            if pb is not None:
                self.bias = (pb * (1.0 if self.pw is None else self.pw)).sum(-1)
            return
        c = coeffs[:, sl]  # [O, n, K]
        if self.readout == "born":
            if self.pw is not None:
                c = c * self.pw.unsqueeze(-1)
            const = c[..., 0] if pb is None else c[..., 0] + pb * (1.0 if self.pw is None else self.pw)
            self.bias = const.sum(-1)  # [O]
            # feature layout [B, n, 2r] flattened -> weight [O, n * 2r]
            self.weight = c[..., 1:].reshape(c.shape[0], -1)
            if self.bw is not None:
                self.weight = torch.cat([self.weight, self.bw], dim=1)
        else:
            self.c0 = c[..., 0].t().unsqueeze(1)  # [n, 1, O]
            self.ct = c[..., 1:].permute(1, 2, 0)  # [n, 2r, O]
            self.bias = None
            if pb is not None:
                self.bias = (pb * (1.0 if self.pw is None else self.pw)).sum(-1)
            self.pw_t = None if self.pw is None else self.pw.t().unsqueeze(1)  # [n, 1, O]

    def __call__(self, x: Tensor, add: Tensor | None = None, with_bias: bool = True) -> Tensor:
        """x [B, n] -> [B, O]; ``add`` [B, O] is added, ``with_bias=False`` leaves out ``self.bias``."""
        bias = self.bias if with_bias else None
        if bias is not None:
            add = bias if add is None else add + bias
        if self.coeffs is None:
            return self._statevector(x, add)
        if self.readout == "born":
            feats = fourier_features(x, self.reps).flatten(1)  # [B, n * 2r]
            if self.bw is not None:
                feats = torch.cat([feats, F.silu(x)], dim=1)
            if add is None:
                return feats @ self.weight.t()
            return torch.addmm(add, feats, self.weight.t())
        feats = fourier_features(x.t(), self.reps)  # [n, B, 2r]
        z = torch.baddbmm(self.c0, feats, self.ct)  # [n, B, O]
        g = fast_from_born(z)
        if self.pw_t is not None:
            g = g * self.pw_t
        return self._finish(x, g.sum(0), add)

    def _statevector(self, x: Tensor, add: Tensor | None) -> Tensor:
        xe = x.unsqueeze(1).unsqueeze(-1)  # [B, 1, n, 1]
        u = xe if self.pre_w is None else xe * self.pre_w
        if self.pre_b is not None:
            u = u + self.pre_b
        if u.shape[-1] != self.reps:
            u = u.expand(*u.shape[:-1], self.reps)
        phi = daruan_statevector(self.theta, u, self.readout)  # [B, O, n]
        if self.pw is not None:
            phi = phi * self.pw
        return self._finish(x, phi.sum(-1), add)

    def _finish(self, x: Tensor, y: Tensor, add: Tensor | None) -> Tensor:
        if add is not None:
            y = y + add
        if self.bw is not None:
            y = torch.addmm(y, F.silu(x), self.bw.t())
        return y


class QKANLayer(nn.Module):
    """Quantum-inspired Kolmogorov-Arnold layer: y_j = sum_i pw_ji (phi_ji(x_i) + pb_ji) + bw_ji silu(x_i).

    phi_ji is the DARUAN of edge (j, i) with ansatz "pz": |+>, then per block RZ(theta_l0) RY(theta_l1)
    RZ(w_l x + b_l), then a final RZ RY block; read out as ``born`` (<Z>) or ``fast`` (|alpha| - |beta|,
    the reference library's default). Accepts [..., in_features] -> [..., out_features].

    Args:
        reps: data re-uploading repetitions r (each edge is a Fourier series of degree r).
        solver: ``spectral`` (closed form, frozen pre-activations only), ``statevector``, or ``auto``
            (spectral whenever the pre-activations are frozen).
        preact_trainable: train w, b (then the spectrum is no longer integer and ``statevector`` is used).
        postact_trainable: train pw and pb (else frozen at 1, 0 and not stored).
        base_weight: add the residual bw silu(x) with trainable bw (init 0.5).

    Trainable parameters: I O [2(r + 1) + 2r [preact] + [pw] + [pb] + [bw]].
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        reps: int = 3,
        readout: Readout = "fast",
        solver: Solver = "auto",
        preact_trainable: bool = False,
        postact_trainable: bool = False,
        base_weight: bool = True,
        postact_bias_trainable: bool | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"in_features and out_features must be >= 1, got {in_features}, {out_features}")
        if reps < 1:
            raise ValueError(f"reps must be >= 1, got {reps}")
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {', '.join(READOUTS)}, got {readout!r}")
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
        if solver == "spectral" and preact_trainable:
            raise ValueError(
                "solver='spectral' needs frozen pre-activations; use solver='statevector' or 'auto' "
                "with preact_trainable=True"
            )
        self.in_features = in_features
        self.out_features = out_features
        self.reps = reps
        self.readout: Readout = readout
        self.solver: Solver = solver
        self.preact_trainable = preact_trainable
        self.postact_trainable = postact_trainable
        self.postact_bias_trainable = (
            postact_trainable if postact_bias_trainable is None else postact_bias_trainable
        )
        self.has_base_weight = base_weight
        kw = {"device": device, "dtype": dtype}
        o, i = out_features, in_features
        self.theta = nn.Parameter(torch.empty(o, i, reps + 1, 2, **kw))  # type: ignore[arg-type]
        self.preact_weight: nn.Parameter | None = None
        self.preact_bias: nn.Parameter | None = None
        if preact_trainable:
            self.preact_weight = nn.Parameter(torch.empty(o, i, reps, **kw))  # type: ignore[arg-type]
            self.preact_bias = nn.Parameter(torch.empty(o, i, reps, **kw))  # type: ignore[arg-type]
        self.postact_weight: nn.Parameter | None = None
        self.postact_bias: nn.Parameter | None = None
        if postact_trainable:
            self.postact_weight = nn.Parameter(torch.empty(o, i, **kw))  # type: ignore[arg-type]
        if self.postact_bias_trainable:
            self.postact_bias = nn.Parameter(torch.empty(o, i, **kw))  # type: ignore[arg-type]
        self.base_weight: nn.Parameter | None = None
        if base_weight:
            self.base_weight = nn.Parameter(torch.empty(o, i, **kw))  # type: ignore[arg-type]
        self.reset_parameters()

    @property
    def resolved_solver(self) -> Literal["spectral", "statevector"]:
        if self.solver == "auto":
            return "statevector" if self.preact_trainable else "spectral"
        return cast(Literal["spectral", "statevector"], self.solver)

    @property
    def num_parameters(self) -> int:
        """I O [2(r + 1) + 2r [preact] + [pw] + [pb] + [bw]]."""
        per_edge = 2 * (self.reps + 1) + 2 * self.reps * self.preact_trainable
        per_edge += self.postact_trainable + self.postact_bias_trainable + self.has_base_weight
        return self.in_features * self.out_features * per_edge

    def reset_parameters(self) -> None:
        # Xavier normal over the (O, I, r + 1, 2) tensor: std = 1 / sqrt((I + O)(r + 1))
        std = 1.0 / math.sqrt((self.in_features + self.out_features) * (self.reps + 1))
        with torch.no_grad():
            self.theta.normal_(0.0, std)
            if self.preact_weight is not None and self.preact_bias is not None:
                self.preact_weight.fill_(1.0)
                self.preact_bias.zero_()
            if self.postact_weight is not None:
                self.postact_weight.fill_(1.0)
            if self.postact_bias is not None:
                self.postact_bias.zero_()
            if self.base_weight is not None:
                self.base_weight.fill_(0.5)

    def coefficients(self) -> Tensor:
        """Born Fourier coefficients per edge [O, I, 2r + 1] as (c0, a_1..a_r, b_1..b_r)."""
        if self.preact_trainable:
            raise ValueError("Fourier coefficients need frozen pre-activations (preact_trainable=False)")
        return fourier_coefficients(self.theta)

    def blocks(self, sizes: list[int]) -> list[EdgeBlock]:
        """Split the inputs into consecutive slices of ``sizes`` and return one EdgeBlock per slice.

        The spectral coefficients are computed once and shared, so calling the blocks many times (one
        per time step) costs only the batch-dependent work.
        """
        if sum(sizes) != self.in_features:
            raise ValueError(f"sizes must add up to in_features={self.in_features}, got {sizes}")
        coeffs = self.coefficients() if self.resolved_solver == "spectral" else None
        out, start = [], 0
        for n in sizes:
            out.append(EdgeBlock(self, start, start + n, coeffs))
            start += n
        return out

    def forward(self, x: Tensor) -> Tensor:  # [..., I] -> [..., O]
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"input.size(-1) must be equal to in_features. Expected {self.in_features}, got {x.shape[-1]}"
            )
        lead = x.shape[:-1]
        (block,) = self.blocks([self.in_features])
        return block(x.reshape(-1, self.in_features)).reshape(*lead, self.out_features)

    @torch.no_grad()
    def refine(self, new_reps: int) -> QKANLayer:
        """A copy with ``new_reps`` > reps that computes the same function (layer extension).

        The old final block becomes block r + 1 (followed by a new data gate); all later blocks and the
        new final block are zero, so the added gates are Z rotations just before a Z read-out.
        """
        if new_reps <= self.reps:
            raise ValueError(f"new_reps must be greater than reps={self.reps}, got {new_reps}")
        new = QKANLayer(
            self.in_features,
            self.out_features,
            reps=new_reps,
            readout=self.readout,
            solver=self.solver,
            preact_trainable=self.preact_trainable,
            postact_trainable=self.postact_trainable,
            base_weight=self.has_base_weight,
            postact_bias_trainable=self.postact_bias_trainable,
            device=self.theta.device,
            dtype=self.theta.dtype,
        )
        new.theta.zero_()
        new.theta[:, :, : self.reps + 1] = self.theta
        if self.preact_weight is not None and new.preact_weight is not None:
            new.preact_weight[..., : self.reps] = self.preact_weight
        if self.preact_bias is not None and new.preact_bias is not None:
            new.preact_bias[..., : self.reps] = self.preact_bias
        for name in ("postact_weight", "postact_bias", "base_weight"):
            src = getattr(self, name)
            if src is not None:
                getattr(new, name).copy_(src)
        new.train(self.training)
        return new

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, reps={self.reps}, "
            f"readout={self.readout!r}, solver={self.solver!r}, preact_trainable={self.preact_trainable}, "
            f"postact_trainable={self.postact_trainable}, base_weight={self.has_base_weight}"
        )
