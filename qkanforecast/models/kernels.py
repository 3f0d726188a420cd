"""Numba kernels of the QKAN-LSTM recurrence with the batch last: the element-wise part of one time step
over a block of samples, forward and backward (needs numba; product_scan.py runs them).

Earlier kernels stepped each sample through its sequence with the gate product inside the loop (a 56 x
32 product per sample and step: a few hundred nanoseconds in numba's code, whose short loops LLVM
vectorises poorly). Here the loop is turned inside out: per time step one matrix product over the
block, gates [G, N] = W^T [G, K] @ features [K, N] (BLAS, through torch) for the born read-out, or
``fast_gates`` for the fast one, between kernels whose loops run over the samples (contiguous rows of N,
which vectorise): ``born_features`` before, ``born_cell`` after. The features of x_t are part of the
same product: no [N, L, G] tensor of the input part is made. The backward per step: ``born_dgates``,
then dfeat [K, N] = W @ dgates (born) or ``fast_dedges``, then ``born_dinputs``; the weight gradients
are batched products over the steps (torch).

Feature rows (K): the trig features of every input, [cos x .. cos rx, sin x .. sin rx] per input (F T
rows), silu of every input (F rows, with a base weight), the same of h_{t-1} (D T and D rows), then one
row of ones (the constant terms, the last row of W). N samples, L steps, D hidden, G = 4D gates (i, f,
g, o), r reps, T = 2r trig features per input, I = F + D inputs. Inner loops run over contiguous rows
without reassociating sums (of fastmath only ``contract``: multiply-adds fused into FMAs).
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
def born_cell(gates, t, c_prev, c, h, tc, out):  # type: ignore[no-untyped-def]
    """LSTM update of step t: gates [G, N] (pre-activations, i f g o) -> activated in place (sigmoid i, f,
    o; tanh g), c = f c_prev + i g, tc = tanh c, h = o tc (all [D, N]) and out[:, t] = h (out [N, L, D]).
    Every array distinct: LLVM checks at run time, and overlapping arrays (c_prev = c) take its scalar
    loop, 10x slower."""
    d, n = h.shape
    one = like(gates[0, 0], 1)
    two = like(gates[0, 0], 2)
    for q in range(d):
        for b in range(n):
            i = vsigmoid(gates[q, b])
            f = vsigmoid(gates[d + q, b])
            g = two * vsigmoid(two * gates[2 * d + q, b]) - one
            o = vsigmoid(gates[3 * d + q, b])
            gates[q, b] = i
            gates[d + q, b] = f
            gates[2 * d + q, b] = g
            gates[3 * d + q, b] = o
            cq = f * c_prev[q, b] + i * g
            c[q, b] = cq
            tq = vtanh(cq)
            tc[q, b] = tq
            h[q, b] = o * tq
    for b in range(n):
        for q in range(d):
            out[b, t, q] = h[q, b]


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def born_dgates(dout, t, acts, c_prev, tc, dh, dc, dg):  # type: ignore[no-untyped-def]
    """Backward of born_cell at step t: dh += dout[:, t] (dout [N, L, D]); with the activated gates acts
    [G, N], c_prev, tc [D, N] -> dg [G, N] (gradient of the pre-activations); dc [D, N] becomes the
    gradient of c_{t-1}."""
    d, n = dh.shape
    one = like(dh[0, 0], 1)
    for b in range(n):
        for q in range(d):
            dh[q, b] += dout[b, t, q]
    for q in range(d):
        for b in range(n):
            i, f, g, o = acts[q, b], acts[d + q, b], acts[2 * d + q, b], acts[3 * d + q, b]
            tq = tc[q, b]
            dcq = dc[q, b] + dh[q, b] * o * (one - tq * tq)
            dg[q, b] = dcq * g * (i * (one - i))
            dg[d + q, b] = dcq * c_prev[q, b] * (f * (one - f))
            dg[2 * d + q, b] = dcq * i * (one - g * g)
            dg[3 * d + q, b] = dh[q, b] * tq * (o * (one - o))
            dc[q, b] = dcq * f


@njit(cache=True, inline="always", error_model="numpy", fastmath={"contract"})
def _dtrig(dfeat, feats, at, reps, n, acc):  # type: ignore[no-untyped-def]
    """acc [N] = sum_k k (cos kx dfeat[sin kx] - sin kx dfeat[cos kx]) over the rows at.. of one input."""
    for b in range(n):
        acc[b] = feats[at, b] * dfeat[at + reps, b] - feats[at + reps, b] * dfeat[at, b]
    for k in range(1, reps):
        kk = like(acc[0], k + 1)
        for b in range(n):
            ck, sk = feats[at + k, b], feats[at + reps + k, b]
            acc[b] += kk * (ck * dfeat[at + reps + k, b] - sk * dfeat[at + k, b])


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def born_dinputs(dfeat, feats, x, t, h_prev, reps, has_bw, dh, dx):  # type: ignore[no-untyped-def]
    """dfeat [K, N] (gradient of the features of step t, feats [K, N]) -> dh [D, N] (of h_{t-1}, whose
    values h_prev [D, N] give silu's slope) and, where dx is not empty, dx[:, t] (dx, x [N, L, F])."""
    n, _, nx = x.shape
    d = dh.shape[0]
    nt = 2 * reps
    kx = nx * (nt + has_bw)
    one = like(dh[0, 0], 1)
    for q in range(d):
        acc = dh[q]
        _dtrig(dfeat, feats, kx + q * nt, reps, n, acc)
        if has_bw:
            row = kx + d * nt + q
            for b in range(n):
                sg = vsigmoid(h_prev[q, b])
                acc[b] += sg * (one + h_prev[q, b] * (one - sg)) * dfeat[row, b]
    if dx.shape[0] > 0:
        acc = np.empty(n, dtype=dh.dtype)
        for i in range(nx):
            _dtrig(dfeat, feats, i * nt, reps, n, acc)
            if has_bw:
                row = nx * nt + i
                for b in range(n):
                    sg = vsigmoid(x[b, t, i])
                    acc[b] += sg * (one + x[b, t, i] * (one - sg)) * dfeat[row, b]
            for b in range(n):
                dx[b, t, i] = acc[b]


# -- fast read-out: gates = add + sum_i pw_i (a_i - b_i) + bw_i silu(u_i), a, b = sqrt((1 +- z_i) / 2) ------
@njit(cache=True, inline="always", error_model="numpy", fastmath={"contract"})
def _rows(i, nx, nd, reps, has_bw):  # type: ignore[no-untyped-def]
    """Feature rows of input i (x_t's F inputs, then h_{t-1}'s D): its first trig row and its silu row."""
    nt = 2 * reps
    kx = nx * (nt + has_bw)
    if i < nx:
        return i * nt, nx * nt + i
    return kx + (i - nx) * nt, kx + nd * nt + (i - nx)


@njit(cache=True, inline="always", error_model="numpy", fastmath={"contract"})
def _z(feats, at, cz, ct, i, o, nt, zb):  # type: ignore[no-untyped-def]
    """zb [N] = cz[i, o] + sum_m ct[i, m, o] feats[at + m]: edge (i, o)'s born value for every sample."""
    n = zb.shape[0]
    c0 = cz[i, o]
    for b in range(n):
        zb[b] = c0
    for m in range(0, nt, 2):
        c1, c2 = ct[i, m, o], ct[i, m + 1, o]
        for b in range(n):
            zb[b] += c1 * feats[at + m, b] + c2 * feats[at + m + 1, b]


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def fast_gates(feats, nx, reps, has_bw, cz, ct, pw, bw, add, tiny, zb, gates):  # type: ignore[no-untyped-def]
    """feats [K, N] (as born_features) -> gates [G, N] (pre-activations): add [G] plus, for every input i
    and output o, pw[i, o] (a - b) with a, b = sqrt(max((1 +- z) / 2, tiny)), z from cz [I, G], ct [I, T,
    G], and bw[i, o] silu(u_i). pw, bw: [I, G] or [0, 0] (none); zb [N] scratch."""
    n = feats.shape[1]
    ni, g4 = cz.shape
    nt = 2 * reps
    has_pw = pw.shape[0] > 0
    half, tn = like(feats[0, 0], 0.5), like(feats[0, 0], tiny)
    for o in range(g4):
        for b in range(n):
            gates[o, b] = add[o]
    for i in range(ni):
        at, srow = _rows(i, nx, ni - nx, reps, has_bw)
        for o in range(g4):
            _z(feats, at, cz, ct, i, o, nt, zb)
            w = pw[i, o] if has_pw else like(half, 1)
            for b in range(n):
                a = math.sqrt(max(half + half * zb[b], tn))
                bb = math.sqrt(max(half - half * zb[b], tn))
                gates[o, b] += w * (a - bb)
            if has_bw:
                wb = bw[i, o]
                for b in range(n):
                    gates[o, b] += wb * feats[srow, b]


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def fast_dedges(  # type: ignore[no-untyped-def]
    feats, nx, reps, has_bw, cz, ct, pw, bw, tiny, cap, dg, zb, dz, gd, dfeat
):
    """Backward of fast_gates at one step: dg [G, N] (gradient of the gates) -> dz [I, G, N] (of each
    edge's z), gd [I, G, N] ((a - b) dg, where pw is given, else empty) and dfeat [K, N] (of the features:
    trig rows through z, silu rows through bw; the ones row untouched)."""
    n = feats.shape[1]
    ni, g4 = cz.shape
    nt = 2 * reps
    has_pw = pw.shape[0] > 0
    half, tn = like(feats[0, 0], 0.5), like(feats[0, 0], tiny)
    one, quarter, cp = like(half, 1), like(half, 0.25), like(half, cap)
    for i in range(ni):
        at, srow = _rows(i, nx, ni - nx, reps, has_bw)
        for m in range(nt):
            for b in range(n):
                dfeat[at + m, b] = 0
        if has_bw:
            for b in range(n):
                dfeat[srow, b] = 0
        for o in range(g4):
            _z(feats, at, cz, ct, i, o, nt, zb)
            w = pw[i, o] if has_pw else one
            for b in range(n):
                a = math.sqrt(max(half + half * zb[b], tn))
                bb = math.sqrt(max(half - half * zb[b], tn))
                dz[i, o, b] = quarter * (min(one / a, cp) + min(one / bb, cp)) * (w * dg[o, b])
                zb[b] = (a - bb) * dg[o, b]
            if has_pw:
                for b in range(n):
                    gd[i, o, b] = zb[b]
            for m in range(nt):
                c = ct[i, m, o]
                for b in range(n):
                    dfeat[at + m, b] += c * dz[i, o, b]
            if has_bw:
                wb = bw[i, o]
                for b in range(n):
                    dfeat[srow, b] += wb * dg[o, b]
