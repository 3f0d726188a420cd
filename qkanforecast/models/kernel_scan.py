"""The QKAN-LSTM recurrence on the numba kernels (kernels.py), chosen automatically where it applies.

``kernel_scan`` is a drop-in for ``fused_scan`` (scan.py) on a QKAN-LSTM cell (no encoder or decoder)
with a spectral block, on CPU tensors of float32 or float64. The torch path stays the reference and the
fallback: without numba, on another device or dtype, for the HQKAN-LSTM, or with
``QKANFORECAST_KERNEL=torch`` in the environment (``numba`` forces the kernels and fails loudly where they
cannot run). Tests hold the two paths to 1e-12 in float64 and 1e-6 in float32, outputs and gradients.

Under ``torch.no_grad`` (forecasting) the kernel runs the forward alone and allocates no buffer for the
backward. With gradients, the forward saves per sample and step what the backward needs; the weight
gradients are one matrix product over all steps and samples afterwards (torch).

Threads: numba runs as many threads as torch (``torch.get_num_threads()``, which the CLI's ``--threads``
sets through OMP_NUM_THREADS), so the two never oversubscribe the machine.
"""

from __future__ import annotations

import importlib.util
import math
import os
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


def _threads() -> None:
    import numba

    most = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
    numba.set_num_threads(max(1, min(torch.get_num_threads(), most)))


def _np(t: Tensor) -> Any:
    return t.detach().contiguous().numpy()


def kernel_scan(block: SpectralBlock, pre: Tensor, h0: Tensor, c0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """pre [N, L, 4D], h0, c0 [N, D] -> (output [N, L, D], h_n, c_n), as ``fused_scan``."""
    tensors = block.tensors()
    save = _needs_grad(pre, h0, c0, *tensors)
    fn = _BornScan if isinstance(block, BornBlock) else _FastScan
    out = fn.apply(block, save, pre, h0, c0, *tensors)
    return cast(tuple[Tensor, Tensor, Tensor], out)


def _needs_grad(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


class _BornScan(torch.autograd.Function):
    """(block, pre, h0, c0, wt) -> (out, h_n, c_n); wt [F, G] = the block's weight (``tensors()``)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, block: BornBlock, save: bool, pre: Tensor, h0: Tensor, c0: Tensor, wt: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        k = _kernels()
        _threads()
        n, length, g4 = pre.shape
        d = h0.shape[-1]
        nf = wt.shape[0]
        kw: dict[str, Any] = {"dtype": pre.dtype}
        out, h_n, c_n = torch.empty(n, length, d, **kw), torch.empty(n, d, **kw), torch.empty(n, d, **kw)
        m = (n, length) if save else (0, 0)
        feats, acts = torch.empty(*m, nf, **kw), torch.empty(*m, g4, **kw)
        cs = torch.empty(m[0], m[1] + save, d, **kw)
        tcs = torch.empty(*m, d, **kw)
        has_bw = block.bw is not None
        slopes = torch.empty(*(m if has_bw else (0, 0)), d, **kw)
        k.born_forward(
            _np(pre), _np(h0), _np(c0), _np(wt), block.reps, has_bw, save,
            out.numpy(), h_n.numpy(), c_n.numpy(), feats.numpy(), acts.numpy(), cs.numpy(), tcs.numpy(),
            slopes.numpy(),
        )  # fmt: skip
        if save:
            ctx.save_for_backward(wt, feats, acts, cs, tcs, slopes)
            ctx.meta = (block.reps, has_bw)
        return out, h_n, c_n

    @staticmethod
    def backward(ctx: Any, dout: Tensor, dh_n: Tensor, dc_n: Tensor) -> tuple[Tensor | None, ...]:
        k = _kernels()
        _threads()
        wt, feats, acts, cs, tcs, slopes = ctx.saved_tensors
        reps, has_bw = ctx.meta
        n, length, d = dout.shape
        dpre = torch.empty(n, length, wt.shape[1], dtype=dout.dtype)
        dh0, dc0 = torch.empty(n, d, dtype=dout.dtype), torch.empty(n, d, dtype=dout.dtype)
        k.born_backward(
            _np(dout), _np(dh_n), _np(dc_n), _np(wt.t()), reps, has_bw,
            feats.numpy(), acts.numpy(), cs.numpy(), tcs.numpy(), slopes.numpy(),
            dpre.numpy(), dh0.numpy(), dc0.numpy(),
        )  # fmt: skip
        dwt = feats.view(n * length, -1).t() @ dpre.view(n * length, -1)
        return None, None, dpre, dh0, dc0, dwt


_CHUNK = 16  # samples per partial sum of the fast read-out's coefficient gradients (fixed: deterministic)


def _opt(t: Tensor | None, shape: tuple[int, ...]) -> Any:
    """An optional block tensor as a numpy array of ``shape``, or an empty [0, 0] one for None."""
    if t is None:
        return torch.empty(0, 0, dtype=torch.float64).numpy()
    return _np(t.reshape(shape))


class _FastScan(torch.autograd.Function):
    """(block, save, pre, h0, c0, c0_blk, ct, bwt, pw_t) -> (out, h_n, c_n), the block's ``tensors()``:
    c0_blk [D, 1, G], ct [D, T, G], bwt [D, G] or None, pw_t [D, 1, G] or None."""

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
        _threads()
        n, length, g4 = pre.shape
        d = h0.shape[-1]
        kw: dict[str, Any] = {"dtype": pre.dtype}
        eps = torch.finfo(pre.dtype).eps
        out, h_n, c_n = torch.empty(n, length, d, **kw), torch.empty(n, d, **kw), torch.empty(n, d, **kw)
        m = (n, length) if save else (0, 0)
        feats, acts = torch.empty(*m, ct.shape[1] * d, **kw), torch.empty(*m, g4, **kw)
        sil, tcs, slopes = (torch.empty(*m, d, **kw) for _ in range(3))
        cs = torch.empty(m[0], m[1] + save, d, **kw)
        args = (_np(cz.reshape(d, g4)), _np(ct), _opt(bwt, (d, g4)), _opt(pw_t, (d, g4)), block.reps, eps**2)
        k.fast_forward(
            _np(pre), _np(h0), _np(c0), *args, save,
            out.numpy(), h_n.numpy(), c_n.numpy(), feats.numpy(), sil.numpy(), acts.numpy(), cs.numpy(),
            tcs.numpy(), slopes.numpy(),
        )  # fmt: skip
        if save:
            ctx.save_for_backward(feats, sil, acts, cs, tcs, slopes)
            ctx.args = args
        return out, h_n, c_n

    @staticmethod
    def backward(ctx: Any, dout: Tensor, dh_n: Tensor, dc_n: Tensor) -> tuple[Tensor | None, ...]:
        k = _kernels()
        _threads()
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
        k.fast_backward(
            _np(dout), _np(dh_n), _np(dc_n), cz, ct, dct, bw, pw, reps, tiny, cap, _CHUNK,
            feats.numpy(), acts.numpy(), cs.numpy(), tcs.numpy(), slopes.numpy(),
            dpre.numpy(), dh0.numpy(), dc0.numpy(), acc.numpy(),
        )  # fmt: skip
        sums = acc.sum(0).to(dout.dtype)
        nt = 2 * reps
        dcz, dct_ = sums[:, nt : nt + 1], sums[:, :nt]
        dpw = sums[:, nt + 1 :] if has_pw else None
        dbw = None
        if bw.shape[0] > 0:
            dbw = sil.view(n * length, d).t() @ dpre.view(n * length, g4)
        return None, None, dpre, dh0, dc0, dcz, dct_, dbw, dpw
