"""Partitioned tables: a directory of Parquet parts, hive-partitioned by bucket
(``bucket=K/part-<run>.parquet``), on the local disk or on any filesystem pyarrow reaches by URI
(``s3://bucket/prefix``, ``gs://...``, ``file:///...``), with a marker ``_SUCCESS.json`` written last.

Why a marker: on an object store there is no atomic rename of a directory, and parts are written by
several workers. The marker lists the parts of the one complete run (with their row counts); readers read
exactly those parts and refuse a directory without it, so a killed run is never read as a result, and an
earlier complete result stays readable until the new marker replaces it (a single-object write). Parts of
other runs are deleted only after the new marker is in place.

Series go to bucket ``crc32(utf-8 id) % buckets`` (``bucket_of``; stable across processes, machines and
engines, unlike Python's ``hash()``), each series whole in one bucket, so a bucket is a unit of work.

A directory written by Spark or Hadoop (an empty ``_SUCCESS`` marker, no ``_SUCCESS.json``) is read whole
through ``pyarrow.dataset`` with the usual validation (``read_source``), for example by ``ingest``.

Imports ``table``, ``canonical``, ``arrow``, ``readers``, ``writers`` and ``formats`` from the data package
(the top of it).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from qkanforecast.data.arrow import Finish, from_batches, pick_columns
from qkanforecast.data.canonical import IngestOptions
from qkanforecast.data.formats import format_of
from qkanforecast.data.readers import load_canonical, read_bytes, read_table
from qkanforecast.data.table import Table
from qkanforecast.data.writers import atomic_file, write_frame_to, write_table_to
from qkanforecast.errors import QKANForecastError

MARKER = "_SUCCESS.json"
HADOOP_MARKER = "_SUCCESS"
MARKER_VERSION = 1
_PART = re.compile(r"^bucket=(\d+)/part-[0-9a-f]+\.parquet$")


def crc32s(ids: Sequence[str]) -> np.ndarray:
    """``crc32`` of every id's utf-8 bytes: uint32 ``[S]``."""
    return np.fromiter((zlib.crc32(u.encode("utf-8")) for u in ids), dtype=np.uint32, count=len(ids))


def bucket_of(ids: Sequence[str], buckets: int) -> np.ndarray:
    """The bucket of every series: ``crc32(utf-8 id) % buckets``, int64 ``[S]``."""
    if buckets < 1:
        raise QKANForecastError(f"--buckets must be at least 1, got {buckets}")
    return (crc32s(ids) % np.uint32(buckets)).astype(np.int64)


def is_uri(source: str | os.PathLike[str]) -> bool:
    return "://" in str(source)


