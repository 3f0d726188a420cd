"""Speed of the QKAN solvers and of one training step of each recurrent model, from one run.

    python -m bench.layer [--repeats 20] [--threads 1,2] [--output bench/layer_results.md]

Prints a markdown table: forward+backward time per batch (median of the repeats) and the ratio against a
baseline measured in the same run at the same thread count, one pair of columns per thread count.
Layer: 9 -> 32, reps 3, batch 1024, float32, against `qkan`'s exact solver when that library is
installed. Training step (forward, MSE, backward, Adam): lookback 64, batch 256, hidden 8, 1 feature,
Linear head, against nn.LSTM at the same hidden size. On a shared machine, compare runs only at a low
load (``uptime``): OpenMP threads that spin-wait for a busy core make 2-thread timings erratic.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from qkanforecast.config import QKANSpec
from qkanforecast.models import HQKANLSTM, LSTM, QKANLSTM, QKANLayer


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    parser.add_argument("--output", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    load = os.getloadavg()[0]
    runs = []
    for n in threads:
        torch.set_num_threads(n)
        runs.append(_layer_rows(args.repeats) + _train_rows(args.repeats))
    head = " | ".join(f"ms, {n} thread{'s' * (n > 1)} | ratio" for n in threads)
    lines = [
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {load:.2f} at the start; "
        f"median of {args.repeats} runs, forward + backward",
        "",
        f"| case | {head} |",
        "|---|" + "---:|---|" * len(threads),
    ]
    for i, (name, _, _) in enumerate(runs[0]):
        cells = " | ".join(f"{run[i][1]:.2f} | {run[i][2]}" for run in runs)
        lines.append(f"| {name} | {cells} |")
    text = "\n".join(lines)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
