"""QKANLayer: one DARUAN (single-qubit data re-uploading circuit) per edge, solved exactly on a CPU.

Notation: B batch, I in_features, O out_features, r reps, K = 2r + 1 Fourier coefficients per edge.
The circuits and their closed form are in daruan.py; what the layer computes for a slice of its inputs
(for each solver and read-out) in blocks.py. The math and the reference values are in
``shared/docs/qkan-math.md``.

Two exact solvers:

- ``statevector``: propagates the state of every edge for every sample. Any settings, trainable
  pre-activations too.
- ``spectral``: with frozen pre-activations (w = 1, b = 0) each edge is a trigonometric polynomial of
  degree r, known from its 2r + 1 coefficients; the batch then only needs the features
  [1, cos kx, sin kx]: one matrix product for the born read-out, one batched product plus the
  element-wise read-out map for the fast one.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn

from ..config import QKANSpec, Readout, Solver
from .blocks import Block, BornBlock, FastBlock, StatevectorBlock
from .daruan import fourier_coefficients


class QKANLayer(nn.Module):
    """Quantum-inspired Kolmogorov-Arnold layer: y_j = sum_i pw_ji (phi_ji(x_i) + pb_ji) + bw_ji silu(x_i).

    phi_ji is the DARUAN of edge (j, i) with ansatz "pz": |+>, then per block RZ(theta_l0) RY(theta_l1)
    RZ(w_l x + b_l), then a final RZ RY block; read out as ``born`` (<Z>) or ``fast`` (|alpha| - |beta|,
    the reference library's default). Accepts [..., in_features] -> [..., out_features].

    ``spec`` (config.QKANSpec) holds every edge setting:
        reps: data re-uploading repetitions r (each edge is a Fourier series of degree r).
        solver: ``spectral`` (closed form, frozen pre-activations only), ``statevector``, or ``auto``
            (spectral whenever the pre-activations are frozen).
        preact_trainable: train w, b (then the spectrum is no longer integer and ``statevector`` is used).
        postact_trainable: train pw and pb (else frozen at 1, 0 and not stored).
        base_weight: add the residual bw silu(x) with trainable bw (init 0.5).

    Trainable parameters: I O [2(r + 1) + 2r [preact] + 2 [postact] + [bw]].
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        spec: QKANSpec = QKANSpec(),  # noqa: B008 (frozen, so one shared default is safe)
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"in_features and out_features must be >= 1, got {in_features}, {out_features}")
        if spec.solver == Solver.SPECTRAL and spec.preact_trainable:
            raise ValueError(
                "solver='spectral' needs frozen pre-activations; use solver='statevector' or 'auto' "
                "with preact_trainable=True"
            )
        self.in_features = in_features
        self.out_features = out_features
        self.spec = spec
        kw = {"device": device, "dtype": dtype}
        o, i, r = out_features, in_features, spec.reps
        self.theta = nn.Parameter(torch.empty(o, i, r + 1, 2, **kw))  # type: ignore[arg-type]
        self.preact_weight: nn.Parameter | None = None
        self.preact_bias: nn.Parameter | None = None
        if spec.preact_trainable:
            self.preact_weight = nn.Parameter(torch.empty(o, i, r, **kw))  # type: ignore[arg-type]
            self.preact_bias = nn.Parameter(torch.empty(o, i, r, **kw))  # type: ignore[arg-type]
        self.postact_weight: nn.Parameter | None = None
        self.postact_bias: nn.Parameter | None = None
        if spec.postact_trainable:
            self.postact_weight = nn.Parameter(torch.empty(o, i, **kw))  # type: ignore[arg-type]
            self.postact_bias = nn.Parameter(torch.empty(o, i, **kw))  # type: ignore[arg-type]
        self.base_weight: nn.Parameter | None = None
        if spec.base_weight:
            self.base_weight = nn.Parameter(torch.empty(o, i, **kw))  # type: ignore[arg-type]
        self.reset_parameters()

    @property
    def resolved_solver(self) -> Solver:
        """``spectral`` or ``statevector``: the solver that runs (``auto`` resolved)."""
        if self.spec.solver == Solver.AUTO:
            return Solver.STATEVECTOR if self.spec.preact_trainable else Solver.SPECTRAL
        return self.spec.solver

    @property
    def num_parameters(self) -> int:
        """I O [2(r + 1) + 2r [preact] + 2 [postact] + [bw]]."""
        s = self.spec
        per_edge = 2 * (s.reps + 1) + 2 * s.reps * s.preact_trainable
        per_edge += 2 * s.postact_trainable + s.base_weight
        return self.in_features * self.out_features * per_edge

    def reset_parameters(self) -> None:
        # Xavier normal over the (O, I, r + 1, 2) tensor: std = 1 / sqrt((I + O)(r + 1))
        std = 1.0 / math.sqrt((self.in_features + self.out_features) * (self.spec.reps + 1))
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
        if self.spec.preact_trainable:
            raise ValueError("Fourier coefficients need frozen pre-activations (preact_trainable=False)")
        return fourier_coefficients(self.theta)

    def blocks(self, sizes: list[int]) -> list[Block]:
        """Split the inputs into consecutive slices of ``sizes`` and return one block per slice.

        The spectral coefficients are computed once and shared, so calling the blocks many times (one
        per time step) costs only the batch-dependent work.
        """
        if sum(sizes) != self.in_features:
            raise ValueError(f"sizes must add up to in_features={self.in_features}, got {sizes}")
        coeffs = self.coefficients() if self.resolved_solver == Solver.SPECTRAL else None
        out: list[Block] = []
        start = 0
        for n in sizes:
            sl = slice(start, start + n)
            start += n
            pw, pb, bw = (_cols(p, sl) for p in (self.postact_weight, self.postact_bias, self.base_weight))
            if coeffs is None:
                pre_w, pre_b = _cols(self.preact_weight, sl), _cols(self.preact_bias, sl)
                out.append(StatevectorBlock(self.theta[:, sl], pre_w, pre_b, self.spec.readout, pw, pb, bw))
            else:
                cls = BornBlock if self.spec.readout == Readout.BORN else FastBlock
                out.append(cls(coeffs[:, sl], pw, pb, bw))
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
        reps = self.spec.reps
        if new_reps <= reps:
            raise ValueError(f"new_reps must be greater than reps={reps}, got {new_reps}")
        spec = dataclasses.replace(self.spec, reps=new_reps)
        new = QKANLayer(
            self.in_features, self.out_features, spec, device=self.theta.device, dtype=self.theta.dtype
        )
        new.theta.zero_()
        new.theta[:, :, : reps + 1] = self.theta
        if self.preact_weight is not None and new.preact_weight is not None:
            new.preact_weight[..., :reps] = self.preact_weight
        if self.preact_bias is not None and new.preact_bias is not None:
            new.preact_bias[..., :reps] = self.preact_bias
        for name in ("postact_weight", "postact_bias", "base_weight"):
            src = getattr(self, name)
            if src is not None:
                getattr(new, name).copy_(src)
        new.train(self.training)
        return new

    def extra_repr(self) -> str:
        s = self.spec
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, reps={s.reps}, "
            f"readout={s.readout.value!r}, solver={s.solver.value!r}, preact_trainable={s.preact_trainable}, "
            f"postact_trainable={s.postact_trainable}, base_weight={s.base_weight}"
        )


def _cols(param: Tensor | None, sl: slice) -> Tensor | None:
    """The input columns ``sl`` of a per-edge parameter [O, I, ...] (None stays None)."""
    return None if param is None else param[:, sl]