def locate(source: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path in it of a local path or a URI."""
    text = str(source)
    if not is_uri(text):
        return pafs.LocalFileSystem(), str(Path(text).expanduser().absolute())
    try:
        return pafs.FileSystem.from_uri(text)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, ValueError) as exc:
        raise QKANForecastError(f"{text}: cannot open: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def is_dataset(source: str | os.PathLike[str]) -> bool:
    """Whether ``source`` (not ``-``) is a directory, local or behind a URI."""
    if str(source) == "-":
        return False
    if not is_uri(source):
        return Path(source).expanduser().is_dir()
    fs, path = locate(source)
    return _info(fs, path, str(source)).type == pafs.FileType.Directory


def wants_directory(path: str | os.PathLike[str], fmt: str | None = None) -> bool:
    """Whether an output path names a partitioned directory: it ends with ``/``, is an existing directory,
    or has no table suffix and no format was asked for (such a path used to be an error)."""
    text = str(path)
    if text == "-":
        return False
    if text.endswith("/") or is_dataset(text):
        return True
    return fmt is None and format_of(text.split("?", 1)[0]) is None


def _info(fs: pafs.FileSystem, path: str, label: str) -> pafs.FileInfo:
    try:
        return fs.get_file_info(path)
    except OSError as exc:
        raise QKANForecastError(f"{label}: cannot read: {_first_line(exc)}") from None


# ---------------------------------------------------------------------------------------------------
# the marker


@dataclass(frozen=True)
class Part:
    """One Parquet part: its bucket, its path relative to the directory, its rows and series."""

    bucket: int
    path: str
    rows: int
    series: int


@dataclass(frozen=True)
class Marker:
    """The content of ``_SUCCESS.json``: what the run wrote, in bucket order."""

    kind: str  # canonical, forecast, backtest
    buckets: int
    rows: int
    series: int
    parts: list[Part]
    freq: str | None = None
    created: str = ""
    format_version: int = MARKER_VERSION

    @classmethod
    def from_json(cls, data: Any, label: str) -> Marker:
        try:
            if int(data["format_version"]) > MARKER_VERSION:
                raise QKANForecastError(
                    f"{label}: written by a newer qkanforecast (marker format {data['format_version']})")
            parts = [Part(int(p["bucket"]), str(p["path"]), int(p["rows"]), int(p["series"]))
                     for p in data["parts"]]
            marker = cls(str(data["kind"]), int(data["buckets"]), int(data["rows"]), int(data["series"]),
                         parts, data.get("freq"), str(data.get("created", "")), int(data["format_version"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise QKANForecastError(f"{label}: invalid {MARKER} ({exc})") from None
        for p in parts:
            if not _PART.match(p.path):
                raise QKANForecastError(f"{label}: invalid {MARKER} (part path {p.path!r})")
        if sum(p.rows for p in parts) != marker.rows:
            raise QKANForecastError(f"{label}: invalid {MARKER} (the parts' rows do not add up)")
        return marker


# ---------------------------------------------------------------------------------------------------
# reading


@dataclass
class Dataset:
    """A complete partitioned directory: its filesystem, root, marker and label (as the user wrote it)."""

    fs: pafs.FileSystem
    root: str
    marker: Marker
    label: str

    @classmethod
    def open(cls, source: str | os.PathLike[str]) -> Dataset:
        """Open a directory written by qkanforecast; one without ``_SUCCESS.json`` is refused."""
        label = str(source).rstrip("/")
        fs, root = locate(source)
        root = root.rstrip("/")
        try:
            with fs.open_input_stream(f"{root}/{MARKER}") as fh:
                raw = fh.read()
        except (FileNotFoundError, OSError):
            raise QKANForecastError(
                f"{label}: no {MARKER} marker, so not a complete partitioned table (a run that was "
                "stopped, or still running, leaves none); rerun the command that writes it") from None
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise QKANForecastError(f"{label}/{MARKER}: unreadable ({exc})") from None
        return cls(fs, root, Marker.from_json(data, f"{label}/{MARKER}"), label)

    @property
    def parts(self) -> list[Part]:
        return self.marker.parts

    def read_part(self, part: Part) -> Table:
        """One bucket's canonical table."""
        label = f"{self.label}/{part.path}"
        table = load_canonical(f"{self.root}/{part.path}", filesystem=self.fs, label=label)
        if self.marker.freq is not None and table.n_series and table.freq != self.marker.freq:
            raise QKANForecastError(
                f"{self.label}/{part.path}: frequency {table.freq}, but the table's is {self.marker.freq}")
        return table

    def read_frame(self, part: Part) -> pd.DataFrame:
        """One part of a result table (forecast, backtest) as written."""
        table = pads.dataset(f"{self.root}/{part.path}", filesystem=self.fs, format="parquet").to_table()
        return table.to_pandas()

    def read_all(self) -> Table:
        """Every bucket as one canonical table, sorted by ``unique_id, ds`` like a single file."""
        if self.marker.kind != "canonical":
            raise QKANForecastError(f"{self.label}: a {self.marker.kind} table, not time series to read")
        return merge([self.read_part(p) for p in self.parts], self.marker.freq or "h", self.label)


def merge(tables: list[Table], freq: str, label: str) -> Table:
    """One canonical table from tables holding disjoint series (the buckets), sorted by id."""
    ids = np.array([u for t in tables for u in t.ids], dtype=object)
    cats = np.unique(ids) if len(ids) else np.array([], dtype=object)
    if len(cats) != len(ids):
        names, counts = np.unique(ids, return_counts=True)
        raise QKANForecastError(f"{label}: series {names[counts > 1][0]!r} is in more than one bucket")
    lengths = np.concatenate([t.lengths for t in tables]) if tables else np.zeros(0, np.int64)
    codes = np.repeat(np.searchsorted(cats, ids), lengths)  # global code of every row, in part order
    order = np.argsort(codes, kind="stable")  # series by id; each series' rows keep their (time) order
    covariates = tables[0].covariates if tables else ()
    for t in tables:
        if t.covariates != covariates:
            raise QKANForecastError(f"{label}: buckets with different covariates ({', '.join(t.covariates)} "
                                    f"and {', '.join(covariates)})")
    ds = np.concatenate([t.ds_ns for t in tables])[order] if tables else np.zeros(0, np.int64)
    values = {name: np.concatenate([t.frame[name].to_numpy(np.float64) for t in tables])[order]
              if tables else np.zeros(0) for name in ("y", *covariates)}
    dtype = np.int16 if len(cats) < 2**15 else np.int32
    frame = pd.DataFrame({
        "unique_id": pd.Categorical.from_codes(codes[order].astype(dtype),
                                               categories=pd.Index(cats, dtype=object)),
        "ds": ds.view("datetime64[ns]"), **values}, copy=False)
    sorted_lengths = lengths[np.argsort(ids, kind="stable")] if len(ids) else lengths
    report = {"source": label, "rows": int(len(frame)), "series": len(cats), "freq": freq,
              "loaded": "canonical"}
    zones = {t.tz for t in tables}
    if len(zones) > 1:
        raise QKANForecastError(f"{label}: buckets in different time zones ({', '.join(map(str, zones))})")
    return Table(frame=frame, freq=freq, report=report, tz=zones.pop() if zones else None,
                 known_offsets=np.concatenate([[0], np.cumsum(sorted_lengths)]))


def open_partitioned(source: str | os.PathLike[str]) -> Dataset | None:
    """The ``Dataset`` of a directory written by qkanforecast (with ``_SUCCESS.json``); ``None`` for a file,
    ``-`` or a directory of another writer (read those with ``read_source``)."""
    text = str(source)
    if text == "-" or not is_dataset(text):
        return None
    fs, path = locate(source)
    if _info(fs, f"{path.rstrip('/')}/{MARKER}", text).type != pafs.FileType.File:
        return None
    return Dataset.open(source)


def read_source(source: str | os.PathLike[str], options: IngestOptions | None = None) -> Table:
    """Read any input as one canonical table: a file or ``-`` (``read_table``), a directory written by
    qkanforecast (its buckets merged), a Spark/Hadoop directory with ``_SUCCESS`` (through
    ``pyarrow.dataset``, validated), or the same behind a URI."""
    return read_with(source, options, from_batches)  # type: ignore[no-any-return]


def read_with(source: str | os.PathLike[str], options: IngestOptions | None, finish: Finish) -> Any:
    """``read_source`` with ``finish`` converting the input's chunks (a directory qkanforecast wrote is
    returned as its merged ``Table``, whatever ``finish``)."""
    text = str(source)
    if text == "-" or (not is_uri(text) and not Path(text).expanduser().is_dir()):
        return read_table(source, options, finish=finish)
    fs, path = locate(source)
    info = _info(fs, path, text)
    if info.type == pafs.FileType.File:
        with fs.open_input_file(path) as fh:
            return read_bytes(text, fh.read(), options, finish)
    if info.type != pafs.FileType.Directory:
        raise QKANForecastError(f"{text}: file not found")
    root = path.rstrip("/")
    if _info(fs, f"{root}/{MARKER}", text).type == pafs.FileType.File:
        return Dataset.open(source).read_all()
    if _info(fs, f"{root}/{HADOOP_MARKER}", text).type == pafs.FileType.File:
        return _read_foreign(fs, root, text, options or IngestOptions(), finish)
    Dataset.open(source)  # raises the missing-marker error
    raise AssertionError("unreachable")


def _read_foreign(fs: pafs.FileSystem, root: str, label: str, options: IngestOptions,
                  finish: Finish) -> Any:
    try:
        data = pads.dataset(root, filesystem=fs, format="parquet", partitioning="hive",
                            exclude_invalid_files=True)
        columns = pick_columns(label, data.schema.names, options)
        named = [columns.get("id"), columns["time"], *columns["series"], *columns.get("covariates", [])]
        batches = data.to_batches(columns=[c for c in named if c])
    except (pa.ArrowInvalid, OSError) as exc:
        raise QKANForecastError(f"{label}: cannot read as Parquet: {_first_line(exc)}") from None
    if options.series_id is None:
        options = replace(options, series_id=root.rsplit("/", 1)[-1] or "series")
    return finish(label, batches, options, "row", 1, columns)


# ---------------------------------------------------------------------------------------------------
# writing


@dataclass
class Writer:
    """Writes the parts of one run into a directory, then the marker (``commit``), or removes them
    (``abort``). Picklable, so that workers on other machines can write their own parts."""

    target: str  # the directory as the user wrote it (a path or a URI)
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    created: bool = False  # whether this run made the directory (``abort`` removes it again)

    def begin(self) -> Writer:
        """Check the target and create it; an existing file there is an error."""
        fs, root = locate(self.target)
        info = _info(fs, root, self.target)
        if info.type == pafs.FileType.File:
            raise QKANForecastError(f"{self.target}: is a file; a partitioned output is a directory")
        self.created = info.type == pafs.FileType.NotFound
        try:
            fs.create_dir(root, recursive=True)
        except OSError as exc:
            raise QKANForecastError(f"{self.target}: cannot create: {_first_line(exc)}") from None
        return self

    def part_path(self, bucket: int) -> str:
        return f"bucket={bucket}/part-{self.run}.parquet"

    def write_frame(self, frame: pd.DataFrame, bucket: int, series: int) -> Part:
        """Write one bucket's result table as a part."""
        rel = self.part_path(bucket)
        self._put(rel, lambda fh: write_frame_to(frame, fh))
        return Part(bucket, rel, len(frame), series)

    def write_table(self, table: Table, bucket: int) -> Part:
        """Write one bucket's canonical table (with its metadata) as a part."""
        rel = self.part_path(bucket)
        self._put(rel, lambda fh: write_table_to(table, fh))
        return Part(bucket, rel, len(table.frame), table.n_series)

    def _put(self, rel: str, dump: Callable[[BinaryIO], object]) -> None:
        fs, root = locate(self.target)
        path = f"{root.rstrip('/')}/{rel}"
        if isinstance(fs, pafs.LocalFileSystem):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(path) as fh:  # a killed worker leaves at most a hidden temporary file
                dump(fh)
            return
        buf = io.BytesIO()
        dump(buf)
        with fs.open_output_stream(path) as out:  # one object, visible once complete
            out.write(buf.getvalue())

    def commit(self, kind: str, buckets: int, parts: list[Part], freq: str | None = None) -> Marker:
        """Write the marker (last), then delete the parts of earlier runs."""
        parts = sorted(parts, key=lambda p: p.bucket)
        marker = Marker(kind, buckets, sum(p.rows for p in parts), sum(p.series for p in parts), parts, freq,
                        dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
        text = json.dumps(asdict(marker), indent=1).encode()
        self._put(MARKER, lambda fh: fh.write(text))
        self._sweep(keep={p.path for p in parts})
        return marker

    def abort(self) -> None:
        """Remove this run's parts (best effort: a reader ignores them anyway), and the directory if this
        run made it and it is empty again."""
        self._sweep(keep=None)
        fs, root = locate(self.target)
        if self.created and isinstance(fs, pafs.LocalFileSystem):
            for sub in sorted(Path(root).glob("bucket=*"), reverse=True):
                try:
                    sub.rmdir()
                except OSError:
                    pass
            try:
                Path(root).rmdir()
            except OSError:
                pass

    def _sweep(self, keep: set[str] | None) -> None:
        """Delete parts that are not ``keep`` (``None``: delete this run's parts only)."""
        fs, root = locate(self.target)
        root = root.rstrip("/")
        try:
            infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
        except OSError:
            return
        for info in infos:
            rel = info.path[len(root) + 1:]
            if info.type != pafs.FileType.File or not _PART.match(rel):
                continue
            mine = rel.endswith(f"part-{self.run}.parquet")
            if (keep is None and mine) or (keep is not None and rel not in keep):
                try:
                    fs.delete_file(info.path)
                except OSError:
                    pass


def write_partitioned(table: Table, target: str | os.PathLike[str], buckets: int) -> Marker:
    """Write the canonical table as ``buckets`` buckets (``bucket_of``) and the marker."""
    series_bucket = bucket_of(table.ids, buckets)
    order = np.argsort(np.repeat(series_bucket, table.lengths), kind="stable")  # rows by bucket, then as now
    frame = table.frame.iloc[order].reset_index(drop=True) if buckets > 1 else table.frame
    per_bucket = np.bincount(series_bucket, weights=table.lengths, minlength=buckets).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(per_bucket)])
    writer = Writer(str(target)).begin()
    parts = []
    try:
        for k in range(buckets):
            if per_bucket[k]:
                rows = frame.iloc[starts[k]:starts[k + 1]].reset_index(drop=True)
                parts.append(writer.write_table(Table(frame=rows, freq=table.freq, tz=table.tz), k))
        return writer.commit("canonical", buckets, parts, table.freq)
    except BaseException:
        writer.abort()
        raise
