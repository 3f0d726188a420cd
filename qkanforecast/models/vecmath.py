"""exp, sin and cos that LLVM can vectorise inside numba loops (libm calls cannot be; needs numba).

The kernels (kernels.py) spend most of their time in the gate nonlinearities and the trig features: as
scalar libm calls, 5-15 ns each, about 60 per sample and step. These versions are branch-free
polynomials with the exponent set by integer arithmetic on the bits (an LLVM bitcast), so a loop over
32 gates runs 8 (float32) or 4 (float64) lanes at a time. Accuracy: a few ulps of the dtype (tests
compare them with numpy to 4 ulps).

- ``vexp(x)``: Cephes' range reduction x = n ln2 + r, |r| <= ln2 / 2, a degree-7 (float32) or degree-13
  (float64) polynomial, times 2^n built from the bits. Arguments are clamped to +-80 (float32) or +-700
  (float64): enough for the sigmoids, whose results do not change beyond.
- ``vsin1(x)``, ``vcos1(x)``: Taylor polynomials for |x| <= 1 (the hidden state of an LSTM, h = o tanh c,
  always is), to degree 9/10 (float32) or 17/18 (float64): the first omitted term is below 1/4 ulp.

numba's on-disk cache keys on the file of the kernels (kernels.py) alone: after editing this file,
touch kernels.py, or the cached kernels keep the old versions.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload


@intrinsic
def _bits_to_float(typingctx, x):  # type: ignore[no-untyped-def]
    """int32 -> float32, int64 -> float64, the same bits."""
    if x == types.int32:
        sig, irt = types.float32(types.int32), ir.FloatType()
    elif x == types.int64:
        sig, irt = types.float64(types.int64), ir.DoubleType()
    else:
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], irt)

    return sig, codegen


@intrinsic
def _float_to_bits(typingctx, x):  # type: ignore[no-untyped-def]
    """float32 -> int32, float64 -> int64, the same bits."""
    if x == types.float32:
        sig, irt = types.int32(types.float32), ir.IntType(32)
    elif x == types.float64:
        sig, irt = types.int64(types.float64), ir.IntType(64)
    else:
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], irt)

    return sig, codegen


def vexp(x: float) -> float:
    """e^x (numba only)."""
    raise NotImplementedError


def vsin1(x: float) -> float:
    """sin x for |x| <= 1 (numba only)."""
    raise NotImplementedError


def vcos1(x: float) -> float:
    """cos x for |x| <= 1 (numba only)."""
    raise NotImplementedError


@overload(vexp, inline="always")
def _vexp(x):  # type: ignore[no-untyped-def]
    if x == types.float32:
        f = np.float32
        shift = f(12582912.0)  # 1.5 * 2^23: adding it rounds to an integer held in the low bits
        shift_bits = np.int32(0x4B400000)

        def exp32(x):  # type: ignore[no-untyped-def]
            x = min(max(x, f(-80.0)), f(80.0))
            t = x * f(1.44269504088896341) + shift
            n = t - shift
            r = (x - n * f(0.693359375)) - n * f(-2.12194440e-4)
            p = f(1.9875691500e-4) * r + f(1.3981999507e-3)
            p = p * r + f(8.3334519073e-3)
            p = p * r + f(4.1665795894e-2)
            p = p * r + f(1.6666665459e-1)
            p = p * r + f(5.0000001201e-1)
            p = p * r * r + r + f(1.0)
            scale = _bits_to_float(np.int32((_float_to_bits(t) - shift_bits + np.int32(127)) << np.int32(23)))
            return p * scale

        return exp32
    if x == types.float64:
        shift64 = 6755399441055744.0  # 1.5 * 2^52
        shift64_bits = np.int64(0x4338000000000000)
        c = [1.0 / np.prod(np.arange(1.0, k + 1)) for k in range(14)]
        c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13 = c[2:]

        def exp64(x):  # type: ignore[no-untyped-def]
            x = min(max(x, -700.0), 700.0)
            t = x * 1.4426950408889634 + shift64
            n = t - shift64
            r = (x - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10
            p = c13 * r + c12
            p = p * r + c11
            p = p * r + c10
            p = p * r + c9
            p = p * r + c8
            p = p * r + c7
            p = p * r + c6
            p = p * r + c5
            p = p * r + c4
            p = p * r + c3
            p = p * r + c2
            p = p * r * r + r + 1.0
            scale = _bits_to_float((_float_to_bits(t) - shift64_bits + np.int64(1023)) << np.int64(52))
            return p * scale

        return exp64
    return None


def _taylor(first: int, last: int) -> list[float]:
    """(-1)^k / (first + 2k)! for the terms first, first + 2, ..., last."""
    out = []
    for k, m in enumerate(range(first, last + 1, 2)):
        out.append((-1.0) ** k / float(np.prod(np.arange(1.0, m + 1))))
    return out


@overload(vsin1, inline="always")
def _vsin1(x):  # type: ignore[no-untyped-def]
    if x not in (types.float32, types.float64):
        return None
    dtype, last = (np.float32, 9) if x == types.float32 else (np.float64, 17)
    cs = tuple(dtype(v) for v in _taylor(1, last))
    n = len(cs)

    def sin1(x):  # type: ignore[no-untyped-def]
        y = x * x
        p = cs[n - 1]
        for k in range(n - 2, -1, -1):
            p = p * y + cs[k]
        return p * x

    return sin1


@overload(vcos1, inline="always")
def _vcos1(x):  # type: ignore[no-untyped-def]
    if x not in (types.float32, types.float64):
        return None
    dtype, last = (np.float32, 10) if x == types.float32 else (np.float64, 18)
    cs = tuple(dtype(v) for v in _taylor(0, last))
    n = len(cs)

    def cos1(x):  # type: ignore[no-untyped-def]
        y = x * x
        p = cs[n - 1]
        for k in range(n - 2, -1, -1):
            p = p * y + cs[k]
        return p

    return cos1


def vsigmoid(x: float) -> float:
    """1 / (1 + e^-x) in the dtype of x (numba only)."""
    raise NotImplementedError


def vtanh(x: float) -> float:
    """tanh x = 2 sigmoid(2x) - 1, to a few ulps of 1 (numba only)."""
    raise NotImplementedError


@overload(vsigmoid, inline="always")
def _vsigmoid(x):  # type: ignore[no-untyped-def]
    if x not in (types.float32, types.float64):
        return None
    one = np.float32(1.0) if x == types.float32 else 1.0

    def sigmoid(x):  # type: ignore[no-untyped-def]
        return one / (one + vexp(-x))

    return sigmoid


@overload(vtanh, inline="always")
def _vtanh(x):  # type: ignore[no-untyped-def]
    if x not in (types.float32, types.float64):
        return None
    one = np.float32(1.0) if x == types.float32 else 1.0
    two = one + one

    def tanh(x):  # type: ignore[no-untyped-def]
        return two / (one + vexp(-two * x)) - one

    return tanh


def like(x: float, v: float) -> float:
    """v as a number of x's type (numba only): keeps float32 arithmetic in float32 (a Python float
    literal would make it float64)."""
    raise NotImplementedError


@overload(like, inline="always")
def _like(x, v):  # type: ignore[no-untyped-def]
    if x == types.float32:
        return lambda x, v: np.float32(v)
    if x == types.float64:
        return lambda x, v: np.float64(v)
    return None
