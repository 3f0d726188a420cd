"""Forecasters: a recurrent core plus a linear head, mapping a window [N, L, F] to the horizon [N, H].

Constructor arguments are plain JSON values and are kept in ``.config``, so ``cls(**model.config)``
rebuilds a model from a checkpoint's JSON. ``MODELS`` maps the CLI names to the classes.

Defaults (chosen to train well and fast on a CPU; each family compared at its own size, so always
report parameter counts next to each other; see ``count_parameters``):
- ``lstm``: hidden_size 32.
- ``qkan-lstm``: hidden_size 8, reps 3, fast read-out (the reference library's default).
- ``hqkan-lstm``: hidden_size 16, reps 3, fast read-out, latent widths ceil(log2(F + D)) -> ceil(log2(4D)).
"""

from __future__ import annotations

import inspect
from typing import Any, cast

from torch import Tensor, nn

from ..errors import QKANForecastError
from .lstm import HQKANLSTM, LSTM, QKANLSTM
from .qkan import Readout, Solver


class _Forecaster(nn.Module):
    core: nn.Module

    def __init__(self, config: dict[str, Any], input_size: int, horizon: int, hidden_size: int) -> None:
        super().__init__()
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.config: dict[str, Any] = dict(config)
        self.input_size = input_size
        self.horizon = horizon
        self.hidden_size = hidden_size
        self.head = nn.Linear(hidden_size, horizon)

    def forward(self, x: Tensor) -> Tensor:
        """x [N, L, F] -> [N, H]: the horizon from the last hidden state."""
        if x.dim() != 3:
            raise ValueError(f"expected input [N, L, F] (3D), got {x.dim()}D")
        out, _ = self.core(x)  # [N, L, F] -> [N, L, D]
        return self.head(out[:, -1])  # [N, D] -> [N, H]


class LSTMForecaster(_Forecaster):
    """nn.LSTM baseline + Linear head."""

    def __init__(
        self,
        input_size: int = 1,
        horizon: int = 1,
        hidden_size: int = 32,
        num_layers: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(
            dict(
                input_size=input_size,
                horizon=horizon,
                hidden_size=hidden_size,
                num_layers=num_layers,
                dropout=dropout,
            ),
            input_size,
            horizon,
            hidden_size,
        )
        self.core = LSTM(input_size, hidden_size, num_layers=num_layers, dropout=dropout)


class QKANLSTMForecaster(_Forecaster):
    """QKAN-LSTM + Linear head (arXiv 2512.05049)."""

    def __init__(
        self,
        input_size: int = 1,
        horizon: int = 1,
        hidden_size: int = 8,
        num_layers: int = 1,
        dropout: float = 0.0,
        reps: int = 3,
        readout: str = "fast",
        solver: str = "auto",
        preact_trainable: bool = False,
        postact_trainable: bool = False,
        base_weight: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__(
            dict(
                input_size=input_size,
                horizon=horizon,
                hidden_size=hidden_size,
                num_layers=num_layers,
                dropout=dropout,
                reps=reps,
                readout=readout,
                solver=solver,
                preact_trainable=preact_trainable,
                postact_trainable=postact_trainable,
                base_weight=base_weight,
                bias=bias,
            ),
            input_size,
            horizon,
            hidden_size,
        )
        self.core = QKANLSTM(
            input_size,
            hidden_size,
            num_layers=num_layers,
            bias=bias,
            dropout=dropout,
            reps=reps,
            readout=cast(Readout, readout),
            solver=cast(Solver, solver),
            preact_trainable=preact_trainable,
            postact_trainable=postact_trainable,
            base_weight=base_weight,
        )


class HQKANLSTMForecaster(_Forecaster):
    """HQKAN-LSTM (encoder -> latent QKAN -> decoder gate maps) + Linear head."""

    def __init__(
        self,
        input_size: int = 1,
        horizon: int = 1,
        hidden_size: int = 16,
        num_layers: int = 1,
        dropout: float = 0.0,
        reps: int = 3,
        readout: str = "fast",
        solver: str = "auto",
        latent_in: int | None = None,
        latent_out: int | None = None,
        preact_trainable: bool = False,
        postact_trainable: bool = False,
        base_weight: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__(
            dict(
                input_size=input_size,
                horizon=horizon,
                hidden_size=hidden_size,
                num_layers=num_layers,
                dropout=dropout,
                reps=reps,
                readout=readout,
                solver=solver,
                latent_in=latent_in,
                latent_out=latent_out,
                preact_trainable=preact_trainable,
                postact_trainable=postact_trainable,
                base_weight=base_weight,
                bias=bias,
            ),
            input_size,
            horizon,
            hidden_size,
        )
        self.core = HQKANLSTM(
            input_size,
            hidden_size,
            num_layers=num_layers,
            bias=bias,
            dropout=dropout,
            reps=reps,
            readout=cast(Readout, readout),
            solver=cast(Solver, solver),
            latent_in=latent_in,
            latent_out=latent_out,
            preact_trainable=preact_trainable,
            postact_trainable=postact_trainable,
            base_weight=base_weight,
        )


MODELS: dict[str, type[nn.Module]] = {
    "qkan-lstm": QKANLSTMForecaster,
    "hqkan-lstm": HQKANLSTMForecaster,
    "lstm": LSTMForecaster,
}


def build_model(name: Any, **kwargs: Any) -> nn.Module:
    """Build a forecaster by name; kwargs go to its constructor (``None`` values are dropped)."""
    from qkanforecast.config import ModelConfig, to_dict

    if isinstance(name, ModelConfig):  # transitional, until the forecasters take a ModelConfig
        config = name.resolved()
        flat = {k: v for k, v in to_dict(config).items() if k not in ("model", "qkan")}
        flat.update(to_dict(config.qkan))
        accepted = inspect.signature(MODELS[config.model]).parameters
        model = build_model(config.model, **{k: v for k, v in flat.items() if k in accepted})
        model.config = config  # type: ignore[assignment]
        return model
    if name not in MODELS:
        raise QKANForecastError(f"unknown model {name!r}; choose from {', '.join(sorted(MODELS))}")
    cls = MODELS[name]
    try:
        return cls(**{k: v for k, v in kwargs.items() if v is not None})
    except TypeError as exc:
        raise QKANForecastError(f"bad arguments for model {name!r}: {exc}") from None


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
