"""``qkanforecast train``: fit one global model and publish it in the registry.

Every option that configures the run is a field of ``Settings`` (config.py) under the same name; the help
shows the field's default, and only the options given on the command line are applied (a warm start keeps
the checkpoint's values for the rest).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer

from qkanforecast.cli.app import (
    INPUT,
    DataArg,
    Input,
    Quiet,
    RegistryOpt,
    app,
    column_list,
    example,
    open_registry,
    say,
    shown,
    source_of,
    user_errors,
    with_input,
)
from qkanforecast.cli.render import progress_printer
from qkanforecast.config import (
    FAMILIES,
    OPTIONS,
    Columns,
    ConfigError,
    Decoder,
    Family,
    Loss,
    Norm,
    Readout,
    Scaler,
    Settings,
    Skip,
)

_S = Settings()
_FAMILY_SIZES = ", ".join(f"{name} {info.hidden_size}" for name, info in FAMILIES.items())


def default_name(data: str, family: str) -> str:
    """The registry name of a model trained on DATA: the file's name without its suffixes
    (``cells.csv.gz``: ``cells``), made a valid name; the model family for stdin or a name left empty.
    Unrelated models trained on different files so get different names."""
    if data == "-":
        return family
    name = Path(data).name
    while Path(name).suffix.lower() in (".gz", ".bz2", ".zst", ".xz", ".csv", ".tsv", ".txt", ".parquet",
                                        ".pq"):
        name = Path(name).stem
    name = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]+", "-", name)).strip("-._")[:128]
    return name or family


def _opt(default: Any, help: str, param_decls: list[str] | None = None, **kwargs: Any) -> Any:
    """An option whose value None means "not given"; the help shows the default of its config field."""
    text = f"{help}  [default: {shown(default)}]"
    return typer.Option(*(param_decls or []), help=text, show_default=False, **kwargs)


def _members(text: str) -> list[int] | None:
    """``--ensemble``: ``auto`` (None), ``none`` (one model) or the days of lags of each member."""
    if text.strip().lower() == "auto":
        return None
    if text.strip().lower() in ("none", ""):
        return []
    try:
        return [int(d) for d in column_list(text)]
    except ValueError:
        raise ConfigError("ensemble", f"takes auto, none or days such as 7,2, got {text!r}") from None


@app.command(epilog=example("ref=$(qkanforecast train traffic.parquet --lookback 144 --horizon 6 -q)"))
@user_errors
@with_input
def train(
    data: DataArg,
    model: Annotated[Family | None, _opt(_S.model.model, "Model family.")] = None,
    lookback: Annotated[
        int | None,
        _opt("auto: a week of steps, or 2 days or 1 where the series are short", "Input steps per window.",
             min=1),
    ] = None,
    horizon: Annotated[int | None, _opt(_S.data.horizon, "Steps forecast at once.", min=1)] = None,
    hidden_size: Annotated[
        int | None, _opt(f"the family's: {_FAMILY_SIZES}", "Hidden units.", min=1)
    ] = None,
    num_layers: Annotated[int | None, _opt(_S.model.num_layers, "Stacked recurrent layers.", min=1)] = None,
    reps: Annotated[
        int | None, _opt(_S.model.qkan.reps, "DARUAN re-uploading repetitions (QKAN models).", min=1)
    ] = None,
    readout: Annotated[Readout | None, _opt(_S.model.qkan.readout, "DARUAN read-out (QKAN models).")] = None,
    norm: Annotated[
        Norm | None, _opt(_S.model.norm, "Normalise each input window by its own statistics.")
    ] = None,
    skip: Annotated[
        Skip | None, _opt(_S.model.skip, "Forecast = this baseline + the network's correction (auto: naive "
                          "for horizons up to a quarter day, else none).")
    ] = None,
    lags: Annotated[
        bool | None, _opt("auto: on unless the horizon is at most a quarter day",
                          "Give the decoder the values a day and a week before each step.",
                          param_decls=["--lags/--no-lags"])
    ] = None,
    calendar: Annotated[
        bool | None, _opt(_S.model.calendar, "Time of day and day of week as inputs.",
                          param_decls=["--calendar/--no-calendar"])
    ] = None,
    ensemble: Annotated[
        str | None,
        _opt("auto: 7,2 when the decoder reads lags, else none",
             "Members trained apart and averaged, each the days of lags it reads (e.g. 7,2), or none.",
             metavar="DAYS"),
    ] = None,
    decoder: Annotated[
        Decoder | None, _opt(_S.model.decoder, "From the last hidden state to the horizon.")
    ] = None,
    epochs: Annotated[int | None, _opt(_S.train.epochs, "Maximum epochs.", min=1)] = None,
    batch_size: Annotated[int | None, _opt(_S.train.batch_size, "Windows per batch.", min=1)] = None,
    lr: Annotated[float | None, _opt(_S.train.lr, "Adam learning rate.")] = None,
    val_size: Annotated[
        float | None, _opt(_S.data.val_size, "Validation tail per series: fraction (<1) or steps.", min=0)
    ] = None,
    test_size: Annotated[
        float | None,
        _opt(_S.data.test_size, "Tail per series left out of training entirely: fraction (<1) or steps.",
             min=0),
    ] = None,
    patience: Annotated[
        int | None,
        _opt(_S.train.patience, "Epochs without validation gain before stopping (0: never).", min=0),
    ] = None,
    scaler: Annotated[Scaler | None, _opt(_S.data.scaler, "Per-series scaler.")] = None,
    seed: Annotated[int | None, _opt(_S.train.seed, "Random seed.")] = None,
    loss: Annotated[Loss | None, _opt(_S.train.loss, "Training loss (early stopping uses it too).")] = None,
    max_windows: Annotated[
        int | None,
        _opt(_S.train.max_windows, "Train each epoch on a fresh random sample of this many windows (0: all).",
             min=0),
    ] = None,
    hist_exog: Annotated[
        str | None,
        _opt(_S.data.hist_exog, "Covariate columns known up to the forecast origin, comma-separated."),
    ] = None,
    futr_exog: Annotated[
        str | None,
        _opt(_S.data.futr_exog, "Covariate columns known ahead, comma-separated (a forecast reads their "
             "future values from a file)."),
    ] = None,
    static: Annotated[
        str | None, _opt(_S.data.static, "Per-series covariate columns (one value per series).")
    ] = None,
    holidays: Annotated[
        str | None,
        _opt(_S.data.holidays, "File of holiday dates (one per line, e.g. 2013-12-25): a holiday flag at "
             "every input and forecast step."),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="Registry name (default: DATA's file name without its suffix; the model family "
                     "for stdin; with --from, the name warm-started from)."),
    ] = None,
    from_ref: Annotated[
        str | None, typer.Option("--from", help="Warm-start from this registered model.")
    ] = None,
    registry: RegistryOpt = None,
    inputs: Input = INPUT,
    quiet: Quiet = False,
) -> None:
    """Train one global model over every series of DATA and print its registry reference (NAME@vN)."""
    from qkanforecast.covariates import read_holidays
    from qkanforecast.data.partitioned import open_partitioned
    from qkanforecast.distributed import join, leave
    from qkanforecast.train import train as run_training
    from qkanforecast.train import warm_settings

    given = {k: v for k, v in locals().items() if k in OPTIONS and v is not None}
    dist = join()  # under torchrun with several ranks: the process group; otherwise None
    quiet = quiet or (dist is not None and dist.rank != 0)  # one rank speaks
    for key in ("hist_exog", "futr_exog", "static"):
        if key in given:
            given[key] = column_list(given[key])
    if ensemble is not None:
        given["ensemble"] = _members(ensemble)
    if holidays is not None:
        given["holidays"] = read_holidays(holidays)
    reg = open_registry(registry)
    warm = None
    if from_ref is not None:
        warm = reg.get(from_ref)
        settings = warm_settings(warm, given)
        name = name or warm.name
    else:
        settings = Settings().updated(given)
    name = name or default_name(data, settings.model.model)
    reg.check_writable(name)  # before reading and training: a read-only registry is found out at once
    columns = (warm.manifest.schema.columns if warm else Columns()).given(
        inputs.id_col, inputs.time_col, inputs.target_col
    )
    dataset = open_partitioned(data) if dist is not None else None
    if dist is not None and dataset is not None and dataset.marker.kind == "canonical":
        dist, table = dist.read_buckets(dataset)  # each rank reads its own buckets only
    else:
        table = inputs.read(data, columns, covariates=settings.data.covariates, quiet=quiet)
    if not quiet and table.step_ns >= 86_400 * 10**9:  # the season of sub-daily data goes without saying
        from qkanforecast.baselines import season_note

        say(f"note: {season_note(table.freq)}")
    used = table.report.get("columns") or {}
    if not used.get("wide") and used.get("time"):  # record the columns read (a detected id column too)
        columns = Columns(used["id"] or columns.id_col, used["time"], used["target"] or columns.target_col)
    entry = run_training(
        table,
        settings,
        name=name,
        registry=reg,
        warm_start=warm,
        source=source_of(data),
        columns=columns,
        progress=None if quiet else progress_printer(),
        dist=dist,
    )
    leave(dist)
    if not quiet:
        best = entry.manifest.training
        if best.val_windows:
            say(f"best epoch {best.best_epoch}: val loss {best.val_loss:.4g}; saved {entry.path}")
        else:
            say(f"best epoch {best.best_epoch} by the training loss {best.train_loss:.4g} (no validation "
                f"part); saved {entry.path}")
    if dist is None or dist.rank == 0:
        typer.echo(entry.ref)
