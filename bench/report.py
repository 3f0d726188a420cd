"""The reproduction's tables: the summary over seeds, the overview and the markdown report."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from bench.experiments import SMALL, DataSpec, all_specs
from qkanforecast.baselines import BASELINES

AGG = ("mse", "mae", "r2", "mse_orig", "mae_orig", "r2_orig", "train_seconds", "epochs_run")


def summarise(runs: pd.DataFrame, datasets: list[DataSpec]) -> pd.DataFrame:
    """One row per dataset and model: its configuration, mean and standard deviation over seeds."""
    rows = []
    for data in datasets:
        part = runs[runs["dataset"] == data.key]
        p_lstm = None
        for spec in all_specs(data):
            r = part[(part["label"] == spec.label) & (part["variant"] == spec.variant)]
            if r.empty:
                continue
            cols = spec.columns()
            row: dict[str, Any] = dict(dataset=data.key, model=spec.family, variant=spec.variant,
                                       readout=cols["readout"] or "", hidden_size=cols["hidden_size"],
                                       reps=cols["reps"], base_weight=cols["base_weight"],
                                       gate_bias=cols["gate_bias"], lookback=data.lookback,
                                       horizon=data.horizon,
                                       params=int(r["params"].iloc[0]), seeds=int(r["seed"].nunique()))
            if spec.family == "lstm" and spec.variant == "paper size":
                p_lstm = row["params"]
            row["params_pct_of_lstm"] = (100.0 * row["params"] / p_lstm) if p_lstm and row["params"] else None
            for key in AGG:
                v = r[key].to_numpy(float)
                row[f"{key}_mean"] = float(np.mean(v))
                row[f"{key}_std"] = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
            row["train_windows_per_epoch"] = int(r["train_windows"].iloc[0])
            row["test_windows"] = int(r["test_windows"].iloc[0])
            rows.append(row)
    return pd.DataFrame(rows)


def _pm(mean: float, std: float, fmt: str = ".3g") -> str:
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:{fmt}} ± {std:.2g}" if std else f"{mean:{fmt}}"


def markdown(summary: pd.DataFrame, datasets: list[DataSpec], meta: dict[str, Any]) -> str:
    out = ["# QKAN-LSTM paper reproduction", "",
           f"Produced by `{meta['command']}` on {meta['when']} ({meta['machine']}); "
           f"{meta['seeds']} seed(s) per model; wall time {meta['wall_minutes']:.1f} min. "
           "Mean ± standard deviation over seeds; test part only (chronological). "
           "Parameters are trainable parameters including the linear forecasting head; "
           "`% LSTM` is relative to the paper-size LSTM of the same dataset.", ""]
    out += overview(summary, datasets)
    for data in datasets:
        part = summary[summary["dataset"] == data.key]
        if part.empty:
            continue
        origin = meta["origins"].get(data.source, "")
        out += [f"## {data.title} (`{data.key}`)", "",
                f"Data: {origin}. Lookback {data.lookback}, horizon {data.horizon}; "
                f"chronological split per series: validation {_part(data.val_size)}, "
                f"test {_part(data.test_size)}; "
                + ("no further scaling" if data.scaler == "none" else f"{data.scaler} scaler fitted on train")
                + f"; Adam lr {data.lr}, batch {data.batch_size}, up to {data.epochs} epochs"
                + (f" (patience {data.patience} on validation MSE, best weights kept)"
                   if data.patience else "")
                + (f", {data.train_cap} training windows sampled per epoch" if data.train_cap else "")
                + (f", every {data.test_step}th test window" if data.test_step > 1 else "")
                + f". MSE / MAE / R² in {data.scaled_space}"
                + (f"; MAE and R² also in original units ({data.units})" if data.scaler != "none" else "")
                + ".", ""]
        head = ["model", "variant", "hidden", "reps", "read-out", "params", "% LSTM", "test MSE", "test MAE",
                "test R²"]
        if data.scaler != "none":
            head += ["MAE (orig.)", "R² (orig.)"]
        head += ["train s", "epochs"]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for _, r in part.iterrows():
            hidden = "" if pd.isna(r["hidden_size"]) else str(int(r["hidden_size"]))
            cells = [r["model"], r["variant"], hidden,
                     "" if pd.isna(r["reps"]) else str(int(r["reps"])), r["readout"] or "",
                     str(r["params"]) if r["params"] else "",
                     "" if pd.isna(r["params_pct_of_lstm"]) else f"{r['params_pct_of_lstm']:.0f}%",
                     _pm(r["mse_mean"], r["mse_std"]), _pm(r["mae_mean"], r["mae_std"]),
                     _pm(r["r2_mean"], r["r2_std"], ".4f")]
            if data.scaler != "none":
                cells += [_pm(r["mae_orig_mean"], r["mae_orig_std"]),
                          _pm(r["r2_orig_mean"], r["r2_orig_std"], ".4f")]
            trained = r["params"] > 0
            cells += [_pm(r["train_seconds_mean"], r["train_seconds_std"], ".1f") if trained else "",
                      f"{r['epochs_run_mean']:.3g}" if trained else ""]
            out.append("| " + " | ".join(cells) + " |")
        out += ["", *verdict(part)]
        if data.source in PAPER:
            out.append(f"- The paper reports (secondary sources; its LSTM's numbers are not given here): "
                       f"{PAPER[data.source]}.")
        out.append("")
    if meta.get("plots"):
        out += ["## Plots", ""] + [f"- `{p}`" for p in meta["plots"]] + [""]
    if meta.get("solver_gaps"):
        out += ["DARUAN activations: the statevector and spectral solvers agree to "
                f"{max(meta['solver_gaps']):.1e} on the plotted grids (float64).", ""]
    return "\n".join(out)


# qkan-math.md section 6: what the paper reports (secondary sources)
PAPER = {"damped_shm": "QKAN-LSTM test MSE 1.02e-3, R² 0.9771",
         "bessel_j2": "QKAN-LSTM test MSE 3.27e-4, R² 0.9861; HQKAN-LSTM 3.21e-4, R² 0.9863"}

OVERVIEW = [("best naive", None, None, None), ("LSTM", "lstm", "paper size", ""),
            ("QKAN-LSTM fast", "qkan-lstm", SMALL, "fast"),
            ("QKAN-LSTM born", "qkan-lstm", SMALL, "born"),
            ("HQKAN-LSTM fast", "hqkan-lstm", SMALL, "fast"),
            ("HQKAN-LSTM born", "hqkan-lstm", SMALL, "born"),
            ("QKAN-LSTM ≈ LSTM size", "qkan-lstm", "~LSTM params", "fast"),
            ("LSTM ≈ QKAN-LSTM size", "lstm", "~QKAN-LSTM params", "")]


def overview(summary: pd.DataFrame, datasets: list[DataSpec]) -> list[str]:
    """One line per dataset: mean test MSE (scaled space) of each model row, the lowest in bold."""
    head = ["dataset", *[name for name, *_ in OVERVIEW]]
    out = ["## Overview: test MSE (mean over seeds; parameters in brackets)", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for data in datasets:
        part = summary[summary["dataset"] == data.key]
        if part.empty:
            continue
        cells, values = [], []
        for _, family, variant, readout in OVERVIEW:
            if family is None:
                r = part[part["model"].isin(BASELINES)]
                r = r.loc[[r["mse_mean"].idxmin()]] if not r.empty else r
            else:
                r = part[(part["model"] == family) & (part["variant"] == variant)
                         & (part["readout"] == readout)]
            if r.empty:
                cells.append("")
                values.append(math.inf)
                continue
            row = r.iloc[0]
            label = f" ({row['model']})" if family is None else f" ({row['params']})"
            cells.append(f"{row['mse_mean']:.3g}{label}")
            values.append(row["mse_mean"])
        best = int(np.argmin(values))
        cells[best] = f"**{cells[best]}**"
        out.append(f"| `{data.key}` | " + " | ".join(cells) + " |")
    return out + [""]


def _part(size: float | int) -> str:
    if not size:
        return "none"
    return f"last {size:.0%}" if isinstance(size, float) and size < 1 else f"last {size} steps"


def _spread(a: pd.Series, b: pd.Series) -> str:
    """A caveat when two means differ by less than the larger seed standard deviation."""
    if a["seeds"] > 1 and abs(a["mse_mean"] - b["mse_mean"]) < max(a["mse_std"], b["mse_std"]):
        return ", within the spread over seeds"
    return ""


def verdict(part: pd.DataFrame) -> list[str]:
    """Plain statements of who wins on test MSE (mean over seeds)."""
    def get(model: str, variant: str, readout: str = "") -> pd.Series | None:
        r = part[(part["model"] == model) & (part["variant"] == variant) & (part["readout"] == readout)]
        return None if r.empty else r.iloc[0]

    lines = []
    best = part.loc[part["mse_mean"].idxmin()]
    lines.append(f"- Lowest test MSE: {best['model']}" + (f" ({best['readout']})" if best["readout"] else "")
                 + f", {best['variant']} ({best['mse_mean']:.3g}).")
    lstm = get("lstm", "paper size")
    if lstm is None:
        return lines
    for model, variant, readout in [("qkan-lstm", SMALL, "fast"), ("qkan-lstm", SMALL, "born"),
                                    ("hqkan-lstm", SMALL, "fast"), ("hqkan-lstm", SMALL, "born"),
                                    ("qkan-lstm", "~LSTM params", "fast")]:
        r = get(model, variant, readout)
        if r is None:
            continue
        ratio = r["mse_mean"] / lstm["mse_mean"]
        word = "beats" if ratio < 1 else "does not beat"
        lines.append(f"- {model} ({readout}, {variant}, {r['params']} params) {word} the LSTM "
                     f"({lstm['params']} params): test MSE {r['mse_mean']:.3g} vs {lstm['mse_mean']:.3g} "
                     f"(ratio {ratio:.2f}){_spread(r, lstm)}.")
    small_l, small_q = get("lstm", "~QKAN-LSTM params"), get("qkan-lstm", SMALL, "fast")
    if small_l is not None and small_q is not None:
        word = "beats" if small_q["mse_mean"] < small_l["mse_mean"] else "does not beat"
        lines.append(f"- At equal size, qkan-lstm (fast, {small_q['params']} params) {word} an LSTM of "
                     f"{small_l['params']} params: {small_q['mse_mean']:.3g} vs {small_l['mse_mean']:.3g}"
                     f"{_spread(small_q, small_l)}.")
    for name in BASELINES:
        r = get(name, "baseline")
        if r is not None:
            beaten = part[(part["params"] > 0) & (part["mse_mean"] < r["mse_mean"])]
            lines.append(f"- {len(beaten)} of {int((part['params'] > 0).sum())} trained models beat {name} "
                         f"({r['mse_mean']:.3g}).")
    return lines
