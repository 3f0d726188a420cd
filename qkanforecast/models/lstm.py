"""Recurrent models with torch.nn.LSTM's calling convention: QKAN-LSTM, HQKAN-LSTM and the LSTM baseline.

Notation: N batch, L sequence length, F (= input_size) features, D (= hidden_size) hidden units.
``forward(input, hx=None) -> (output, (h_n, c_n))`` with input [N, L, F] (batch_first, the default),
[L, N, F] or unbatched [L, F]; h_n, c_n are [num_layers, N, D]. Gate order i, f, g, o as in nn.LSTM.

Speed: every cell splits its gate map into the part that depends on x_t and the part that depends on
h_{t-1}. The x part is computed for all time steps at once, and the per-call work of a QKAN (its Fourier
coefficients, which depend on theta only) is done once per sequence, not once per step.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor, nn

from .qkan import EdgeBlock, QKANLayer, Readout, Solver
from .scan import BlockSpec, FusedScan

M = TypeVar("M", bound=nn.Module)
StepFn = Callable[[Tensor, Tensor], Tensor]  # (pre_t [N, 4D], h [N, D]) -> gates [N, 4D]


def _lstm_update(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """gates [N, 4D] in order i, f, g, o; c [N, D] -> (h, c)."""
    d = c.shape[-1]
    s = torch.sigmoid(gates)
    g = torch.tanh(gates[:, 2 * d : 3 * d])
    c = torch.addcmul(s[:, d : 2 * d] * c, s[:, :d], g)
    h = s[:, 3 * d :] * torch.tanh(c)
    return h, c


class _GatedCell(nn.Module):
    """A cell whose gates are pre(x_t) + step(h_{t-1}); subclasses provide ``_prepare``."""

    input_size: int
    hidden_size: int

    def _prepare(self, x: Tensor) -> tuple[Tensor, StepFn]:
        """x [N, L, F] -> (pre [N, L, 4D], step) with gates_t = step(pre[:, t], h_{t-1})."""
        raise NotImplementedError

    def _spectral(self) -> bool:
        raise NotImplementedError

    def _fused_scan(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        raise NotImplementedError

    fused: bool = True  # use the hand-written backward (FusedScan) where the solver is spectral

    def scan(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Run the cell over a sequence: x [N, L, F], h, c [N, D] -> (output [N, L, D], h, c)."""
        if self.fused and self._spectral():
            return self._fused_scan(x, h, c)
        pre, step = self._prepare(x)
        outs = []
        for t in range(x.shape[1]):
            h, c = _lstm_update(step(pre[:, t], h), c)
            outs.append(h)
        return torch.stack(outs, dim=1), h, c

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """One step like nn.LSTMCell: input [N, F] or [F], hx ([N, D], [N, D]) -> (h, c)."""
        if input.dim() not in (1, 2):
            raise ValueError(f"{type(self).__name__}: expected input to be 1D or 2D, got {input.dim()}D")
        _check_features(input, self.input_size)
        unbatched = input.dim() == 1
        x = input.unsqueeze(0) if unbatched else input
        if hx is None:
            h = c = x.new_zeros(x.shape[0], self.hidden_size)
        else:
            h, c = (t.unsqueeze(0) if unbatched else t for t in hx)
        _, h, c = self.scan(x.unsqueeze(1), h, c)
        return (h[0], c[0]) if unbatched else (h, c)


