"""Forecasts and backtests bucket by bucket: one function per bucket (``forecast_bucket``,
``evaluate_bucket``) that either engine runs (``engine.run``), and the drivers that make the units, write
or gather the results and combine the metrics.

The unit of work is a bucket of a partitioned table (``ingest --buckets``): a worker reads its bucket,
runs the same ``forecast`` or ``score_part`` as a single table gets, and writes its part. A table that is
not partitioned is one unit, run exactly as before. Metrics combine from per-bucket sums in bucket
order, so the metrics table is the same on either engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import pandas as pd

from qkanforecast.checks import short_note, skip_short
from qkanforecast.config import BacktestConfig, OutFormat
from qkanforecast.data import Dataset, Table, bucket_of, wants_directory, write_frame
from qkanforecast.data.partitioned import Part, Writer
from qkanforecast.engine import Engine, run
from qkanforecast.errors import QKANForecastError
from qkanforecast.evaluate import Evaluation, Scored, combine, score_part
from qkanforecast.forecast import Predictor, forecast
from qkanforecast.manifest import ScalerState
from qkanforecast.scaler_table import read_scaler
from qkanforecast.windows import SeriesScaler


@dataclass(frozen=True)
class ScalerSlice:
    """A bucket's rows of a version's scaler table (format 4), read by the worker that runs it."""

    path: str  # the version's scaler.parquet, absolute
    bucket: int
    buckets: int

    def load(self) -> dict[str, Any]:
        return asdict(read_scaler(self.path, (self.bucket, self.buckets)))


@dataclass(frozen=True)
class Unit:
    """One bucket: a part of a partitioned table with the scaler state of its series, or a whole table
    (``table``; the predictor's own scaler)."""

    bucket: int
    dataset: Dataset | None = None
    part: Part | None = None
    table: Table | None = None
    scaler: ScalerSlice | dict[str, Any] | None = None  # this bucket's trained series (a state_dict)

    def load(self) -> Table:
        if self.table is not None:
            return self.table
        assert self.dataset is not None and self.part is not None
        return self.dataset.read_part(self.part)


@dataclass(frozen=True)
class Job:
    """What every bucket does: the model, and where results go (``writer``: parts of a directory; else
    returned). ``keep`` is False when the caller does not want the result rows at all."""

    predictor: Predictor
    writer: Writer | None = None
    keep: bool = True
    steps: int | None = None
    levels: tuple[int, ...] = ()
    config: BacktestConfig = BacktestConfig()
    per_series: bool = False
    future: Table | None = None  # future covariates of every series (forecast --futr)
    strict: bool = True  # a series too short is an error (else skipped and named in a note)
    buckets: bool = False  # the units are buckets: one may hold only short series

    def predictor_for(self, unit: Unit) -> tuple[Predictor, set[str] | None]:
        """The predictor of a unit and the series its scaler was trained on (``None``: the manifest's)."""
        if unit.scaler is None:
            return self.predictor, None
        state = unit.scaler.load() if isinstance(unit.scaler, ScalerSlice) else unit.scaler
        p = self.predictor
        return Predictor(p.entry, p.model, SeriesScaler.from_state_dict(state)), set(state["unique_id"])


@dataclass
class Done:
    """A bucket's result: its part (written) or its rows (returned), and for a backtest its scores."""

    series: int
    part: Part | None = None
    frame: pd.DataFrame | None = None
    scored: Scored | None = None
    skipped: list[str] = field(default_factory=list)  # series too short
    rss_mb: float = field(default_factory=lambda: peak_rss_mb())  # of the process that ran the bucket, after


def peak_rss_mb() -> float:
    """This process' peak resident memory so far, in MB (what a worker needs, per bucket)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def forecast_bucket(job: Job, unit: Unit) -> Done:
    """Forecast one bucket and write its part (or return its rows)."""
    table = unit.load()
    predictor = job.predictor_for(unit)[0]
    lookback = predictor.lookback
    if job.buckets and not job.strict and len(table.lengths) and (table.lengths < lookback).all():
        return Done(0, skipped=list(table.ids))  # the other buckets may have series to forecast
    table, skipped, _ = skip_short(table, lookback, f"a lookback of {lookback}", job.strict)
    frame = forecast(predictor, table, job.steps, list(job.levels), job.future)
    done = _deliver(job, unit, table, frame)
    done.skipped = skipped
    return done


def evaluate_bucket(job: Job, unit: Unit) -> Done:
    """Backtest and score one bucket; write its backtest part (or return its rows)."""
    table = unit.load()
    predictor, trained = job.predictor_for(unit)
    scored = score_part(predictor, table, job.config, job.per_series, job.strict, trained, job.buckets)
    done = _deliver(job, unit, table, scored.backtest, scored.series)
    done.scored = replace(scored, backtest=scored.backtest.iloc[:0])  # the rows travel once, in ``done``
    return done


def _deliver(job: Job, unit: Unit, table: Table, frame: pd.DataFrame, series: int | None = None) -> Done:
    series = table.n_series if series is None else series
    if job.writer is not None:
        return Done(series, part=job.writer.write_frame(frame, unit.bucket, series) if series else None)
    return Done(series, frame=frame if job.keep else frame.iloc[:0])


# ---------------------------------------------------------------------------------------------------
# drivers


def units_of(predictor: Predictor, source: Table | Dataset) -> list[Unit]:
    """One unit per part of a partitioned table, each with its bucket's scaler state; else one unit."""
    if isinstance(source, Table):
        return [Unit(0, table=source)]
    marker = source.marker
    if marker.kind != "canonical":
        raise QKANForecastError(f"{source.label}: a {marker.kind} table, not time series to read")
    if marker.freq is not None and marker.freq != predictor.freq:
        raise QKANForecastError(
            f"data frequency is {marker.freq} but {predictor.entry.ref} was trained on {predictor.freq} data")
    entry = predictor.entry
    if entry.manifest.scaler_file is not None:  # format 4: each worker reads its bucket's rows
        table = str((entry.path / entry.manifest.scaler_file.file).resolve())
        return [Unit(p.bucket, dataset=source, part=p, scaler=ScalerSlice(table, p.bucket, marker.buckets))
                for p in source.parts]
    state = entry.manifest.scaler  # formats 1-3: split here, each unit carries its bucket's part
    buckets = bucket_of(state.unique_id, marker.buckets)
    split: dict[int, dict[str, Any]] = {}
    for k, uid, loc, scale in zip(buckets.tolist(), state.unique_id, state.loc, state.scale, strict=True):
        s = split.setdefault(k, {"kind": state.kind, "unique_id": [], "loc": [], "scale": []})
        s["unique_id"].append(uid)
        s["loc"].append(loc)
        s["scale"].append(scale)
    empty = {"kind": state.kind, "unique_id": [], "loc": [], "scale": []}
    return [Unit(p.bucket, dataset=source, part=p, scaler=split.get(p.bucket, empty)) for p in source.parts]


def _shipped(predictor: Predictor, units: list[Unit]) -> Predictor:
    """The predictor as the job carries it: without the scaler state when every unit brings its own
    (every worker would otherwise unpickle the state of all series)."""
    if all(u.scaler is not None for u in units):
        m = predictor.entry.manifest
        bare = replace(m, scaler=ScalerState(m.scaler.kind, [], [], []))
        entry = replace(predictor.entry, manifest=bare)
        return Predictor(entry, predictor.model, SeriesScaler(m.scaler.kind))
    return predictor


def _writer(output: str | None, fmt: str | None) -> Writer | None:
    if output is None or not wants_directory(output, fmt):
        return None
    if fmt not in (None, OutFormat.PARQUET.value):
        raise QKANForecastError(
            f"{output}: a partitioned output is Parquet; leave --format out or write a file")
    return Writer(output).begin()


def _run(fn: Any, job: Job, units: list[Unit], engine: Engine, address: str | None, kind: str,
         buckets: int, check: Callable[[list[Done]], None]) -> list[Done]:
    """Run the units and ``check`` their results; with a writer, commit the marker only when every
    bucket is done and checked (else clean up)."""
    try:
        done = run(fn, job, units, engine, address)
        check(done)
        if job.writer is not None:
            job.writer.commit(kind, buckets, [d.part for d in done if d.part is not None])
        return done
    except BaseException:
        if job.writer is not None:
            job.writer.abort()
        raise


@dataclass
class Summary:
    """What a run produced: the rows and series, the rows themselves unless they went to parts, the
    series skipped as too short and the note that names them."""

    rows: int
    series: int
    frame: pd.DataFrame | None = None
    evaluation: Evaluation | None = None
    cutoffs: int = 0
    skipped: list[str] = field(default_factory=list)
    note: str | None = None
    worker_rss_mb: float = 0.0  # the largest peak memory of a process that ran buckets


def _gather(done: list[Done], order: list[str]) -> pd.DataFrame | None:
    frames = [d.frame for d in done if d.frame is not None]
    if not frames:
        return None
    if len(frames) == 1:
        return frames[0]
    return pd.concat(frames, ignore_index=True).sort_values(order, kind="stable", ignore_index=True)


def run_forecast(predictor: Predictor, source: Table | Dataset, output: str, fmt: str | None = None,
                 steps: int | None = None, levels: list[int] | None = None, engine: Engine = Engine.LOCAL,
                 address: str | None = None, future: Table | None = None, strict: bool = True) -> Summary:
    """Forecast every series of ``source`` into ``output`` (a file, ``-`` or a partitioned directory);
    ``future`` holds the future covariates of a model trained with them. A series shorter than the
    lookback is an error when ``strict``, else skipped and named in ``Summary.note``."""
    units = units_of(predictor, source)
    writer = _writer(output, fmt)
    job = Job(_shipped(predictor, units), writer, steps=steps, levels=tuple(sorted(set(levels or []))),
              future=future, strict=strict, buckets=isinstance(source, Dataset))
    buckets = source.marker.buckets if isinstance(source, Dataset) else 1

    def check(done: list[Done]) -> None:
        if not any(d.series for d in done) and any(d.skipped for d in done):
            skipped = [u for d in done for u in d.skipped]
            raise QKANForecastError(f"series {skipped[0]!r} is too short; a lookback of {predictor.lookback} "
                                    f"needs at least {predictor.lookback} steps; all {len(skipped)} series "
                                    "are shorter")

    done = _run(forecast_bucket, job, units, engine, address, "forecast", buckets, check)
    frame = _gather(done, ["unique_id"])
    if frame is not None:
        write_frame(frame, output, fmt)
    rows = sum(d.part.rows for d in done if d.part is not None) + (len(frame) if frame is not None else 0)
    skipped = [u for d in done for u in d.skipped]
    note = short_note(skipped, predictor.lookback, f"a lookback of {predictor.lookback}") if skipped else None
    return Summary(rows, sum(d.series for d in done), frame, skipped=skipped, note=note,
                   worker_rss_mb=max((d.rss_mb for d in done), default=0.0))


def run_evaluate(predictor: Predictor, source: Table | Dataset, config: BacktestConfig,
                 per_series: bool = False, output: str | None = None, fmt: str | None = None,
                 engine: Engine = Engine.LOCAL, address: str | None = None, strict: bool = True) -> Summary:
    """Backtest every series of ``source``; the backtest goes to ``output`` (a file, ``-``, a partitioned
    directory or nowhere), the metrics table and notes come back."""
    units = units_of(predictor, source)
    if config.refit and len(units) > 1:
        raise QKANForecastError("--refit trains one model on the whole table; give a single table, not a "
                                "partitioned one")
    writer = _writer(output, fmt)
    job = Job(_shipped(predictor, units), writer, keep=output is not None, config=config,
              per_series=per_series, strict=strict, buckets=isinstance(source, Dataset))
    buckets = source.marker.buckets if isinstance(source, Dataset) else 1
    holder: list[Evaluation] = []

    def check(done: list[Done]) -> None:  # before the marker: raises when no series could be backtested
        holder.append(combine(predictor, [d.scored for d in done if d.scored is not None], pd.DataFrame(),
                              config))

    done = _run(evaluate_bucket, job, units, engine, address, "backtest", buckets, check)
    frame = _gather(done, ["unique_id", "cutoff", "ds"])
    if frame is not None and output is not None:
        write_frame(frame, output, fmt)
    scored = [d.scored for d in done if d.scored is not None]
    evaluation = replace(holder[0], backtest=frame if frame is not None else pd.DataFrame())
    cutoffs = len({c for s in scored for c in s.cutoffs})
    return Summary(sum(s.rows for s in scored), sum(s.series for s in scored), frame, evaluation, cutoffs,
                   evaluation.skipped, worker_rss_mb=max((d.rss_mb for d in done), default=0.0))
