"""QKAN layers, QKAN-LSTM / HQKAN-LSTM / LSTM recurrent models and the forecaster built on them."""

from .cells import HQKANLSTMCell, QKANLSTMCell
from .daruan import daruan_statevector, fast_from_born, fourier_coefficients
from .forecaster import Ensemble, Forecaster, build_model, count_parameters
from .lstm import HQKANLSTM, LSTM, QKANLSTM, RecurrentStack
from .qkan import QKANLayer

__all__ = [
    "HQKANLSTM",
    "HQKANLSTMCell",
    "LSTM",
    "QKANLSTM",
    "QKANLSTMCell",
    "QKANLayer",
    "RecurrentStack",
    "Ensemble",
    "Forecaster",
    "build_model",
    "count_parameters",
    "daruan_statevector",
    "fast_from_born",
    "fourier_coefficients",
]
