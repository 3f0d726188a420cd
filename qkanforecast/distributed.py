"""Training under ``torchrun``: one process group over gloo, each rank fitting its own series.

``join()`` joins the process group when torchrun's environment says there are several ranks
(``WORLD_SIZE`` > 1) and yields a ``Dist``; without it (or with one rank) it yields None and training takes
today's single-process path unchanged. Every reduction here gathers the ranks' values and combines them in
rank order in Python (float64), so that every rank computes bitwise the same loss, and early stopping, the
kept epoch and the ensemble's weights agree across ranks without a broadcast.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed
from torch import nn

from qkanforecast.data.partitioned import Dataset, merge
from qkanforecast.data.table import Table
from qkanforecast.errors import QKANForecastError

T = TypeVar("T")
DIGESTS_ENV = "QKANFORECAST_DDP_DIGESTS"  # a folder: each rank writes its weights' sha256 and its series


@dataclass(frozen=True)
class Dist:
    """This process' place in the group: rank ``rank`` of ``world_size``."""

    rank: int
    world_size: int
    own_buckets: bool = False  # the table read holds this rank's buckets only (``read_buckets``)

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value``, in rank order, on every rank."""
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, value)
        return out

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over ranks, added in rank order (the same bits on every rank)."""
        total = [0.0] * len(values)
        for part in self.gather([float(v) for v in values]):
            total = [a + b for a, b in zip(total, part, strict=True)]
        return total

    def min(self, value: int) -> int:
        return min(self.gather(int(value)))

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank."""
        box: list[Any] = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[no-any-return]

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` under DistributedDataParallel (gradients averaged over ranks at each step)."""
        return nn.parallel.DistributedDataParallel(module)

    def read_buckets(self, dataset: Dataset) -> tuple[Dist, Table]:
        """This rank's buckets of a partitioned table (every world_size-th part from part ``rank``),
        read and merged, and the ``Dist`` that knows the table is this rank's share already."""
        parts = dataset.parts[self.rank::self.world_size]
        if len(dataset.parts) < self.world_size:
            raise QKANForecastError(
                f"{dataset.label}: {len(dataset.parts)} buckets cannot be shared among {self.world_size} "
                "ranks; ingest it with more --buckets, or use at most one rank per bucket")
        table = merge([dataset.read_part(p) for p in parts], dataset.marker.freq or "h", dataset.label)
        return replace(self, own_buckets=True), table

    def series(self, table: Table) -> int:
        """The number of series trained on, over all ranks."""
        return int(self.sum([table.n_series])[0]) if self.own_buckets else table.n_series

    def shard(self, table: Table) -> Table:
        """The series of ``table`` this rank trains on: series i where i % world_size == rank (all of
        it when the table holds this rank's buckets only)."""
        if self.own_buckets:
            return table
        if table.n_series < self.world_size:
            raise QKANForecastError(
                f"{table.n_series} series cannot be shared among {self.world_size} ranks; "
                "use at most one rank per series")
        keep = np.repeat(np.arange(table.n_series) % self.world_size == self.rank, table.lengths)
        frame = table.frame.iloc[np.flatnonzero(keep)].reset_index(drop=True)
        return Table(frame, table.freq, dict(table.report), table.tz)


def world() -> tuple[int, int]:
    """``(rank, world_size)`` from torchrun's environment; ``(0, 1)`` outside torchrun."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def join() -> Dist | None:
    """Join the process group when torchrun started several ranks (gloo, CPU); None with one rank, and
    then nothing here is touched and training is today's single-process path."""
    rank, size = world()
    if size <= 1:
        return None
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        raise QKANForecastError(
            "this torch build has no torch.distributed gloo backend; run without torchrun")
    torch.distributed.init_process_group("gloo")
    return Dist(rank, size)


def leave(dist: Dist | None) -> None:
    """Wait for every rank (rank 0 has published by then), then destroy the process group. After an
    error a rank exits instead, and torchrun stops the others."""
    if dist is None:
        return
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state dict's tensors (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    for key, tensor in state.items():
        t = tensor.detach().contiguous().cpu()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def record_digest(dist: Dist, state: dict[str, torch.Tensor], ids: list[str]) -> None:
    """Write this rank's weight digest and the ids of the series it trained on under
    ``$QKANFORECAST_DDP_DIGESTS`` (tests compare the ranks)."""
    folder = os.environ.get(DIGESTS_ENV)
    if folder:
        Path(folder, f"rank{dist.rank}.sha256").write_text(digest(state) + "\n")
        Path(folder, f"rank{dist.rank}.series").write_text("".join(f"{u}\n" for u in ids))
