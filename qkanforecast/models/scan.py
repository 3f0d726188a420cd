"""Fused LSTM recurrence with a hand-written backward, for gate maps built from spectral QKAN blocks.

A Python loop over time steps pays a fixed cost per tensor operation (a few us on a small CPU, on top
of the arithmetic), and autograd roughly triples the number of operations. Here the whole sequence is
one autograd node: the forward runs the bare recurrence and writes every intermediate into buffers
allocated once per sequence (``out=`` and in-place ops, no per-step stack or cat); the backward computes
every derivative that does not depend on the incoming gradient for all steps at once, walks the steps
in reverse with only the unavoidable per-step work, and forms the parameter gradients after the loop
(or forms them per step and sums once). Gradients then flow on through ordinary autograd, from the block
tensors to theta. Tests check it against the plain autograd path to 1e-12.

Notation: N batch, L steps, D hidden, n block inputs, O block outputs, r reps.
Gate map of one step (``h`` = h_{t-1}, ``pre`` = the part computed from x_t for all steps at once):
- QKAN-LSTM:  gates = pre_t + Q(h)
- HQKAN-LSTM: gates = dec(Q(pre_t + E h)),  dec(z) = z W_d + b_d
with Q a spectral QKAN block (born or fast read-out) whose constant terms are folded into ``pre``/biases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass
class BlockSpec:
    """Tensors of a spectral QKAN block, prepared for the fused scan.

    born: ``wt`` [n 2r (+ n), O] multiplies the features [cos kx, sin kx (per input), silu(x)].
    fast: ``c0`` [n, 1, O], ``ct`` [n, 2r, O], ``bwt`` [n, O] or None, ``pw`` [n, 1, O] or None.
    """

    readout: str
    reps: int
    has_base: bool
    wt: Tensor | None = None
    c0: Tensor | None = None
    ct: Tensor | None = None
    bwt: Tensor | None = None
    pw: Tensor | None = None

    def tensors(self) -> list[Tensor | None]:
        return [self.wt, self.c0, self.ct, self.bwt, self.pw]


def _silu(x: Tensor, out: Tensor) -> None:
    torch.ops.aten.silu.out(x, out=out)  # F.silu takes no out=


def _silu_slope(x: Tensor) -> Tensor:
    sig = torch.sigmoid(x)
    return sig * (1 + x * (1 - sig))


class _Block:
    """Manual forward and backward of one spectral block on x [B, n] -> [B, O], over L steps.

    Features [cos kx, sin kx] are sin(k x + phase), one op. Their x-derivative [-k sin kx, k cos kx] is
    the same features with the halves swapped, so the backward folds the swap and the factor k into
    the weights (``_dweights``) and reuses the forward's features.
    """

    n: int

    def __init__(self, spec: BlockSpec, ts: list[Tensor | None], length: int, batch: int) -> None:
        self.reps = r = spec.reps
        self.has_base = spec.has_base
        self.wt, self.c0, self.ct, self.bwt, self.pw = ts
        ref = next(t for t in ts if t is not None)
        self.kw: dict[str, Any] = {"dtype": ref.dtype, "device": ref.device}
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
        self.x_all: Tensor | None = None

    def _dweights(self, w: Tensor) -> Tensor:
        """w [n, 2r, O] -> weights of d features / dx, expressed in the features: swap halves, times k."""
        return (w * self.kk[:, None]).roll(self.reps, dims=1)

    def forward(self, t: int, x: Tensor, add: Tensor | None, out: Tensor) -> None:
        """x [B, n] -> out [B, O] (= Q(x) + add), keeping what the backward needs."""
        raise NotImplementedError

    def prepare_backward(self, x_all: Tensor) -> None:
        """Derivatives that do not depend on the incoming gradient, for all steps at once (cached, so
        a graph kept with retain_graph=True can be differentiated again). x_all [L, B, n]."""
        if self.x_all is None:
            self.x_all = x_all
            self.slope = _silu_slope(x_all) if self.has_base else None

    def backward(self, t: int, dy: Tensor) -> Tensor:
        """dy [B, O] at step t -> dx [B, n]."""
        raise NotImplementedError

    def param_grads(self, dy_all: Tensor) -> list[Tensor | None]:
        """dy_all [L, B, O] -> gradients for (wt, c0, ct, bwt, pw)."""
        raise NotImplementedError


class _BornBlock(_Block):
    """y = [features, silu(x)] @ wt: one matrix product per step."""

    def __init__(self, spec: BlockSpec, ts: list[Tensor | None], length: int, batch: int) -> None:
        super().__init__(spec, ts, length, batch)
        r, wt = self.reps, self.wt
        assert wt is not None
        self.n = n = wt.shape[0] // (2 * r + 1) if self.has_base else wt.shape[0] // (2 * r)
        self.nf = nf = n * 2 * r
        # [features, silu(x)] of every step with the batch last, [L, n 2r (+ n), B] (element-wise ops
        # run on contiguous rows): the product's input and, after the loop, the weight gradient
        self.feats = torch.empty(length, wt.shape[0], batch, **self.kw)
        # per-step views made once
        self.trig_ = self.feats[:, :nf].view(length, n, 2 * r, batch).unbind()
        self.silu_ = self.feats[:, nf:].unbind()
        self.rows_ = self.feats.transpose(1, 2).unbind()  # [B, n 2r (+ n)]
        dw = self._dweights(wt[:nf].reshape(n, 2 * r, -1)).reshape(nf, -1)
        self.dw = torch.cat([dw, wt[nf:]]) if self.has_base else dw  # [n 2r (+ n), O]

    def forward(self, t: int, x: Tensor, add: Tensor | None, out: Tensor) -> None:
        assert self.wt is not None
        xt = x.t().contiguous()  # [n, B]: the element-wise ops below run faster on contiguous rows
        torch.addcmul(self.phase_col, xt.unsqueeze(1), self.k2_col, out=self.trig_[t]).sin_()
        if self.has_base:
            _silu(xt, out=self.silu_[t])
        if add is None:
            torch.mm(self.rows_[t], self.wt, out=out)
        else:
            torch.addmm(add, self.rows_[t], self.wt, out=out)

    def prepare_backward(self, x_all: Tensor) -> None:
        super().prepare_backward(x_all)
        if self.slope is not None:
            self.slope_t_ = self.slope.transpose(1, 2).contiguous().unbind()  # [n, B] per step

    def backward(self, t: int, dy: Tensor) -> Tensor:
        dcols = torch.mm(self.dw, dy.t())  # [n 2r (+ n), B]
        dx = torch.linalg.vecdot(dcols[: self.nf].view(self.n, 2 * self.reps, -1), self.trig_[t], dim=1)
        if self.slope is not None:
            dx.addcmul_(dcols[self.nf :], self.slope_t_[t])
        return dx.t()  # [B, n]

    def param_grads(self, dy_all: Tensor) -> list[Tensor | None]:
        return [torch.bmm(self.feats, dy_all).sum(0), None, None, None, None]


class _FastBlock(_Block):
    """g = a - b, a = sqrt((1 + z)/2), b = sqrt((1 - z)/2), summed over the inputs (times pw).

    Per step: one batched product gives ((1 + z)/2, (1 - z)/2) side by side, [n, B, 2O]; one clamp and
    one rsqrt give (1/a, 1/b), a multiply gives (a, b) (rsqrt and a multiply cost less than sqrt, and
    1/a + 1/b = 4 dg/dz comes for free); the sum over inputs, the sign of b and the base term are one
    matrix product [sum_i a, sum_i b, silu(x)] @ [[I], [-I], [bw]]. Only 4 dg/dz is kept per step.
    """

    def __init__(self, spec: BlockSpec, ts: list[Tensor | None], length: int, batch: int) -> None:
        super().__init__(spec, ts, length, batch)
        r, ct, c0, kw = self.reps, self.ct, self.c0, self.kw
        assert ct is not None and c0 is not None
        self.n, self.o = n, o = ct.shape[0], ct.shape[2]
        # [cos kx, sin kx, 1] @ w_ab = ((1 + z)/2, (1 - z)/2), [n, 2r + 1, 2O]
        w_z = torch.cat([0.5 * ct, -0.5 * ct], dim=-1)
        w_1 = torch.cat([0.5 + 0.5 * c0, 0.5 - 0.5 * c0], dim=-1)
        self.w_ab = torch.cat([w_z, w_1], dim=1)
        eye = torch.eye(o, **kw)
        self.combine = torch.cat([eye, -eye] if self.bwt is None else [eye, -eye, self.bwt])  # [2O (+ n), O]
        self.pw2 = None if self.pw is None else torch.cat([self.pw, self.pw], dim=-1)  # [n, 1, 2O]
        eps = torch.finfo(ct.dtype).eps
        self.tiny = eps**2  # floor inside the roots
        self.cap = 1 / math.sqrt(eps)  # bound on 1/a and 1/b, as in fast_readout_slope
        # [cos kx, sin kx, 1] with the batch last, [L, n, 2r + 1, B]: sin runs on contiguous rows
        self.feats = torch.empty(length, n, 2 * r + 1, batch, **kw)
        self.feats[:, :, 2 * r] = 1.0
        self.sums = torch.empty(length, batch, 2 * o + (n if self.has_base else 0), **kw)
        self.gp4 = torch.empty(length, n, batch, o, **kw)  # 4 dg/dz = 1/a + 1/b
        self.g_all = torch.empty(length, n, batch, o, **kw) if self.pw is not None else None
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

    def forward(self, t: int, x: Tensor, add: Tensor | None, out: Tensor) -> None:
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
        if self.has_base:
            _silu(x, out=self.silu_[t])
        if add is None:
            torch.mm(self.sums_[t], self.combine, out=out)
        else:
            torch.addmm(add, self.sums_[t], self.combine, out=out)

    def prepare_backward(self, x_all: Tensor) -> None:
        super().prepare_backward(x_all)
        if hasattr(self, "dw"):
            return
        assert self.ct is not None
        # d features / dx as a product with the features, with the 1/4 of dg/dz
        self.dw = 0.25 * self._dweights(self.ct)  # [n, 2r, O]
        self.bw_t = None if self.bwt is None else self.bwt.t().contiguous()  # [O, n]
        self.dz = torch.empty_like(self.gp4[0])  # per-step scratch
        self.dfeat = self.dz.new_empty(self.n, 2 * self.reps, self.batch)
        # [features, 1]^T 4 dL/dz of every step: the gradients of (ct, c0), [L, n, 2r + 1, O]
        self.dw_steps = self.dz.new_empty(self.length, self.n, 2 * self.reps + 1, self.o)

    def backward(self, t: int, dy: Tensor) -> Tensor:
        dz = torch.mul(self.gp4_[t], dy, out=self.dz)  # 4 dL/dz [n, B, O]
        if self.pw is not None:
            dz.mul_(self.pw)
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
        if self.has_base:
            dbw = self.sums[..., 2 * self.o :].reshape(dy.shape[0], self.n).t() @ dy
        # summed over steps once at the end: accumulating step by step (baddbmm_) loses ~5 bits in float32
        dw = 0.25 * self.dw_steps.sum(0)
        dct, dc0 = dw[:, : 2 * self.reps], dw[:, 2 * self.reps :]
        dpw = None
        if self.g_all is not None:
            dpw = torch.einsum("lnbo,lbo->no", self.g_all, dy_all).unsqueeze(1)
        return [None, dc0, dct, dbw, dpw]


class FusedScan(torch.autograd.Function):
    """(pre [N, L, P], h0 [N, D], c0 [N, D], block tensors, E, W_d, b_d) -> (out [N, L, D], h_n, c_n)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        spec: BlockSpec,
        pre: Tensor,
        h0: Tensor,
        c0: Tensor,
        wt: Tensor | None,
        cc0: Tensor | None,
        ct: Tensor | None,
        bwt: Tensor | None,
        pw: Tensor | None,
        enc_t: Tensor | None,
        dec_t: Tensor | None,
        dec_b: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        n, length = pre.shape[0], pre.shape[1]
        d = h0.shape[-1]
        cls = _BornBlock if spec.readout == "born" else _FastBlock
        block = cls(spec, [wt, cc0, ct, bwt, pw], length, n)
        kw: dict[str, Any] = {"dtype": pre.dtype, "device": pre.device}
        hs = torch.empty(length + 1, n, d, **kw)  # h_0 .. h_L
        cs = torch.empty(length + 1, n, d, **kw)
        s = torch.empty(length, n, 4 * d, **kw)  # gates, then sigmoid(gates) in place
        gg = torch.empty(length, n, d, **kw)  # tanh of the g gate
        tc = torch.empty(length, n, d, **kw)  # tanh(c_t)
        hs[0], cs[0] = h0, c0
        lat = x_in = None
        if enc_t is not None:
            assert dec_t is not None
            x_in = torch.empty(length, n, enc_t.shape[1], **kw)  # block inputs pre_t + E h
            lat = torch.empty(length, n, dec_t.shape[0], **kw)  # block outputs
        # per-step views made once (unbind), not sliced anew in every step
        h_, c_, s_, pre_ = hs.unbind(), cs.unbind(), s.unbind(), pre.unbind(1)
        gg_, tc_ = gg.unbind(), tc.unbind()
        i_, f_, g_, o_ = (s[..., k * d : (k + 1) * d].unbind() for k in range(4))
        for t in range(length):
            if enc_t is None:  # QKAN-LSTM
                block.forward(t, h_[t], pre_[t], out=s_[t])
            else:  # HQKAN-LSTM
                assert x_in is not None and lat is not None and dec_t is not None
                block.forward(t, torch.addmm(pre_[t], h_[t], enc_t, out=x_in[t]), None, out=lat[t])
                if dec_b is None:
                    torch.mm(lat[t], dec_t, out=s_[t])
                else:
                    torch.addmm(dec_b, lat[t], dec_t, out=s_[t])
            torch.tanh(g_[t], out=gg_[t])
            s_[t].sigmoid_()
            torch.mul(f_[t], c_[t], out=c_[t + 1]).addcmul_(i_[t], gg_[t])
            torch.tanh(c_[t + 1], out=tc_[t])
            torch.mul(o_[t], tc_[t], out=h_[t + 1])
        ctx.block, ctx.saved = block, (hs, cs, s, gg, tc, x_in, lat)
        ctx.enc_t, ctx.dec_t, ctx.has_dec_b = enc_t, dec_t, dec_b is not None
        return hs[1:].transpose(0, 1).contiguous(), hs[length].clone(), cs[length].clone()

    @staticmethod
    def backward(ctx: Any, dout: Tensor, dh_n: Tensor, dc_n: Tensor) -> tuple[Tensor | None, ...]:
        block: _Block = ctx.block
        enc_t, dec_t = ctx.enc_t, ctx.dec_t
        hs, cs, s, gg, tc, x_in, lat = ctx.saved
        length, n, d = gg.shape
        # d gates = [dc, dc, dc, dh] * m,  m = [g, c_{t-1}, i, tanh c] * activation slopes
        sv = s.view(length, n, 4, d)
        dsig = torch.addcmul(sv, sv, sv, value=-1)  # sigmoid' = s (1 - s)
        m = torch.empty_like(sv)
        torch.mul(gg, dsig[:, :, 0], out=m[:, :, 0])
        torch.mul(cs[:-1], dsig[:, :, 1], out=m[:, :, 1])
        torch.mul(sv[:, :, 0], 1 - gg * gg, out=m[:, :, 2])
        torch.mul(tc, dsig[:, :, 3], out=m[:, :, 3])
        otc = sv[:, :, 3] * (1 - tc * tc)  # dc += dh * o (1 - tanh^2 c)
        forget = sv[:, :, 1]
        block.prepare_backward(hs[:-1] if x_in is None else x_in)
        dgates = torch.empty_like(m)
        d_in: list[Tensor] = []
        dlat = None if dec_t is None else s.new_empty(length, n, dec_t.shape[0])
        # with out[:, -1] alone in the loss, the other steps' dout are zeros: skip adding them
        dense_dout = length > 1 and bool(dout[:, :-1].any())
        dh, dc = dh_n + dout[:, -1], dc_n
        otc_, forget_, dout_ = otc.unbind(), forget.unbind(), dout.unbind(1)
        m3_, mo_ = m[:, :, :3].unbind(), m[:, :, 3].unbind()
        dg3_, dgo_ = dgates[:, :, :3].unbind(), dgates[:, :, 3].unbind()
        dg_ = dgates.view(length, n, 4 * d).unbind()
        dec, enc = (dec_t.t(), enc_t.t()) if dec_t is not None else (None, None)
        for t in range(length - 1, -1, -1):
            if dense_dout and t < length - 1:
                dh = dh + dout_[t]
            dc = torch.addcmul(dc, dh, otc_[t])
            torch.mul(dc.unsqueeze(1), m3_[t], out=dg3_[t])
            torch.mul(dh, mo_[t], out=dgo_[t])
            dc = dc * forget_[t]
            if dlat is None:
                dh = block.backward(t, dg_[t])
            else:
                assert dec is not None and enc is not None
                de = block.backward(t, torch.mm(dg_[t], dec, out=dlat[t]))
                d_in.append(de)
                dh = de @ enc
        dg_all = dgates.view(length, n, 4 * d)
        grads = block.param_grads(dg_all if dlat is None else dlat)
        if dlat is None:
            return (None, dg_all.transpose(0, 1), dh, dc, *grads, None, None, None)
        assert x_in is not None and lat is not None
        d_x = torch.stack(d_in[::-1])  # [L, N, a]
        dg_flat = dg_all.reshape(length * n, 4 * d)
        d_enc = hs[:-1].reshape(length * n, d).t() @ d_x.reshape(length * n, -1)
        d_dec = lat.reshape(length * n, -1).t() @ dg_flat
        d_dec_b = dg_flat.sum(0) if ctx.has_dec_b else None
        return (None, d_x.transpose(0, 1), dh, dc, *grads, d_enc, d_dec, d_dec_b)
