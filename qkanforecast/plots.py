"""The figures people look at before they trust a model: forecasts with their intervals, backtests with the
error by step ahead, and the learned activation of every gate edge of a QKAN-LSTM or HQKAN-LSTM.

Matplotlib is an optional extra (``qkanforecast[plot]``), imported only here and only when a figure is
made. Figures use matplotlib's object API (a ``Figure`` on an Agg canvas), never pyplot: no global state and
no display, so plotting is safe in a cron job, a server or a notebook. ``save_figure`` writes PNG, SVG or
PDF by the file's suffix, atomically (the file appears only once complete). The reproduction
(``bench/plots.py``) draws its plots with these same functions.

Tables are the ones the commands write: forecasts ``unique_id, ds, <model>[, <model>-lo-L, <model>-hi-L]``,
backtests ``unique_id, ds, cutoff, y, <model>, naive, seasonal_naive``.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from qkanforecast.data import atomic_file
from qkanforecast.errors import QKANForecastError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from qkanforecast.activations import EdgeCurves

IMAGE_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
INSTALL_HINT = "pip install 'qkanforecast[plot]' (make install does)"
_KEYS = ("unique_id", "ds", "cutoff", "y")
_INTERVAL = re.compile(r"^(?P<model>.+)-(?P<side>lo|hi)-(?P<level>\d+)$")
_GATE_NAMES = {"i": "input gate i", "f": "forget gate f", "g": "cell gate g", "o": "output gate o"}
_MAX_CUTOFF_LINES = 40  # more cutoffs than this are not marked with vertical lines


def require_matplotlib() -> None:
    """Raise a user error that says how to install matplotlib when it is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise QKANForecastError(f"plots need matplotlib, which is not installed: {INSTALL_HINT}") from None


def image_format(path: str | Path) -> str:
    """``png``, ``svg`` or ``pdf`` from the suffix of ``path``; stdout and other suffixes are refused."""
    if str(path) == "-":
        raise QKANForecastError(
            "a plot is an image, not text: give -o a file name ending in .png, .svg or .pdf"
        )
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_FORMATS:
        raise QKANForecastError(
            f"{path}: unknown image type {suffix or '(no suffix)'}; use a name ending in .png, .svg or .pdf"
        )
    return IMAGE_FORMATS[suffix]


