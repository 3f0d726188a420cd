"""Numba kernels of the QKAN-LSTM forecast (no gradient): the element-wise part of one time step over the
whole batch, with the batch last (needs numba).

The training kernels (kernels.py) step each sample through its sequence with the gate product inside the
loop (a 56 x 32 product per sample and step, a few hundred nanoseconds in numba's code). Without a
backward there is nothing to keep per sample, so the forecast turns the loop inside out: per time step
one matrix product over the whole batch, gates [G, N] = W^T [G, K] @ features [K, N] (BLAS, through
torch), and one call of ``born_step`` for the rest, whose loops run over the batch (contiguous rows of N
samples, which vectorise). The features of x_t are part of the same product: no [N, L, G] tensor of the
input part is ever made.

Feature rows (K): the trig features of every input, [cos x .. cos rx, sin x .. sin rx] per input (F T
rows), silu of every input (F rows, with a base weight), the same of h_{t-1} (D T and D rows), then one
row of ones (the constant terms, the last row of W). Notation as in kernels.py.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .vecmath import like, vcos1, vsigmoid, vsin1, vtanh


@njit(cache=True, inline="always", error_model="numpy", fastmath={"contract"})
def _angles(feats: np.ndarray, at: int, reps: int, n: int) -> None:
    """Rows at + k and at + r + k (k = 1..r-1) of feats: cos (k+1)x, sin (k+1)x by angle addition from
    rows at (cos x) and at + r (sin x), one loop over the batch per row."""
    for k in range(1, reps):
        for b in range(n):
            c1, s1 = feats[at, b], feats[at + reps, b]
            ck, sk = feats[at + k - 1, b], feats[at + reps + k - 1, b]
            feats[at + k, b] = ck * c1 - sk * s1
            feats[at + reps + k, b] = sk * c1 + ck * s1


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def born_features(x, t, h, reps, has_bw, bounded, feats):  # type: ignore[no-untyped-def]
    """Features of step t into feats [K, N]: of x[:, t] (x [N, L, F]) and of h [D, N] (h_{t-1}).
    ``bounded``: every |h| <= 1 (true after the first step: h = o tanh c), where the polynomials hold."""
    n, _, nx = x.shape
    d = h.shape[0]
    nt = 2 * reps
    kx = nx * (nt + has_bw)
    for i in range(nx):
        at = i * nt
        for b in range(n):  # x is any size: libm
            xi = x[b, t, i]
            feats[at, b] = math.cos(xi)
            feats[at + reps, b] = math.sin(xi)
        _angles(feats, at, reps, n)
        if has_bw:
            for b in range(n):
                xi = x[b, t, i]
                feats[nx * nt + i, b] = xi * vsigmoid(xi)
    for q in range(d):
        at = kx + q * nt
        if bounded:
            for b in range(n):
                feats[at, b] = vcos1(h[q, b])
                feats[at + reps, b] = vsin1(h[q, b])
        else:
            for b in range(n):
                feats[at, b] = math.cos(h[q, b])
                feats[at + reps, b] = math.sin(h[q, b])
        _angles(feats, at, reps, n)
        if has_bw:
            for b in range(n):
                feats[kx + d * nt + q, b] = h[q, b] * vsigmoid(h[q, b])


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def born_cell(gates, t, h, c, tc, out):  # type: ignore[no-untyped-def]
    """LSTM update of step t: gates [G, N] (pre-activations, i f g o) -> h, c [D, N] in place, out[:, t] = h
    (out [N, L, D]); tc [D, N] is scratch."""
    d, n = h.shape
    one = like(gates[0, 0], 1)
    two = like(gates[0, 0], 2)
    for q in range(d):
        for b in range(n):
            i = vsigmoid(gates[q, b])
            f = vsigmoid(gates[d + q, b])
            g = two * vsigmoid(two * gates[2 * d + q, b]) - one
            o = vsigmoid(gates[3 * d + q, b])
            cq = f * c[q, b] + i * g
            c[q, b] = cq
            tc[q, b] = o * vtanh(cq)
    for q in range(d):
        for b in range(n):
            h[q, b] = tc[q, b]
    for b in range(n):
        for q in range(d):
            out[b, t, q] = h[q, b]
