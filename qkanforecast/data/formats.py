"""The file formats of tables: which suffix means which ``OutFormat``, and the metadata of the
canonical Parquet file. A leaf of the data package, shared by ``readers`` and ``writers``."""

from __future__ import annotations

import os
from pathlib import Path

from qkanforecast.config import OutFormat

SUFFIXES = {".parquet": OutFormat.PARQUET, ".pq": OutFormat.PARQUET, ".csv": OutFormat.CSV,
            ".txt": OutFormat.CSV, ".jsonl": OutFormat.JSONL, ".ndjson": OutFormat.JSONL}
META_KEY = b"qkanforecast"  # the canonical Parquet file's schema metadata key (JSON, see writers.metadata)
FORMAT_VERSION = 1  # version of that metadata


def format_of(path: str | os.PathLike[str]) -> OutFormat | None:
    """The format the suffix of ``path`` names (``None``: an unknown suffix)."""
    return SUFFIXES.get(Path(path).suffix.lower())
