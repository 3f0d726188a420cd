"""The paper's synthetic series against independent references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from qkanforecast.synthetic import bessel_j2, damped_shm, write_synthetic

ROOT = Path(__file__).resolve().parents[1]


def rk4_pendulum(t_end: float = 20.0, n: int = 240, substeps: int = 100) -> np.ndarray:
    """Classic fixed-step RK4, an independent solver: angular velocity at linspace(0, t_end, n)."""

    def f(s: np.ndarray) -> np.ndarray:
        return np.array([s[1], -0.15 * s[1] - 9.81 * np.sin(s[0])])

    h = t_end / (n - 1) / substeps
    state, out = np.array([0.0, 3.0]), [3.0]
    for _ in range(n - 1):
        for _ in range(substeps):
            k1 = f(state)
            k2 = f(state + h / 2 * k1)
            k3 = f(state + h / 2 * k2)
            k4 = f(state + h * k3)
            state = state + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(state[1])
    return np.array(out)


def test_damped_shm_matches_rk4() -> None:
    raw = damped_shm(scale=False)
    assert raw.shape == (240,) and raw[0] == 3.0
    np.testing.assert_allclose(raw, rk4_pendulum(), atol=1e-8)
    scaled = damped_shm()
    assert scaled.min() == -1.0 and scaled.max() == 1.0


def test_bessel_j2_known_values_and_integral() -> None:
    np.testing.assert_allclose(bessel_j2(n=2, x0=2.0, x1=10.0, scale=False),
                               [0.35283402861563773, 0.25463031368512062], rtol=1e-13)
    x = np.linspace(2, 100, 256)
    tau = np.linspace(0, np.pi, 4001)
    # Bessel's integral J2(x) = 1/pi * int_0^pi cos(2 tau - x sin tau) dtau (trapezoid rule)
    integrand = np.cos(2 * tau[None, :] - x[:, None] * np.sin(tau[None, :]))
    reference = np.trapezoid(integrand, tau, axis=1) / np.pi
    np.testing.assert_allclose(bessel_j2(scale=False), reference, atol=1e-10)
    scaled = bessel_j2()
    assert scaled.shape == (256,) and scaled.min() == -1.0 and scaled.max() == 1.0


def test_sample_files_are_reproducible(tmp_path: Path) -> None:
    # the same series up to the last digits (scipy's ODE solver and J2 round differently across versions)
    for path in write_synthetic(tmp_path):
        frame = pd.read_csv(path)
        committed = pd.read_csv(ROOT / "sample_data" / path.name)
        assert list(frame.columns) == ["unique_id", "ds", "y"]
        pd.testing.assert_frame_equal(frame[["unique_id", "ds"]], committed[["unique_id", "ds"]])
        np.testing.assert_allclose(frame["y"], committed["y"], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(pd.read_csv(tmp_path / "damped_shm.csv")["y"].to_numpy(), damped_shm())