class QKANLSTMCell(_GatedCell):
    """LSTM cell whose four affine gate maps are one QKAN layer (F + D) -> 4D.

    i, f, o = sigmoid(Phi_{i,f,o}([x_t; h_{t-1}]) + b), g = tanh(Phi_g(...) + b). ``bias`` adds a
    trainable gate bias [4D] (zero-initialised; each DARUAN has its own constant term anyway).
    Parameters: 4D (F + D) c + 4D [bias], c the per-edge count of QKANLayer.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        reps: int = 3,
        readout: Readout = "fast",
        solver: Solver = "auto",
        preact_trainable: bool = False,
        postact_trainable: bool = False,
        base_weight: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_sizes(input_size, hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.layer = QKANLayer(
            input_size + hidden_size,
            4 * hidden_size,
            reps=reps,
            readout=readout,
            solver=solver,
            preact_trainable=preact_trainable,
            postact_trainable=postact_trainable,
            base_weight=base_weight,
            device=device,
            dtype=dtype,
        )
        self.bias = nn.Parameter(torch.zeros(4 * hidden_size, device=device, dtype=dtype)) if bias else None

    def reset_parameters(self) -> None:
        self.layer.reset_parameters()
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _prepare(self, x: Tensor) -> tuple[Tensor, StepFn]:
        n, length, _ = x.shape
        bx, bh = self.layer.blocks([self.input_size, self.hidden_size])
        pre = bx(x.reshape(n * length, -1)).view(n, length, -1)  # [N, L, 4D]
        if bh.bias is not None:
            pre = pre + bh.bias
        if self.bias is not None:
            pre = pre + self.bias

        def step(pre_t: Tensor, h: Tensor) -> Tensor:
            return bh(h, add=pre_t, with_bias=False)

        return pre, step

    def _spectral(self) -> bool:
        return self.layer.resolved_solver == "spectral"

    def _fused_scan(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        n, length, _ = x.shape
        bx, bh = self.layer.blocks([self.input_size, self.hidden_size])
        pre = bx(x.reshape(n * length, -1)).view(n, length, -1)  # [N, L, 4D]
        if bh.bias is not None:
            pre = pre + bh.bias
        if self.bias is not None:
            pre = pre + self.bias
        spec = _block_spec(bh)
        out: tuple[Tensor, Tensor, Tensor] = FusedScan.apply(
            spec, pre, h, c, *spec.tensors(), None, None, None
        )
        return out

    def refine(self, new_reps: int) -> QKANLSTMCell:
        """A copy with more re-uploading repetitions that computes the same function."""
        new = _shallow_copy(self)
        new.layer = self.layer.refine(new_reps)
        return new

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias is not None}"


class HQKANLSTMCell(_GatedCell):
    """LSTM cell whose gate maps are one HQKAN: Linear(F + D -> a) -> QKAN(a -> b) -> Linear(b -> 4D).

    a = ceil(log2(F + D)) and b = ceil(log2(4D)) by default (the JHCG Net widths); ``bias`` is the
    encoder's and decoder's bias. Parameters: (F + D) a + a + a b c + b 4D + 4D (with bias).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        reps: int = 3,
        readout: Readout = "fast",
        solver: Solver = "auto",
        latent_in: int | None = None,
        latent_out: int | None = None,
        preact_trainable: bool = False,
        postact_trainable: bool = False,
        base_weight: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_sizes(input_size, hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        a = latent_in if latent_in is not None else max(1, math.ceil(math.log2(input_size + hidden_size)))
        b = latent_out if latent_out is not None else max(1, math.ceil(math.log2(4 * hidden_size)))
        if a < 1 or b < 1:
            raise ValueError(f"latent_in and latent_out must be >= 1, got {a}, {b}")
        kw = {"device": device, "dtype": dtype}
        self.encoder = nn.Linear(input_size + hidden_size, a, bias=bias, **kw)  # type: ignore[arg-type]
        self.latent = QKANLayer(
            a,
            b,
            reps=reps,
            readout=readout,
            solver=solver,
            preact_trainable=preact_trainable,
            postact_trainable=postact_trainable,
            base_weight=base_weight,
            device=device,
            dtype=dtype,
        )
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

    def _spectral(self) -> bool:
        return self.latent.resolved_solver == "spectral"

    def _fused_scan(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        f = self.input_size
        pre = torch.nn.functional.linear(x, self.encoder.weight[:, :f], self.encoder.bias)  # [N, L, a]
        (latent,) = self.latent.blocks([self.latent_in])
        dec_w_t = self.decoder.weight.t()
        dec_b: Tensor | None = self.decoder.bias
        if latent.bias is not None:  # dec(q + bias) = q W_d + (bias W_d + b_d)
            folded = latent.bias @ dec_w_t
            dec_b = folded if dec_b is None else dec_b + folded
        spec = _block_spec(latent)
        out: tuple[Tensor, Tensor, Tensor] = FusedScan.apply(
            spec, pre, h, c, *spec.tensors(), self.encoder.weight[:, f:].t(), dec_w_t, dec_b
        )
        return out

    def refine(self, new_reps: int) -> HQKANLSTMCell:
        """A copy with more re-uploading repetitions that computes the same function."""
        new = _shallow_copy(self)
        new.latent = self.latent.refine(new_reps)
        return new

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, latent=({self.latent_in} -> {self.latent_out})"


class _RecurrentStack(nn.Module):
    """Stacked cells with torch.nn.LSTM's calling convention."""

    cells: nn.ModuleList

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int, batch_first: bool, dropout: float
    ) -> None:
        super().__init__()
        _check_sizes(input_size, hidden_size)
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.batch_first = batch_first
        self.dropout = float(dropout)

    def reset_parameters(self) -> None:
        for cell in self.cells:
            cell.reset_parameters()  # type: ignore[operator]

    def forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """input [N, L, F] (batch_first) | [L, N, F] | [L, F] -> (output [..., D], (h_n, c_n)).

        h_n, c_n: [num_layers, N, D] ([num_layers, D] for unbatched input).
        """
        if input.dim() not in (2, 3):
            name = type(self).__name__
            raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.dim()}D instead")
        _check_features(input, self.input_size)
        unbatched = input.dim() == 2
        x = input.unsqueeze(0) if unbatched else (input if self.batch_first else input.transpose(0, 1))
        n = x.shape[0]
        state = (self.num_layers, n, self.hidden_size)
        if hx is None:
            h0 = c0 = x.new_zeros(state)
        else:
            h0, c0 = (t.unsqueeze(1) if unbatched else t for t in hx)
            for name, t in (("h0", h0), ("c0", c0)):
                if tuple(t.shape) != state:
                    expected = state[::2] if unbatched else state
                    raise ValueError(f"Expected hidden size {expected} for {name}, got {tuple(t.shape)}")
        hs, cs = [], []
        out = x
        for k, cell in enumerate(self.cells):
            if k > 0 and self.dropout > 0 and self.training:
                out = nn.functional.dropout(out, self.dropout, training=True)
            out, h, c = cell.scan(out, h0[k], c0[k])  # type: ignore[operator]
            hs.append(h)
            cs.append(c)
        h_n, c_n = torch.stack(hs), torch.stack(cs)
        if unbatched:
            return out[0], (h_n[:, 0], c_n[:, 0])
        return (out if self.batch_first else out.transpose(0, 1)), (h_n, c_n)

    def refine(self, new_reps: int) -> _RecurrentStack:
        """A copy with more re-uploading repetitions in every QKAN that computes the same function."""
        new = _shallow_copy(self)
        new.cells = nn.ModuleList(cell.refine(new_reps) for cell in self.cells)  # type: ignore[operator]
        return new

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        s += f", batch_first={self.batch_first}"
        return s + (f", dropout={self.dropout}" if self.dropout else "")


