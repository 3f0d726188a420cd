"""Checks of a table against what training and forecasting need, each an error a user can act on.

- ``check_scaled``: every value the model reads must stay finite once scaled, in the model's float32;
  otherwise training diverges (an all-NaN forecast, and a misleading "lower --lr").
- ``skip_short``: series too short for the model are dropped with a note naming them, or refused.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from qkanforecast.data import Table
from qkanforecast.errors import QKANForecastError
from qkanforecast.windows import SeriesScaler

FLOAT32_MAX = float(np.finfo(np.float32).max)
NAMED = 10  # series named in a note; the rest are counted


def check_scaled(table: Table, scaler: SeriesScaler, last: int | None = None) -> None:
    """Raise on the first value of ``table`` (or of the ``last`` values of each series) whose scaled
    form is not finite in float32, naming its series and time."""
    lengths = table.lengths
    stats = np.array([scaler.stats(u) for u in table.ids], dtype=np.float64).reshape(-1, 2)
    if last is None:
        rows = np.arange(len(table.values))
        owner = np.repeat(np.arange(table.n_series), lengths)
    else:
        width = np.minimum(lengths, last)
        owner = np.repeat(np.arange(table.n_series), width)
        rows = np.repeat(table.offsets[1:] - width, width) + (
            np.arange(int(width.sum())) - np.repeat(np.cumsum(width) - width, width)
        )
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        scaled = (table.values[rows] - stats[owner, 0]) / stats[owner, 1]
        bad = ~(np.abs(scaled) <= FLOAT32_MAX)  # NaN too
    if bad.any():
        k = int(np.argmax(bad))
        i, row = int(owner[k]), int(rows[k])
        raise QKANForecastError(
            f"series '{table.ids[i]}' value {table.values[row]:g} at {pd.Timestamp(int(table.ds_ns[row]))} "
            f"scales to {scaled[k]:g} with the {scaler.kind} scaler, beyond what the model computes with "
            "(float32, up to 3.4e38); rescale the series, e.g. to other units, or use --scaler standard"
        )


def skip_short(table: Table, min_length: int, what: str, strict: bool) -> tuple[Table, list[str], str | None]:
    """``table`` without its series shorter than ``min_length``, their ids and a note that names them.

    ``strict`` refuses instead (the first short series is an error, as is a table of short series only);
    ``what`` says what needs the length (``a lookback of 144``).
    """
    short = table.lengths < min_length
    if not short.any():
        return table, [], None
    ids = [table.ids[i] for i in np.flatnonzero(short)]
    i = int(np.argmax(short))
    if strict or short.all():
        every = "" if strict else f"; all {len(ids)} series are shorter"
        raise QKANForecastError(
            f"series '{table.ids[i]}' has {int(table.lengths[i])} steps; {what} needs at least "
            f"{min_length}{every}"
        )
    keep = np.repeat(~short, table.lengths)
    frame = table.frame[keep].reset_index(drop=True)
    frame["unique_id"] = frame["unique_id"].cat.remove_unused_categories()
    return dataclasses.replace(table, frame=frame), ids, short_note(ids, min_length, what)


def short_note(ids: list[str], min_length: int, what: str) -> str:
    """The note that names the series skipped for being shorter than ``min_length``."""
    named = ", ".join(f"'{u}'" for u in ids[:NAMED]) + (
        f" and {len(ids) - NAMED} more" if len(ids) > NAMED else ""
    )
    return (
        f"skipped {len(ids)} series with fewer than {min_length} steps ({what} needs at least {min_length}): "
        f"{named}; --strict refuses them instead"
    )
