"""The QKAN-LSTM recurrence on the numba kernels, chosen automatically where it applies: the born read-out's
scan on ``born_product_scan`` (kernels_infer.py: one product over the batch per step), the fast
read-out's on ``kernel_scan`` (kernels.py: each sample's sequence in one loop).

``kernel_scan`` is a drop-in for ``fused_scan`` (scan.py) on a QKAN-LSTM cell (no encoder or decoder)
with a spectral block, on CPU tensors of float32 or float64. The torch path stays the reference and the
fallback: without numba, on another device or dtype, for the HQKAN-LSTM, or with
``QKANFORECAST_KERNEL=torch`` in the environment (``numba`` forces the kernels and fails loudly where they
cannot run). Tests hold the two paths to 1e-12 in float64 and, in float32, to 1e-6 of each tensor's scale
at the default initialisation and never further from the float64 result than the torch path itself
(outputs and every gradient). Where a trained model's recurrence amplifies float32 rounding, the two
float32 paths differ by about as much as each differs from float64.

Under ``torch.no_grad`` (forecasting) the kernels run the forward alone and allocate no buffer for the
backward (the born read-out keeps one step's features and gates, not every step's). With gradients, the
forward saves per sample and step what the backward needs; the weight gradients are one matrix product
over all steps and samples afterwards (torch).

Threads: the born scan runs blocks of 1,024 samples, one block per thread, its products on torch's
threads. The fast scan splits the batch into as many parts as torch has threads
(``torch.get_num_threads()``, which the CLI's ``--threads`` sets through OMP_NUM_THREADS), each run by a
kernel without the GIL, so the two never oversubscribe the machine.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any, cast

import torch
from torch import Tensor

from .blocks import BornBlock, FastBlock, SpectralBlock

_ENV = "QKANFORECAST_KERNEL"
_CHOICES = ("auto", "numba", "torch")


def backend() -> str:
    """``auto``, ``numba`` or ``torch``: the choice in $QKANFORECAST_KERNEL (default ``auto``)."""
    value = os.environ.get(_ENV, "auto").strip().lower() or "auto"
    if value not in _CHOICES:
        raise ValueError(f"{_ENV} must be one of {', '.join(_CHOICES)}, got {value!r}")
    return value


@cache
def numba_available() -> bool:
    """Whether numba can be imported (the optional extra ``[fast]``)."""
    return importlib.util.find_spec("numba") is not None


def applies(block: SpectralBlock, pre: Tensor, enc_t: Tensor | None) -> bool:
    """Whether the kernels run this scan: a QKAN-LSTM with a spectral block, CPU float32 or float64, numba
    installed and not switched off."""
    choice = backend()
    if choice == "torch":
        return False
    supported = (
        enc_t is None
        and isinstance(block, BornBlock | FastBlock)
        and pre.device.type == "cpu"
        and pre.dtype in (torch.float32, torch.float64)
    )
    if choice == "numba":
        if not numba_available():
            raise RuntimeError(f"{_ENV}=numba but numba is not installed (pip install 'qkanforecast[fast]')")
        if not supported:
            raise RuntimeError(f"{_ENV}=numba but the kernels do not cover this scan")
        return True
    return supported and numba_available()


def _kernels() -> Any:
    from . import kernels

    return kernels


def _kernels_infer() -> Any:
    from . import kernels_infer

    return kernels_infer


def _parallel(n: int, unit: int, fn: Callable[[int, int], None]) -> None:
    """fn(lo, hi) over consecutive parts of range(n), cut at multiples of ``unit``, one part per torch thread
    (the kernels release the GIL; ``torch.get_num_threads()`` follows the CLI's --threads)."""
    parts = max(1, min(torch.get_num_threads(), -(-n // unit)))
    if parts == 1:
        fn(0, n)
        return
    units = -(-n // unit)
    cuts = [min(n, unit * (units * p // parts)) for p in range(parts + 1)]
    with ThreadPoolExecutor(parts) as pool:
        for f in [pool.submit(fn, lo, hi) for lo, hi in zip(cuts, cuts[1:], strict=False) if hi > lo]:
            f.result()


def _np(t: Tensor) -> Any:
    return t.detach().contiguous().numpy()


def _call(
    kernel: Any, inputs: list[Any], buffers: list[Tensor], shared: tuple[Any, ...], step_major: int = 0
) -> Any:
    """(lo, hi, *extra) -> kernel(*inputs[lo:hi], *shared, *buffers[lo:hi], *extra): one part of the batch.
    Inputs are sample-major [N, ...]; buffers too, except the last ``step_major`` ones, [L, N, ...] (empty
    buffers stay empty)."""
    arrays = [b.numpy() for b in buffers]
    first = len(arrays) - step_major

    def call(lo: int, hi: int, *extra: Any) -> None:
        def cut(a: Any, axis: int = 0) -> Any:
            if not a.shape[0]:
                return a
            return a[lo:hi] if axis == 0 else a[:, lo:hi]

        cuts = [cut(a, int(i >= first)) for i, a in enumerate(arrays)]
        kernel(*(cut(a) for a in inputs), *shared, *cuts, *extra)

    return call


def kernel_scan(block: SpectralBlock, pre: Tensor, h0: Tensor, c0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """pre [N, L, 4D], h0, c0 [N, D] -> (output [N, L, D], h_n, c_n), as ``fused_scan``."""
    tensors = block.tensors()
    save = _needs_grad(pre, h0, c0, *tensors)
    fn = _BornScan if isinstance(block, BornBlock) else _FastScan
    out = fn.apply(block, save, pre, h0, c0, *tensors)
    return cast(tuple[Tensor, Tensor, Tensor], out)


def _needs_grad(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def product_applies(bh: SpectralBlock, x: Tensor) -> bool:
    """Whether ``born_product_scan`` runs a QKAN-LSTM cell's scan: the born read-out where the kernels
    apply."""
    return isinstance(bh, BornBlock) and applies(bh, x, None)


def born_product_scan(
    bx: BornBlock, bh: BornBlock, bias: Tensor | None, x: Tensor, h0: Tensor, c0: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """A born QKAN-LSTM cell's scan: x [N, L, F], h0, c0 [N, D] -> (out [N, L, D], h_n, c_n).

    bx, bh: the layer's blocks of x and of h; ``bias`` the cell's gate bias [G] or None. Per step the
    gates [G, N] = W^T @ features [K, N] are one product over the batch (torch), the input part included,
    between loops over the batch (kernels_infer.py): the features of x_t and h_{t-1} before, the LSTM
    update after; the backward likewise. Without gradients nothing is kept for the backward.
    """
    d = h0.shape[-1]
    add = bx.bias if bx.bias is not None else torch.zeros(4 * d, dtype=x.dtype)
    for extra in (bh.bias, bias):
        add = add if extra is None else add + extra
    wt = torch.cat([bx.wt, bh.wt, add[None]]).t().contiguous()  # [G, K]: the last feature row is ones
    save = _needs_grad(x, h0, c0, wt)
    out = _BornProduct.apply(bh.reps, bh.bw is not None, save, x, h0, c0, wt)
    return cast(tuple[Tensor, Tensor, Tensor], out)


# samples per product in born_product_scan (threads take whole blocks): a fixed width, because BLAS sums
# in an order that depends on the width, and the result must not depend on the threads; 1,024 (the
# forecast's chunk) measured faster than 512 (per-step overhead) at one thread
_BLOCK = 1024


def _blocks(n: int) -> list[tuple[int, int]]:
    return [(lo, min(n, lo + _BLOCK)) for lo in range(0, n, _BLOCK)]


def _each(run: Callable[[int], None], lo: int, hi: int) -> None:
    """run(i) for i in range(lo, hi), without autograd (a worker thread starts with it on)."""
    with torch.no_grad():
        for i in range(lo, hi):
            run(i)


class _BornProduct(torch.autograd.Function):
    """(reps, has_bw, save, x, h0, c0, wt) -> (out, h_n, c_n); wt [G, K] the weight of the features
    [x trig, x silu, h trig, h silu, 1]; ``save`` whether to keep the buffers of the backward, per block
    of samples, batch last: features [L, K, n], activated gates [L, G, n], c and h [L + 1, D, n], tanh c
    [L, D, n]."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, reps: int, has_bw: bool, save: bool, x: Tensor, h0: Tensor, c0: Tensor, wt: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        k = _kernels_infer()
        n, length, _ = x.shape
        d = h0.shape[-1]
        g4, nk = wt.shape
        kw: dict[str, Any] = {"dtype": x.dtype}
        out, h_n, c_n = torch.empty(n, length, d, **kw), torch.empty(n, d, **kw), torch.empty(n, d, **kw)
        xs, outs = _np(x), out.numpy()
        blocks = _blocks(n)
        saved: list[list[Tensor]] = [[] for _ in blocks]
        ls = length if save else 1  # steps kept

        def run(i: int) -> None:
            lo, hi = blocks[i]
            m = hi - lo
            feats, acts = torch.empty(ls, nk, m, **kw), torch.empty(ls, g4, m, **kw)
            cs, hs = torch.empty(ls + 1, d, m, **kw), torch.empty(ls + 1, d, m, **kw)  # c, h before and after
            tcs = torch.empty(ls, d, m, **kw)
            feats[:, -1] = 1
            cs[0], hs[0] = c0[lo:hi].t(), h0[lo:hi].t()
            f_, a_, c_, h_, tc_ = (b.numpy() for b in (feats, acts, cs, hs, tcs))
            x_, o_ = xs[lo:hi], outs[lo:hi]
            bounded = bool(hs[0].abs().max() <= 1)  # |h| <= 1 after the first step anyway
            for t in range(length):
                s, p, p1 = (t, t, t + 1) if save else (0, t % 2, 1 - t % 2)  # c_prev and c: never one array
                k.born_features(x_, t, h_[p], reps, has_bw, bounded, f_[s])
                torch.mm(wt, feats[s], out=acts[s])
                k.born_cell(a_[s], t, c_[p], c_[p1], h_[p1], tc_[s], o_)
                bounded = True
            last = length if save else length % 2
            h_n[lo:hi], c_n[lo:hi] = hs[last].t(), cs[last].t()
            if save:
                saved[i] = [feats, acts, cs, hs, tcs]

        _parallel(len(blocks), 1, lambda a, b: _each(run, a, b))
        if save:
            ctx.save_for_backward(x, wt, *(t for block in saved for t in block))
            ctx.meta = (reps, has_bw, blocks)
        return out, h_n, c_n

    @staticmethod
    def backward(ctx: Any, dout: Tensor, dh_n: Tensor, dc_n: Tensor) -> tuple[Tensor | None, ...]:
        k = _kernels_infer()
        x, wt, *saved = ctx.saved_tensors
        reps, has_bw, blocks = ctx.meta
        n, length, d = dout.shape
        kw: dict[str, Any] = {"dtype": dout.dtype}
        w = wt.t().contiguous()  # [K, G]
        want_dx = ctx.needs_input_grad[3]
        dx = torch.zeros(n, length, x.shape[2], **kw) if want_dx else torch.empty(0, 0, 0, **kw)
        dh0, dc0 = torch.empty(n, d, **kw), torch.empty(n, d, **kw)
        xs, douts, dxs = _np(x), _np(dout), dx.numpy()
        dwts: list[Tensor] = [wt] * len(blocks)

        def run(i: int) -> None:
            lo, hi = blocks[i]
            feats, acts, cs, hs, tcs = saved[5 * i : 5 * i + 5]
            dh, dc = dh_n[lo:hi].t().contiguous(), dc_n[lo:hi].t().contiguous()
            dgs = torch.empty_like(acts)  # [L, G, n]
            dfeat = torch.empty(feats.shape[1], hi - lo, **kw)
            f_, a_, c_, h_, tc_, dg_ = (b.numpy() for b in (feats, acts, cs, hs, tcs, dgs))
            dh_, dc_, df_ = dh.numpy(), dc.numpy(), dfeat.numpy()
            x_, do_, dx_ = xs[lo:hi], douts[lo:hi], dxs[lo:hi] if want_dx else dxs
            for t in range(length - 1, -1, -1):
                k.born_dgates(do_, t, a_[t], c_[t], tc_[t], dh_, dc_, dg_[t])
                torch.mm(w, dgs[t], out=dfeat)
                k.born_dinputs(df_, f_[t], x_, t, h_[t], reps, has_bw, dh_, dx_)
            dh0[lo:hi], dc0[lo:hi] = dh.t(), dc.t()
            dwts[i] = torch.bmm(dgs, feats.transpose(1, 2)).sum(0)  # [G, K]

        _parallel(len(blocks), 1, lambda a, b: _each(run, a, b))
        dwt = dwts[0]
        for extra in dwts[1:]:
            dwt = dwt + extra
        return None, None, None, dx if want_dx else None, dh0, dc0, dwt


class _BornScan(torch.autograd.Function):
    """(block, save, pre, h0, c0, wt) -> (out, h_n, c_n); wt [F, G] is the block's weight (``tensors()``),
    ``save`` whether to keep the buffers of the backward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, block: BornBlock, save: bool, pre: Tensor, h0: Tensor, c0: Tensor, wt: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        k = _kernels()
        n, length, g4 = pre.shape
        d = h0.shape[-1]
        nf = wt.shape[0]
        kw: dict[str, Any] = {"dtype": pre.dtype}
        out, h_n, c_n = torch.empty(n, length, d, **kw), torch.empty(n, d, **kw), torch.empty(n, d, **kw)
        m = (length, n) if save else (0, 0)  # step-major, see born_forward
        feats, acts = torch.empty(*m, nf, **kw), torch.empty(*m, g4, **kw)
        cs = torch.empty(m[0] + save, m[1], d, **kw)
        tcs = torch.empty(*m, d, **kw)
        has_bw = block.bw is not None
        slopes = torch.empty(*(m if has_bw else (0, 0)), d, **kw)
        buffers = [out, h_n, c_n, feats, acts, cs, tcs, slopes]
        shared = (_np(wt), block.reps, has_bw, save)
        _parallel(n, 1, _call(k.born_forward, [_np(pre), _np(h0), _np(c0)], buffers, shared, step_major=5))
        if save:
            ctx.save_for_backward(wt, feats, acts, cs, tcs, slopes)
            ctx.meta = (block.reps, has_bw)
        return out, h_n, c_n

    @staticmethod
    def backward(ctx: Any, dout: Tensor, dh_n: Tensor, dc_n: Tensor) -> tuple[Tensor | None, ...]:
        k = _kernels()
        wt, feats, acts, cs, tcs, slopes = ctx.saved_tensors
        reps, has_bw = ctx.meta
        n, length, d = dout.shape
        dpre = torch.empty(length, n, wt.shape[1], dtype=dout.dtype)  # step-major
        dh0, dc0 = torch.empty(n, d, dtype=dout.dtype), torch.empty(n, d, dtype=dout.dtype)
        inputs = [_np(dout), _np(dh_n), _np(dc_n)]
        buffers = [dh0, dc0, feats, acts, cs, tcs, slopes, dpre]
        shared = (_np(wt.t()), reps, has_bw)
        call = _call(k.born_backward, inputs, buffers, shared, step_major=6)
        _parallel(n, 1, call)
        dwt = feats.view(length * n, -1).t() @ dpre.view(length * n, -1)
        return None, None, dpre.transpose(0, 1), dh0, dc0, dwt


_CHUNK = 16  # samples per partial sum of the fast read-out's coefficient gradients (fixed: deterministic)


def _opt(t: Tensor | None, shape: tuple[int, ...], dtype: torch.dtype) -> Any:
    """An optional block tensor as a numpy array of ``shape``, or an empty [0, 0] one for None."""
    if t is None:
        return torch.empty(0, 0, dtype=dtype).numpy()
    return _np(t.reshape(shape))


class _FastScan(torch.autograd.Function):
    """(block, save, pre, h0, c0, cz, ct, bwt, pw_t) -> (out, h_n, c_n), with the block's ``tensors()``:
    cz [D, 1, G] (constant terms), ct [D, T, G], bwt [D, G] or None, pw_t [D, 1, G] or None."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        block: FastBlock,
        save: bool,
        pre: Tensor,
        h0: Tensor,
        c0: Tensor,
        cz: Tensor,
        ct: Tensor,
        bwt: Tensor | None,
        pw_t: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        k = _kernels()
        n, length, g4 = pre.shape
        d = h0.shape[-1]
        kw: dict[str, Any] = {"dtype": pre.dtype}
        eps = torch.finfo(pre.dtype).eps
        out, h_n, c_n = torch.empty(n, length, d, **kw), torch.empty(n, d, **kw), torch.empty(n, d, **kw)
        m = (n, length) if save else (0, 0)
        feats, acts = torch.empty(*m, ct.shape[1] * d, **kw), torch.empty(*m, g4, **kw)
        sil, tcs, slopes = (torch.empty(*m, d, **kw) for _ in range(3))
        cs = torch.empty(m[0], m[1] + save, d, **kw)
        bw, pw = _opt(bwt, (d, g4), pre.dtype), _opt(pw_t, (d, g4), pre.dtype)
        args = (_np(cz.reshape(d, g4)), _np(ct), bw, pw, block.reps, eps**2)
        buffers = [out, h_n, c_n, feats, sil, acts, cs, tcs, slopes]
        _parallel(n, 1, _call(k.fast_forward, [_np(pre), _np(h0), _np(c0)], buffers, shared=(*args, save)))
        if save:
            ctx.save_for_backward(feats, sil, acts, cs, tcs, slopes)
            ctx.args = args
        return out, h_n, c_n

    @staticmethod
    def backward(ctx: Any, dout: Tensor, dh_n: Tensor, dc_n: Tensor) -> tuple[Tensor | None, ...]:
        k = _kernels()
        feats, sil, acts, cs, tcs, slopes = ctx.saved_tensors
        cz, ct, bw, pw, reps, tiny = ctx.args
        n, length, d = dout.shape
        g4 = acts.shape[2]
        kw: dict[str, Any] = {"dtype": dout.dtype}
        cap = 1 / math.sqrt(torch.finfo(dout.dtype).eps)
        # d z / dx in the features: [cos kx, sin kx] -> [-k sin kx, k cos kx], halves swapped, times k
        k_ = torch.arange(1, reps + 1, dtype=dout.dtype)
        dct = _np((torch.from_numpy(ct) * torch.cat([-k_, k_])[:, None]).roll(reps, dims=1))
        has_pw = pw.shape[0] > 0
        dpre = torch.empty(n, length, g4, **kw)
        dh0, dc0 = torch.empty(n, d, **kw), torch.empty(n, d, **kw)
        acc = torch.zeros((n + _CHUNK - 1) // _CHUNK, d, 2 * reps + 1 + has_pw, g4, dtype=torch.float64)
        inputs = [_np(dout), _np(dh_n), _np(dc_n)]
        buffers = [feats, acts, cs, tcs, slopes, dpre, dh0, dc0]
        shared = (cz, ct, dct, bw, pw, reps, tiny, cap, _CHUNK)
        acc_np = acc.numpy()

        def part(lo: int, hi: int) -> None:  # lo, hi: multiples of _CHUNK (hi = n at the end)
            call = _call(k.fast_backward, inputs, buffers, shared=shared)
            call(lo, hi, acc_np[lo // _CHUNK : -(-hi // _CHUNK)])

        _parallel(n, _CHUNK, part)
        sums = acc.sum(0).to(dout.dtype)
        nt = 2 * reps
        dcz, dct_ = sums[:, nt : nt + 1], sums[:, :nt]
        dpw = sums[:, nt + 1 :] if has_pw else None
        dbw = None
        if bw.shape[0] > 0:
            dbw = sil.view(n * length, d).t() @ dpre.view(n * length, g4)
        return None, None, dpre, dh0, dc0, dcz, dct_, dbw, dpw


def warm_up() -> list[str]:
    """Compile every kernel for float32 and float64 into numba's on-disk cache (``make install`` runs it:
    a first compile takes tens of seconds); returns what ran. Nothing happens without numba."""
    if not numba_available():
        return []
    from ..config import QKANSpec
    from .lstm import QKANLSTM

    done = []
    for dtype in (torch.float32, torch.float64):
        for readout in ("born", "fast"):
            model = QKANLSTM(1, 2, spec=QKANSpec(readout=readout)).to(dtype)  # type: ignore[arg-type]
            model(torch.zeros(2, 3, 1, dtype=dtype))[0].sum().backward()
            with torch.no_grad():  # the forecast's kernels (born_infer)
                model(torch.zeros(2, 3, 1, dtype=dtype))
            done.append(f"{readout} {str(dtype).removeprefix('torch.')}")
    return done
