"""LSTM cells whose gate maps are QKANs: QKANLSTMCell and HQKANLSTMCell (torch.nn.LSTMCell's convention).

Notation: N batch, L sequence length, F (= input_size) features, D (= hidden_size) hidden units.
Gate order i, f, g, o as in nn.LSTM.

Speed: every cell splits its gate map into the part that depends on x_t and the part that depends on
h_{t-1}. The x part is computed for all time steps at once, and the per-call work of a QKAN (its Fourier
coefficients, which depend on theta only) is done once per sequence, not once per step. With the spectral
solver the recurrence runs in ``fused_scan`` (scan.py), a hand-written backward.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import cast

import torch
from torch import Tensor, nn

from ..config import QKANSpec, Solver
from . import product_scan
from .blocks import Block, SpectralBlock
from .qkan import QKANLayer
from .scan import fused_scan

StepFn = Callable[[Tensor, Tensor], Tensor]  # (pre_t [N, 4D], h [N, D]) -> gates [N, 4D]


def lstm_update(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """gates [N, 4D] in order i, f, g, o; c [N, D] -> (h, c)."""
    d = c.shape[-1]
    s = torch.sigmoid(gates)
    g = torch.tanh(gates[:, 2 * d : 3 * d])
    c = torch.addcmul(s[:, d : 2 * d] * c, s[:, :d], g)
    h = s[:, 3 * d :] * torch.tanh(c)
    return h, c


def check_sizes(input_size: int, hidden_size: int) -> None:
    if input_size < 1 or hidden_size < 1:
        raise ValueError(f"input_size and hidden_size must be >= 1, got {input_size} and {hidden_size}")


def check_features(x: Tensor, input_size: int) -> None:
    if x.shape[-1] != input_size:
        raise ValueError(
            f"input.size(-1) must be equal to input_size. Expected {input_size}, got {x.shape[-1]}"
        )


class GatedCell(nn.Module):
    """A cell whose gates are pre(x_t) + step(h_{t-1}) (autograd) or a fused scan (spectral solver).

    Subclasses name their QKAN layer in ``qkan_name`` and provide ``_prepare`` and ``_fused_scan``.
    """

    qkan_name: str
    fused: bool = True  # use the hand-written backward (fused_scan) where the solver is spectral

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        check_sizes(input_size, hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size

    @property
    def qkan(self) -> QKANLayer:
        return cast(QKANLayer, getattr(self, self.qkan_name))

    def _prepare(self, x: Tensor) -> tuple[Tensor, StepFn]:
        """x [N, L, F] -> (pre [N, L, 4D], step) with gates_t = step(pre[:, t], h_{t-1})."""
        raise NotImplementedError

    def _fused_scan(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        raise NotImplementedError

    def scan(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Run the cell over a sequence: x [N, L, F], h, c [N, D] -> (output [N, L, D], h, c)."""
        if self.fused and self.qkan.resolved_solver == Solver.SPECTRAL:
            return self._fused_scan(x, h, c)
        pre, step = self._prepare(x)
        outs = []
        for t in range(x.shape[1]):
            h, c = lstm_update(step(pre[:, t], h), c)
            outs.append(h)
        return torch.stack(outs, dim=1), h, c

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """One step like nn.LSTMCell: input [N, F] or [F], hx ([N, D], [N, D]) -> (h, c)."""
        if input.dim() not in (1, 2):
            raise ValueError(f"{type(self).__name__}: expected input to be 1D or 2D, got {input.dim()}D")
        check_features(input, self.input_size)
        unbatched = input.dim() == 1
        x = input.unsqueeze(0) if unbatched else input
        if hx is None:
            h = c = x.new_zeros(x.shape[0], self.hidden_size)
        else:
            h, c = (t.unsqueeze(0) if unbatched else t for t in hx)
        _, h, c = self.scan(x.unsqueeze(1), h, c)
        return (h[0], c[0]) if unbatched else (h, c)

    def refine(self, new_reps: int) -> GatedCell:
        """A copy with more re-uploading repetitions that computes the same function."""
        new = copy.deepcopy(self)
        setattr(new, self.qkan_name, self.qkan.refine(new_reps))
        return new


