"""The forecaster: a model family's recurrent core inside the same window-to-horizon design for every
family, ``x [N, X, F], future [N, H, C] -> [N, H]``.

``Forecaster(config)`` is built from a ``ModelConfig`` alone and keeps it, resolved, in ``.config``; a
checkpoint stores ``to_dict(model.config)`` and ``build_model(from_dict(ModelConfig, ...))`` rebuilds it.
The family table ``FAMILIES`` (config.py) names each family's core; adding a family needs no edit here.

Defaults (each family compared at its own size, so always report parameter counts next to each other; see
``count_parameters``): ``FAMILIES`` gives each family's hidden size (lstm 32, qkan-lstm 8, hqkan-lstm 16),
``QKANSpec`` the QKAN edges (reps 3, born read-out). HQKAN-LSTM's latent widths are ceil(log2(F + D)) ->
ceil(log2(4D)). ``ModelConfig(..., **PLAIN)`` is the paper's design: the raw window in, one Linear out.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import replace
from typing import cast

import torch
from torch import Tensor, nn

from ..config import Decoder, ModelConfig, Norm, Skip
from ..features import CALENDAR_SIZE

_STEP_EMBEDDING = 8  # width of the learned per-step embedding the MLP decoder reads
_EPS = 1e-5  # added to a window's standard deviation (a flat window stays finite)

CoreFn = Callable[[ModelConfig], nn.Module]


def core_builder(target: str) -> CoreFn:
    """The callable a ``FamilyInfo.core`` string (``"module:attr"``) names."""
    module, _, attr = target.partition(":")
    return cast(CoreFn, getattr(importlib.import_module(module), attr))


class Forecaster(nn.Module):
    """A window of past values (and covariates) -> the next ``horizon`` values, in the window's units.

    Input ``x [N, X, F]``: channel 0 the (per-series scaled) target, then the covariates of every input
    step (the calendar when ``config.calendar``, then the exogenous covariates, ``input_size - 1`` of
    them); ``future [N, H, C]`` the same for every forecast step (the calendar, then ``future_size``).
    With ``norm=window`` the target channel is normalised by the mean and standard deviation of the
    recurrent part of the window and the output mapped back, so the level and scale of a forecast follow
    the recent data. The recurrence reads the last ``recurrent_steps`` steps; the lag values (a day and a
    week before each forecast step, the mean of the last seven days at that time of day) and the skip base
    read the whole window. With a skip the output is ``base + correction`` and the correction's last layer
    starts at zero: the untrained model is exactly the seasonal-naive (or naive) forecast.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config = config.resolved()
        d, h = config.hidden_size, config.horizon
        assert d is not None  # resolved() fills it in
        c = CALENDAR_SIZE if config.calendar else 0
        self.n_future = c + config.future_size  # what the decoder reads of every forecast step
        self.n_lags = (3 + int(config.skip_base is Skip.LAST)) if config.uses_lags else 0
        # the head first: checkpoints and seeded runs of earlier versions have it first
        last: nn.Linear
        if config.decoder is Decoder.LINEAR:
            self.head = last = nn.Linear(d, h)
        else:
            self.step_embedding = nn.Parameter(torch.randn(h, _STEP_EMBEDDING) * 0.1)
            self.decoder = nn.Sequential(
                nn.Linear(d + _STEP_EMBEDDING + self.n_future + self.n_lags, config.decoder_size), nn.GELU()
            )
            self.out = last = nn.Linear(config.decoder_size, 1)
            self.lag_linear = nn.Linear(self.n_lags, 1, bias=False) if self.n_lags else None
            if self.lag_linear is not None:
                nn.init.zeros_(self.lag_linear.weight)
        if config.skip_base is not Skip.NONE:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.core = core_builder(config.family.core)(replace(config, input_size=config.input_size + c))

    def forward(self, x: Tensor, future: Tensor | None = None) -> Tensor:
        """x [N, X, F], future [N, H, C] -> [N, H]."""
        if x.dim() != 3:
            raise ValueError(f"expected input [N, L, F] (3D), got {x.dim()}D")
        cfg = self.config
        n, window, _ = x.shape
        steps = min(window, cfg.recurrent_steps or window)
        v = x[:, :, 0]  # [N, X]
        if cfg.norm is Norm.WINDOW:
            recent = v[:, -steps:]
            loc = recent.mean(1, keepdim=True)
            scale = recent.std(1, keepdim=True, unbiased=False) + _EPS  # [N, 1]
            v = (v - loc) / scale
        feats = torch.cat([v[:, -steps:, None], x[:, -steps:, 1:]], dim=-1)  # [N, R, F]
        out, _ = self.core(feats)  # [N, R, F] -> [N, R, D]
        hidden = out[:, -1]  # [N, D]
        lags = self._lags(v) if self.n_lags else None  # [N, H, K]
        if cfg.decoder is Decoder.LINEAR:
            y = self.head(hidden)  # [N, D] -> [N, H]
        else:
            parts = [hidden[:, None].expand(-1, cfg.horizon, -1), self.step_embedding.expand(n, -1, -1)]
            if self.n_future:
                if future is None or future.shape[-1] != self.n_future:
                    raise ValueError(f"this model needs {self.n_future} covariates of every forecast step "
                                     "(the calendar, then future and static covariates and holidays)")
                parts.append(future)
            if lags is not None:
                parts.append(lags)
            y = self.out(self.decoder(torch.cat(parts, dim=-1)))[..., 0]  # [N, H, din] -> [N, H]
            if self.lag_linear is not None and lags is not None:
                y = y + self.lag_linear(lags)[..., 0]
        if cfg.skip_base is not Skip.NONE:
            y = y + self._base(v)
        if cfg.norm is Norm.WINDOW:
            y = y * scale + loc
        return y

    def _positions(self, window: int, offset: int, device: torch.device) -> Tensor:
        """Indices into a window of ``window`` steps: for each forecast step h, the step ``offset`` before
        it, taken from the last ``offset`` steps of the window (repeated past the offset)."""
        return window - offset + torch.arange(self.config.horizon, device=device) % offset

    def _base(self, v: Tensor) -> Tensor:
        """The skip's base [N, H]: the seasonal naive (the last season, repeated) or the last value."""
        window = v.shape[1]
        if self.config.skip_base is Skip.LAST or window < self.config.season:
            return v[:, -1:].expand(-1, self.config.horizon)
        return v[:, self._positions(window, self.config.season, v.device)]

    def _lags(self, v: Tensor) -> Tensor:
        """[N, H, K]: per forecast step the value a day and a week before, the mean of the last seven days
        at that time of day, and the last value when the skip is the naive one. What the window does not
        reach is replaced by the nearest it does (a week by a day, a day by the last value)."""
        window, s, h = v.shape[1], self.config.season, self.config.horizon
        last = v[:, -1:].expand(-1, h)
        days = min(7, self.config.lag_days, window // s)
        same_time = [v[:, self._positions(window - d * s, s, v.device)] for d in range(days)]  # days x [N, H]
        day = same_time[0] if days else last
        week = v[:, self._positions(window, 7 * s, v.device)] if days == 7 else day
        cols = [day, week, torch.stack(same_time, 0).mean(0) if days else last]
        if self.config.skip_base is Skip.LAST:
            cols.append(last)
        return torch.stack(cols, dim=-1)


class Ensemble(nn.Module):
    """Members that differ in the days of lags they read (``config.ensemble``), trained apart and
    combined with ``weights`` (a buffer, equal until training chooses them on the validation windows):
    ``x [N, X, F], future [N, H, C] -> [N, H]`` like one ``Forecaster``."""

    weights: Tensor

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config = config.resolved()
        self.members = nn.ModuleList(
            [Forecaster(replace(config, ensemble=[], lag_days=days)) for days in config.ensemble or []]
        )
        k = len(self.members)
        self.register_buffer("weights", torch.full((k,), 1.0 / k))

    def forward(self, x: Tensor, future: Tensor | None = None) -> Tensor:
        outs = torch.stack([m(x, future) for m in self.members], dim=-1)  # [N, H, K]
        return outs @ self.weights.to(outs.dtype)


def build_model(config: ModelConfig) -> Forecaster | Ensemble:
    """The forecaster of ``config`` (freshly initialised from torch's global generator): an ``Ensemble``
    when ``config.ensemble`` names two or more members (``None``, auto, is resolved by training)."""
    return Ensemble(config) if len(config.ensemble or []) > 1 else Forecaster(config)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
