"""What a QKAN layer computes for a slice of its inputs, with the per-call work done once: the blocks.

``QKANLayer.blocks`` cuts its inputs into consecutive slices and returns one block per slice; ``block(x)``
on x [B, n] is that slice's contribution [B, O] to the layer output, through ordinary autograd.
Recurrent models build the blocks once per sequence and call them every time step.

One class per read-out of the spectral solver (``BornBlock``, ``FastBlock``) and one for the state-vector
solver. The spectral blocks also run inside ``FusedScan`` (scan.py), the LSTM recurrence with a
hand-written backward: there ``begin`` allocates the buffers of one sequence, ``step`` writes one time
step's output into them, ``step_backward`` maps one step's output gradient to its input gradient and
``param_grads`` returns the gradients of ``tensors()`` after the loop.

Notation: B batch, n block inputs, O block outputs, r reps, L steps.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import Readout
from .daruan import daruan_statevector, fast_from_born, fourier_features


def addmm_out(add: Tensor | None, a: Tensor, b: Tensor, out: Tensor) -> None:
    """out = add + a @ b (a @ b where add is None), written into ``out``."""
    if add is None:
        torch.mm(a, b, out=out)
    else:
        torch.addmm(add, a, b, out=out)


def _silu(x: Tensor, out: Tensor) -> None:
    torch.ops.aten.silu.out(x, out=out)  # F.silu takes no out=


def _silu_slope(x: Tensor) -> Tensor:
    sig = torch.sigmoid(x)
    return sig * (1 + x * (1 - sig))


class Block:
    """y = sum_i pw_i (phi_i(x_i) + pb_i) + bw_i silu(x_i) over one slice of inputs: x [B, n] -> [B, O].

    pw, pb, bw: the slice's post-activation weight and bias and base weight, [O, n] or None. ``bias`` [O]
    (or None) is the slice's constant term; a caller may add it elsewhere and call with ``with_bias=False``.
    """

    bias: Tensor | None

    def __init__(self, pw: Tensor | None, pb: Tensor | None, bw: Tensor | None) -> None:
        self.pw, self.pb, self.bw = pw, pb, bw
        self.bias = None if pb is None else (pb * (1.0 if pw is None else pw)).sum(-1)

    def __call__(self, x: Tensor, add: Tensor | None = None, with_bias: bool = True) -> Tensor:
        """x [B, n] -> [B, O]; ``add`` [B, O] is added, ``with_bias=False`` leaves out ``self.bias``."""
        bias = self.bias if with_bias else None
        if bias is not None:
            add = bias if add is None else add + bias
        return self._forward(x, add)

    def _forward(self, x: Tensor, add: Tensor | None) -> Tensor:
        raise NotImplementedError

    def _finish(self, x: Tensor, y: Tensor, add: Tensor | None) -> Tensor:
        if add is not None:
            y = y + add
        if self.bw is not None:
            y = torch.addmm(y, F.silu(x), self.bw.t())
        return y


class StatevectorBlock(Block):
    """Any settings: every edge's circuit propagated for every sample (``daruan_statevector``).

    theta [O, n, r + 1, 2]; pre_w, pre_b [O, n, r] or None (frozen at 1, 0).
    """

    def __init__(
        self,
        theta: Tensor,
        pre_w: Tensor | None,
        pre_b: Tensor | None,
        readout: Readout,
        pw: Tensor | None,
        pb: Tensor | None,
        bw: Tensor | None,
    ) -> None:
        super().__init__(pw, pb, bw)
        self.theta, self.pre_w, self.pre_b, self.readout = theta, pre_w, pre_b, readout
        self.reps = theta.shape[-2] - 1

    def _forward(self, x: Tensor, add: Tensor | None) -> Tensor:
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


class SpectralBlock(Block):
    """Frozen pre-activations: each edge is c0 + sum_k a_k cos kx + b_k sin kx, coeffs [O, n, 2r + 1].

    Fused path: features [cos kx, sin kx] are sin(k x + phase), one op. Their x-derivative
    [-k sin kx, k cos kx] is the same features with the halves swapped, so the backward folds the swap and
    the factor k into the weights (``_dweights``) and reuses the forward's features.
    """

    def __init__(self, coeffs: Tensor, pw: Tensor | None, pb: Tensor | None, bw: Tensor | None) -> None:
        super().__init__(pw, pb, bw)
        self.reps = (coeffs.shape[-1] - 1) // 2
        self.n = coeffs.shape[1]
        self.kw: dict[str, Any] = {"dtype": coeffs.dtype, "device": coeffs.device}
        self.x_all: Tensor | None = None

    def tensors(self) -> list[Tensor | None]:
        """The tensors the fused scan differentiates, in the order of ``param_grads``."""
        raise NotImplementedError

    def begin(self, length: int, batch: int) -> None:
        """Allocate the buffers of a fused scan over ``length`` steps of ``batch`` samples."""
        r = self.reps
        k = torch.arange(1, r + 1, **self.kw)
        self.k2 = torch.cat([k, k])
        self.phase = torch.cat([torch.full_like(k, math.pi / 2), torch.zeros_like(k)])
        # k and phase per feature row of [n, 2r, B] features, materialised: broadcasting them in
        # addcmul is 2.5x slower
        self.k2_col = self.k2[:, None].expand(2 * r, batch).contiguous()
        self.phase_col = self.phase[:, None].expand(2 * r, batch).contiguous()
        self.kk = torch.cat([-k, k])
        self.length, self.batch = length, batch
        self.slope: Tensor | None = None
        self.x_all = None

    def _dweights(self, w: Tensor) -> Tensor:
        """w [n, 2r, O] -> weights of d features / dx, expressed in the features: swap halves, times k."""
        return (w * self.kk[:, None]).roll(self.reps, dims=1)

    def step(self, t: int, x: Tensor, add: Tensor | None, out: Tensor) -> None:
        """x [B, n] -> out [B, O] (= the block without ``bias``, + add), keeping what the backward needs."""
        raise NotImplementedError

    def prepare_backward(self, x_all: Tensor) -> None:
        """Derivatives that do not depend on the incoming gradient, for all steps at once (cached, so
        a graph kept with retain_graph=True can be differentiated again). x_all [L, B, n]."""
        if self.x_all is None:
            self.x_all = x_all
            self.slope = _silu_slope(x_all) if self.bw is not None else None
            self._prepare_backward()

    def _prepare_backward(self) -> None:
        raise NotImplementedError

    def step_backward(self, t: int, dy: Tensor) -> Tensor:
        """dy [B, O] at step t -> dx [B, n]."""
        raise NotImplementedError

    def param_grads(self, dy_all: Tensor) -> list[Tensor | None]:
        """dy_all [L, B, O] -> the gradients of ``tensors()``."""
        raise NotImplementedError


class BornBlock(SpectralBlock):
    """Born read-out: y = [features, silu(x)] @ wt, one matrix product (constant terms in ``bias``)."""

    def __init__(self, coeffs: Tensor, pw: Tensor | None, pb: Tensor | None, bw: Tensor | None) -> None:
        super().__init__(coeffs, pw, pb, bw)
        c = coeffs
        if pw is not None:
            c = c * pw.unsqueeze(-1)
        const = c[..., 0] if pb is None else c[..., 0] + pb * (1.0 if pw is None else pw)
        self.bias = const.sum(-1)  # [O]
        # feature layout [B, n, 2r] flattened -> weight [O, n * 2r]
        weight = c[..., 1:].reshape(c.shape[0], -1)
        if bw is not None:
            weight = torch.cat([weight, bw], dim=1)
        self.wt = weight.t()  # [n 2r (+ n), O]

    def _forward(self, x: Tensor, add: Tensor | None) -> Tensor:
        feats = fourier_features(x, self.reps).flatten(1)  # [B, n * 2r]
        if self.bw is not None:
            feats = torch.cat([feats, F.silu(x)], dim=1)
        if add is None:
            return feats @ self.wt
        return torch.addmm(add, feats, self.wt)

    def tensors(self) -> list[Tensor | None]:
        return [self.wt]

    def begin(self, length: int, batch: int) -> None:
        super().begin(length, batch)
        r, n, wt = self.reps, self.n, self.wt
        self.nf = nf = n * 2 * r
        # [features, silu(x)] of every step with the batch last, [L, n 2r (+ n), B] (element-wise ops
        # run on contiguous rows): the product's input and, after the loop, the weight gradient
        self.feats = torch.empty(length, wt.shape[0], batch, **self.kw)
        # per-step views made once
        self.trig_ = self.feats[:, :nf].view(length, n, 2 * r, batch).unbind()
        self.silu_ = self.feats[:, nf:].unbind()
        self.rows_ = self.feats.transpose(1, 2).unbind()  # [B, n 2r (+ n)]
        dw = self._dweights(wt[:nf].reshape(n, 2 * r, -1)).reshape(nf, -1)
        self.dw = torch.cat([dw, wt[nf:]]) if self.bw is not None else dw  # [n 2r (+ n), O]

    def step(self, t: int, x: Tensor, add: Tensor | None, out: Tensor) -> None:
        xt = x.t().contiguous()  # [n, B]: the element-wise ops below run faster on contiguous rows
        torch.addcmul(self.phase_col, xt.unsqueeze(1), self.k2_col, out=self.trig_[t]).sin_()
        if self.bw is not None:
            _silu(xt, out=self.silu_[t])
        addmm_out(add, self.rows_[t], self.wt, out)

    def _prepare_backward(self) -> None:
        if self.slope is not None:
            self.slope_t_ = self.slope.transpose(1, 2).contiguous().unbind()  # [n, B] per step

    def step_backward(self, t: int, dy: Tensor) -> Tensor:
        dcols = torch.mm(self.dw, dy.t())  # [n 2r (+ n), B]
        dx = torch.linalg.vecdot(dcols[: self.nf].view(self.n, 2 * self.reps, -1), self.trig_[t], dim=1)
        if self.slope is not None:
            dx.addcmul_(dcols[self.nf :], self.slope_t_[t])
        return dx.t()  # [B, n]

    def param_grads(self, dy_all: Tensor) -> list[Tensor | None]:
        return [torch.bmm(self.feats, dy_all).sum(0)]


class FastBlock(SpectralBlock):
    """Fast read-out: g = a - b, a = sqrt((1 + z)/2), b = sqrt((1 - z)/2), times pw, summed over inputs.

    Fused path, per step: one batched product gives ((1 + z)/2, (1 - z)/2) side by side, [n, B, 2O]; one
    clamp and one rsqrt give (1/a, 1/b), a multiply gives (a, b) (rsqrt and a multiply cost less than
    sqrt, and 1/a + 1/b = 4 dg/dz comes for free); the sum over inputs, the sign of b and the base term
    are one matrix product [sum_i a, sum_i b, silu(x)] @ [[I], [-I], [bw]]. Only 4 dg/dz is kept per step.
    """

    def __init__(self, coeffs: Tensor, pw: Tensor | None, pb: Tensor | None, bw: Tensor | None) -> None:
        super().__init__(coeffs, pw, pb, bw)
        self.c0 = coeffs[..., 0].t().unsqueeze(1)  # [n, 1, O]
        self.ct = coeffs[..., 1:].permute(1, 2, 0)  # [n, 2r, O]
        self.pw_t = None if pw is None else pw.t().unsqueeze(1)  # [n, 1, O]
        self.bwt = None if bw is None else bw.t()  # [n, O]

    def _forward(self, x: Tensor, add: Tensor | None) -> Tensor:
        feats = fourier_features(x.t(), self.reps)  # [n, B, 2r]
        z = torch.baddbmm(self.c0, feats, self.ct)  # [n, B, O]
        g = fast_from_born(z)
        if self.pw_t is not None:
            g = g * self.pw_t
        return self._finish(x, g.sum(0), add)

    def tensors(self) -> list[Tensor | None]:
        return [self.c0, self.ct, self.bwt, self.pw_t]

    def begin(self, length: int, batch: int) -> None:
        super().begin(length, batch)
        r, n, ct, c0, kw = self.reps, self.n, self.ct, self.c0, self.kw
        self.o = o = ct.shape[2]
        # [cos kx, sin kx, 1] @ w_ab = ((1 + z)/2, (1 - z)/2), [n, 2r + 1, 2O]
        w_z = torch.cat([0.5 * ct, -0.5 * ct], dim=-1)
        w_1 = torch.cat([0.5 + 0.5 * c0, 0.5 - 0.5 * c0], dim=-1)
        self.w_ab = torch.cat([w_z, w_1], dim=1)
        eye = torch.eye(o, **kw)
        self.combine = torch.cat([eye, -eye] if self.bwt is None else [eye, -eye, self.bwt])  # [2O (+ n), O]
        self.pw2 = None if self.pw_t is None else torch.cat([self.pw_t, self.pw_t], dim=-1)  # [n, 1, 2O]
        eps = torch.finfo(ct.dtype).eps
        self.tiny = eps**2  # floor inside the roots
        self.cap = 1 / math.sqrt(eps)  # bound on 1/a and 1/b, as in fast_readout_slope
        # [cos kx, sin kx, 1] with the batch last, [L, n, 2r + 1, B]: sin runs on contiguous rows
        self.feats = torch.empty(length, n, 2 * r + 1, batch, **kw)
        self.feats[:, :, 2 * r] = 1.0
        self.sums = torch.empty(length, batch, 2 * o + (n if self.bw is not None else 0), **kw)
        self.gp4 = torch.empty(length, n, batch, o, **kw)  # 4 dg/dz = 1/a + 1/b
        self.g_all = torch.empty(length, n, batch, o, **kw) if self.pw_t is not None else None
        # per-step scratch, reused: fresh 0.5 MB tensors every step cost page faults on CPU
        self.ab = torch.empty(n, batch, 2 * o, **kw)
        self.inv = torch.empty(n, batch, 2 * o, **kw)
        # per-step views made once
        self.feats_, self.trig_ = self.feats.unbind(), self.feats[:, :, : 2 * r].unbind()
        self.feats_t_ = self.feats.transpose(2, 3).unbind()  # [n, B, 2r + 1]
        self.sums_, self.gp4_ = self.sums.unbind(), self.gp4.unbind()
        self.ab_sums_, self.silu_ = self.sums[..., : 2 * o].unbind(), self.sums[..., 2 * o :].unbind()
        self.a, self.b = self.ab[..., :o], self.ab[..., o:]
        self.inv_a, self.inv_b = self.inv[..., :o], self.inv[..., o:]

    def step(self, t: int, x: Tensor, add: Tensor | None, out: Tensor) -> None:
        xt = x.t().contiguous()  # [n, B]: addcmul runs faster on contiguous rows
        torch.addcmul(self.phase_col, xt.unsqueeze(1), self.k2_col, out=self.trig_[t]).sin_()
        ab = torch.bmm(self.feats_t_[t], self.w_ab, out=self.ab)  # ((1 + z)/2, (1 - z)/2)
        inv = torch.rsqrt(ab.clamp_min_(self.tiny), out=self.inv)  # (1/a, 1/b)
        ab.mul_(inv)  # (a, b)
        if self.pw2 is not None and self.g_all is not None:
            torch.sub(self.a, self.b, out=self.g_all[t])
            ab.mul_(self.pw2)
        inv.clamp_max_(self.cap)
        torch.add(self.inv_a, self.inv_b, out=self.gp4_[t])
        torch.sum(ab, 0, out=self.ab_sums_[t])
        if self.bw is not None:
            _silu(x, out=self.silu_[t])
        addmm_out(add, self.sums_[t], self.combine, out)

    def _prepare_backward(self) -> None:
        # d features / dx as a product with the features, with the 1/4 of dg/dz
        self.dw = 0.25 * self._dweights(self.ct)  # [n, 2r, O]
        self.bw_t = None if self.bwt is None else self.bwt.t().contiguous()  # [O, n]
        self.dz = torch.empty_like(self.gp4[0])  # per-step scratch
        self.dfeat = self.dz.new_empty(self.n, 2 * self.reps, self.batch)
        # [features, 1]^T 4 dL/dz of every step: the gradients of (ct, c0), [L, n, 2r + 1, O]
        self.dw_steps = self.dz.new_empty(self.length, self.n, 2 * self.reps + 1, self.o)

    def step_backward(self, t: int, dy: Tensor) -> Tensor:
        dz = torch.mul(self.gp4_[t], dy, out=self.dz)  # 4 dL/dz [n, B, O]
        if self.pw_t is not None:
            dz.mul_(self.pw_t)
        torch.bmm(self.feats_[t], dz, out=self.dw_steps[t])
        # [n, 2r, B] = dw @ dz^T is 4x faster than dz @ dw^T (a narrow output)
        dfeat = torch.bmm(self.dw, dz.transpose(1, 2), out=self.dfeat)
        dx = torch.linalg.vecdot(dfeat, self.trig_[t], dim=1).t()
        if self.slope is not None and self.bw_t is not None:
            dx = dx.addcmul(dy @ self.bw_t, self.slope[t])
        return dx

    def param_grads(self, dy_all: Tensor) -> list[Tensor | None]:
        dy = dy_all.reshape(-1, dy_all.shape[-1])
        dbw = None
        if self.bw is not None:
            dbw = self.sums[..., 2 * self.o :].reshape(dy.shape[0], self.n).t() @ dy
        # summed over steps once at the end: accumulating step by step (baddbmm_) loses ~5 bits in float32
        dw = 0.25 * self.dw_steps.sum(0)
        dct, dc0 = dw[:, : 2 * self.reps], dw[:, 2 * self.reps :]
        dpw = None
        if self.g_all is not None:
            dpw = torch.einsum("lnbo,lbo->no", self.g_all, dy_all).unsqueeze(1)
        return [dc0, dct, dbw, dpw]