class QKANLSTM(_RecurrentStack):
    """Multi-layer QKAN-LSTM (arXiv 2512.05049): nn.LSTM with each layer's gate maps made QKAN layers."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
        reps: int = 3,
        readout: Readout = "fast",
        solver: Solver = "auto",
        preact_trainable: bool = False,
        postact_trainable: bool = False,
        base_weight: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(input_size, hidden_size, num_layers, batch_first, dropout)
        self.cells = nn.ModuleList(
            QKANLSTMCell(
                input_size if k == 0 else hidden_size,
                hidden_size,
                bias=bias,
                reps=reps,
                readout=readout,
                solver=solver,
                preact_trainable=preact_trainable,
                postact_trainable=postact_trainable,
                base_weight=base_weight,
                device=device,
                dtype=dtype,
            )
            for k in range(num_layers)
        )


class HQKANLSTM(_RecurrentStack):
    """Multi-layer HQKAN-LSTM: each layer's gate maps are one HQKAN (encoder -> latent QKAN -> decoder)."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
        reps: int = 3,
        readout: Readout = "fast",
        solver: Solver = "auto",
        latent_in: int | None = None,
        latent_out: int | None = None,
        preact_trainable: bool = False,
        postact_trainable: bool = False,
        base_weight: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(input_size, hidden_size, num_layers, batch_first, dropout)
        self.cells = nn.ModuleList(
            HQKANLSTMCell(
                input_size if k == 0 else hidden_size,
                hidden_size,
                bias=bias,
                reps=reps,
                readout=readout,
                solver=solver,
                latent_in=latent_in,
                latent_out=latent_out,
                preact_trainable=preact_trainable,
                postact_trainable=postact_trainable,
                base_weight=base_weight,
                device=device,
                dtype=dtype,
            )
            for k in range(num_layers)
        )


class LSTM(nn.LSTM):
    """The baseline: torch.nn.LSTM with batch_first=True by default (same state_dict keys)."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        _check_sizes(input_size, hidden_size)
        super().__init__(
            input_size,
            hidden_size,
            num_layers=num_layers,
            bias=bias,
            batch_first=batch_first,
            dropout=dropout,
            device=device,
            dtype=dtype,
        )


def _block_spec(block: EdgeBlock) -> BlockSpec:
    spec = BlockSpec(readout=block.readout, reps=block.reps, has_base=block.bw is not None)
    if block.readout == "born":
        spec.wt = block.weight.t()
    else:
        spec.c0, spec.ct, spec.pw = block.c0, block.ct, block.pw_t
        spec.bwt = None if block.bw is None else block.bw.t()
    return spec


def _check_sizes(input_size: int, hidden_size: int) -> None:
    if input_size < 1 or hidden_size < 1:
        raise ValueError(f"input_size and hidden_size must be >= 1, got {input_size} and {hidden_size}")


def _check_features(x: Tensor, input_size: int) -> None:
    if x.shape[-1] != input_size:
        raise ValueError(
            f"input.size(-1) must be equal to input_size. Expected {input_size}, got {x.shape[-1]}"
        )


def _shallow_copy(module: M) -> M:
    return copy.deepcopy(module)