def new_figure(width: float, height: float) -> Figure:
    """An empty figure on an Agg canvas (no pyplot, no display), laid out by matplotlib's constrained
    layout."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> None:
    """Write ``fig`` to ``path`` as PNG, SVG or PDF (by its suffix), atomically. SVG and PDF carry no
    creation date, so the same figure gives the same bytes."""
    fmt = image_format(path)
    metadata: dict[str, Any] = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}.get(fmt, {})
    with atomic_file(path) as fh:
        fig.savefig(fh, format=fmt, dpi=dpi, metadata=metadata)


# -- result tables ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Result:
    """A forecast or backtest table read back: ``frame`` with ``unique_id`` as strings and ``ds`` (and
    ``cutoff``) as naive timestamps, UTC when ``zone`` is set: the zone of a Parquet column with one, or
    ``UTC`` for times written with offsets (CSV and JSON lines keep the offset, not the zone's name)."""

    frame: pd.DataFrame
    zone: str | None


_OFFSET = re.compile(r"(Z|[+-]\d\d:?\d\d)$")


def read_result(path: str, required: Sequence[str], what: str) -> Result:
    """A table the commands wrote (CSV, Parquet or JSON lines by the suffix, or CSV on stdin for ``-``)."""
    import sys

    from qkanforecast.config import OutFormat
    from qkanforecast.data.formats import format_of

    fmt = OutFormat.CSV if path == "-" else format_of(path)
    if fmt is None:
        raise QKANForecastError(f"{path}: unknown table suffix; use .csv, .parquet or .jsonl")
    try:
        if fmt is OutFormat.PARQUET:
            frame = pd.read_parquet(path)
        elif fmt is OutFormat.JSONL:
            frame = pd.read_json(path, lines=True, dtype=False, convert_dates=False)
        else:
            frame = pd.read_csv(sys.stdin if path == "-" else path)
    except (ValueError, UnicodeDecodeError) as exc:
        raise QKANForecastError(
            f"{path}: not a readable {fmt.value} table ({str(exc).splitlines()[0]})"
        ) from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise QKANForecastError(
            f"{path}: no column {missing[0]!r}; a {what} table has {', '.join(required)} and a column "
            "per model"
        )
    if frame.empty:
        raise QKANForecastError(f"{path}: the {what} table has no rows")
    frame["unique_id"] = frame["unique_id"].astype(str)
    zone = None
    for col in ("ds", "cutoff"):
        if col not in frame.columns:
            continue
        values = frame[col]
        try:
            if isinstance(values.dtype, pd.DatetimeTZDtype):
                zone = zone or str(values.dt.tz)
                values = values.dt.tz_convert("UTC")
            elif not pd.api.types.is_datetime64_any_dtype(values):
                offsets = bool(_OFFSET.search(str(values.iloc[0])))
                zone = zone or ("UTC" if offsets else None)
                values = pd.to_datetime(values, utc=offsets, format="ISO8601")
        except (ValueError, TypeError):
            raise QKANForecastError(f"{path}: column {col!r} holds values that are not timestamps") from None
        frame[col] = values.dt.tz_localize(None) if isinstance(values.dtype, pd.DatetimeTZDtype) else values
    return Result(frame, zone)


def wall_clock(frame: pd.DataFrame, tz: str, columns: Sequence[str] = ("ds", "cutoff")) -> pd.DataFrame:
    """``frame`` with its naive UTC time ``columns`` as the (naive) wall clock of zone ``tz``: what a
    clock there reads, which is how the times are drawn."""
    from qkanforecast.data.zones import check_zone, to_zone

    out = to_zone(frame, check_zone(tz), [c for c in columns if c in frame.columns])
    for col in columns:
        if col in out.columns:
            out[col] = out[col].dt.tz_localize(None)
    return out


# -- table columns ------------------------------------------------------------------------------------------
def model_columns(frame: pd.DataFrame) -> list[str]:
    """The forecast columns of a forecast or backtest table, in table order (not ids, times, actuals or
    interval bounds)."""
    return [str(c) for c in frame.columns if c not in _KEYS and not _INTERVAL.match(str(c))]


def interval_levels(frame: pd.DataFrame, model: str) -> list[int]:
    """The levels L with both ``<model>-lo-L`` and ``<model>-hi-L`` columns, widest first."""
    found: dict[int, set[str]] = {}
    for col in map(str, frame.columns):
        m = _INTERVAL.match(col)
        if m and m["model"] == model:
            found.setdefault(int(m["level"]), set()).add(m["side"])
    return sorted((level for level, sides in found.items() if sides == {"lo", "hi"}), reverse=True)


def select_series(
    available: Sequence[str], wanted: Sequence[str] | None, max_series: int, what: str
) -> list[str]:
    """``wanted`` (each must be in ``available``), else the first ``max_series`` of ``available``."""
    if not wanted:
        return list(available[:max_series])
    known = set(available)
    for name in wanted:
        if name not in known:
            shown = ", ".join(list(available[:5])) + (", ..." if len(available) > 5 else "")
            raise QKANForecastError(f"series {name!r} is not in {what} (it has {shown})")
    return list(wanted)


def _steps_ahead(backtest: pd.DataFrame) -> pd.Series:
    """1 for the first target after each cutoff, 2 for the next... (per series and cutoff)."""
    return backtest.groupby(["unique_id", "cutoff"], sort=False).cumcount() + 1


def _time_axis(ax: Axes, values: Any) -> None:
    if pd.api.types.is_datetime64_any_dtype(values):
        from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))


