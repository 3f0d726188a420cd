"""qkanforecast: forecast telecom time series with QKAN-LSTM, HQKAN-LSTM and LSTM models."""

__version__ = "0.1.0"
