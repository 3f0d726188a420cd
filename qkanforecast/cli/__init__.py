"""The ``qkanforecast`` command line: a thin Typer layer that parses options, calls the library and formats
its results. ``app`` is the entry point; each module registers its commands on it."""

from qkanforecast.cli import ingest, models, plot, predict, train  # noqa: F401  (register the commands)
from qkanforecast.cli.app import app

__all__ = ["app"]
