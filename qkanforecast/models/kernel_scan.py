"""Where the numba kernels of the QKAN-LSTM recurrence (kernels.py, run by product_scan.py) apply,
and their threads and compilation.

They run a QKAN-LSTM cell (no encoder or decoder) with a spectral block, on CPU tensors of float32 or
float64. The torch path stays the reference and the
fallback: without numba, on another device or dtype, for the HQKAN-LSTM, or with
``QKANFORECAST_KERNEL=torch`` in the environment (``numba`` forces the kernels and fails loudly where they
cannot run). Tests hold the two paths to 1e-12 in float64 and, in float32, to 1e-6 of each tensor's scale
at the default initialisation and never further from the float64 result than the torch path itself
(outputs and every gradient). Where a trained model's recurrence amplifies float32 rounding, the two
float32 paths differ by about as much as each differs from float64.

Under ``torch.no_grad`` (forecasting) they keep one step's buffers, not every step's.

Threads: the scan runs blocks of 1,024 samples, one block per thread (``torch.get_num_threads()``, which
the CLI's ``--threads`` sets through OMP_NUM_THREADS), its products on torch's threads.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

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


def _parallel(n: int, unit: int, fn: Callable[[int, int], None], threads: int | None = None) -> None:
    """fn(lo, hi) over consecutive parts of range(n), cut at multiples of ``unit``, one part per thread:
    ``threads``, by default torch's (the kernels release the GIL; ``torch.get_num_threads()`` follows the
    CLI's --threads)."""
    parts = max(1, min(threads or torch.get_num_threads(), -(-n // unit)))
    if parts == 1:
        fn(0, n)
        return
    units = -(-n // unit)
    cuts = [min(n, unit * (units * p // parts)) for p in range(parts + 1)]
    with ThreadPoolExecutor(parts) as pool:
        for f in [pool.submit(fn, lo, hi) for lo, hi in zip(cuts, cuts[1:], strict=False) if hi > lo]:
            f.result()


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
