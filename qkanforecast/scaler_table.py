"""The per-series scaler state as a Parquet table beside the weights (``scaler.parquet``), read whole or
one bucket at a time.

Why a table: in ``manifest.json`` the state costs about 84 bytes a series (40 MB for 500,000 cells), parsed
by every process that loads the model. Here it is ``unique_id, loc, scale`` (float64, exact) with a ``key``
column, and a worker reads only its bucket's rows.

The rows are sorted by ``key = bit-reverse(crc32(id))``. A bucket ``crc32 % N == k`` with ``N`` a power
of two is the set of ids whose low ``log2 N`` crc bits are ``k``, which is one contiguous range of the key
(its top bits reversed), so the row groups outside it are skipped from their statistics, whatever ``N``
the data was partitioned with. Another ``N`` reads the key column and filters.
"""

from __future__ import annotations

import os
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from qkanforecast.data.partitioned import crc32s
from qkanforecast.errors import QKANForecastError
from qkanforecast.manifest import ScalerState

ROW_GROUP = 8192  # rows per row group: what a bucket read skips or reads
_REV8 = np.array([int(f"{b:08b}"[::-1], 2) for b in range(256)], dtype=np.uint32)


def _reverse(c: np.ndarray) -> np.ndarray:
    """The 32 bits of every value in reverse order (its own inverse)."""
    c = c.astype(np.uint32)
    return ((_REV8[c & 0xFF] << 24) | (_REV8[(c >> 8) & 0xFF] << 16) | (_REV8[(c >> 16) & 0xFF] << 8)
            | _REV8[c >> 24]).astype(np.uint32)


def keys(ids: list[str]) -> np.ndarray:
    """The sort key of every id: its crc32 with the bits reversed, uint32 ``[S]``."""
    return _reverse(crc32s(ids))


def key_range(bucket: int, buckets: int) -> tuple[int, int] | None:
    """The ``[lo, hi)`` key range of bucket ``crc32 % buckets == bucket`` when ``buckets`` is a power of
    two, else ``None``."""
    if buckets < 1 or buckets & (buckets - 1):
        return None
    bits = buckets.bit_length() - 1
    if bits == 0:
        return 0, 1 << 32
    top = int(f"{bucket:0{bits}b}"[::-1], 2)  # the bucket's low crc bits, reversed: the key's top bits
    return top << (32 - bits), (top + 1) << (32 - bits)


def write_scaler(path: str | os.PathLike[str] | BinaryIO, state: ScalerState) -> None:
    """Write ``state`` to ``path`` or an open binary file (sorted by key, ``kind`` in the metadata)."""
    k = keys(state.unique_id)
    order = np.argsort(k, kind="stable")
    table = pa.table({
        "key": pa.array(k[order], type=pa.uint32()),
        "unique_id": pa.array(np.asarray(state.unique_id, dtype=object)[order], type=pa.string()),
        "loc": pa.array(np.asarray(state.loc, dtype=np.float64)[order]),
        "scale": pa.array(np.asarray(state.scale, dtype=np.float64)[order]),
    }).replace_schema_metadata({b"kind": state.kind.encode()})
    pq.write_table(table, path, row_group_size=ROW_GROUP, compression="zstd")


def read_scaler(path: str | os.PathLike[str], bucket: tuple[int, int] | None = None) -> ScalerState:
    """The state of every series, or of bucket ``(k, N)`` only (``crc32(id) % N == k``)."""
    try:
        kind = (pq.read_schema(path).metadata or {}).get(b"kind", b"").decode()
        data = pads.dataset(str(path), format="parquet")
        if bucket is None:
            table = data.to_table(columns=["unique_id", "loc", "scale"])
        else:
            k, n = bucket
            span = key_range(k, n)
            if span is not None:  # the row groups outside the range are skipped
                table = data.to_table(columns=["unique_id", "loc", "scale"],
                                      filter=(pc.field("key") >= span[0]) & (pc.field("key") < span[1]))
            else:
                table = data.to_table(columns=["key", "unique_id", "loc", "scale"])
                crc = _reverse(table.column("key").to_numpy())
                table = table.filter(pa.array(crc % np.uint32(n) == k))
    except (OSError, pa.ArrowInvalid) as exc:
        raise QKANForecastError(
            f"{path}: unreadable scaler table ({str(exc).strip().splitlines()[0]})") from None
    return ScalerState(kind, table.column("unique_id").to_pylist(), table.column("loc").to_pylist(),
                       table.column("scale").to_pylist())

