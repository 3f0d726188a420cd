"""Where per-bucket work runs: in this process, bucket after bucket (``local``), or as Ray tasks (``ray``).

Both engines call the same function on the same units and return its results in unit order, so what
the caller combines does not depend on the engine. Ray is an optional extra (``pip install
'qkanforecast[ray]'``); the scheduling, retries of lost workers and data movement are Ray's: nothing
here schedules work of its own.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any, TypeVar

from qkanforecast.errors import QKANForecastError

J = TypeVar("J")
U = TypeVar("U")
R = TypeVar("R")

RAY_MISSING = "--engine ray needs Ray, an optional extra: pip install 'qkanforecast[ray]'"


class Engine(str, Enum):
    """Where the buckets of a forecast or backtest run."""

    LOCAL = "local"
    RAY = "ray"


def run(fn: Callable[[J, U], R], job: J, units: Sequence[U], engine: Engine = Engine.LOCAL,
        address: str | None = None) -> list[R]:
    """``[fn(job, unit) for unit in units]``, here or on Ray.

    ``address``: the Ray cluster to use (default ``$RAY_ADDRESS``; neither: a local Ray started for this
    call and stopped after it). A Ray already initialised in this process (a test's, a notebook's) is used
    as it is and left running. ``fn``, ``job`` and the units must pickle.
    """
    if engine is Engine.LOCAL:
        return [fn(job, unit) for unit in units]
    return _ray(fn, job, units, address)


def _ray(fn: Callable[[J, U], R], job: J, units: Sequence[U], address: str | None) -> list[R]:
    try:
        import ray
    except ImportError:
        raise QKANForecastError(RAY_MISSING) from None
    own = not ray.is_initialized()
    if own:
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address is not None:
            check_reachable(address)
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise QKANForecastError(f"cannot start or reach Ray at {address or 'a new local instance'}: "
                                    f"{_first_line(exc)}") from None
    refs: list[Any] = []
    try:
        task = ray.remote(num_cpus=1)(fn)
        shared = ray.put(job)  # once, not once per task
        refs = [task.remote(shared, unit) for unit in units]
        return list(ray.get(refs))
    except ray.exceptions.RayTaskError as exc:  # the function raised: a user error stays one
        _cancel(ray, refs)
        cause = getattr(exc, "cause", None)
        if isinstance(cause, QKANForecastError):
            raise QKANForecastError(str(cause)) from None
        raise QKANForecastError(f"a Ray task failed: {_first_line(cause or exc)}") from None
    except ray.exceptions.RayError as exc:  # a worker or node died (after Ray's own retries)
        _cancel(ray, refs)
        raise QKANForecastError(
            f"a Ray worker was lost ({type(exc).__name__}); nothing was written") from None
    finally:
        if own:
            ray.shutdown()


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse a cluster address (``host:port`` or ``ray://host:port``) where nothing answers, at once:
    Ray itself retries such an address for minutes before it gives up. Other forms (``auto``) go to Ray."""
    match = re.fullmatch(r"(?:ray://)?(\[[0-9A-Fa-f:.]+\]|[\w.-]+):(\d+)", address.strip())
    if match is None:
        return
    host, port = match.group(1).strip("[]"), int(match.group(2))
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise QKANForecastError(f"cannot reach Ray at {address}: {reason}; check --address or "
                                "$RAY_ADDRESS (unset both to start a local Ray for the run)") from None


def _cancel(ray: Any, refs: list[Any]) -> None:
    """Stop the tasks still running, so that none writes after the caller has cleaned up."""
    for ref in refs:
        try:
            ray.cancel(ref, force=True)
        except Exception:  # noqa: BLE001 - finished or already failed
            pass
    if refs:
        ray.wait(refs, num_returns=len(refs), timeout=30)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
