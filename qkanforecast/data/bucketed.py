"""``ingest --buckets``: the input streamed into buckets, so that no process holds the whole table.

Pass 1 converts the input chunk by chunk (CSV blocks, Parquet row groups, the batches of a Spark-style
directory) exactly as a single-table read does (the same error for the same line), and routes each
converted row to the bucket of its series (``bucket_of``) in spill files on local disk (about 28 bytes
a row and 8 per covariate, in the system's temporary directory). Pass 2 validates one bucket at a time
with the same ``canonicalise`` (each series is whole in its bucket, so duplicates, gaps, fills and
lengths are judged as for the whole table) and writes its part. The marker is written last; any error
removes the parts written so far. Memory holds the series names, one input chunk and one bucket.

Where a bucket's own steps give another frequency than the others' (possible only when ``--freq`` is not
given), the run stops with an error asking for ``--freq``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from qkanforecast.data.arrow import Ctx, convert, read_report, zone
from qkanforecast.data.canonical import IngestOptions, canonicalise
from qkanforecast.data.partitioned import (
    Marker,
    Writer,
    bucket_of,
    open_partitioned,
    read_with,
    write_partitioned,
)
from qkanforecast.data.table import Table
from qkanforecast.data.zones import localize
from qkanforecast.errors import QKANForecastError

SPILL_BYTES = 1 << 26  # converted rows held in memory before they are appended to the spill files


@dataclass
class Spill:
    """Per bucket, the converted rows of pass 1 (arrays appended to one file per bucket)."""

    folder: Path
    held: dict[int, list[list[np.ndarray]]] = field(default_factory=dict)
    size: int = 0

    def add(self, bucket: int, arrays: list[np.ndarray]) -> None:
        self.held.setdefault(bucket, []).append(arrays)
        self.size += sum(a.nbytes for a in arrays)
        if self.size > SPILL_BYTES:
            self.flush()

    def flush(self) -> None:
        for bucket, chunks in self.held.items():
            with open(self.folder / f"{bucket}.npy", "ab") as fh:
                for arrays in chunks:
                    for a in arrays:
                        np.save(fh, a, allow_pickle=False)
        self.held, self.size = {}, 0

    def read(self, bucket: int, width: int) -> list[np.ndarray] | None:
        """The bucket's ``width`` arrays, each the concatenation of its chunks; None for an empty bucket."""
        path = self.folder / f"{bucket}.npy"
        if not path.exists():
            return None
        parts: list[list[np.ndarray]] = [[] for _ in range(width)]
        end = path.stat().st_size
        with open(path, "rb") as fh:
            while fh.tell() < end:
                for column in parts:
                    column.append(np.load(fh, allow_pickle=False))
        return [np.concatenate(column) for column in parts]


@dataclass
class Spilled:
    """What pass 1 leaves for pass 2."""

    label: str
    options: IngestOptions
    ctx: Ctx
    columns: dict[str, Any]
    categories: np.ndarray  # every series name, by code
    rows: int
    tz: Any
    local: bool  # naive local times of ``tz``, converted per bucket
    spill: Spill


def _spill(folder: Path, buckets: int, label: str, batches: Iterator[Any], options: IngestOptions,
           unit: str, first: int, columns: dict[str, Any]) -> Spilled:
    """The ``finish`` of pass 1: convert the chunks and route every row to its series' bucket."""
    ctx = Ctx(label, unit, first)
    if columns.get("note"):
        ctx.notes.append(columns["note"])
    covariates: list[str] = columns.get("covariates", [])
    names: dict[str, int] = {}
    where = np.zeros(0, dtype=np.int64)  # the bucket of each code met so far
    spill = Spill(folder)
    rows = 0
    for chunk in convert(batches, ctx, options, columns, names):
        if len(names) > len(where):
            where = np.concatenate([where, bucket_of(list(islice(names, len(where), None)), buckets)])
        index = np.arange(chunk.pos, chunk.pos + len(chunk.ds), dtype=np.int64)
        for codes, y in zip(chunk.codes, chunk.y, strict=True):
            of = where[codes]
            order = np.argsort(of, kind="stable")  # rows of a bucket keep their order in the input
            cuts = np.concatenate([[0], np.cumsum(np.bincount(of, minlength=buckets))])
            for k in np.flatnonzero(np.diff(cuts)):
                pick = order[cuts[k]:cuts[k + 1]]
                spill.add(int(k), [codes[pick], chunk.ds[pick], index[pick], y[pick],
                                   *(chunk.extra[c][pick] for c in covariates)])
        rows = chunk.pos + len(chunk.ds)
    spill.flush()
    tz, local = zone(label, ctx, options, columns["time"])
    return Spilled(label, options, ctx, columns, np.array(list(names), dtype=object), rows, tz, local, spill)


