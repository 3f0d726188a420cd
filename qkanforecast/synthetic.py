"""The QKAN-LSTM paper's two synthetic series (qkan-math.md section 6).

- ``damped_shm``: the damped pendulum theta'' = -(b/m) theta' - (g/l) sin(theta), b = 0.15, g = 9.81,
  l = m = 1, theta(0) = 0, theta'(0) = 3, sampled at t = linspace(0, 20, 240); the series is the angular
  velocity theta'. Integrated with scipy's DOP853 (8th-order Runge-Kutta) at rtol 1e-10, atol 1e-12.
- ``bessel_j2``: J2(x) at x = linspace(2, 100, 256) from ``scipy.special.jv``.

Both are min-max scaled to [-1, 1] over the whole series by default, as in the paper.
``python -m qkanforecast.synthetic OUTDIR`` writes ``damped_shm.csv`` and ``bessel_j2.csv`` there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.integrate import solve_ivp
from scipy.special import jv

SYNTHETIC_START = "2000-01-01"
SYNTHETIC_FREQ = "h"


def minmax_scale(values: np.ndarray, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    """Affinely map ``values`` onto ``[lo, hi]``: ``[T] -> [T]``."""
    v = np.asarray(values, dtype=np.float64)
    return lo + (v - v.min()) * (hi - lo) / (v.max() - v.min())


def damped_shm(n: int = 240, t_end: float = 20.0, b: float = 0.15, g: float = 9.81, length: float = 1.0,
               m: float = 1.0, theta0: float = 0.0, omega0: float = 3.0, scale: bool = True) -> np.ndarray:
    """Angular velocity of the damped pendulum at ``t = linspace(0, t_end, n)``: float64 ``[n]``."""
    t = np.linspace(0.0, t_end, n)

    def rhs(_t: float, state: np.ndarray) -> list[float]:
        theta, omega = state
        return [omega, -(b / m) * omega - (g / length) * np.sin(theta)]

    sol = solve_ivp(rhs, (0.0, t_end), [theta0, omega0], method="DOP853", t_eval=t, rtol=1e-10, atol=1e-12)
    if not sol.success:  # pragma: no cover - DOP853 does not fail on this smooth problem
        raise RuntimeError(f"pendulum integration failed: {sol.message}")
    omega = sol.y[1]
    return minmax_scale(omega) if scale else omega


def bessel_j2(n: int = 256, x0: float = 2.0, x1: float = 100.0, scale: bool = True) -> np.ndarray:
    """J2(x) at ``x = linspace(x0, x1, n)``: float64 ``[n]``."""
    values = jv(2, np.linspace(x0, x1, n))
    return minmax_scale(values) if scale else values


def as_frame(values: np.ndarray, unique_id: str, start: str = SYNTHETIC_START,
             freq: str = SYNTHETIC_FREQ) -> pd.DataFrame:
    """A long ``unique_id, ds, y`` frame; ``ds`` is a stand-in hourly clock (row k is sample k)."""
    return pd.DataFrame({"unique_id": unique_id, "ds": pd.date_range(start, periods=len(values), freq=freq),
                         "y": np.asarray(values, dtype=np.float64)})


def write_synthetic(outdir: str | Path) -> list[Path]:
    """Write ``damped_shm.csv`` and ``bessel_j2.csv`` (values written with full float64 precision)."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, values in (("damped_shm", damped_shm()), ("bessel_j2", bessel_j2())):
        path = out / f"{name}.csv"
        frame = as_frame(values, name)
        frame.to_csv(path, index=False, float_format="%.17g", date_format="%Y-%m-%d %H:%M:%S")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", nargs="?", default="sample_data")
    for path in write_synthetic(parser.parse_args(argv).outdir):
        print(path)


if __name__ == "__main__":
    main()
