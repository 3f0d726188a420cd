"""The ``qkanforecast`` command line: a thin Typer layer over the library functions.

stdout carries data only (tables, references); progress and notes go to stderr. A user mistake prints one
``Error: ...`` line on stderr and exits 1; bad usage exits 2.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypedDict, TypeVar

import typer
from rich.console import Console
from rich.table import Table as RichTable

from qkanforecast import __version__
from qkanforecast.errors import QKANForecastError

err = Console(stderr=True)


def _example(command: str) -> str:
    """A help epilog (shown after the options) that Click prints as is."""
    return f"Example:\n\n\b\n  {command}"


app = typer.Typer(
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
    rich_markup_mode=None,
    help="Forecast telecom time series with QKAN-LSTM, HQKAN-LSTM and LSTM models.",
    epilog=_example("qkanforecast train data.csv && qkanforecast forecast data.csv --model qkan-lstm"),
)
models_app = typer.Typer(
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="List, inspect and remove registered models.",
    epilog=_example("qkanforecast models list"),
)
app.add_typer(models_app, name="models")

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(func: F) -> F:
    """Turn user mistakes into one ``Error:`` line and exit status 1; anything else keeps its traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except QKANForecastError as exc:
            err.print(f"Error: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
            err.print(f"Error: {exc.filename}: {exc.strerror}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("Error: interrupted; nothing was written", markup=False, highlight=False)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


# -- options shared by every command that reads data ------------------------------------------------------
class Fill(str, Enum):
    none = "none"
    ffill = "ffill"
    linear = "linear"
    zero = "zero"


class ModelName(str, Enum):
    qkan_lstm = "qkan-lstm"
    hqkan_lstm = "hqkan-lstm"
    lstm = "lstm"


class Readout(str, Enum):
    fast = "fast"
    born = "born"


class ScalerKind(str, Enum):
    standard = "standard"
    robust = "robust"
    minmax = "minmax"
    none = "none"


class OutFormat(str, Enum):
    parquet = "parquet"
    csv = "csv"
    jsonl = "jsonl"


DataArg = Annotated[str, typer.Argument(help="CSV or Parquet file, or - for stdin.", show_default=False)]
_FROM_MODEL = "forecast and evaluate default to the model's training data"
IdCol = Annotated[
    str | None,
    typer.Option(
        "--id-col", help=f"Series id column; absent: one series.  [default: unique_id; {_FROM_MODEL}]"
    ),
]
TimeCol = Annotated[str | None, typer.Option("--time-col", help="Timestamp column.  [default: ds]")]
TargetCol = Annotated[str | None, typer.Option("--target-col", help="Target value column.  [default: y]")]
COLUMN_DEFAULTS = {"id_col": "unique_id", "time_col": "ds", "target_col": "y"}
Wide = Annotated[bool, typer.Option("--wide", help="One column per series next to the time column.")]
Freq = Annotated[
    str | None, typer.Option("--freq", help="Expected frequency, e.g. 10min, h, D (default: inferred).")
]
FillOpt = Annotated[
    Fill, typer.Option("--fill", help="Gaps and NaN: none (stop with an error), ffill, linear, zero.")
]
RegistryOpt = Annotated[
    Path | None,
    typer.Option(
        "--registry",
        help="Registry root (default: $QKANFORECAST_HOME or the user data directory).",
        show_default=False,
    ),
]
ModelRef = Annotated[
    str, typer.Option("--model", "-m", help="Model reference: NAME, NAME@vN, NAME@latest or a path.")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or notes on stderr.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"qkanforecast {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Forecast telecom time series with QKAN-LSTM, HQKAN-LSTM and LSTM models."""


def _columns(
    id_col: str | None, time_col: str | None, target_col: str | None, trained: dict[str, str] | None = None
) -> dict[str, str]:
    """Column names: those given, else the ones the model was trained with, else unique_id, ds, y."""
    given = {"id_col": id_col, "time_col": time_col, "target_col": target_col}
    base = {**COLUMN_DEFAULTS, **(trained or {})}
    return {k: v if v is not None else base[k] for k, v in given.items()}


def _read(
    data: str,
    columns: dict[str, str],
    wide: bool,
    freq: str | None,
    fill: Fill,
    min_length: int | None = None,
):  # noqa: ANN202
    from qkanforecast.data import IngestOptions, read_table

    options = IngestOptions(**columns, wide=wide, freq=freq, fill=fill.value, min_length=min_length)
    return read_table(data, options)


def _registry(root: Path | None):  # noqa: ANN202
    from qkanforecast.registry import Registry

    return Registry(root)


@app.command(
    epilog=_example("qkanforecast ingest traffic.csv --id-col cell --time-col time -o traffic.parquet")
)
@user_errors
def ingest(
    data: DataArg,
    output: Annotated[
        str, typer.Option("--output", "-o", help="Output path (.parquet or .csv), or - for CSV on stdout.")
    ] = "-",
    id_col: IdCol = None,
    time_col: TimeCol = None,
    target_col: TargetCol = None,
    wide: Wide = False,
    freq: Freq = None,
    fill: FillOpt = Fill.none,
    min_length: Annotated[
        int | None, typer.Option("--min-length", help="Reject series shorter than this.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary on stderr as JSON.")] = False,
    quiet: Quiet = False,
) -> None:
    """Validate a CSV or Parquet table and write it as the canonical long table (unique_id, ds, y)."""
    from qkanforecast.data import print_report, write_table

    table = _read(data, _columns(id_col, time_col, target_col), wide, freq, fill, min_length)
    write_table(table, output)
    if not quiet or as_json:
        print_report(table, err, as_json=as_json)


@app.command(epilog=_example("ref=$(qkanforecast train traffic.parquet --lookback 144 --horizon 6 -q)"))
@user_errors
def train(
    data: DataArg,
    model: Annotated[
        ModelName | None,
        typer.Option("--model", help="Model family.  [default: qkan-lstm]", show_default=False),
    ] = None,
    lookback: Annotated[
        int | None, typer.Option(help="Input steps per window.  [default: 64]", show_default=False)
    ] = None,
    horizon: Annotated[
        int | None, typer.Option(help="Steps forecast at once.  [default: 1]", show_default=False)
    ] = None,
    hidden_size: Annotated[int | None, typer.Option(help="Hidden units (default: the family's).")] = None,
    num_layers: Annotated[
        int | None, typer.Option(help="Stacked recurrent layers.  [default: 1]", show_default=False)
    ] = None,
    reps: Annotated[
        int | None,
        typer.Option(help="DARUAN re-uploading repetitions (QKAN models).  [default: 3]", show_default=False),
    ] = None,
    readout: Annotated[
        Readout | None,
        typer.Option(help="DARUAN read-out (QKAN models).  [default: fast]", show_default=False),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Maximum epochs.  [default: 50]", show_default=False)
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Windows per batch.  [default: 128]", show_default=False)
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="Adam learning rate.  [default: 0.005]", show_default=False)
    ] = None,
    val_size: Annotated[
        float | None,
        typer.Option(
            help="Validation tail per series: fraction (<1) or steps.  [default: 0.1]", show_default=False
        ),
    ] = None,
    test_size: Annotated[
        float | None,
        typer.Option(
            help="Tail per series left out of training entirely: fraction (<1) or steps.  [default: 0]",
            show_default=False,
        ),
    ] = None,
    patience: Annotated[
        int | None,
        typer.Option(
            help="Epochs without validation gain before stopping (0: never).  [default: 8]",
            show_default=False,
        ),
    ] = None,
    scaler: Annotated[
        ScalerKind | None, typer.Option(help="Per-series scaler.  [default: standard]", show_default=False)
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.  [default: 0]", show_default=False)] = None,
    max_windows: Annotated[
        int | None,
        typer.Option(help="Train each epoch on a fresh random sample of this many windows (large panels)."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Registry name (default: the model family).")] = None,
    from_ref: Annotated[
        str | None, typer.Option("--from", help="Warm-start from this registered model.")
    ] = None,
    registry: RegistryOpt = None,
    id_col: IdCol = None,
    time_col: TimeCol = None,
    target_col: TargetCol = None,
    wide: Wide = False,
    freq: Freq = None,
    fill: FillOpt = Fill.none,
    quiet: Quiet = False,
) -> None:
    """Train one global model over every series of DATA and print its registry reference (NAME@vN)."""
    from qkanforecast.train import TrainConfig, config_from
    from qkanforecast.train import train as run_training

    overrides: dict[str, Any] = {
        k: v.value if isinstance(v, Enum) else v
        for k, v in {
            "lookback": lookback,
            "horizon": horizon,
            "hidden_size": hidden_size,
            "num_layers": num_layers,
            "reps": reps,
            "readout": readout,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "val_size": val_size,
            "test_size": test_size,
            "patience": patience,
            "scaler": scaler,
            "seed": seed,
            "max_windows": max_windows,
            "model": model,
        }.items()
        if v is not None
    }
    reg = _registry(registry)
    warm = None
    if from_ref is not None:
        warm = reg.get(from_ref)
        config = config_from(warm, overrides)
        name = name or warm.name
    else:
        config = TrainConfig(**overrides)
    columns = _columns(id_col, time_col, target_col, warm.manifest["data"].get("columns") if warm else None)
    table = _read(data, columns, wide, freq, fill)
    progress = None if quiet else _progress_printer()
    entry = run_training(
        table,
        config,
        name=name,
        registry=reg,
        warm_start=warm,
        source=_source(data),
        columns=columns,
        progress=progress,
    )
    if not quiet:
        m = entry.manifest["metrics"]
        err.print(
            f"best epoch {m['best_epoch']}: val loss {m['val_loss']:.4g}; saved {entry.path}", highlight=False
        )
    typer.echo(entry.ref)


def _source(data: str) -> str:
    return "<stdin>" if data == "-" else str(Path(data).resolve())


def _progress_printer():  # noqa: ANN202
    """One line per epoch on stderr: losses, speed and the time left at the current pace."""
    state = {"elapsed": 0.0}

    def show(record, total: int, improved: bool) -> None:  # noqa: ANN001
        state["elapsed"] += record.seconds
        eta = state["elapsed"] / record.epoch * (total - record.epoch)
        mark = "*" if improved else " "
        err.print(
            f"epoch {record.epoch:>3}/{total}  train {record.train_loss:.4g}  "
            f"val {record.val_loss:.4g}{mark} "
            f"{record.windows_per_s:,.0f} windows/s  ETA {eta:.0f}s",
            highlight=False,
        )

    return show


def _write_output(frame, output: str, fmt: OutFormat | None) -> None:  # noqa: ANN001
    from qkanforecast.data import write_frame

    write_frame(frame, output, fmt.value if fmt else None)


@app.command(
    epilog=_example(
        "qkanforecast forecast traffic.parquet --model qkan-lstm@latest --level 90 -o forecast.csv"
    )
)
@user_errors
def forecast(
    data: DataArg,
    model: ModelRef,
    output: Annotated[str, typer.Option("--output", "-o", help="Output file, or - for CSV on stdout.")] = "-",
    fmt: Annotated[
        OutFormat | None, typer.Option("--format", help="Output format (default: from the suffix).")
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option("--steps", help="Steps to forecast (default: the model's horizon; more are recursive)."),
    ] = None,
    level: Annotated[
        list[int] | None,
        typer.Option(
            "--level",
            help="Add a conformal prediction interval, columns <model>-lo-L and <model>-hi-L; "
            "L is 50, 80, 90, 95 or 99; repeatable.",
        ),
    ] = None,
    registry: RegistryOpt = None,
    id_col: IdCol = None,
    time_col: TimeCol = None,
    target_col: TargetCol = None,
    wide: Wide = False,
    freq: Freq = None,
    fill: FillOpt = Fill.none,
    quiet: Quiet = False,
) -> None:
    """Forecast the steps after the end of every series of DATA, in original units."""
    from qkanforecast.forecast import Predictor
    from qkanforecast.forecast import forecast as run_forecast

    if steps is not None and steps < 1:
        raise QKANForecastError(f"--steps must be at least 1, got {steps}")
    predictor = Predictor.load(model, _registry(registry))
    columns = _columns(id_col, time_col, target_col, predictor.entry.manifest["data"].get("columns"))
    table = _read(data, columns, wide, freq, fill)
    frame = run_forecast(predictor, table, steps, level)
    _write_output(frame, output, fmt)
    if not quiet and output != "-":
        err.print(
            f"{len(frame):,} forecasts of {frame['unique_id'].nunique():,} series written to {output}",
            highlight=False,
        )


@app.command(
    epilog=_example(
        "qkanforecast evaluate traffic.parquet --model qkan-lstm --windows 7 --step 144 -o backtest.csv"
    )
)
@user_errors
def evaluate(
    data: DataArg,
    model: ModelRef,
    windows: Annotated[int, typer.Option(help="Backtest origins per series.")] = 3,
    step: Annotated[
        int | None, typer.Option(help="Steps between origins (default: the model's horizon).")
    ] = None,
    refit: Annotated[bool, typer.Option("--refit", help="Retrain the model for every window.")] = False,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Write the backtest table here (- for stdout).")
    ] = None,
    fmt: Annotated[
        OutFormat | None, typer.Option("--format", help="Backtest table format (default: from the suffix).")
    ] = None,
    per_series: Annotated[bool, typer.Option("--per-series", help="Also score every series.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON lines.")] = False,
    registry: RegistryOpt = None,
    id_col: IdCol = None,
    time_col: TimeCol = None,
    target_col: TargetCol = None,
    wide: Wide = False,
    freq: Freq = None,
    fill: FillOpt = Fill.none,
    quiet: Quiet = False,
) -> None:
    """Backtest a model on the last windows of every series against naive and seasonal-naive forecasts."""
    from qkanforecast.evaluate import evaluate as run_evaluate
    from qkanforecast.forecast import Predictor

    predictor = Predictor.load(model, _registry(registry))
    columns = _columns(id_col, time_col, target_col, predictor.entry.manifest["data"].get("columns"))
    table = _read(data, columns, wide, freq, fill)
    result = run_evaluate(predictor, table, windows, step, refit, per_series)
    backtest = result.backtest
    if output is not None:
        _write_output(backtest, output, fmt)
    console = err if output == "-" else Console()  # the backtest owns stdout when written there
    title = (
        f"{predictor.entry.ref}: {backtest['cutoff'].nunique()} cutoffs, "
        f"{backtest['unique_id'].nunique()} series"
    )
    _show(result.metrics, title, console, as_json)
    if not quiet:
        for note in result.notes:
            err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
        if output not in (None, "-"):
            err.print(f"backtest of {len(backtest):,} rows written to {output}", highlight=False)


def _show(frame, title: str, console: Console, as_json: bool) -> None:  # noqa: ANN001
    """A table as JSON lines, a rich table on a terminal, or plain aligned text in a pipe."""
    if as_json:
        for row in frame.to_dict(orient="records"):
            text = json.dumps({k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()})
            console.print(text, markup=False, highlight=False, soft_wrap=True)
    elif console.is_terminal:
        table = RichTable(title=title)
        for col in frame.columns:
            table.add_column(col, justify="right" if frame[col].dtype.kind in "if" else "left")
        for row in frame.itertuples(index=False):
            table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
        console.print(table)
    elif len(frame):
        text = frame.to_string(index=False, float_format=lambda v: f"{v:.4g}")
        console.print(text, markup=False, highlight=False, soft_wrap=True)


# -- registry commands ------------------------------------------------------------------------------------
@models_app.command("list", epilog=_example("qkanforecast models list --json"))
@user_errors
def models_list(
    registry: RegistryOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per version.")] = False,
) -> None:
    """List every registered model version."""
    import pandas as pd

    reg = _registry(registry)
    rows = pd.DataFrame([_summary(e) for e in reg.entries()], columns=list(Summary.__annotations__))
    _show(rows, f"registry {reg.root}", Console(), as_json)


class Summary(TypedDict):
    ref: str
    model: str
    parameters: int
    freq: str
    lookback: int
    horizon: int
    series: int
    val_loss: float
    created: str
    path: str


def _summary(entry) -> Summary:  # noqa: ANN001
    m = entry.manifest
    return {
        "ref": entry.ref,
        "model": m["model"]["name"],
        "parameters": m["model"]["num_parameters"],
        "freq": m["data"]["freq"],
        "lookback": m["data"]["lookback"],
        "horizon": m["data"]["horizon"],
        "series": m["data"]["series"],
        "val_loss": m["metrics"]["val_loss"],
        "created": m["created"],
        "path": str(entry.path),
    }


@models_app.command("show", epilog=_example("qkanforecast models show qkan-lstm@v2"))
@user_errors
def models_show(
    ref: Annotated[str, typer.Argument(help="NAME, NAME@vN, NAME@latest or a path.")],
    registry: RegistryOpt = None,
) -> None:
    """Print a model version's manifest (JSON) after checking its weights."""
    reg = _registry(registry)
    entry = reg.get(ref)
    reg.load_state_dict(entry)  # refuses a corrupt checkpoint
    typer.echo(json.dumps({"ref": entry.ref, "path": str(entry.path), **entry.manifest}, indent=2))


@models_app.command("rm", epilog=_example("qkanforecast models rm qkan-lstm@v1"))
@user_errors
def models_rm(
    ref: Annotated[str, typer.Argument(help="NAME@vN for one version, NAME for all of them.")],
    registry: RegistryOpt = None,
) -> None:
    """Remove one version, or every version of a name."""
    for entry in _registry(registry).remove(ref):
        err.print(f"removed {entry.ref} ({entry.path})", highlight=False)


@models_app.command("path", epilog=_example("qkanforecast models path qkan-lstm@latest"))
@user_errors
def models_path(
    ref: Annotated[str | None, typer.Argument(help="A reference (default: print the registry root).")] = None,
    registry: RegistryOpt = None,
) -> None:
    """Print the registry root, or the directory of a model version."""
    reg = _registry(registry)
    typer.echo(str(reg.resolve(ref) if ref else reg.root))
