"""What the gate edges of a trained QKAN-LSTM or HQKAN-LSTM compute: the data of the activation plots.

Every recurrent layer of these families holds one QKAN layer: in a QKAN-LSTM the gate map of
``[x_t; h_{t-1}]`` to the four gates (``F + D -> 4D``), in an HQKAN-LSTM the latent QKAN between its
encoder and decoder (``a -> b``). An edge ``(j, i)`` of a QKAN layer adds

    f_ji(x_i) = pw_ji (phi_ji(x_i) + pb_ji) + bw_ji silu(x_i)

to output ``j`` (``phi_ji`` the DARUAN circuit, ``bw silu`` the residual; pw, pb are 1, 0 unless trained),
so a gate's pre-activation is its bias plus the sum of its edges' ``f_ji``: drawing ``f_ji`` over the
inputs the model met shows everything the gate does with each input.

- ``input_ranges``: after training, the range of every QKAN input over a sample of training windows
  (stored in the manifest), so that the plots show the part of each edge the model used;
- ``edge_curves``: every ``f_ji`` on a grid over that range, evaluated by the layer's own blocks (the
  code the model runs: spectral or state vector).

Notation: N windows, R recurrent steps, I QKAN inputs, O QKAN outputs, G grid points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from qkanforecast.config import DataConfig
from qkanforecast.errors import QKANForecastError
from qkanforecast.manifest import InputRanges
from qkanforecast.models.cells import GatedCell, HQKANLSTMCell, QKANLSTMCell
from qkanforecast.models.qkan import QKANLayer
from qkanforecast.windows import WindowDataset

RANGE_WINDOWS = 2048  # training windows sampled for the input ranges (one epoch's worth by default)
_GATES = ("i", "f", "g", "o")
_CALENDAR_NAMES = ("sin day", "cos day", "sin week", "cos week")


class _Captured(Exception):
    """Stops a forecaster's forward pass once its recurrent core's input is known."""


def first_member(model: nn.Module) -> nn.Module:
    """An ensemble's first member (the one reading a week of lags), else the model itself: the member
    whose edges are recorded and drawn."""
    members = getattr(model, "members", None)
    return members[0] if isinstance(members, nn.ModuleList) else model


def qkan_cells(model: nn.Module) -> list[GatedCell]:
    """The recurrent cells of a forecaster whose core is a QKAN-LSTM or HQKAN-LSTM ([] for an LSTM; an
    ensemble's first member's)."""
    model = first_member(model)
    cells = getattr(getattr(model, "core", None), "cells", None)
    if cells is None:
        return []
    return [c for c in cells if isinstance(c, QKANLSTMCell | HQKANLSTMCell)]


@torch.no_grad()
def qkan_inputs(model: nn.Module, x: Tensor, future: Tensor) -> list[Tensor]:
    """The inputs every recurrent layer's QKAN layer receives on the windows ``(x, future)``: per layer
    ``[N * R, I]``. QKAN-LSTM: ``[x_t; h_{t-1}]``; HQKAN-LSTM: the encoder's output of it."""
    model = first_member(model)
    cells = qkan_cells(model)
    seen: list[Tensor] = []

    def grab(_module: nn.Module, args: tuple[Tensor, ...]) -> None:
        seen.append(args[0])
        raise _Captured  # the core's own pass is not needed: the cells are run below

    core: nn.Module = model.core  # type: ignore[assignment]
    hook = core.register_forward_pre_hook(grab)
    try:
        model.eval()
        model(x, future)
    except _Captured:
        pass
    finally:
        hook.remove()
    out = []
    inputs = seen[0]  # [N, R, F]: what the forecaster gives its recurrent core
    for cell in cells:
        n, d = inputs.shape[0], cell.hidden_size
        h0 = c0 = inputs.new_zeros(n, d)
        hidden, _, _ = cell.scan(inputs, h0, c0)  # [N, R, D]
        previous = torch.cat([h0[:, None], hidden[:, :-1]], dim=1)  # h_{t-1}: [N, R, D]
        v = torch.cat([inputs, previous], dim=-1)  # [N, R, F + D]
        if isinstance(cell, HQKANLSTMCell):
            v = cell.encoder(v)  # [N, R, a]
        out.append(v.reshape(-1, v.shape[-1]))
        inputs = hidden
    return out


