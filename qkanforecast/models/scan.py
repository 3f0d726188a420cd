"""Fused LSTM recurrence with a hand-written backward, for gate maps built from spectral QKAN blocks.

A Python loop over time steps pays a fixed cost per tensor operation, and autograd roughly triples the
number of operations. Here the whole sequence is one autograd node: the forward runs the bare recurrence
and keeps its intermediate tensors; the backward computes every derivative that does not depend on the
incoming gradient for all steps at once, walks the steps in reverse with only the unavoidable per-step
work, and forms the parameter gradients after the loop. Gradients then flow on through ordinary autograd,
from the block tensors to theta. Tests check it against the plain autograd path to 1e-12.

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

from .qkan import fast_readout_slope


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


def _silu_slope(x: Tensor) -> Tensor:
    sig = torch.sigmoid(x)
    return sig * (1 + x * (1 - sig))


class _Block:
    """Manual forward and backward of one spectral block on x [B, n] -> [B, O]."""

    def __init__(self, spec: BlockSpec, ts: list[Tensor | None]) -> None:
        self.readout = spec.readout
        self.reps = r = spec.reps
        self.has_base = spec.has_base
        self.wt, self.c0, self.ct, self.bwt, self.pw = ts
        ref = next(t for t in ts if t is not None)
        k = torch.arange(1, r + 1, dtype=ref.dtype, device=ref.device)
        self.k2 = torch.cat([k, k])
        self.phase = torch.cat([torch.full_like(k, math.pi / 2), torch.zeros_like(k)])
        kk = torch.cat([-k, k])  # d/dx [cos kx, sin kx] = [-k sin kx, k cos kx] = roll(features) * kk
        self.tiny = torch.finfo(ref.dtype).eps ** 2
        self.inputs: list[Tensor] = []
        self.feats: list[Tensor] = []
        if self.readout == "born":
            wt = self.wt
            assert wt is not None
            nf = wt.shape[0] - (wt.shape[0] // (2 * r + 1) if self.has_base else 0)
            self.nf = nf
            self.wt_feat_k = (wt[:nf].view(-1, 2 * r, wt.shape[1]) * kk[:, None]).reshape(nf, -1).t()
            self.wt_base_t = wt[nf:].t() if self.has_base else None
        else:
            assert self.c0 is not None and self.ct is not None
            # ta = (1 + z) / 2 straight from the batched product: fold the affine map into the coefficients
            self.ta0 = 0.5 + 0.5 * self.c0
            self.ta_ct = 0.5 * self.ct
            self.ct_k_t = (self.ct * kk[:, None]).transpose(1, 2)  # [n, O, 2r]
            self.a_buf: Tensor | None = None  # sqrt((1 + z)/2) for all steps, [L, n, B, O]
            self.b_buf: Tensor | None = None
            self.dz_buf: Tensor | None = None  # [n, L, B, O]
            self.steps = 0

    def features(self, x: Tensor) -> Tensor:  # [..., n] -> [..., n, 2r] = [cos kx, sin kx]
        return torch.addcmul(self.phase, x.unsqueeze(-1), self.k2).sin_()

    def start(self, length: int, batch: int) -> None:
        if self.readout == "fast":
            assert self.ct is not None
            n, o = self.ct.shape[0], self.ct.shape[2]
            self.a_buf = self.ct.new_empty(length, n, batch, o)
            self.b_buf = self.ct.new_empty(length, n, batch, o)
            # scratch reused every step: fresh 256 KB tensors per step cost page faults on CPU
            self.ta_s = self.ct.new_empty(n, batch, o)
            self.g_s = self.ct.new_empty(n, batch, o)
            self.steps = 0

    def forward(self, x: Tensor, add: Tensor | None) -> Tensor:
        """x [B, n] -> y [B, O] (+ add); keeps what the backward needs."""
        self.inputs.append(x)
        if self.readout == "born":
            wt = self.wt
            assert wt is not None
            feats = self.features(x)  # [B, n, 2r]
            self.feats.append(feats)
            flat = feats.view(x.shape[0], -1)
            y = flat @ wt[: self.nf] if add is None else torch.addmm(add, flat, wt[: self.nf])
            if self.has_base:
                y = y.addmm_(torch.nn.functional.silu(x), wt[self.nf :])
            return y
        feats = self.features(x.t())  # [n, B, 2r]
        self.feats.append(feats)
        assert self.a_buf is not None and self.b_buf is not None
        ta = torch.baddbmm(self.ta0, feats, self.ta_ct, out=self.ta_s)  # (1 + z) / 2, [n, B, O]
        a = torch.clamp_min(ta, self.tiny, out=self.a_buf[self.steps]).sqrt_()
        b = torch.clamp_min(ta.neg_().add_(1), self.tiny, out=self.b_buf[self.steps]).sqrt_()
        self.steps += 1
        g = torch.sub(a, b, out=self.g_s)
        y = (g.mul_(self.pw) if self.pw is not None else g).sum(0)
        if self.has_base:
            y = y.addmm_(torch.nn.functional.silu(x), self.bwt)  # type: ignore[arg-type]
        return y if add is None else y.add_(add)

    def prepare_backward(self) -> None:
        """Derivatives that do not depend on the incoming gradient, for all steps at once (cached, so
        a graph kept with retain_graph=True can be differentiated again)."""
        if hasattr(self, "x_all"):
            return
        r = self.reps
        self.x_all = torch.stack(self.inputs)  # [L, B, n]
        self.slope = _silu_slope(self.x_all) if self.has_base else None
        feats = torch.stack(self.feats)
        self.feats_all = feats
        self.dfeats = feats.roll(r, dims=-1)  # times kk (folded into the weights) = d features / dx
        if self.readout == "fast":
            a, b = self.a_buf, self.b_buf
            assert a is not None and b is not None
            self.g_all = (a - b) if self.pw is not None else None
            self.gp = fast_readout_slope(a, b, inplace=True)  # d g / d z, [L, n, B, O]
            self.a_buf = self.b_buf = None
            self.dz_buf = torch.empty_like(self.gp).transpose(0, 1)  # [n, L, B, O]

    def backward(self, t: int, dy: Tensor) -> Tensor:
        """dy [B, O] at step t -> dx [B, n]; accumulates the per-step parameter gradients."""
        if self.readout == "born":
            feats = self.dfeats[t]
            bsz, n = feats.shape[0], feats.shape[1]
            dfeat = (dy @ self.wt_feat_k).view(bsz * n, 1, -1)  # k-scaled d features
            dx = torch.bmm(dfeat, feats.reshape(bsz * n, -1, 1)).view(bsz, n)
        else:
            assert self.dz_buf is not None
            dz = torch.mul(self.gp[t], dy if self.pw is None else dy * self.pw, out=self.dz_buf[:, t])
            dx = torch.bmm(dz, self.ct_k_t).mul_(self.dfeats[t]).sum(-1).t()
        if self.slope is not None:
            w = self.wt_base_t if self.readout == "born" else self.bwt.t()  # type: ignore[union-attr]
            dx = torch.addcmul(dx, dy @ w, self.slope[t])  # type: ignore[operator, arg-type]
        return dx

    def param_grads(self, dy_all: Tensor) -> list[Tensor | None]:
        """dy_all [L, B, O] -> gradients for (wt, c0, ct, bwt, pw)."""
        dy = dy_all.reshape(-1, dy_all.shape[-1])
        silu = torch.nn.functional.silu(self.x_all).reshape(dy.shape[0], -1) if self.has_base else None
        if self.readout == "born":
            flat = self.feats_all.reshape(dy.shape[0], -1)
            gw = flat.t() @ dy
            if silu is not None:
                gw = torch.cat([gw, silu.t() @ dy])
            return [gw, None, None, None, None]
        dbw = None if silu is None else silu.t() @ dy
        dz = self.dz_buf
        assert dz is not None and self.ct is not None
        n, length, bsz, o = dz.shape
        dz = dz.reshape(n, length * bsz, o)
        dc0 = dz.sum(1, keepdim=True)
        feats = self.feats_all.transpose(0, 1).reshape(n, length * bsz, -1)  # [n, L B, 2r]
        dct = torch.bmm(feats.transpose(1, 2), dz)
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
        block = _Block(spec, [wt, cc0, ct, bwt, pw])
        block.start(pre.shape[1], pre.shape[0])
        d = h0.shape[-1]
        h, c = h0, c0
        hs, cs, ss, ggs, tcs, lats = [h0], [c0], [], [], [], []
        for t in range(pre.shape[1]):
            if enc_t is None:  # QKAN-LSTM
                gates = block.forward(h, pre[:, t])
            else:  # HQKAN-LSTM
                lat = block.forward(torch.addmm(pre[:, t], h, enc_t), None)
                lats.append(lat)
                assert dec_t is not None
                gates = lat @ dec_t if dec_b is None else torch.addmm(dec_b, lat, dec_t)
            s = torch.sigmoid(gates)
            gg = torch.tanh(gates[:, 2 * d : 3 * d])
            c = torch.addcmul(s[:, d : 2 * d] * c, s[:, :d], gg)
            tc = torch.tanh(c)
            h = s[:, 3 * d :] * tc
            hs.append(h)
            cs.append(c)
            ss.append(s)
            ggs.append(gg)
            tcs.append(tc)
        ctx.block, ctx.saved = block, (hs, cs, ss, ggs, tcs, lats)
        ctx.enc_t, ctx.dec_t, ctx.has_dec_b = enc_t, dec_t, dec_b is not None
        return torch.stack(hs[1:], dim=1), h, c

    @staticmethod
    def backward(ctx: Any, dout: Tensor, dh_n: Tensor, dc_n: Tensor) -> tuple[Tensor | None, ...]:
        block: _Block = ctx.block
        enc_t, dec_t = ctx.enc_t, ctx.dec_t
        hs, cs, ss, ggs, tcs, lats = ctx.saved
        length = len(ss)
        s, gg, tc = torch.stack(ss), torch.stack(ggs), torch.stack(tcs)  # [L, N, 4D], [L, N, D]
        c_prev = torch.stack(cs[:-1])
        n, d = gg.shape[1], gg.shape[2]
        # d gates = [dc, dc, dc, dh] * m,  m = [g, c_{t-1}, i, tanh c] * activation slopes
        dact = s * (1 - s)
        dact[..., 2 * d : 3 * d] = 1 - gg * gg
        m = torch.cat([gg, c_prev, s[..., :d], tc], dim=-1).mul_(dact).view(length, n, 4, d)
        otc = s[..., 3 * d :] * (1 - tc * tc)  # dc += dh * o (1 - tanh^2 c)
        forget = s[..., d : 2 * d]
        block.prepare_backward()
        dgates = torch.empty_like(s).view(length, n, 4, d)
        dy_block = dgates if enc_t is None else torch.empty(length, n, dec_t.shape[0], dtype=s.dtype)
        d_in = torch.empty(length, n, block.x_all.shape[-1], dtype=s.dtype) if enc_t is not None else None
        dh, dc = dh_n, dc_n
        for t in range(length - 1, -1, -1):
            dh = dh + dout[:, t]
            dc = torch.addcmul(dc, dh, otc[t])
            torch.mul(dc.unsqueeze(1), m[t, :, :3], out=dgates[t, :, :3])
            torch.mul(dh, m[t, :, 3], out=dgates[t, :, 3])
            dc = dc * forget[t]
            dg = dgates[t].view(n, 4 * d)
            if enc_t is None:
                dh = block.backward(t, dg)
            else:
                dlat = torch.mm(dg, dec_t.t(), out=dy_block[t])
                de = block.backward(t, dlat)
                d_in[t] = de  # type: ignore[index]
                dh = de @ enc_t.t()
        dg_all = dgates.view(length, n, 4 * d)
        grads = block.param_grads(dy_block.view(length, n, -1))
        if enc_t is None:
            return (None, dg_all.transpose(0, 1), dh, dc, *grads, None, None, None)
        assert d_in is not None
        h_prev = torch.stack(hs[:-1]).reshape(length * n, d)
        lat = torch.stack(lats).reshape(length * n, -1)
        dg_flat = dg_all.reshape(length * n, 4 * d)
        d_enc = h_prev.t() @ d_in.reshape(length * n, -1)
        d_dec = lat.t() @ dg_flat
        d_dec_b = dg_flat.sum(0) if ctx.has_dec_b else None
        return (None, d_in.transpose(0, 1), dh, dc, *grads, d_enc, d_dec, d_dec_b)
