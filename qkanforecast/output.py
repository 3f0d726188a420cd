"""Write result tables (forecasts, backtests) as Parquet, CSV or JSON lines, atomically."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import pandas as pd

from qkanforecast.errors import QKANForecastError

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def output_format(path: str, fmt: str | None) -> str:
    """``fmt`` if given, else from the suffix; ``-`` (stdout) defaults to CSV."""
    if fmt is not None:
        return fmt
    if path == "-":
        return "csv"
    found = FORMATS.get(Path(path).suffix.lower())
    if found is None:
        raise QKANForecastError(
            f"{path}: unknown output format; use a .parquet, .csv or .jsonl suffix or --format"
        )
    return found


def _dump(frame: pd.DataFrame, fh, fmt: str) -> None:  # noqa: ANN001
    if fmt == "parquet":
        frame.to_parquet(fh, index=False)
    elif fmt == "csv":
        fh.write(frame.to_csv(index=False).encode())
    else:
        fh.write(frame.to_json(orient="records", lines=True, date_format="iso").encode())


def write_frame(frame: pd.DataFrame, path: str, fmt: str | None = None) -> None:
    """Write ``frame`` to ``path`` (``-``: stdout) via a temporary file and a rename: all or nothing."""
    fmt = output_format(path, fmt)
    if path == "-":
        if fmt == "parquet" and sys.stdout.isatty():
            raise QKANForecastError("refusing to write Parquet to a terminal; use -o FILE or --format csv")
        _dump(frame, sys.stdout.buffer, fmt)
        sys.stdout.buffer.flush()
        return
    with atomic_file(path) as fh:
        _dump(frame, fh, fmt)


@contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary file that appears at ``path`` only once everything was written (temp file + rename).

    On any error, or an interrupt, the temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise QKANForecastError(f"{target}: directory {target.parent} does not exist")
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