# -- forecasts ----------------------------------------------------------------------------------------------
def forecast_figure(
    history: pd.DataFrame,
    forecast: pd.DataFrame,
    series: Sequence[str],
    ylabel: str = "y",
    title: str = "",
    xlabel: str = "",
) -> Figure:
    """One panel per series of ``series``: its ``history`` (``unique_id, ds, y``; what to show of it is
    the caller's choice) and every forecast column of ``forecast``, with each prediction interval shaded.

    Times are drawn as given (the caller converts UTC times to a zone's clock with ``wall_clock``).
    """
    models = model_columns(forecast)
    if not models:
        raise QKANForecastError("the forecast table has no forecast column besides unique_id and ds")
    fig = new_figure(10, 0.6 + 2.4 * len(series))
    axes = fig.subplots(len(series), 1, squeeze=False)[:, 0]
    for ax, uid in zip(axes, series, strict=True):
        past = history[history["unique_id"] == uid]
        ahead = forecast[forecast["unique_id"] == uid]
        ax.plot(past["ds"], past["y"], color="black", lw=1.0, label="history")
        for k, model in enumerate(models):
            color = f"C{k}"
            for n, level in enumerate(interval_levels(forecast, model)):
                lo, hi = ahead[f"{model}-lo-{level}"], ahead[f"{model}-hi-{level}"]
                ax.fill_between(
                    ahead["ds"],
                    lo,
                    hi,
                    color=color,
                    alpha=0.15 + 0.1 * n,
                    lw=0,
                    label=f"{model} {level}% interval",
                )
            ax.plot(ahead["ds"], ahead[model], color=color, lw=1.4, label=model)
        ax.set_title(str(uid), loc="left", fontsize=10)
        ax.set_ylabel(ylabel)
        _time_axis(ax, ahead["ds"])
    axes[0].legend(fontsize=8, loc="upper left", ncol=2)
    axes[-1].set_xlabel(xlabel)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


# -- backtests ----------------------------------------------------------------------------------------------
def backtest_figure(
    backtest: pd.DataFrame,
    series: Sequence[str],
    ylabel: str = "y",
    title: str = "",
    lead: int | None = None,
    xlabel: str = "",
) -> Figure:
    """One panel per series of ``series``: the actuals and each model's forecast from every cutoff; then
    one panel of the MAE by step ahead of every model over the whole backtest (all its series).

    Forecasts from consecutive cutoffs that overlap (origins closer than the horizon) would hide each
    other, so then (and for one-step forecasts) each model is drawn as one line at ``lead`` steps ahead
    (default: the last step); giving ``lead`` forces that view.
    """
    models = model_columns(backtest)
    if not models:
        raise QKANForecastError(
            "the backtest table has no forecast column besides unique_id, ds, cutoff and y"
        )
    bt = backtest.sort_values(["unique_id", "cutoff", "ds"], kind="stable").reset_index(drop=True)
    step = _steps_ahead(bt)
    horizon = int(step.max())
    if lead is None and (horizon == 1 or _overlapping(bt)):
        lead = horizon
    if lead is not None and not 1 <= lead <= horizon:
        raise QKANForecastError(f"lead {lead} is outside the backtest's 1..{horizon} steps ahead")
    fig = new_figure(10, 0.6 + 2.4 * len(series) + 2.2)
    axes = fig.subplots(len(series) + 1, 1, squeeze=False)[:, 0]
    for ax, uid in zip(axes[:-1], series, strict=True):
        mine = bt[bt["unique_id"] == uid]
        actual = mine.drop_duplicates("ds").sort_values("ds")
        ax.plot(actual["ds"], actual["y"], color="black", lw=1.0, label="actual")
        for k, model in enumerate(models):
            if lead is not None:
                at = mine[step[mine.index] == lead]
                ax.plot(at["ds"], at[model], color=f"C{k}", lw=1.2, label=model)
                continue
            for n, (_, segment) in enumerate(mine.groupby("cutoff", sort=True)):
                ax.plot(segment["ds"], segment[model], color=f"C{k}", lw=1.2, label=None if n else model)
        cutoffs = mine["cutoff"].unique()
        if len(cutoffs) <= _MAX_CUTOFF_LINES:
            for c in cutoffs:
                ax.axvline(c, color="0.75", lw=0.8, ls=":", zorder=0)
        what = (
            f"{lead} step{'s' if lead != 1 else ''} ahead" if lead is not None else "each cutoff's forecast"
        )
        ax.set_title(f"{uid}: {len(cutoffs)} cutoffs, {what}", loc="left", fontsize=10)
        ax.set_ylabel(ylabel)
        _time_axis(ax, actual["ds"])
        ax.set_xlabel(xlabel)
    axes[0].legend(fontsize=8, loc="upper left", ncol=len(models) + 1)
    ax = axes[-1]
    error = bt[models].sub(bt["y"], axis=0).abs()
    mae = error.groupby(step.to_numpy()).mean()  # [H, models]
    for k, model in enumerate(models):
        ax.plot(mae.index, mae[model], color=f"C{k}", marker="o", ms=3, lw=1.2, label=model)
    n_series, n_cutoffs = (
        bt["unique_id"].nunique(),
        bt.groupby("unique_id", sort=False)["cutoff"].nunique().sum(),
    )
    ax.set_title(f"MAE by step ahead: {n_series} series, {n_cutoffs} forecasts", loc="left", fontsize=10)
    ax.set_xlabel("steps ahead")
    ax.set_ylabel("MAE")
    ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def _overlapping(bt: pd.DataFrame) -> bool:
    """Whether some cutoff's forecast starts before the previous cutoff's forecast of the series ends."""
    spans = bt.groupby(["unique_id", "cutoff"], sort=True)["ds"].agg(["min", "max"])
    first = spans["min"].to_numpy()[1:]
    last = spans["max"].to_numpy()[:-1]
    same = spans.index.get_level_values(0).to_numpy()
    return bool(np.any((same[1:] == same[:-1]) & (first <= last)))


