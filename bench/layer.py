"""Speed of the QKAN solvers and of one training step of each recurrent model, from one run.

    python -m bench.layer [--repeats 20] [--threads 1,2] [--output bench/layer_results.md] [--json]
    python -m bench.layer --only equal      # the equal-parameter table and the forecast rows alone

Prints markdown tables: time per call (median of the repeats) and the ratio against a baseline measured
in the same run at the same thread count, one pair of columns per thread count. ``--json`` prints one
JSON object per row instead (table, case, threads, ms, baseline, ratio, parameters).

- Layer: 9 -> 32, reps 3, batch 1024, float32, forward + backward, against `qkan`'s exact solver when
  that library is installed.
- Training step (forward, MSE, backward, Adam), lookback 64, batch 256, 1 feature, Linear head:
  at hidden 8 against nn.LSTM at the same hidden size; and at equal parameters, each model against the
  nn.LSTM whose hidden size gives the nearest parameter count (head included), the QKAN-LSTM on the numba
  kernels (``QKANFORECAST_KERNEL=numba``) and on the torch path.
- Forecast: no_grad forward of the recurrent core over 100,000 windows of length 288, in chunks of 1,024
  windows (as ``forecast``), one repeat.

On a shared machine, compare runs only at a low load (``uptime``): OpenMP threads that spin-wait for a
busy core make 2-thread timings erratic.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from qkanforecast.config import QKANSpec
from qkanforecast.models import HQKANLSTM, LSTM, QKANLSTM, QKANLayer, count_parameters

Row = tuple[str, float, str]


def _time(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _layer_rows(repeats: int) -> list[tuple[str, float, str]]:
    torch.manual_seed(0)
    x = torch.randn(1024, 9)
    rows: list[tuple[str, float, str]] = []
    try:
        import qkan  # optional: the reference library
    except ImportError:
        qkan = None
    for readout in ("born", "fast"):
        timings: dict[str, float] = {}
        for solver in ("spectral", "statevector"):
            layer = QKANLayer(9, 32, QKANSpec(reps=3, readout=readout, solver=solver))  # type: ignore[arg-type]
            timings[solver] = _time(lambda layer=layer: layer(x).sum().backward(), repeats)
        if qkan is not None:
            ref = qkan.QKANLayer(9, 32, reps=3, solver="exact", fast_measure=readout == "fast")
            timings["qkan exact"] = _time(lambda ref=ref: ref(x).sum().backward(), repeats)
        base = "qkan exact" if "qkan exact" in timings else "statevector"
        for name, ms in timings.items():
            ratio = timings[base] / ms
            rows.append((f"QKAN layer 9→32, r=3, B=1024, {readout}: {name}", ms, f"{ratio:.1f}× vs {base}"))
    return rows


def _train_rows(repeats: int) -> list[tuple[str, float, str]]:
    torch.manual_seed(0)
    x, y = torch.randn(256, 64, 1), torch.randn(256, 1)
    models: list[tuple[str, nn.Module]] = [
        ("LSTM (nn.LSTM)", LSTM(1, 8)),
        ("QKAN-LSTM, fast", QKANLSTM(1, 8, spec=QKANSpec(readout="fast"))),
        ("QKAN-LSTM, born", QKANLSTM(1, 8, spec=QKANSpec(readout="born"))),
        ("HQKAN-LSTM, fast", HQKANLSTM(1, 8, spec=QKANSpec(readout="fast"))),
        ("HQKAN-LSTM, born", HQKANLSTM(1, 8, spec=QKANSpec(readout="born"))),
    ]
    timings = {}
    for name, core in models:
        head = nn.Linear(8, 1)
        opt = torch.optim.Adam([*core.parameters(), *head.parameters()], lr=1e-3)

        def step(core: nn.Module = core, head: nn.Module = head, opt: torch.optim.Optimizer = opt) -> None:
            opt.zero_grad()
            out, _ = core(x)
            nn.functional.mse_loss(head(out[:, -1]), y).backward()
            opt.step()

        timings[name] = _time(step, repeats)
    base = timings["LSTM (nn.LSTM)"]
    return [
        (f"train step L=64, B=256, D=8: {n}", ms, f"{ms / base:.1f}× the LSTM time")
        for n, ms in timings.items()
    ]


def _with_head(core: nn.Module, hidden: int) -> int:
    return count_parameters(core) + hidden + 1  # Linear(hidden -> 1)


def _matched_lstm(params: int) -> int:
    """The nn.LSTM hidden size (1 feature, Linear head) whose parameter count is nearest ``params``."""
    return min(range(1, 256), key=lambda h: abs(_with_head(LSTM(1, h), h) - params))


def _step_fn(core: nn.Module, hidden: int, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    head = nn.Linear(hidden, 1)
    opt = torch.optim.Adam([*core.parameters(), *head.parameters()], lr=1e-3)

    def step() -> None:
        opt.zero_grad()
        out, _ = core(x)
        nn.functional.mse_loss(head(out[:, -1]), y).backward()
        opt.step()

    return step


# (name, recurrent core, hidden size, read-out, $QKANFORECAST_KERNEL)
EQUAL_MODELS = [
    ("qkan-lstm hidden 8, born", QKANLSTM, 8, "born", "numba"),
    ("qkan-lstm hidden 8, fast", QKANLSTM, 8, "fast", "numba"),
    ("qkan-lstm hidden 8, born, torch path", QKANLSTM, 8, "born", "torch"),
    ("qkan-lstm hidden 8, fast, torch path", QKANLSTM, 8, "fast", "torch"),
    ("hqkan-lstm hidden 16, born", HQKANLSTM, 16, "born", "auto"),
    ("hqkan-lstm hidden 16, fast", HQKANLSTM, 16, "fast", "auto"),
]


def _equal_rows(repeats: int) -> list[tuple[str, float, str, int]]:
    """Training step L=64, B=256 of each model against the equal-parameter nn.LSTM, variants interleaved
    (each model timed in turn, ``repeats`` rounds; the median of each), so load changes hit all alike."""
    torch.manual_seed(0)
    x, y = torch.randn(256, 64, 1), torch.randn(256, 1)
    cases: dict[str, tuple[Callable[[], None], str, int]] = {}
    baselines: dict[str, str] = {}
    for name, cls, hidden, readout, backend in EQUAL_MODELS:
        core = cls(1, hidden, spec=QKANSpec(readout=readout))  # type: ignore[arg-type]
        params = _with_head(core, hidden)
        cases[name] = (_step_fn(core, hidden, x, y), backend, params)
        h = _matched_lstm(params)
        base = f"nn.LSTM hidden {h}"
        baselines[name] = base
        if base not in cases:
            cases[base] = (_step_fn(LSTM(1, h), h, x, y), "auto", _with_head(LSTM(1, h), h))
    times: dict[str, list[float]] = {name: [] for name in cases}
    for rnd in range(repeats + 3):
        for name, (fn, backend, _) in cases.items():
            os.environ["QKANFORECAST_KERNEL"] = backend
            t0 = time.perf_counter()
            fn()
            if rnd >= 3:  # warm-up rounds
                times[name].append(time.perf_counter() - t0)
    os.environ.pop("QKANFORECAST_KERNEL", None)
    ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    rows = []
    for name, (_, _, params) in cases.items():
        base = baselines.get(name, name)
        ratio = f"{ms[name] / ms[base]:.2f}× {base}" if base != name else "baseline"
        rows.append((f"train step L=64, B=256: {name} ({params:,} parameters)", ms[name], ratio, params))
    return rows


def _forecast_rows(windows: int = 100_000, length: int = 288, chunk: int = 1024) -> list[Row]:
    """no_grad forward of the recurrent core over ``windows`` windows of ``length`` steps, in chunks."""
    torch.manual_seed(0)
    x = torch.randn(chunk, length, 1)
    models = [
        ("qkan-lstm hidden 8, born", QKANLSTM(1, 8, spec=QKANSpec(readout="born"))),
        ("qkan-lstm hidden 8, fast", QKANLSTM(1, 8, spec=QKANSpec(readout="fast"))),
        (f"nn.LSTM hidden {_matched_lstm(2633)}", LSTM(1, _matched_lstm(2633))),
    ]
    ms = {}
    for name, core in models:
        with torch.no_grad():
            core(x[:8])  # warm-up (and the kernels' compile or cache load)
            t0 = time.perf_counter()
            for start in range(0, windows, chunk):
                core(x[: min(chunk, windows - start)])
            ms[name] = time.perf_counter() - t0  # seconds
    base = models[-1][0]
    return [
        (f"forecast {windows:,} windows × {length} steps (no_grad): {n}", t, f"{t / ms[base]:.2f}× {base}")
        for n, t in ms.items()
    ]


def _table(title: str, threads: list[int], runs: list[list[Row]], unit: str) -> list[str]:
    head = " | ".join(f"{unit}, {n} thread{'s' * (n > 1)} | ratio" for n in threads)
    lines = [f"| {title} | {head} |", "|---|" + "---:|---|" * len(threads)]
    for i, row in enumerate(runs[0]):
        cells = " | ".join(f"{run[i][1]:.2f} | {run[i][2]}" for run in runs)
        lines.append(f"| {row[0]} | {cells} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    parser.add_argument("--output", type=Path, default=None, help="also write the table to this file")
    parser.add_argument("--only", choices=["all", "equal"], default="all", help="equal: the equal-parameter "
                        "and forecast tables alone")  # fmt: skip
    parser.add_argument("--no-forecast", action="store_true", help="leave out the forecast rows (~1 min)")
    parser.add_argument("--json", action="store_true", help="one JSON object per row instead of tables")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    load = os.getloadavg()[0]
    tables: dict[str, list[list[Row]]] = {}
    params: dict[str, int] = {}
    for n in threads:
        torch.set_num_threads(n)
        if args.only == "all":
            tables.setdefault("case", []).append(_layer_rows(args.repeats) + _train_rows(args.repeats))
        equal = _equal_rows(args.repeats)
        params.update({name: p for name, _, _, p in equal})
        tables.setdefault("equal parameters", []).append([r[:3] for r in equal])
        if not args.no_forecast:
            tables.setdefault("forecast", []).append(_forecast_rows())
    if args.json:
        for table, runs in tables.items():
            for n, run in zip(threads, runs, strict=True):
                for name, ms, ratio in run:
                    row = {"table": table, "case": name, "threads": n, "ms": round(ms, 3), "ratio": ratio,
                           "parameters": params.get(name), "load": round(load, 2)}  # fmt: skip
                    print(json.dumps(row))
        return
    lines = [
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {load:.2f} at the start; "
        f"median of {args.repeats} runs (forecast: one run)",
    ]
    for table, runs in tables.items():
        lines += ["", *_table(table, threads, runs, "s" if table == "forecast" else "ms")]
    text = "\n".join(lines)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
