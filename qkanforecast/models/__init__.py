"""QKAN layers, QKAN-LSTM / HQKAN-LSTM / LSTM recurrent models and the forecasters built on them."""

from .forecasters import (
    MODELS,
    HQKANLSTMForecaster,
    LSTMForecaster,
    QKANLSTMForecaster,
    build_model,
    count_parameters,
)
from .lstm import HQKANLSTM, LSTM, QKANLSTM, HQKANLSTMCell, QKANLSTMCell
from .qkan import QKANLayer, daruan_statevector, fast_from_born, fourier_coefficients

__all__ = [
    "HQKANLSTM",
    "HQKANLSTMCell",
    "HQKANLSTMForecaster",
    "LSTM",
    "LSTMForecaster",
    "MODELS",
    "QKANLSTM",
    "QKANLSTMCell",
    "QKANLSTMForecaster",
    "QKANLayer",
    "build_model",
    "count_parameters",
    "daruan_statevector",
    "fast_from_born",
    "fourier_coefficients",
]
