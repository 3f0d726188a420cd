"""Fused LSTM recurrence with a hand-written backward, for gate maps built from spectral QKAN blocks.

A Python loop over time steps pays a fixed cost per tensor operation (a few us on a small CPU, on top
of the arithmetic), and autograd roughly triples the number of operations. Here the whole sequence is
one autograd node: the forward runs the bare recurrence and writes every intermediate into buffers
allocated once per sequence (``out=`` and in-place ops, no per-step stack or cat); the backward computes
every derivative that does not depend on the incoming gradient for all steps at once, walks the steps
in reverse with only the unavoidable per-step work, and forms the parameter gradients after the loop
(or forms them per step and sums once). Gradients then flow on through ordinary autograd, from the block
tensors to theta. Tests check it against the plain autograd path to 1e-12.

Notation: N batch, L steps, D hidden, n block inputs, O block outputs.
Gate map of one step (``h`` = h_{t-1}, ``pre`` = the part computed from x_t for all steps at once):
- QKAN-LSTM:  gates = pre_t + Q(h)
- HQKAN-LSTM: gates = dec(Q(pre_t + E h)),  dec(z) = z W_d + b_d
with Q a spectral QKAN block (blocks.py: born or fast read-out) whose constant terms are folded into
``pre`` or b_d by the caller.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor

from . import kernel_scan
from .blocks import SpectralBlock, addmm_out


def fused_scan(
    block: SpectralBlock,
    pre: Tensor,
    h0: Tensor,
    c0: Tensor,
    enc_t: Tensor | None = None,
    dec_t: Tensor | None = None,
    dec_b: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """pre [N, L, P], h0, c0 [N, D] -> (output [N, L, D], h_n, c_n).

    QKAN-LSTM: ``block`` maps h [N, D] -> [N, 4D] and P = 4D. HQKAN-LSTM: enc_t E [D, n], dec_t W_d [O, 4D],
    dec_b b_d [4D] or None, ``block`` maps [N, n] -> [N, O] and P = n.
    """
    # the cells run the numba kernels (product_scan.py) where they apply; here they never do, and
    # QKANFORECAST_KERNEL=numba fails loudly
    kernel_scan.applies(block, pre, enc_t)
    out = FusedScan.apply(block, pre, h0, c0, enc_t, dec_t, dec_b, *block.tensors())
    return cast(tuple[Tensor, Tensor, Tensor], out)


class FusedScan(torch.autograd.Function):
    """(block, pre, h0, c0, E, W_d, b_d, *block.tensors()) -> (out [N, L, D], h_n, c_n)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        block: SpectralBlock,
        pre: Tensor,
        h0: Tensor,
        c0: Tensor,
        enc_t: Tensor | None,
        dec_t: Tensor | None,
        dec_b: Tensor | None,
        *block_tensors: Tensor | None,  # the block reads its own; passed so that autograd tracks them
    ) -> tuple[Tensor, Tensor, Tensor]:
        n, length = pre.shape[0], pre.shape[1]
        d = h0.shape[-1]
        block.begin(length, n)
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
                block.step(t, h_[t], pre_[t], out=s_[t])
            else:  # HQKAN-LSTM
                assert x_in is not None and lat is not None and dec_t is not None
                block.step(t, torch.addmm(pre_[t], h_[t], enc_t, out=x_in[t]), None, out=lat[t])
                addmm_out(dec_b, lat[t], dec_t, s_[t])
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
        block: SpectralBlock = ctx.block
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
                dh = block.step_backward(t, dg_[t])
            else:
                assert dec is not None and enc is not None
                de = block.step_backward(t, torch.mm(dg_[t], dec, out=dlat[t]))
                d_in.append(de)
                dh = de @ enc
        dg_all = dgates.view(length, n, 4 * d)
        grads = block.param_grads(dg_all if dlat is None else dlat)
        if dlat is None:
            return (None, dg_all.transpose(0, 1), dh, dc, None, None, None, *grads)
        assert x_in is not None and lat is not None
        d_x = torch.stack(d_in[::-1])  # [L, N, n]
        dg_flat = dg_all.reshape(length * n, 4 * d)
        d_enc = hs[:-1].reshape(length * n, d).t() @ d_x.reshape(length * n, -1)
        d_dec = lat.reshape(length * n, -1).t() @ dg_flat
        d_dec_b = dg_flat.sum(0) if ctx.has_dec_b else None
        return (None, d_x.transpose(0, 1), dh, dc, d_enc, d_dec, d_dec_b, *grads)