@torch.no_grad()
def input_ranges(
    model: nn.Module,
    dataset: WindowDataset,
    windows: int = RANGE_WINDOWS,
    seed: int = 0,
    batch_size: int = 512,
) -> InputRanges | None:
    """Per recurrent layer and QKAN input, the lowest and highest value on ``windows`` training windows
    drawn at random with ``seed`` (all of them when there are fewer); None for a model without QKANs."""
    cells = qkan_cells(model)
    if not cells or not len(dataset):
        return None
    gen = torch.Generator().manual_seed(seed)
    low = [torch.full((c.qkan.in_features,), math.inf, dtype=torch.float64) for c in cells]
    high = [torch.full((c.qkan.in_features,), -math.inf, dtype=torch.float64) for c in cells]
    used = 0
    for x, future, _ in dataset.iter_batches(batch_size, shuffle=True, generator=gen, limit=windows):
        for k, v in enumerate(qkan_inputs(model, x, future)):
            low[k] = torch.minimum(low[k], v.min(0).values.double())
            high[k] = torch.maximum(high[k], v.max(0).values.double())
        used += len(x)
    return InputRanges(windows=used, low=[t.tolist() for t in low], high=[t.tolist() for t in high])


@dataclass(frozen=True)
class EdgeCurves:
    """The edge functions of one recurrent layer's QKAN: ``values[j, i]`` is ``f_ji`` on ``grid[i]``.

    ``kind``: ``gates`` (QKAN-LSTM: output ``g * D + j`` is unit ``j`` of gate ``g`` in order i, f, g, o)
    or ``latent`` (HQKAN-LSTM's latent QKAN). ``observed``: the grid spans the inputs the model met in
    training (else one period ``[-pi, pi]`` of every DARUAN, for models trained before ranges were kept).
    """

    layer: int
    kind: str
    grid: np.ndarray  # [I, G]
    values: np.ndarray  # [O, I, G]
    inputs: list[str]  # names of the I inputs
    outputs: list[str]  # names of the O outputs
    readout: str
    reps: int
    observed: bool


def input_names(model: nn.Module, layer: int, data: DataConfig | None = None) -> list[str]:
    """Names of the QKAN inputs of recurrent layer ``layer``: what the core reads, then ``h_{t-1}``.

    The first layer reads the target, the calendar and the covariates of ``data`` (the layout of
    ``windows.window_calendar``); where they do not add up to the layer's width, ``x1, x2, ...``."""
    model = first_member(model)
    cell = qkan_cells(model)[layer]
    if isinstance(cell, HQKANLSTMCell):
        return [f"e{k + 1}" for k in range(cell.latent_in)]
    f, d = cell.input_size, cell.hidden_size
    hidden = [f"h{k + 1}" for k in range(d)]
    generic = [f"x{k + 1}" for k in range(f)]
    if layer > 0:
        return generic + hidden
    names = ["y"]
    if getattr(getattr(model, "config", None), "calendar", False):
        names += _CALENDAR_NAMES
    if data is not None:
        names += [*data.hist_exog, *data.futr_exog, *data.static] + (["holiday"] if data.holidays else [])
    return (names if len(names) == f else ["y", *generic[1:]]) + hidden


@torch.no_grad()
def edge_curves(
    model: nn.Module, ranges: InputRanges | None, points: int = 201, data: DataConfig | None = None
) -> list[EdgeCurves]:
    """Every edge function of every recurrent layer's QKAN on ``points`` values spanning ``ranges``
    (``data``, the model's data configuration, names the covariates among the inputs)."""
    cells = qkan_cells(model)
    if not cells:
        raise QKANForecastError(
            "the model has no QKAN layers: activations exist for qkan-lstm and hqkan-lstm"
        )
    if ranges is not None and len(ranges.low) != len(cells):
        raise QKANForecastError(
            f"the manifest's input ranges cover {len(ranges.low)} layers but the model has {len(cells)}"
        )
    model.eval()
    curves = []
    for k, cell in enumerate(cells):
        layer: QKANLayer = cell.qkan
        n_in = layer.in_features
        if ranges is None:
            lo, hi = np.full(n_in, -math.pi), np.full(n_in, math.pi)
        else:
            lo, hi = np.asarray(ranges.low[k]), np.asarray(ranges.high[k])
            flat = hi - lo < 1e-6  # a constant input: show a small neighbourhood
            lo, hi = np.where(flat, lo - 0.5, lo), np.where(flat, hi + 0.5, hi)
        grid = np.linspace(lo, hi, points, axis=1)  # [I, G]
        dtype = layer.theta.dtype
        blocks = layer.blocks([1] * n_in)  # one block per input: block i gives f_{.i}
        values = np.stack(
            [
                b(torch.as_tensor(grid[i], dtype=dtype)[:, None]).double().numpy().T
                for i, b in enumerate(blocks)
            ],
            axis=1,
        )  # [O, I, G]
        if isinstance(cell, HQKANLSTMCell):
            kind, outputs = "latent", [f"z{j + 1}" for j in range(layer.out_features)]
        else:
            d = cell.hidden_size
            kind, outputs = "gates", [f"{g}{j + 1}" for g in _GATES for j in range(d)]
        curves.append(
            EdgeCurves(
                k,
                kind,
                grid,
                values,
                input_names(model, k, data),
                outputs,
                layer.spec.readout.value,
                layer.spec.reps,
                ranges is not None,
            )
        )
    return curves
