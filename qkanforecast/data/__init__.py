"""The data layer: read CSV or Parquet time series, validate them, build the canonical long table, and
write tables.

The canonical table is long: ``unique_id`` (series name), ``ds`` (naive ``datetime64[ns]``) and ``y``
(``float64``), sorted by ``unique_id, ds``, one regular frequency for the whole table, no duplicates,
no gaps and no NaN or infinite values. ``Table.frame["unique_id"]`` is a pandas ``Categorical`` whose
categories are the sorted series names (strings): a few bytes a row instead of a Python string, so a
10,000 x 8,928 panel fits in memory; use ``.astype(str)`` where plain strings are needed.

Policy for problems (``IngestOptions``):

- duplicate ``(unique_id, ds)`` rows with the same ``y`` are dropped and counted; with different ``y``
  they are an error;
- missing timestamps (gaps) and NaN or infinite ``y`` are filled by ``fill`` (``ffill``, ``linear``,
  ``zero``; values before a series' first finite value take that value), or are an error (``none``);
- unparsable dates, non-numeric ``y``, empty ids or dates, time zones mixed with naive times, numbers in
  the time column, timestamps off the frequency grid and series shorter than ``min_length`` are errors;
- time-zone-aware times (all of them) are converted to UTC and stored naive, and ``Table.tz`` keeps the
  zone (``UTC`` for bare offsets) that outputs are written in; naive times with ``tz`` (``--tz``) are local
  times of that zone, converted under ``zones.DST_POLICY``.

Every error is a ``QKANForecastError`` whose one-line message names the file and the column, line or
series (CSV lines count the header as line 1; Parquet rows count from 1).

Modules, each importing only those above it (no cycle):

- ``table``: ``Table``, the canonical table as a value type, and ``freq_to_ns``/``ns_to_freq``;
- ``formats``: which suffix is which ``OutFormat``, the canonical file's metadata key and version;
- ``zones``: time zones: checking a name, local times to UTC (the DST policy), results in a zone;
- ``canonical``: ``IngestOptions`` and ``canonicalise`` (the checks and fills above);
- ``arrow``: Arrow chunks to numpy columns, with the error locations;
- ``readers``: ``read_table``, ``from_frame``, ``load_canonical``, ``read_metadata``;
- ``writers``: ``write_table`` and ``write_frame``, one atomic write path and one choice of format;
- ``report``: ``print_report``;
- ``partitioned``: directories of Parquet parts by bucket with a ``_SUCCESS.json`` marker, local or behind
  a URI (``Dataset``, ``Writer``, ``write_partitioned``), and ``read_source``, any input as one table;
- ``bucketed``: ``ingest_partitioned``, any input streamed into buckets, one bucket in memory at a time.
"""

from qkanforecast.data.canonical import IngestOptions, canonicalise
from qkanforecast.data.partitioned import Dataset, bucket_of, read_source, wants_directory, write_partitioned
from qkanforecast.data.readers import from_frame, load_canonical, read_metadata, read_table
from qkanforecast.data.report import print_report
from qkanforecast.data.table import Table, freq_to_ns, ns_to_freq
from qkanforecast.data.writers import atomic_file, metadata, output_format, write_frame, write_table

__all__ = ["Dataset", "IngestOptions", "Table", "atomic_file", "bucket_of", "canonicalise", "freq_to_ns",
           "from_frame", "load_canonical", "metadata", "ns_to_freq", "output_format", "print_report",
           "read_metadata", "read_source", "read_table", "wants_directory", "write_frame",
           "write_partitioned", "write_table"]