# -- activations --------------------------------------------------------------------------------------------
def activations_figure(curves: Sequence[EdgeCurves], title: str = "") -> Figure:
    """The grid of edge functions ``f_ji(x)`` of every recurrent layer (``activations.edge_curves``).

    QKAN-LSTM: one row per gate (i, f, g, o) and layer, one column per input (the core's inputs, then
    ``h_{t-1}``), one curve per hidden unit in each panel. HQKAN-LSTM: one row per layer, one panel per
    latent input, one curve per latent output. Each panel's x axis spans what that input took in training.
    """
    rows: list[tuple[Any, str, list[int]]] = []  # (curves, row label, output indices)
    for c in curves:
        if c.kind == "gates":
            d = len(c.outputs) // 4
            for g, gate in enumerate("ifgo"):
                rows.append((c, f"layer {c.layer + 1}, {_GATE_NAMES[gate]}", list(range(g * d, (g + 1) * d))))
        else:
            rows.append((c, f"layer {c.layer + 1}, latent QKAN", list(range(len(c.outputs)))))
    from matplotlib.ticker import MaxNLocator

    cols = max(len(c.inputs) for c in curves)
    width = max(1.7 * cols + 0.6, 8.0)
    fig = new_figure(width, 1.45 * len(rows) + 1.1)
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, (c, label, outs) in enumerate(rows):
        for i in range(cols):
            ax = axes[r, i]
            if i >= len(c.inputs):
                ax.remove()
                continue
            for n, j in enumerate(outs):
                unit = c.outputs[j][1:] if c.kind == "gates" else c.outputs[j]
                ax.plot(
                    c.grid[i],
                    c.values[j, i],
                    color=f"C{n % 10}",
                    lw=1.0,
                    label=f"unit {unit}" if c.kind == "gates" else unit,
                )
            ax.set_title(f"<- {c.inputs[i]}", fontsize=7, pad=2)
            ax.tick_params(labelsize=6, length=2, pad=1)
            ax.xaxis.set_major_locator(MaxNLocator(5))
            if i == 0:
                ax.set_ylabel(label, fontsize=7)
    first = curves[0]
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 10), fontsize=7)
    span = (
        "each input's range on the training windows"
        if first.observed
        else ("one period [-pi, pi] (this model's manifest has no recorded input range)")
    )
    what = f"f_ji(x) = phi_ji(x) + w_ji silu(x), {first.readout} read-out, reps {first.reps}; x: {span}"
    text = "\n".join(textwrap.fill(t, int(width * 13)) for t in (title, what) if t)
    fig.suptitle(text, fontsize=9)
    return fig
