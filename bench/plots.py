"""The reproduction's plots: forecasts against the truth, and the learned DARUAN activations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.experiments import DataSpec


def plot_forecasts(data: DataSpec, forecasts: dict[str, dict[str, Any]], path: Path, span: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(forecasts.values()))
    uid = first["unique_id"][0]  # the first series
    fig, ax = plt.subplots(figsize=(10, 3.8))
    step = 0 if data.horizon == 1 else data.horizon - 1  # plot the last step of each horizon
    for k, (label, f) in enumerate(forecasts.items()):
        sel = np.flatnonzero(f["unique_id"] == uid)[:span]
        ds = f["ds"][sel]
        if k == 0:
            ax.plot(_x(data, ds, step), f["y"][sel, step], color="black", lw=2.0, label="truth")
        ax.plot(_x(data, ds, step), f["yhat"][sel, step], lw=1.2, label=label)
    what = "one step ahead" if data.horizon == 1 else f"{data.horizon} steps ahead (last step of each window)"
    series = "" if data.synthetic else f", series {uid}"
    ax.set_title(f"{data.title}: test part, {what}{series}", fontsize=10)
    ax.set_xlabel("sample" if data.synthetic else "time")
    ax.set_ylabel(data.units)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _x(data: DataSpec, ds: np.ndarray, step: int) -> np.ndarray:
    if data.synthetic:  # stand-in hourly clock: row k is sample k
        return ((ds - np.datetime64("2000-01-01")) // np.timedelta64(1, "h")).astype(int) + step
    return ds + _step_delta(data) * step


def _step_delta(data: DataSpec) -> np.timedelta64:
    return np.timedelta64(10, "m") if data.source == "milan_internet" else np.timedelta64(1, "h")


def plot_activations(act: dict[str, Any], title: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid, phi = act["grid"], act["phi"]  # [G], [G, 4D, F + D]
    d, f = act["hidden_size"], act["input_size"]
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.4), sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for g, (ax, gate) in enumerate(zip(axes, ("input i", "forget f", "cell g", "output o"), strict=True)):
        for j in range(d):
            for i in range(f + d):
                src = "x_t" if i < f else f"h_{i - f + 1}"
                ax.plot(grid, phi[:, g * d + j, i], color=colors[(j * (f + d) + i) % len(colors)],
                        ls="-" if i < f else "--", lw=1.3, label=f"unit {j + 1} <- {src}")
        ax.axvspan(-1, 1, color="0.92", zorder=0)
        ax.set_title(f"gate {gate}", fontsize=10)
        ax.set_xlabel("edge input x")
    axes[0].set_ylabel(f"phi_ji(x) ({act['readout']} read-out)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7)
    fig.suptitle(f"{title} - reps {act['reps']}; shaded: the [-1, 1] range of the scaled inputs",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.86, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
