"""``qkanforecast plot forecast | backtest | activations``: images of what the other commands computed.

Each reads what ``forecast``, ``evaluate -o`` or ``train`` left behind, draws it with ``qkanforecast.plots``
and writes a PNG, SVG or PDF (from the suffix of ``-o``). Without matplotlib (the ``plot`` extra) each
stops with an Error that says how to install it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from qkanforecast.cli.app import (
    INPUT,
    App,
    DataArg,
    Input,
    ModelRef,
    Quiet,
    RegistryOpt,
    app,
    example,
    open_registry,
    say,
    user_errors,
    with_input,
)
from qkanforecast.files import check_output

plot_app = App(
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Draw forecasts, backtests and the learned activations of a model (PNG, SVG or PDF).",
    epilog=example("qkanforecast plot forecast traffic.csv forecast.csv -o forecast.png"),
)
app.add_typer(plot_app, name="plot")

Output = Annotated[
    str, typer.Option("--output", "-o", help="Image file; its suffix picks the format: .png, .svg or .pdf.")
]
Series = Annotated[
    str | None,
    typer.Option(
        "--series",
        help="Comma-separated series to draw.  [default: the first --max-series]",
        show_default=False,
    ),
]
MaxSeries = Annotated[
    int, typer.Option("--max-series", min=1, help="Series drawn when --series is not given.")
]
Title = Annotated[str, typer.Option("--title", help="A title above the panels.")]
Zone = Annotated[
    str | None,
    typer.Option(
        "--tz",
        help="Draw the times as this zone's clock, e.g. Europe/Rome.  [default: the zone the backtest was "
        "written in: a Parquet column's zone; UTC for times with offsets (CSV, JSON lines); naive times as "
        "they are]",
        show_default=False,
    ),
]
Dpi = Annotated[
    int, typer.Option("--dpi", min=20, max=1200, help="Resolution of PNG images (dots per inch).")
]
TableArg = "CSV, Parquet or JSON lines by the suffix, or - for CSV on stdin."


def _names(series: str | None) -> list[str] | None:
    return [s.strip() for s in series.split(",") if s.strip()] if series else None


@plot_app.command(
    "forecast",
    epilog=example(
        "qkanforecast forecast cells.csv -m qkan-lstm --level 90 -o fc.csv && "
        "qkanforecast plot forecast cells.csv fc.csv -o fc.png"
    ),
)
@user_errors
@with_input
def plot_forecast(
    data: DataArg,
    forecast: Annotated[
        str,
        typer.Argument(help=f"The forecast table (qkanforecast forecast): {TableArg}", show_default=False),
    ],
    output: Output,
    series: Series = None,
    max_series: MaxSeries = 4,
    history: Annotated[
        int | None,
        typer.Option(
            "--history",
            min=1,
            help="History steps drawn before each forecast.  "
            "[default: 3 seasons: 3 days of sub-daily data, 3 weeks of daily data]",
            show_default=False,
        ),
    ] = None,
    title: Title = "",
    dpi: Dpi = 100,
    inputs: Input = INPUT,
    quiet: Quiet = False,
) -> None:
    """Draw the history and the forecast of each series, prediction intervals shaded; one panel a series."""
    import pandas as pd

    from qkanforecast.baselines import season_length
    from qkanforecast.errors import QKANForecastError
    from qkanforecast.plots import (
        forecast_figure,
        image_format,
        read_result,
        require_matplotlib,
        save_figure,
        wall_clock,
    )

    require_matplotlib()
    image_format(output)
    check_output(output)  # a bad -o is found out before the drawing
    if data == "-" and forecast == "-":
        raise QKANForecastError("DATA and FORECAST cannot both be stdin (-); give one of them as a file")
    result = read_result(forecast, ("unique_id", "ds"), "forecast")
    chosen = _select(result.frame, series, max_series, f"the forecast {forecast}")
    table = inputs.read(data)
    steps = history or 3 * season_length(table.freq)
    past = pd.concat([table.series(uid).tail(steps) for uid in chosen])
    past, frame = past.assign(unique_id=past["unique_id"].astype(str)), result.frame
    zone = table.tz or result.zone  # the data's zone: its times (and the forecast's) are UTC
    if zone is not None:
        past = wall_clock(past, zone) if table.tz else past
        frame = wall_clock(frame, zone) if result.zone else frame
    xlabel = f"time ({zone})" if zone else ""
    fig = forecast_figure(past, frame, chosen, ylabel=inputs.target_col or "y", title=title, xlabel=xlabel)
    save_figure(fig, output, dpi)
    if not quiet:
        say(f"{len(chosen)} series drawn to {output}")


@plot_app.command(
    "backtest",
    epilog=example(
        "qkanforecast evaluate cells.csv -m qkan-lstm --windows 7 -o bt.csv && "
        "qkanforecast plot backtest bt.csv -o bt.png"
    ),
)
@user_errors
def plot_backtest(
    backtest: Annotated[
        str,
        typer.Argument(help=f"The backtest table (qkanforecast evaluate -o): {TableArg}", show_default=False),
    ],
    output: Output,
    series: Series = None,
    max_series: MaxSeries = 4,
    lead: Annotated[
        int | None,
        typer.Option(
            "--lead",
            min=1,
            help="Draw every model at this many steps ahead instead of each cutoff's "
            "whole forecast.  [default: the whole forecast, or the last step where cutoffs overlap]",
            show_default=False,
        ),
    ] = None,
    title: Title = "",
    tz: Zone = None,
    dpi: Dpi = 100,
    quiet: Quiet = False,
) -> None:
    """Draw actuals against the model and the naive forecasts from every cutoff, and the MAE by step ahead."""
    from qkanforecast.plots import (
        backtest_figure,
        image_format,
        read_result,
        require_matplotlib,
        save_figure,
        wall_clock,
    )

    require_matplotlib()
    image_format(output)
    check_output(output)  # a bad -o is found out before the drawing
    result = read_result(backtest, ("unique_id", "ds", "cutoff", "y"), "backtest")
    chosen = _select(result.frame, series, max_series, f"the backtest {backtest}")
    zone = tz or result.zone
    frame = wall_clock(result.frame, zone) if zone and result.zone else result.frame  # naive: as they are
    fig = backtest_figure(frame, chosen, title=title, lead=lead, xlabel=f"time ({zone})" if zone else "")
    save_figure(fig, output, dpi)
    if not quiet:
        say(f"{len(chosen)} series and the error by step ahead drawn to {output}")


@plot_app.command(
    "activations", epilog=example("qkanforecast plot activations --model traffic@latest -o activations.png")
)
@user_errors
def plot_activations(
    model: ModelRef,
    output: Output,
    points: Annotated[int, typer.Option("--points", min=2, max=10_000, help="Grid points per curve.")] = 201,
    title: Title = "",
    dpi: Dpi = 100,
    registry: RegistryOpt = None,
    quiet: Quiet = False,
) -> None:
    """Draw the learned edge functions of every gate of a QKAN-LSTM or HQKAN-LSTM, from its registered
    weights, over the range each input took in training."""
    from qkanforecast.activations import edge_curves, qkan_cells
    from qkanforecast.errors import QKANForecastError
    from qkanforecast.forecast import Predictor
    from qkanforecast.plots import activations_figure, image_format, require_matplotlib, save_figure

    require_matplotlib()
    image_format(output)
    check_output(output)  # a bad -o is found out before the drawing
    predictor = Predictor.load(model, open_registry(registry))
    entry = predictor.entry
    if not qkan_cells(predictor.model):
        raise QKANForecastError(
            f"{entry.ref} (family {entry.manifest.model.model}) has no QKAN layers: activation plots are "
            "for qkan-lstm and hqkan-lstm models"
        )
    ranges = entry.manifest.input_ranges
    curves = edge_curves(predictor.model, ranges, points, entry.manifest.data)
    fig = activations_figure(curves, title or f"{entry.ref}: learned edge functions")
    save_figure(fig, output, dpi)
    if not quiet:
        if ranges is None:
            say(
                f"note: {entry.ref} was trained before input ranges were recorded; each edge is drawn "
                "over one period, [-pi, pi]"
            )
        members = entry.manifest.model.ensemble or []
        if len(members) > 1:
            say(f"note: {entry.ref} is an ensemble of {len(members)} models; the first ({members[0]} days of "
                "lags) is drawn")
        edges = sum(c.values.shape[0] * c.values.shape[1] for c in curves)
        say(f"{edges:,} edge functions of {len(curves)} layer(s) drawn to {output}")


def _select(frame: object, series: str | None, max_series: int, what: str) -> list[str]:
    import pandas as pd

    from qkanforecast.plots import select_series

    assert isinstance(frame, pd.DataFrame)
    return select_series(list(pd.unique(frame["unique_id"])), _names(series), max_series, what)
