"""Numba kernels of the QKAN-LSTM recurrence, one pass per time step, forward and backward (needs numba).

What ``FusedScan`` (scan.py) does with about 20 small tensor operations per step, these loops do per
sample: the trig features of h_{t-1} by angle addition (one sin and one cos per hidden unit), the gate
map, the gate nonlinearities and the cell update, a sample's whole sequence at a time. The backward
walks the steps in reverse the same way. The samples are independent: the caller splits the batch
between threads (``nogil``), which never wait for each other. (``parallel=True`` with ``prange`` did the
same and took twice as long to compile.) Inner loops run over contiguous output rows so
that LLVM vectorises them without reassociating sums (fastmath is off: the results agree with the torch
path to rounding); sums over the outputs are a fixed pairwise tree for the same reason.

Imported lazily by ``kernel_scan.py`` (numba is optional); compiled on first use for the dtype in use
and cached on disk (``cache=True``).

Notation: N batch, L steps, D hidden, G = 4D gates (i, f, g, o), r reps, T = 2r trig features per
hidden unit laid out [cos x .. cos rx, sin x .. sin rx].
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def _trig(x: float, reps: int, out: np.ndarray, at: int) -> None:
    """out[at : at + 2r] = cos kx (k = 1..r), sin kx (k = 1..r), by angle addition from cos x, sin x."""
    c1, s1 = math.cos(x), math.sin(x)
    ck, sk = c1, s1
    out[at], out[at + reps] = ck, sk
    for k in range(1, reps):
        ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
        out[at + k], out[at + reps + k] = ck, sk


@njit(cache=True, inline="always")
def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@njit(cache=True, inline="always")
def _tree_sum(v: np.ndarray, width: int) -> float:
    """Sum of v[:width] (width a power of two, v overwritten) as a fixed pairwise tree, which vectorises."""
    half = width // 2
    while half >= 1:
        for q in range(half):
            v[q] += v[q + half]
        half //= 2
    return v[0]


@njit(cache=True, inline="always")
def _cell(gates: np.ndarray, d: int, c: np.ndarray, h: np.ndarray, tc: np.ndarray) -> None:
    """LSTM update in place: gates [G] -> activated (sigmoid i, f, o; tanh g); c, h [D] updated; tc tanh c."""
    for q in range(d):
        gates[q] = _sigmoid(gates[q])
        gates[d + q] = _sigmoid(gates[d + q])
        gates[2 * d + q] = math.tanh(gates[2 * d + q])
        gates[3 * d + q] = _sigmoid(gates[3 * d + q])
    for q in range(d):
        c[q] = gates[d + q] * c[q] + gates[q] * gates[2 * d + q]
        tc[q] = math.tanh(c[q])
        h[q] = gates[3 * d + q] * tc[q]


@njit(cache=True, inline="always")
def _dgates(
    s: np.ndarray, c_prev: np.ndarray, tc: np.ndarray, d: int, dh: np.ndarray, dc: np.ndarray, dg: np.ndarray
) -> None:
    """One step of the LSTM update backward: dh, dc at step t -> dg [G] (gradient of the gate
    pre-activations); dc becomes the gradient of c_{t-1}."""
    for q in range(d):
        i, f, g, o = s[q], s[d + q], s[2 * d + q], s[3 * d + q]
        dcq = dc[q] + dh[q] * o * (1.0 - tc[q] * tc[q])
        dg[q] = dcq * g * (i * (1.0 - i))
        dg[d + q] = dcq * c_prev[q] * (f * (1.0 - f))
        dg[2 * d + q] = dcq * i * (1.0 - g * g)
        dg[3 * d + q] = dh[q] * tc[q] * (o * (1.0 - o))
        dc[q] = dcq * f


# -- born read-out: gates = pre_t + [trig(h), silu(h)] @ w ---------------------------------------------------
@njit(cache=True, nogil=True)
def born_forward(  # type: ignore[no-untyped-def]
    pre, h0, c0, w, reps, has_bw, save, out, h_n, c_n, feats, acts, cs, tcs, slopes
):
    """pre [N, L, G], h0, c0 [N, D], w [F, G] (F = D T (+ D)) -> out [N, L, D], h_n, c_n [N, D].

    With ``save``: feats [N, L, F], acts [N, L, G] (activated gates), cs [N, L + 1, D], tcs [N, L, D]
    (tanh c_t), slopes [N, L, D] (silu'(h_{t-1}) when ``has_bw``) for the backward.
    """
    n, length, g4 = pre.shape
    d = h0.shape[1]
    nf = w.shape[0]
    nt = 2 * reps
    for b in range(n):
        h = h0[b].copy()
        c = c0[b].copy()
        tc = np.empty_like(h)
        f = np.empty(nf, dtype=pre.dtype)
        gates = np.empty(g4, dtype=pre.dtype)
        for t in range(length):
            for q in range(d):
                x = h[q]
                _trig(x, reps, f, q * nt)
                if has_bw:
                    sg = _sigmoid(x)
                    f[d * nt + q] = x * sg
                    if save:
                        slopes[b, t, q] = sg * (1.0 + x * (1.0 - sg))
            if save:
                feats[b, t] = f
                cs[b, t] = c
            gates[:] = pre[b, t]
            for j in range(nf):
                fj = f[j]
                for o in range(g4):
                    gates[o] += fj * w[j, o]
            _cell(gates, d, c, h, tc)
            out[b, t] = h
            if save:
                acts[b, t] = gates
                tcs[b, t] = tc
        h_n[b] = h
        c_n[b] = c
        if save:
            cs[b, length] = c


@njit(cache=True, nogil=True)
def born_backward(  # type: ignore[no-untyped-def]
    dout, dh_n, dc_n, wt, reps, has_bw, feats, acts, cs, tcs, slopes, dpre, dh0, dc0
):
    """dout [N, L, D], dh_n, dc_n [N, D], wt [G, F] (w transposed) and the saved buffers ->
    dpre [N, L, G] (= the gradient of the gate pre-activations), dh0, dc0 [N, D]."""
    n, length, d = dout.shape
    g4, nf = wt.shape
    nt = 2 * reps
    for b in range(n):
        dh = dh_n[b].copy()
        dc = dc_n[b].copy()
        dg = np.empty(g4, dtype=dout.dtype)
        dfeat = np.empty(nf, dtype=dout.dtype)
        for t in range(length - 1, -1, -1):
            for q in range(d):
                dh[q] += dout[b, t, q]
            _dgates(acts[b, t], cs[b, t], tcs[b, t], d, dh, dc, dg)
            dpre[b, t] = dg
            dfeat[:] = 0.0
            for o in range(g4):
                go = dg[o]
                for j in range(nf):
                    dfeat[j] += go * wt[o, j]
            fe = feats[b, t]
            for q in range(d):
                at = q * nt
                acc = 0.0
                for k in range(reps):  # d/dx cos kx = -k sin kx, d/dx sin kx = k cos kx
                    acc += (k + 1) * (fe[at + k] * dfeat[at + reps + k] - fe[at + reps + k] * dfeat[at + k])
                if has_bw:
                    acc += slopes[b, t, q] * dfeat[d * nt + q]
                dh[q] = acc
        dh0[b] = dh
        dc0[b] = dc


# -- fast read-out: gates = pre_t + sum_i pw_i (a_i - b_i) + silu(h) @ bw, a, b = sqrt((1 +- z_i) / 2) ------
@njit(cache=True, inline="always")
def _edges_z(cz, ct, fe, q, nt, z):  # type: ignore[no-untyped-def]
    """z [G] = cz[q] + sum_m ct[q, m] fe[q T + m]: the born values of hidden unit q's edges."""
    z[:] = cz[q]
    for m in range(nt):
        fm = fe[q * nt + m]
        for o in range(z.shape[0]):
            z[o] += ct[q, m, o] * fm


@njit(cache=True, nogil=True)
def fast_forward(  # type: ignore[no-untyped-def]
    pre, h0, c0, cz, ct, bw, pw, reps, tiny, save, out, h_n, c_n, feats, sil, acts, cs, tcs, slopes
):
    """pre [N, L, G], h0, c0 [N, D], cz [D, G] (the edges' constant terms), ct [D, T, G], bw [D, G] or
    [0, 0] (no base term), pw [D, G] or [0, 0] (no post weight) -> out [N, L, D], h_n, c_n [N, D].

    With ``save``: feats [N, L, D T], sil [N, L, D] (silu(h_{t-1})), acts, cs, tcs, slopes as in
    ``born_forward``. Nothing per edge is kept: the backward recomputes z from the features.
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
        for t in range(length):
            for q in range(d):
                _trig(h[q], reps, fe, q * nt)
            if save:
                feats[b, t] = fe
                cs[b, t] = c
            gates[:] = pre[b, t]
            for q in range(d):
                _edges_z(cz, ct, fe, q, nt, z)
                for o in range(g4):
                    a = math.sqrt(max(0.5 + 0.5 * z[o], tiny))
                    bb = math.sqrt(max(0.5 - 0.5 * z[o], tiny))
                    gates[o] += (a - bb) * pw[q, o] if has_pw else a - bb
                if has_bw:
                    x = h[q]
                    sg = _sigmoid(x)
                    sq = x * sg
                    for o in range(g4):
                        gates[o] += bw[q, o] * sq
                    if save:
                        sil[b, t, q] = sq
                        slopes[b, t, q] = sg * (1.0 + x * (1.0 - sg))
            _cell(gates, d, c, h, tc)
            out[b, t] = h
            if save:
                acts[b, t] = gates
                tcs[b, t] = tc
        h_n[b] = h
        c_n[b] = c
        if save:
            cs[b, length] = c


@njit(cache=True, nogil=True)
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
            dg = np.empty(g4, dtype=dout.dtype)
            z = np.empty(g4, dtype=dout.dtype)
            dz = np.empty(g4, dtype=dout.dtype)
            prod = np.zeros(width, dtype=dout.dtype)
            sums = np.zeros((d, nrow, g4), dtype=dout.dtype)
            for t in range(length - 1, -1, -1):
                for q in range(d):
                    dh[q] += dout[b, t, q]
                _dgates(acts[b, t], cs[b, t], tcs[b, t], d, dh, dc, dg)
                dpre[b, t] = dg
                fe = feats[b, t]
                for q in range(d):
                    _edges_z(cz, ct, fe, q, nt, z)
                    for o in range(g4):
                        a = math.sqrt(max(0.5 + 0.5 * z[o], tiny))
                        bb = math.sqrt(max(0.5 - 0.5 * z[o], tiny))
                        w = pw[q, o] * dg[o] if has_pw else dg[o]
                        dz[o] = 0.25 * (min(1.0 / a, cap) + min(1.0 / bb, cap)) * w
                        if has_pw:
                            sums[q, nt + 1, o] += (a - bb) * dg[o]
                    prod[:g4] = 0.0
                    for m in range(nt):
                        fm = fe[q * nt + m]
                        for o in range(g4):
                            prod[o] += dct[q, m, o] * fm
                            sums[q, m, o] += fm * dz[o]
                    for o in range(g4):
                        prod[o] *= dz[o]
                        sums[q, nt, o] += dz[o]
                    if has_bw:
                        sl = slopes[b, t, q]
                        for o in range(g4):
                            prod[o] += sl * bw[q, o] * dg[o]
                    dh[q] = _tree_sum(prod, width)
            dh0[b] = dh
            dc0[b] = dc
            acc[ch] += sums
