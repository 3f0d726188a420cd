"""``qkanforecast forecast`` and ``evaluate``: a registered model applied to a table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from qkanforecast.cli.app import (
    INPUT,
    DataArg,
    Input,
    ModelRef,
    Quiet,
    RegistryOpt,
    app,
    check_output,
    err,
    example,
    open_registry,
    say,
    user_errors,
    with_input,
)
from qkanforecast.cli.render import show_table
from qkanforecast.config import INTERVAL_LEVELS, MAX_STEPS, BacktestConfig, OutFormat
from qkanforecast.engine import Engine
from qkanforecast.errors import QKANForecastError

if TYPE_CHECKING:
    from pathlib import Path

    from qkanforecast.data import Dataset, Table
    from qkanforecast.forecast import Predictor

_BT = BacktestConfig()
Format = Annotated[
    OutFormat | None,
    typer.Option("--format", help="Output format (default: from the suffix; a directory is Parquet parts)."),
]
EngineOpt = Annotated[
    Engine,
    typer.Option(
        "--engine",
        help="local: the buckets of a partitioned DATA one after another in this process; ray: as Ray tasks "
        "(pip install 'qkanforecast[ray]'). The results are the same.",
    ),
]
AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="Ray cluster for --engine ray.  [default: $RAY_ADDRESS; unset: a local Ray for this run]",
        show_default=False,
    ),
]


Strict = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="Refuse the whole table when a series is too short, instead of skipping it with a note.",
    ),
]


def _load(
    model: str, registry: Path | None, data: str, inputs: Input, quiet: bool
) -> tuple[Predictor, Table | Dataset]:
    """The registered model and DATA: a partitioned table as it is (read bucket by bucket later), else
    the table read with the model's column names (those given win) and covariates; unless ``quiet``, the
    reader's notes go to stderr."""
    from qkanforecast.data.partitioned import open_partitioned
    from qkanforecast.forecast import Predictor

    dataset = open_partitioned(data)
    if dataset is not None:  # the per-series scaler statistics are read per bucket
        return Predictor.load(model, open_registry(registry), with_scaler=False), dataset
    predictor = Predictor.load(model, open_registry(registry))
    m = predictor.entry.manifest
    return predictor, inputs.read(data, m.schema.columns, covariates=m.data.covariates, quiet=quiet)


def _check_output(data: str, output: str | None, fmt: OutFormat | None) -> None:
    """Before the work: a partitioned DATA may write a partitioned directory (a path without a table
    suffix, or ending in ``/``); every other output is a file whose format and location are checked."""
    from qkanforecast.data import wants_directory
    from qkanforecast.data.partitioned import open_partitioned

    if output is not None and wants_directory(output, fmt) and open_partitioned(data) is not None:
        return
    check_output(output, fmt)


def _read_future(path: str, predictor: Predictor, inputs: Input) -> Table:
    """The future covariates file: the model's id and time columns and its future columns (read as a
    table whose target is the first of them), on the model's frequency, without gaps."""
    from dataclasses import asdict

    from qkanforecast.data import IngestOptions, read_table

    m = predictor.entry.manifest
    futr = m.data.futr_exog
    if not futr:
        raise QKANForecastError(f"--futr: {predictor.entry.ref} was trained without future covariates")
    names = m.schema.columns.given(inputs.id_col, inputs.time_col, futr[0])
    options = IngestOptions(**asdict(names), freq=m.schema.freq, covariates=tuple(futr[1:]), tz=inputs.tz)
    return read_table(path, options)


@app.command(
    epilog=example(
        "qkanforecast forecast traffic.parquet --model traffic@latest --level 90 -o forecast.csv"
    )
)
@user_errors
@with_input
def forecast(
    data: DataArg,
    model: ModelRef,
    output: Annotated[str, typer.Option("--output", "-o", help="Output file, or - for CSV on stdout.")] = "-",
    fmt: Format = None,
    steps: Annotated[
        int | None,
        typer.Option(
            "--steps", min=1, help="Steps to forecast (default: the model's horizon; more are recursive; "
            f"at most {MAX_STEPS:,})."
        ),
    ] = None,
    level: Annotated[
        list[int] | None,
        typer.Option(
            "--level",
            help="Add a conformal prediction interval, columns <model>-lo-L and <model>-hi-L; "
            f"L is one of {', '.join(map(str, INTERVAL_LEVELS))}; repeatable.",
        ),
    ] = None,
    futr: Annotated[
        str | None,
        typer.Option(
            "--futr", help="CSV or Parquet with the future covariates (id, time and the model's --futr-exog "
            "columns) for every forecast step."
        ),
    ] = None,
    strict: Strict = False,
    registry: RegistryOpt = None,
    engine: EngineOpt = Engine.LOCAL,
    address: AddressOpt = None,
    inputs: Input = INPUT,
    quiet: Quiet = False,
) -> None:
    """Forecast the steps after the end of every series of DATA, in original units."""
    from qkanforecast.batch import run_forecast

    _check_output(data, output, fmt)
    predictor, source = _load(model, registry, data, inputs, quiet)
    future = _read_future(futr, predictor, inputs) if futr is not None else None
    done = run_forecast(predictor, source, output, fmt.value if fmt else None, steps, level, engine, address,
                        future, strict)
    if not quiet:
        if done.note:
            say(f"note: {done.note}")
        if output != "-":
            also = f"; {len(done.skipped):,} series skipped (too short)" if done.skipped else ""
            say(f"{done.rows:,} forecasts of {done.series:,} series written to {output}{also}")


@app.command(
    epilog=example(
        "qkanforecast evaluate traffic.parquet --model traffic --windows 7 --step 144 -o backtest.csv"
    )
)
@user_errors
@with_input
def evaluate(
    data: DataArg,
    model: ModelRef,
    windows: Annotated[int, typer.Option(min=1, help="Backtest origins per series.")] = _BT.windows,
    step: Annotated[
        int | None, typer.Option(min=1, help="Steps between origins (default: the model's horizon).")
    ] = None,
    refit: Annotated[bool, typer.Option("--refit", help="Retrain the model for every window.")] = False,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Write the backtest table here (- for stdout).")
    ] = None,
    fmt: Format = None,
    per_series: Annotated[bool, typer.Option("--per-series", help="Also score every series.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON lines.")] = False,
    strict: Strict = False,
    registry: RegistryOpt = None,
    engine: EngineOpt = Engine.LOCAL,
    address: AddressOpt = None,
    inputs: Input = INPUT,
    quiet: Quiet = False,
) -> None:
    """Backtest a model on the last windows of every series against naive and seasonal-naive forecasts."""
    from qkanforecast.batch import run_evaluate

    _check_output(data, output, fmt)
    predictor, source = _load(model, registry, data, inputs, quiet)
    done = run_evaluate(predictor, source, BacktestConfig(windows, step, refit), per_series, output,
                        fmt.value if fmt else None, engine, address, strict)
    result = done.evaluation
    assert result is not None
    console = err if output == "-" else Console()  # the backtest owns stdout when written there
    title = (
        f"{predictor.entry.ref}: {done.cutoffs} cutoffs, {done.series} series"
        + (f", {len(result.skipped)} skipped (too short)" if result.skipped else "")
    )
    # sMAPE is on a 0-200 scale (utilsforecast's is 0-1): the header says so; JSON keeps the plain key
    shown = result.metrics if as_json else result.metrics.rename(columns={"smape": "smape(0-200)"})
    show_table(shown, title, console, as_json)
    if not quiet:
        for note in result.notes:
            say(f"note: {note}")
        if output not in (None, "-"):
            say(f"backtest of {done.rows:,} rows written to {output}")
