"""Recurrent models with torch.nn.LSTM's calling convention: QKAN-LSTM, HQKAN-LSTM and the LSTM baseline,
and the recurrent cores of the model families (``FAMILIES`` in config.py names them).

Notation: N batch, L sequence length, F (= input_size) features, D (= hidden_size) hidden units.
``forward(input, hx=None) -> (output, (h_n, c_n))`` with input [N, L, F] (batch_first, the default),
[L, N, F] or unbatched [L, F]; h_n, c_n are [num_layers, N, D]. Gate order i, f, g, o as in nn.LSTM.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..config import ModelConfig, QKANSpec
from .cells import GatedCell, HQKANLSTMCell, QKANLSTMCell, check_features, check_sizes


class RecurrentStack(nn.Module):
    """``num_layers`` cells of type ``cell`` with torch.nn.LSTM's calling convention (like torch's RNNBase).

    Every cell gets ``bias``, ``spec`` and ``cell_kwargs``; the first reads F features, the others D.
    ``dropout`` is applied to the outputs of every layer but the last, in training.
    """

    cell: Callable[..., GatedCell]  # (input_size, hidden_size, bias, spec=, **cell_kwargs)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
        spec: QKANSpec = QKANSpec(),  # noqa: B008 (frozen)
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **cell_kwargs: Any,
    ) -> None:
        super().__init__()
        check_sizes(input_size, hidden_size)
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.batch_first = batch_first
        self.dropout = float(dropout)
        kw = dict(cell_kwargs, device=device, dtype=dtype)
        sizes = [input_size] + [hidden_size] * (num_layers - 1)
        self.cells = nn.ModuleList(self.cell(f, hidden_size, bias, spec=spec, **kw) for f in sizes)

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
        check_features(input, self.input_size)
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

    def refine(self, new_reps: int) -> RecurrentStack:
        """A copy with more re-uploading repetitions in every QKAN that computes the same function."""
        new = copy.deepcopy(self)
        new.cells = nn.ModuleList(cell.refine(new_reps) for cell in self.cells)  # type: ignore[operator]
        return new

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        s += f", batch_first={self.batch_first}"
        return s + (f", dropout={self.dropout}" if self.dropout else "")


class QKANLSTM(RecurrentStack):
    """Multi-layer QKAN-LSTM (arXiv 2512.05049): nn.LSTM with each layer's gate maps made QKAN layers.

    ``QKANLSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=True, dropout=0.0,
    spec=QKANSpec())``.
    """

    cell = QKANLSTMCell


class HQKANLSTM(RecurrentStack):
    """Multi-layer HQKAN-LSTM: each layer's gate maps are one HQKAN (encoder -> latent QKAN -> decoder).

    ``HQKANLSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=True, dropout=0.0,
    spec=QKANSpec(), latent_in=None, latent_out=None)``; the latent widths as in ``HQKANLSTMCell``.
    """

    cell = HQKANLSTMCell


class LSTM(nn.LSTM):
    """The baseline: torch.nn.LSTM (same arguments, same state_dict keys) with batch_first=True by default.

    ``batch_first`` is keyword-only here.
    """

    def __init__(
        self, input_size: int, hidden_size: int, *args: Any, batch_first: bool = True, **kwargs: Any
    ) -> None:
        check_sizes(input_size, hidden_size)
        super().__init__(input_size, hidden_size, *args, batch_first=batch_first, **kwargs)


# -- the cores of the model families: ModelConfig (resolved) -> batch-first module, output [N, L, D] ------
def qkan_lstm_core(config: ModelConfig) -> QKANLSTM:
    return QKANLSTM(*_sizes(config), bias=config.bias, dropout=config.dropout, spec=config.qkan)


def hqkan_lstm_core(config: ModelConfig) -> HQKANLSTM:
    return HQKANLSTM(
        *_sizes(config),
        bias=config.bias,
        dropout=config.dropout,
        spec=config.qkan,
        latent_in=config.latent_in,
        latent_out=config.latent_out,
    )


def lstm_core(config: ModelConfig) -> LSTM:
    return LSTM(*_sizes(config), bias=config.bias, dropout=config.dropout)


def _sizes(config: ModelConfig) -> tuple[int, int, int]:
    """(input_size, hidden_size, num_layers) of a config, the family's hidden size filled in."""
    hidden_size = config.resolved().hidden_size
    assert hidden_size is not None  # resolved() fills it in
    return config.input_size, hidden_size, config.num_layers
