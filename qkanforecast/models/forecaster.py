"""The forecaster: a model family's recurrent core plus a linear head, window [N, L, F] -> horizon [N, H].

``Forecaster(config)`` is built from a ``ModelConfig`` alone and keeps it, resolved, in ``.config``; a
checkpoint stores ``to_dict(model.config)`` and ``build_model(from_dict(ModelConfig, ...))`` rebuilds it.
The family table ``FAMILIES`` (config.py) names each family's core; adding a family needs no edit here.

Defaults (chosen to train well and fast on a CPU; each family compared at its own size, so always
report parameter counts next to each other; see ``count_parameters``): ``FAMILIES`` gives each family's
hidden size (lstm 32, qkan-lstm 8, hqkan-lstm 16), ``QKANSpec`` the QKAN edges (reps 3, fast read-out,
the reference library's default). HQKAN-LSTM's latent widths are ceil(log2(F + D)) -> ceil(log2(4D)).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import cast

from torch import Tensor, nn

from ..config import ModelConfig

CoreFn = Callable[[ModelConfig], nn.Module]


def core_builder(target: str) -> CoreFn:
    """The callable a ``FamilyInfo.core`` string (``"module:attr"``) names."""
    module, _, attr = target.partition(":")
    return cast(CoreFn, getattr(importlib.import_module(module), attr))


class Forecaster(nn.Module):
    """The family's core (batch first, output [N, L, D]) and a Linear head on its last output step."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config.resolved()
        hidden_size = self.config.hidden_size
        assert hidden_size is not None  # resolved() fills it in
        # the head first: checkpoints and seeded runs of earlier versions have it first
        self.head = nn.Linear(hidden_size, self.config.horizon)
        self.core = core_builder(self.config.family.core)(self.config)

    def forward(self, x: Tensor) -> Tensor:
        """x [N, L, F] -> [N, H]: the horizon from the last hidden state."""
        if x.dim() != 3:
            raise ValueError(f"expected input [N, L, F] (3D), got {x.dim()}D")
        out, _ = self.core(x)  # [N, L, F] -> [N, L, D]
        return cast(Tensor, self.head(out[:, -1]))  # [N, D] -> [N, H]


def build_model(config: ModelConfig) -> Forecaster:
    """The forecaster of ``config`` (freshly initialised from torch's global generator)."""
    return Forecaster(config)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
