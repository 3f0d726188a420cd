"""A QKAN-LSTM cell's scan with one product over the batch per time step (kernels.py), for both
read-outs of the spectral solver, chosen where the numba kernels apply (``kernel_scan.applies``).

Per step the gates [G, N] come from the features [K, N] of x_t and h_{t-1} (the input part included: no
[N, L, G] tensor of it is made): for the born read-out one matrix product W^T @ features (torch), for the
fast one ``fast_gates`` (numba, the square roots of every edge); then ``born_cell``. The backward walks
the steps in reverse the same way and forms the weight gradients with batched products (torch). Samples
are taken in blocks of ``_BLOCK`` with the batch last; without gradients (forecasting) one step's buffers
are kept, not every step's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor

from . import kernel_scan
from .blocks import BornBlock, FastBlock, SpectralBlock

# samples per block (threads take whole blocks): a fixed width, because BLAS sums in an order that depends
# on the width, and the result must not depend on the threads; 1,024 (the forecast's chunk) measured
# faster than 512 (per-step overhead) at one thread
_BLOCK = 1024


def applies(bh: SpectralBlock, x: Tensor) -> bool:
    """Whether ``product_scan`` runs a QKAN-LSTM cell's scan (a spectral block where the kernels apply)."""
    return kernel_scan.applies(bh, x, None)