class QKANLSTMCell(GatedCell):
    """LSTM cell whose four affine gate maps are one QKAN layer (F + D) -> 4D.

    i, f, o = sigmoid(Phi_{i,f,o}([x_t; h_{t-1}]) + b), g = tanh(Phi_g(...) + b). ``bias`` adds a
    trainable gate bias [4D] (zero-initialised; each DARUAN has its own constant term anyway).
    Parameters: 4D (F + D) c + 4D [bias], c the per-edge count of QKANLayer.
    """

    qkan_name = "layer"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        spec: QKANSpec = QKANSpec(),  # noqa: B008 (frozen)
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(input_size, hidden_size)
        self.layer = QKANLayer(input_size + hidden_size, 4 * hidden_size, spec, device=device, dtype=dtype)
        self.bias = nn.Parameter(torch.zeros(4 * hidden_size, device=device, dtype=dtype)) if bias else None

    def reset_parameters(self) -> None:
        self.layer.reset_parameters()
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _split(self, x: Tensor, blocks: list[Block] | None = None) -> tuple[Tensor, Block]:
        """x [N, L, F] -> (pre [N, L, 4D] with every constant term, the block of h without its bias);
        ``blocks``: the layer's blocks of x and h where already made."""
        n, length, _ = x.shape
        bx, bh = blocks or self.layer.blocks([self.input_size, self.hidden_size])
        # the constant terms [4D] go into the product's own addition: two passes fewer over [N, L, 4D]
        add = bh.bias if self.bias is None else (self.bias if bh.bias is None else bh.bias + self.bias)
        pre = bx(x.reshape(n * length, -1), add=add).view(n, length, -1)  # [N, L, 4D]
        return pre, bh

    def _prepare(self, x: Tensor) -> tuple[Tensor, StepFn]:
        pre, bh = self._split(x)

        def step(pre_t: Tensor, h: Tensor) -> Tensor:
            return bh(h, add=pre_t, with_bias=False)

        return pre, step

    def _fused_scan(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        blocks = self.layer.blocks([self.input_size, self.hidden_size])
        bx, bh = blocks
        sx, sh = cast(SpectralBlock, bx), cast(SpectralBlock, bh)
        if product_scan.applies(sh, x):  # one product per step, no [N, L, 4D] input part
            return product_scan.product_scan(sx, sh, self.bias, x, h, c)
        pre, bh = self._split(x, blocks)
        return fused_scan(cast(SpectralBlock, bh), pre, h, c)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias is not None}"


class HQKANLSTMCell(GatedCell):
    """LSTM cell whose gate maps are one HQKAN: Linear(F + D -> a) -> QKAN(a -> b) -> Linear(b -> 4D).

    a = ceil(log2(F + D)) and b = ceil(log2(4D)) by default (the JHCG Net widths); ``bias`` is the
    encoder's and decoder's bias. Parameters: (F + D) a + a + a b c + b 4D + 4D (with bias).
    """

    qkan_name = "latent"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        latent_in: int | None = None,
        latent_out: int | None = None,
        spec: QKANSpec = QKANSpec(),  # noqa: B008 (frozen)
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(input_size, hidden_size)
        a = latent_in if latent_in is not None else max(1, math.ceil(math.log2(input_size + hidden_size)))
        b = latent_out if latent_out is not None else max(1, math.ceil(math.log2(4 * hidden_size)))
        if a < 1 or b < 1:
            raise ValueError(f"latent_in and latent_out must be >= 1, got {a}, {b}")
        kw = {"device": device, "dtype": dtype}
        self.encoder = nn.Linear(input_size + hidden_size, a, bias=bias, **kw)  # type: ignore[arg-type]
        self.latent = QKANLayer(a, b, spec, device=device, dtype=dtype)
        self.decoder = nn.Linear(b, 4 * hidden_size, bias=bias, **kw)  # type: ignore[arg-type]

    @property
    def latent_in(self) -> int:
        return self.latent.in_features

    @property
    def latent_out(self) -> int:
        return self.latent.out_features

    def reset_parameters(self) -> None:
        self.encoder.reset_parameters()
        self.latent.reset_parameters()
        self.decoder.reset_parameters()

    def _prepare(self, x: Tensor) -> tuple[Tensor, StepFn]:
        f = self.input_size
        w_x, w_h = self.encoder.weight[:, :f], self.encoder.weight[:, f:]
        pre = torch.nn.functional.linear(x, w_x, self.encoder.bias)  # [N, L, a]
        (latent,) = self.latent.blocks([self.latent_in])
        w_h_t = w_h.t()
        dec_w_t = self.decoder.weight.t()
        dec_b = self.decoder.bias

        def step(pre_t: Tensor, h: Tensor) -> Tensor:
            e = torch.addmm(pre_t, h, w_h_t)  # [N, a]
            z = latent(e)  # [N, b]
            return z @ dec_w_t if dec_b is None else torch.addmm(dec_b, z, dec_w_t)

        return pre, step

    def _fused_scan(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        f = self.input_size
        pre = torch.nn.functional.linear(x, self.encoder.weight[:, :f], self.encoder.bias)  # [N, L, a]
        (latent,) = self.latent.blocks([self.latent_in])
        dec_w_t = self.decoder.weight.t()
        dec_b: Tensor | None = self.decoder.bias
        if latent.bias is not None:  # dec(q + bias) = q W_d + (bias W_d + b_d)
            folded = latent.bias @ dec_w_t
            dec_b = folded if dec_b is None else dec_b + folded
        enc_h_t = self.encoder.weight[:, f:].t()
        return fused_scan(cast(SpectralBlock, latent), pre, h, c, enc_h_t, dec_w_t, dec_b)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, latent=({self.latent_in} -> {self.latent_out})"
