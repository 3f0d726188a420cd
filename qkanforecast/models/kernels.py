"""Numba kernels of the QKAN-LSTM recurrence, one pass per time step, forward and backward (needs numba).

What ``FusedScan`` (scan.py) does with about 20 small tensor operations per step, these loops do per
sample: the trig features of h_{t-1} by angle addition (one sin and one cos per hidden unit), the gate
map, the gate nonlinearities and the cell update, a sample's whole sequence at a time. The backward
walks the steps in reverse the same way. The samples are independent: the caller splits the batch
between threads (``nogil``), which never wait for each other. (``parallel=True`` with ``prange`` did the
same and took twice as long to compile.) Inner loops run over contiguous output rows so
that LLVM vectorises them without reassociating sums (of fastmath only ``contract``, which fuses a
multiply and an add into one FMA: the results agree with the torch path to rounding); sums over the
outputs are a fixed pairwise tree for the same reason.

Imported lazily by ``kernel_scan.py`` (numba is optional); compiled on first use for the dtype in use
and cached on disk (``cache=True``).

Notation: N batch, L steps, D hidden, G = 4D gates (i, f, g, o), r reps, T = 2r trig features per
hidden unit laid out [cos x .. cos rx, sin x .. sin rx].
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .vecmath import like, vcos1, vsigmoid, vsin1, vtanh

_LANES = 8  # samples stepped together (interleaved): one sample's dependency chain does not idle the core


@njit(cache=True, inline="always", error_model="numpy", fastmath={"contract"})
def _trig(h: np.ndarray, reps: int, cs1: np.ndarray, out: np.ndarray) -> None:
    """out[q 2r : (q + 1) 2r] = cos k h_q (k = 1..r), sin k h_q (k = 1..r), by angle addition from cos h_q,
    sin h_q: polynomials (vectorised over q) where every |h_q| <= 1, as after the first step, else libm.
    cs1 [2, D] is scratch."""
    d = h.shape[0]
    inside = True
    for q in range(d):
        inside &= abs(h[q]) <= 1
    if inside:
        for q in range(d):
            cs1[0, q] = vcos1(h[q])
            cs1[1, q] = vsin1(h[q])
    else:
        for q in range(d):
            cs1[0, q] = math.cos(h[q])
            cs1[1, q] = math.sin(h[q])
    nt = 2 * reps
    for q in range(d):
        c1, s1 = cs1[0, q], cs1[1, q]
        ck, sk = c1, s1
        at = q * nt
        out[at], out[at + reps] = ck, sk
        for k in range(1, reps):
            ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
            out[at + k], out[at + reps + k] = ck, sk


@njit(cache=True, inline="always", error_model="numpy", fastmath={"contract"})
def _silu(h: np.ndarray, sg: np.ndarray, sil: np.ndarray) -> None:
    """sg = sigmoid(h), sil = h sigmoid(h), vectorised."""
    for q in range(h.shape[0]):
        sg[q] = vsigmoid(h[q])
        sil[q] = h[q] * sg[q]


@njit(cache=True, inline="always", error_model="numpy", fastmath={"contract"})
def _copy(dst: np.ndarray, src: np.ndarray) -> None:
    """dst[:] = src for rows: a loop (numba's slice assignment costs 10x more at these sizes)."""
    for i in range(dst.shape[0]):
        dst[i] = src[i]


@njit(cache=True, inline="always", error_model="numpy", fastmath={"contract"})
def _gemv(acc: np.ndarray, x: np.ndarray, w: np.ndarray) -> None:
    """acc[o] += sum_j x[j] w[j, o], four rows at a time: the loop over o vectorises, and four rows per
    pass of acc (which stays in memory) run 5x faster than one."""
    nr, g = w.shape
    j = 0
    while j + 4 <= nr:
        x0, x1, x2, x3 = x[j], x[j + 1], x[j + 2], x[j + 3]
        w0, w1, w2, w3 = w[j], w[j + 1], w[j + 2], w[j + 3]
        for o in range(g):
            acc[o] += (x0 * w0[o] + x1 * w1[o]) + (x2 * w2[o] + x3 * w3[o])
        j += 4
    while j < nr:
        xj, wj = x[j], w[j]
        for o in range(g):
            acc[o] += xj * wj[o]
        j += 1


@njit(cache=True, inline="always", error_model="numpy", fastmath={"contract"})
def _tree_sum(v: np.ndarray, width: int) -> float:
    """Sum of v[:width] (width a power of two, v overwritten) as a fixed pairwise tree, which vectorises."""
    half = width // 2
    while half >= 1:
        for q in range(half):
            v[q] += v[q + half]
        half //= 2
    return v[0]


@njit(cache=True, inline="always", error_model="numpy", fastmath={"contract"})
def _cell(gates: np.ndarray, d: int, c: np.ndarray, h: np.ndarray, tc: np.ndarray) -> None:
    """LSTM update in place: gates [G] -> activated (sigmoid i, f, o; tanh g); c, h [D] updated; tc tanh c."""
    one = like(gates[0], 1)
    two = like(gates[0], 2)
    for o in range(4 * d):  # one loop (vectorised): sigmoid, and tanh = 2 sigmoid(2x) - 1 for g
        m = two if (o >= 2 * d) & (o < 3 * d) else one
        gates[o] = m * vsigmoid(m * gates[o]) - (m - one)
    for q in range(d):
        c[q] = gates[d + q] * c[q] + gates[q] * gates[2 * d + q]
        tc[q] = vtanh(c[q])
        h[q] = gates[3 * d + q] * tc[q]


@njit(cache=True, inline="always", error_model="numpy", fastmath={"contract"})
def _dgates(
    s: np.ndarray, c_prev: np.ndarray, tc: np.ndarray, d: int, dh: np.ndarray, dc: np.ndarray, dg: np.ndarray
) -> None:
    """One step of the LSTM update backward: dh, dc at step t -> dg [G] (gradient of the gate
    pre-activations); dc becomes the gradient of c_{t-1}."""
    one = like(dh[0], 1)
    for q in range(d):
        i, f, g, o = s[q], s[d + q], s[2 * d + q], s[3 * d + q]
        dcq = dc[q] + dh[q] * o * (one - tc[q] * tc[q])
        dg[q] = dcq * g * (i * (one - i))
        dg[d + q] = dcq * c_prev[q] * (f * (one - f))
        dg[2 * d + q] = dcq * i * (one - g * g)
        dg[3 * d + q] = dh[q] * tc[q] * (o * (one - o))
        dc[q] = dcq * f


# -- born read-out: gates = pre_t + [trig(h), silu(h)] @ w ---------------------------------------------------
@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def born_forward(  # type: ignore[no-untyped-def]
    pre, h0, c0, w, reps, has_bw, save, out, h_n, c_n, feats, acts, cs, tcs, slopes
):
    """pre [N, L, G], h0, c0 [N, D], w [F, G] (F = D T (+ D)) -> out [N, L, D], h_n, c_n [N, D].

    With ``save``, for the backward, step-major (the samples stepped together are neighbours in memory):
    feats [L, N, F], acts [L, N, G] (activated gates), cs [L + 1, N, D], tcs [L, N, D] (tanh c_t), slopes
    [L, N, D] (silu'(h_{t-1}) when ``has_bw``).
    """
    n, length, g4 = pre.shape
    d = h0.shape[1]
    nf = w.shape[0]
    nt = 2 * reps
    for b0 in range(0, n, _LANES):
        ns = min(_LANES, n - b0)
        hh, cc = h0[b0 : b0 + ns].copy(), c0[b0 : b0 + ns].copy()
        tcc, sgg = np.empty_like(hh), np.empty_like(hh)
        ff = np.empty((ns, nf), dtype=pre.dtype)
        gg = np.empty((ns, g4), dtype=pre.dtype)
        cs11 = np.empty((ns, 2, d), dtype=pre.dtype)
        for t in range(length):
            for s in range(ns):  # independent samples, one step each: their latency chains overlap
                b = b0 + s
                h, c, sg = hh[s], cc[s], sgg[s]
                # with ``save``, the features, gates and tanh c go straight into the saved buffers
                f = feats[t, b] if save else ff[s]
                gates = acts[t, b] if save else gg[s]
                tc = tcs[t, b] if save else tcc[s]
                _trig(h, reps, cs11[s], f)
                if has_bw:
                    _silu(h, sg, f[d * nt :])
                    if save:
                        one = like(h[0], 1)
                        for q in range(d):
                            slopes[t, b, q] = sg[q] * (one + h[q] * (one - sg[q]))
                if save:
                    _copy(cs[t, b], c)
                _copy(gates, pre[b, t])
                _gemv(gates, f, w)
                _cell(gates, d, c, h, tc)
                _copy(out[b, t], h)
        for s in range(ns):
            _copy(h_n[b0 + s], hh[s])
            _copy(c_n[b0 + s], cc[s])
            if save:
                _copy(cs[length, b0 + s], cc[s])


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def born_backward(  # type: ignore[no-untyped-def]
    dout, dh_n, dc_n, wt, reps, has_bw, dh0, dc0, feats, acts, cs, tcs, slopes, dpre
):
    """dout [N, L, D], dh_n, dc_n [N, D], wt [G, F] (w transposed) and the saved buffers ->
    dpre [L, N, G] (the gradient of the gate pre-activations, step-major), dh0, dc0 [N, D]."""
    n, length, d = dout.shape
    g4, nf = wt.shape
    nt = 2 * reps
    for b0 in range(0, n, _LANES):
        ns = min(_LANES, n - b0)
        dhh, dcc = dh_n[b0 : b0 + ns].copy(), dc_n[b0 : b0 + ns].copy()
        dff = np.empty((ns, nf), dtype=dout.dtype)
        for t in range(length - 1, -1, -1):
            for s in range(ns):  # independent samples, one step each: their latency chains overlap
                b = b0 + s
                dh, dc, dfeat, dg, fe = dhh[s], dcc[s], dff[s], dpre[t, b], feats[t, b]
                for q in range(d):
                    dh[q] += dout[b, t, q]
                _dgates(acts[t, b], cs[t, b], tcs[t, b], d, dh, dc, dg)
                for j in range(nf):
                    dfeat[j] = 0
                _gemv(dfeat, dg, wt)
                for q in range(d):
                    at = q * nt
                    acc = fe[at] * dfeat[at + reps] - fe[at + reps] * dfeat[at]
                    for k in range(1, reps):  # d/dx cos kx = -k sin kx, d/dx sin kx = k cos kx
                        acc += like(acc, k + 1) * (
                            fe[at + k] * dfeat[at + reps + k] - fe[at + reps + k] * dfeat[at + k]
                        )
                    if has_bw:
                        acc += slopes[t, b, q] * dfeat[d * nt + q]
                    dh[q] = acc
        for s in range(ns):
            _copy(dh0[b0 + s], dhh[s])
            _copy(dc0[b0 + s], dcc[s])


# -- fast read-out: gates = pre_t + sum_i pw_i (a_i - b_i) + silu(h) @ bw, a, b = sqrt((1 +- z_i) / 2) ------
@njit(cache=True, inline="always", error_model="numpy", fastmath={"contract"})
def _edges_z(cz, ct, fe, q, nt, z):  # type: ignore[no-untyped-def]
    """z [G] = cz[q] + sum_m ct[q, m] fe[q T + m]: the born values of hidden unit q's edges."""
    _copy(z, cz[q])
    _gemv(z, fe[q * nt : (q + 1) * nt], ct[q])


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def fast_forward(  # type: ignore[no-untyped-def]
    pre, h0, c0, cz, ct, bw, pw, reps, tiny, save, out, h_n, c_n, feats, sil, acts, cs, tcs, slopes
):
    """pre [N, L, G], h0, c0 [N, D], cz [D, G] (the edges' constant terms), ct [D, T, G], bw [D, G] or
    [0, 0] (no base term), pw [D, G] or [0, 0] (no post weight) -> out [N, L, D], h_n, c_n [N, D].

    With ``save``: feats [N, L, D T], sil [N, L, D] (silu(h_{t-1})), acts, cs, tcs, slopes as in
    ``born_forward`` but sample-major (one sample at a time here). Nothing per edge is kept: the backward
    recomputes z from the features.
    """
    n, length, g4 = pre.shape
    d = h0.shape[1]
    nt = 2 * reps
    has_bw, has_pw = bw.shape[0] > 0, pw.shape[0] > 0
    for b in range(n):
        h = h0[b].copy()
        c = c0[b].copy()
        tc = np.empty_like(h)
        fe = np.empty(d * nt, dtype=pre.dtype)
        gates = np.empty(g4, dtype=pre.dtype)
        z = np.empty(g4, dtype=pre.dtype)
        cs1 = np.empty((2, d), dtype=pre.dtype)
        sg = np.empty_like(h)
        sq = np.empty_like(h)
        one, half, tn = like(h[0], 1), like(h[0], 0.5), like(h[0], tiny)
        for t in range(length):
            _trig(h, reps, cs1, fe)
            if has_bw:
                _silu(h, sg, sq)
            if save:
                _copy(feats[b, t], fe)
                _copy(cs[b, t], c)
            _copy(gates, pre[b, t])
            for q in range(d):
                _edges_z(cz, ct, fe, q, nt, z)
                if has_pw:  # two loops, each without a branch (so that both vectorise)
                    for o in range(g4):
                        a = math.sqrt(max(half + half * z[o], tn))
                        bb = math.sqrt(max(half - half * z[o], tn))
                        gates[o] += (a - bb) * pw[q, o]
                else:
                    for o in range(g4):
                        a = math.sqrt(max(half + half * z[o], tn))
                        bb = math.sqrt(max(half - half * z[o], tn))
                        gates[o] += a - bb
                if has_bw:
                    for o in range(g4):
                        gates[o] += bw[q, o] * sq[q]
                    if save:
                        sil[b, t, q] = sq[q]
                        slopes[b, t, q] = sg[q] * (one + h[q] * (one - sg[q]))
            _cell(gates, d, c, h, tc)
            _copy(out[b, t], h)
            if save:
                _copy(acts[b, t], gates)
                _copy(tcs[b, t], tc)
        _copy(h_n[b], h)
        _copy(c_n[b], c)
        if save:
            _copy(cs[b, length], c)


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def fast_backward(  # type: ignore[no-untyped-def]
    dout, dh_n, dc_n, cz, ct, dct, bw, pw, reps, tiny, cap, chunk,
    feats, acts, cs, tcs, slopes, dpre, dh0, dc0, acc,
):  # fmt: skip
    """dout [N, L, D], dh_n, dc_n [N, D], the block's cz, ct, bw, pw as in ``fast_forward``, dct [D, T, G]
    (d ct-weights / dx, as the features: halves swapped, times k) and the saved buffers -> dpre [N, L, G],
    dh0, dc0 [N, D] and acc [N / chunk, D, T + 1 (+ 1), G] float64: per chunk of ``chunk`` samples the sums
    over samples and steps of [trig, 1] dL/dz (the gradients of ct and c0) and, with pw, g dL/dg_pw.
    """
    n, length, d = dout.shape
    g4 = dpre.shape[2]
    nt = 2 * reps
    has_bw, has_pw = bw.shape[0] > 0, pw.shape[0] > 0
    nrow = acc.shape[2]
    width = 1
    while width < g4:
        width *= 2
    nchunks = acc.shape[0]
    for ch in range(nchunks):
        for b in range(ch * chunk, min(n, (ch + 1) * chunk)):
            dh = dh_n[b].copy()
            dc = dc_n[b].copy()
            one, half, quarter = like(dh[0], 1), like(dh[0], 0.5), like(dh[0], 0.25)
            tn, cp = like(dh[0], tiny), like(dh[0], cap)
            z = np.empty(g4, dtype=dout.dtype)
            dz = np.empty(g4, dtype=dout.dtype)
            prod = np.zeros(width, dtype=dout.dtype)
            sums = np.zeros((d, nrow, g4), dtype=dout.dtype)
            for t in range(length - 1, -1, -1):
                for q in range(d):
                    dh[q] += dout[b, t, q]
                dg = dpre[b, t]
                _dgates(acts[b, t], cs[b, t], tcs[b, t], d, dh, dc, dg)
                fe = feats[b, t]
                for q in range(d):
                    _edges_z(cz, ct, fe, q, nt, z)
                    if has_pw:  # two loops, each without a branch (so that both vectorise)
                        for o in range(g4):
                            a = math.sqrt(max(half + half * z[o], tn))
                            bb = math.sqrt(max(half - half * z[o], tn))
                            dz[o] = quarter * (min(one / a, cp) + min(one / bb, cp)) * (pw[q, o] * dg[o])
                            sums[q, nt + 1, o] += (a - bb) * dg[o]
                    else:
                        for o in range(g4):
                            a = math.sqrt(max(half + half * z[o], tn))
                            bb = math.sqrt(max(half - half * z[o], tn))
                            dz[o] = quarter * (min(one / a, cp) + min(one / bb, cp)) * dg[o]
                    for o in range(g4):
                        prod[o] = 0
                    _gemv(prod, fe[q * nt : (q + 1) * nt], dct[q])
                    for m in range(nt):
                        fm = fe[q * nt + m]
                        for o in range(g4):
                            sums[q, m, o] += fm * dz[o]
                    for o in range(g4):
                        prod[o] *= dz[o]
                        sums[q, nt, o] += dz[o]
                    if has_bw:
                        sl = slopes[b, t, q]
                        for o in range(g4):
                            prod[o] += sl * bw[q, o] * dg[o]
                    dh[q] = _tree_sum(prod, width)
            _copy(dh0[b], dh)
            _copy(dc0[b], dc)
            acc[ch] += sums