def product_scan(
    bx: SpectralBlock, bh: SpectralBlock, bias: Tensor | None, x: Tensor, h0: Tensor, c0: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """x [N, L, F], h0, c0 [N, D] -> (out [N, L, D], h_n, c_n); bx, bh: the layer's blocks of x and of h,
    ``bias`` the cell's gate bias [G] or None."""
    g4 = 4 * h0.shape[-1]
    add = torch.zeros(g4, dtype=x.dtype)
    for extra in (bx.bias, bh.bias, bias):
        add = add if extra is None else add + extra
    weights: list[Tensor | None]
    if isinstance(bh, BornBlock):
        bx = cast(BornBlock, bx)
        weights = [torch.cat([bx.wt, bh.wt, add[None]]).t().contiguous()]  # [G, K]: the last row is ones
    else:
        fx, fh = cast(FastBlock, bx), cast(FastBlock, bh)
        weights = [add, torch.cat([fx.c0, fh.c0]).squeeze(1), torch.cat([fx.ct, fh.ct])]  # [I, G], [I, T, G]
        for a, b in ((fx.pw_t, fh.pw_t), (fx.bwt, fh.bwt)):
            weights.append(None if a is None or b is None else torch.cat([a, b]).reshape(-1, g4))
    save = _needs_grad(x, h0, c0, *weights)
    out = _Product.apply(bh.reps, bh.bw is not None, save, x, h0, c0, *weights)
    return cast(tuple[Tensor, Tensor, Tensor], out)


def _needs_grad(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _blocks(n: int) -> list[tuple[int, int]]:
    return [(lo, min(n, lo + _BLOCK)) for lo in range(0, n, _BLOCK)]


def _each(run: Callable[[int], None], lo: int, hi: int) -> None:
    """run(i) for i in range(lo, hi), without autograd (a worker thread starts with it on)."""
    with torch.no_grad():
        for i in range(lo, hi):
            run(i)


def _run_blocks(run: Callable[[int], None], count: int) -> None:
    """run(i) for every block i, one thread per block up to torch's threads, each block's products on one
    thread: split further, products this small only wait for each other (a forecast of 100,000 windows
    took 44 s at two threads against 6 s at one on this shared machine). torch's thread count is global:
    it is set to 1 while the blocks run."""
    threads = torch.get_num_threads()
    if threads == 1:
        _each(run, 0, count)
        return
    torch.set_num_threads(1)
    try:
        kernel_scan._parallel(count, 1, lambda a, b: _each(run, a, b), threads)
    finally:
        torch.set_num_threads(threads)


def _np(t: Tensor | None, dtype: torch.dtype) -> Any:
    return torch.empty(0, 0, dtype=dtype).numpy() if t is None else t.detach().contiguous().numpy()


class _Product(torch.autograd.Function):
    """(reps, has_bw, save, x, h0, c0, *weights) -> (out, h_n, c_n). weights: born [wt] (wt [G, K], the
    weight of the features [x trig, x silu, h trig, h silu, 1]); fast [add [G], cz [I, G], ct [I, T, G],
    pw [I, G] or None, bw [I, G] or None] over the inputs I = F + D. ``save``: keep, per block of n
    samples, the features [L, K, n], activated gates [L, G, n], c and h [L + 1, D, n], tanh c [L, D, n]."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, reps: int, has_bw: bool, save: bool, x: Tensor, h0: Tensor, c0: Tensor, *weights: Any
    ) -> tuple[Tensor, Tensor, Tensor]:
        k = kernel_scan._kernels()
        n, length, nx = x.shape
        d, dt = h0.shape[-1], x.dtype
        nk = (nx + d) * (2 * reps + has_bw) + 1
        kw: dict[str, Any] = {"dtype": dt}
        out, h_n, c_n = torch.empty(n, length, d, **kw), torch.empty(n, d, **kw), torch.empty(n, d, **kw)
        xs, outs = _np(x, dt), out.numpy()
        blocks = _blocks(n)
        saved: list[list[Tensor]] = [[] for _ in blocks]
        ls = length if save else 1  # steps kept
        fast = len(weights) > 1
        w_ = [_np(w, dt) for w in weights]
        tiny = torch.finfo(dt).eps ** 2

        def run(i: int) -> None:
            lo, hi = blocks[i]
            m = hi - lo
            feats, acts = torch.empty(ls, nk, m, **kw), torch.empty(ls, 4 * d, m, **kw)
            cs, hs = torch.empty(ls + 1, d, m, **kw), torch.empty(ls + 1, d, m, **kw)  # c, h before and after
            tcs, zb = torch.empty(ls, d, m, **kw), torch.empty(m, **kw).numpy()
            feats[:, -1] = 1
            cs[0], hs[0] = c0[lo:hi].t(), h0[lo:hi].t()
            f_, a_, c_, h_, tc_ = (b.numpy() for b in (feats, acts, cs, hs, tcs))
            x_, o_ = xs[lo:hi], outs[lo:hi]
            bounded = bool(hs[0].abs().max() <= 1)  # |h| <= 1 after the first step anyway
            for t in range(length):
                s, p, p1 = (t, t, t + 1) if save else (0, t % 2, 1 - t % 2)  # c_prev and c: never one array
                k.born_features(x_, t, h_[p], reps, has_bw, bounded, f_[s])
                if fast:
                    add, cz, ct, pw, bw = w_
                    k.fast_gates(f_[s], nx, reps, has_bw, cz, ct, pw, bw, add, tiny, zb, a_[s])
                else:
                    torch.mm(cast(Tensor, weights[0]), feats[s], out=acts[s])
                k.born_cell(a_[s], t, c_[p], c_[p1], h_[p1], tc_[s], o_)
                bounded = True
            last = length if save else length % 2
            h_n[lo:hi], c_n[lo:hi] = hs[last].t(), cs[last].t()
            if save:
                saved[i] = [feats, acts, cs, hs, tcs]

        _run_blocks(run, len(blocks))
        if save:
            ctx.save_for_backward(x, *(w for w in weights if w is not None), *(t for bl in saved for t in bl))
            ctx.meta = (reps, has_bw, blocks, [w is not None for w in weights], w_, tiny)
        return out, h_n, c_n

    @staticmethod
    def backward(ctx: Any, dout: Tensor, dh_n: Tensor, dc_n: Tensor) -> tuple[Tensor | None, ...]:
        k = kernel_scan._kernels()
        reps, has_bw, blocks, present, w_, tiny = ctx.meta
        x, *rest = ctx.saved_tensors
        saved = rest[sum(present) :]
        n, length, d = dout.shape
        nx, nt, dt = x.shape[2], 2 * reps, dout.dtype
        kx = nx * (nt + has_bw)
        kw: dict[str, Any] = {"dtype": dt}
        fast = len(present) > 1
        cap = 1 / math.sqrt(torch.finfo(dt).eps)
        want_dx = ctx.needs_input_grad[3]
        dx = torch.zeros(n, length, nx, **kw) if want_dx else torch.empty(0, 0, 0, **kw)
        dh0, dc0 = torch.empty(n, d, **kw), torch.empty(n, d, **kw)
        xs, douts, dxs = _np(x, dt), _np(dout, dt), dx.numpy()
        grads: list[list[Tensor]] = [[] for _ in blocks]
        w = None if fast else rest[0].t().contiguous()  # [K, G]

        def run(i: int) -> None:
            lo, hi = blocks[i]
            m = hi - lo
            feats, acts, cs, hs, tcs = saved[5 * i : 5 * i + 5]
            dh, dc = dh_n[lo:hi].t().contiguous(), dc_n[lo:hi].t().contiguous()
            dgs = torch.empty_like(acts)  # [L, G, n]
            dfeat = torch.zeros(feats.shape[1], m, **kw)
            f_, a_, c_, h_, tc_, dg_ = (b.numpy() for b in (feats, acts, cs, hs, tcs, dgs))
            dh_, dc_, df_ = dh.numpy(), dc.numpy(), dfeat.numpy()
            x_, do_, dx_ = xs[lo:hi], douts[lo:hi], dxs[lo:hi] if want_dx else dxs
            if fast:
                _, cz, ct, pw, bw = w_
                ni = int(cz.shape[0])
                dz, zb = torch.empty(ni, 4 * d, m, **kw), torch.empty(m, **kw).numpy()
                gd = torch.empty(ni if pw.shape[0] else 0, 4 * d, m, **kw)
                dz_, gd_ = dz.numpy(), gd.numpy()
                f64 = torch.float64  # the sums over the steps, as precise as the torch path's
                dct, dcz = torch.zeros(ni, nt, 4 * d, dtype=f64), torch.zeros(ni, 4 * d, dtype=f64)
                dpw = torch.zeros(ni, 4 * d, dtype=f64)
            for t in range(length - 1, -1, -1):
                k.born_dgates(do_, t, a_[t], c_[t], tc_[t], dh_, dc_, dg_[t])
                if fast:
                    args = (cz, ct, pw, bw, tiny, cap, dg_[t], zb, dz_, gd_, df_)
                    k.fast_dedges(f_[t], nx, reps, has_bw, *args)
                    trig_x = feats[t, : nx * nt].view(nx, nt, m)
                    trig_h = feats[t, kx : kx + d * nt].view(d, nt, m)
                    dct[:nx] += torch.bmm(trig_x, dz[:nx].transpose(1, 2))
                    dct[nx:] += torch.bmm(trig_h, dz[nx:].transpose(1, 2))
                    dcz += dz.sum(2)
                    if gd.shape[0]:
                        dpw += gd.sum(2)
                else:
                    torch.mm(cast(Tensor, w), dgs[t], out=dfeat)
                k.born_dinputs(df_, f_[t], x_, t, h_[t], reps, has_bw, dh_, dx_)
            dh0[lo:hi], dc0[lo:hi] = dh.t(), dc.t()
            if not fast:
                grads[i] = [torch.bmm(dgs, feats.transpose(1, 2)).sum(0)]  # [G, K]
                return
            grads[i] = [dgs.sum((0, 2)), dcz, dct, dpw]
            if has_bw:  # silu rows of x's and h's inputs
                sil = torch.cat([feats[:, nx * nt : kx], feats[:, kx + d * nt : -1]], dim=1)  # [L, I, n]
                grads[i].append(torch.bmm(sil, dgs.transpose(1, 2)).sum(0))  # [I, G]

        _run_blocks(run, len(blocks))
        total = grads[0]
        for more in grads[1:]:
            total = [a + b for a, b in zip(total, more, strict=True)]
        if fast:
            out: list[Tensor | None] = [g.to(dt) for g in total[:3]]
            out.append(total[3].to(dt) if present[3] else None)
            out.append(total[4].to(dt) if present[4] else None)
        else:
            out = list(total)
        return (None, None, None, dx if want_dx else None, dh0, dc0, *out)