def _bucket(sp: Spilled, bucket: int) -> Table | None:
    """Pass 2 for one bucket: its rows validated into a canonical table (None for an empty bucket)."""
    covariates: list[str] = sp.columns.get("covariates", [])
    arrays = sp.spill.read(bucket, 4 + len(covariates))
    if arrays is None:
        return None
    codes, ds, index, y, *extra = arrays
    used, local_codes = np.unique(codes, return_inverse=True)
    local_codes = local_codes.astype(np.int32)
    if sp.local:
        ds = localize(sp.label, local_codes, ds, sp.tz, lambda i: sp.ctx.where(int(index[i])))
    report = read_report(sp.label, sp.rows, sp.columns, sp.tz)
    return canonicalise(sp.label, local_codes, sp.categories[used], ds, y, sp.options, report,
                        sp.ctx.notes, dict(zip(covariates, extra, strict=True)), tz=sp.tz,
                        naive=not sp.ctx.aware and sp.tz is None)


def _merge_reports(reports: list[dict[str, Any]], notes: list[str], buckets: int) -> dict[str, Any]:
    """One ingest report from the buckets' reports (sums, extremes, the first examples)."""
    first = reports[0]
    total = {key: sum(r[key] for r in reports) for key in (
        "rows", "series", "duplicates_dropped", "missing_timestamps_filled", "nan_filled", "inf_filled",
        "series_filled")}
    dropped = total["duplicates_dropped"]
    return {
        **{k: first[k] for k in ("source", "rows_read", "columns", "tz")}, **total,
        "buckets": buckets, "freq": first["freq"], "freq_inferred": first["freq_inferred"],
        "start": min(r["start"] for r in reports), "end": max(r["end"] for r in reports),
        "min_length": min(r["min_length"] for r in reports),
        "max_length": max(r["max_length"] for r in reports),
        "sorted_input": all(r["sorted_input"] for r in reports), "fill": first["fill"],
        "filled_examples": [e for r in reports for e in r["filled_examples"]][:10],
        "notes": notes + ([f"{dropped} identical duplicate rows dropped"] if dropped else []),
    }


def ingest_partitioned(source: str, options: IngestOptions, target: str,
                       buckets: int) -> tuple[Marker, dict[str, Any]]:
    """Read ``source`` (any input ``read_source`` takes), validate it and write it as ``buckets`` buckets
    under ``target`` with its marker; return the marker and the ingest report. A directory qkanforecast
    wrote is already canonical: it is re-bucketed from its parts."""
    dataset = open_partitioned(source)
    if dataset is not None:
        table = dataset.read_all()
        return write_partitioned(table, target, buckets), table.report
    writer = Writer(str(target)).begin()
    try:
        with tempfile.TemporaryDirectory(prefix="qkanforecast-ingest-") as tmp:
            sp: Spilled = read_with(source, options, partial(_spill, Path(tmp), buckets))
            parts, reports, freq = [], [], None
            for k in range(buckets):
                bucket = _bucket(sp, k)
                if bucket is None:
                    continue
                if freq is not None and bucket.freq != freq:
                    raise QKANForecastError(
                        f"{sp.label}: the series of bucket {k} step by {bucket.freq} but earlier ones by "
                        f"{freq}; pass --freq")
                freq = bucket.freq
                parts.append(writer.write_table(bucket, k))
                reports.append(bucket.report)
                del bucket
            if not reports:
                raise QKANForecastError(f"{sp.label}: no rows")
        marker = writer.commit("canonical", buckets, parts, freq)
        return marker, _merge_reports(reports, list(sp.ctx.notes), buckets)
    except BaseException:
        writer.abort()
        raise
