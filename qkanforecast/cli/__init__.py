"""The ``qkanforecast`` command line: a thin Typer layer that parses options, calls the library and formats
its results. ``main`` is the entry point (``app`` the Typer application); each module registers its commands
on it."""

from __future__ import annotations

import os
import sys

from qkanforecast.cli import ingest, models, plot, predict, train  # noqa: F401  (register the commands)
from qkanforecast.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    """Run the command, then end the process with its exit status at once.

    Once the command has returned, its outputs are complete (written atomically) and its streams are
    flushed here; the process then ends with ``os._exit``, skipping the interpreter's teardown. Native
    thread pools torn down there (pyarrow's, gloo's) can abort an otherwise finished run now and then
    with "terminate called without an active exception" (exit -6; apache/arrow#34314), which a cron job
    or torchrun would take for a failure. Ray is stopped by the command itself before this point.
    """
    try:
        app(prog_name="qkanforecast")  # standalone: always ends in SystemExit
        code: int = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:  # a message: Python would print it and exit 1
            print(exc.code, file=sys.stderr)
            code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`) or a closed stream: nothing more to say
            pass
    os._exit(code)
