"""Errors a user can act on. The CLI prints them as one ``Error: ...`` line and exits 1."""


class QKANForecastError(ValueError):
    """A user mistake: bad input data, an unknown model or reference, a bad option value."""
