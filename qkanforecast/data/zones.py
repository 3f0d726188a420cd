"""Time zones: check a zone name, read local naive times in a zone, write times in the data's zone.

Inside the tool ``ds`` is always naive (int64 ns); with a zone it is UTC, and ``Table.tz`` names the zone
(see ``table.Table``). Naive local times cross daylight-saving changes: an hour repeats in autumn and an
hour is skipped in spring, so without a zone they look like duplicates and gaps. ``--tz ZONE`` reads them
as local times of ZONE under ``DST_POLICY``. A leaf of the data package, used by ``arrow`` and
``writers`` and by the commands that write results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd

from qkanforecast.errors import QKANForecastError

DST_POLICY = (
    "a repeated local hour (clocks going back) is read in file order, the first as summer time and "
    "the repeat as standard time; a local time that does not exist (clocks going forward) is an "
    "error"
)


def check_zone(name: str) -> str:
    """``name`` if it is a time zone pandas knows (IANA names such as ``Europe/Rome``, ``UTC``)."""
    try:
        pd.Timestamp(0, tz=name)
    except (ValueError, TypeError, KeyError, OSError):  # zoneinfo's not-found error is a KeyError
        raise QKANForecastError(
            f"unknown time zone '{name}'; use an IANA name such as Europe/Rome, America/New_York or UTC"
        ) from None
    return name


def localize(
    label: str, codes: np.ndarray, ds: np.ndarray, tz: str, where: Callable[[int], str]
) -> np.ndarray:
    """Naive local times of ``tz`` -> UTC int64 ns, under ``DST_POLICY``.

    ``codes`` and ``ds`` are ``[rows]`` in file order (``codes`` the series of each row, ``ds`` int64 ns);
    ``where(row)`` names a row in an error (``line 12``).
    """
    idx = pd.DatetimeIndex(ds.view("datetime64[ns]"))
    n = len(ds)
    summer = idx.tz_localize(tz, ambiguous=np.ones(n, dtype=bool), nonexistent="NaT").asi8
    winter = idx.tz_localize(tz, ambiguous=np.zeros(n, dtype=bool), nonexistent="NaT").asi8
    nat = np.iinfo(np.int64).min
    missing = np.flatnonzero(summer == nat)
    if len(missing):
        i = int(missing[0])
        raise QKANForecastError(
            f"{label}: {where(i)}: local time {pd.Timestamp(int(ds[i]))} does not exist in {tz} (the clocks "
            f"went forward); with --tz, {DST_POLICY}"
        )
    ambiguous = np.flatnonzero(summer != winter)
    if not len(ambiguous):
        return summer
    # rows of one series at one ambiguous time, in file order: the first is summer time, the rest standard
    order = ambiguous[np.lexsort((ambiguous, ds[ambiguous], codes[ambiguous]))]
    key_same = (codes[order[1:]] == codes[order[:-1]]) & (ds[order[1:]] == ds[order[:-1]])
    first = np.concatenate([[True], ~key_same])
    repeated = np.concatenate([key_same, [False]]) | ~first
    if not repeated.all():
        i = int(order[int(np.argmin(repeated))])
        raise QKANForecastError(
            f"{label}: {where(i)}: local time {pd.Timestamp(int(ds[i]))} is ambiguous in {tz} (the clocks "
            f"went back) and occurs once in its series; with --tz, {DST_POLICY}"
        )
    out = winter.copy()
    out[order[first]] = summer[order[first]]
    return out


def to_zone(frame: pd.DataFrame, tz: str | None, columns: Iterable[str] = ("ds", "cutoff")) -> pd.DataFrame:
    """``frame`` with its naive UTC time ``columns`` as times of zone ``tz`` (as it is when ``tz`` is None).
    """
    if tz is None:
        return frame
    out = frame.copy(deep=False)
    for col in columns:
        if col in out.columns:
            out[col] = pd.DatetimeIndex(out[col]).tz_localize("UTC").tz_convert(tz)
    return out
