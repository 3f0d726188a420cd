"""What the reproduction runs: the datasets (where each comes from, how it is cut) and the models of each.

The QKAN models are sized from the LSTM's parameter count: at most ``PARAM_RATIO`` of it (the paper's
claim), and one QKAN-LSTM of about the LSTM's count; an LSTM of about the small QKAN-LSTM's count and the
library's baselines complete the rows. ``build`` is the one place a network is constructed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from torch import nn

from qkanforecast.baselines import BASELINES
from qkanforecast.config import PLAIN, ModelConfig, QKANSpec, Readout
from qkanforecast.data import Table, from_frame, read_table
from qkanforecast.datasets import SYNTHETIC, milan_cdr_hourly, milan_internet, synthetic
from qkanforecast.models import build_model, count_parameters

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SAMPLE = ROOT / "sample_data"
PARAM_RATIO = 0.21  # the paper: QKAN-LSTM has 79% fewer trainable parameters than the LSTM
SMALL = f"<={PARAM_RATIO:.0%} of LSTM"  # the variant of the QKAN models sized to PARAM_RATIO


# ---------------------------------------------------------------------------------------------------
# data


def _milan_internet() -> tuple[Table, str]:
    folder = SHARED / "milan_internet_10min"
    if all((folder / f"ts_full_square_{square}.csv").is_file() for square in (4556, 5161)):
        return milan_internet(folder), "../shared/data/milan_internet_10min (62 days)"
    return read_table(SAMPLE / "milan_internet.csv"), "sample_data/milan_internet.csv (14 days)"


def _milan_hourly() -> tuple[Table, str]:
    folder = SHARED / "milan_cdr_hourly"
    if (folder / "matrixTS.csv").is_file() and (folder / "ID_labels.csv").is_file():
        return milan_cdr_hourly(folder), "../shared/data/milan_cdr_hourly (211 complete cells)"
    return read_table(SAMPLE / "milan_cdr_hourly.parquet"), "sample_data/milan_cdr_hourly.parquet"


@cache
def load_source(source: str, max_series: int | None = None) -> tuple[Table, str]:
    """The table of a data source (cached per process) and where it came from."""
    if source in SYNTHETIC:
        table, origin = synthetic(source), f"qkanforecast.synthetic.{source}()"
    elif source == "milan_internet":
        table, origin = _milan_internet()
    elif source == "milan_hourly":
        table, origin = _milan_hourly()
    else:
        raise ValueError(f"unknown source {source!r}")
    if max_series is not None and table.n_series > max_series:
        keep = table.ids[:max_series]
        frame = table.frame[table.frame["unique_id"].isin(keep)].copy()
        frame["unique_id"] = frame["unique_id"].astype(str)
        table = from_frame(frame, source=source)
        origin += f", first {max_series} series"
    return table, origin


@dataclass(frozen=True)
class DataSpec:
    key: str
    title: str
    source: str
    lookback: int
    horizon: int
    val_size: float | int
    test_size: float | int
    scaler: str
    season: int | None  # seasonal-naive period in steps; None: no seasonal baseline
    lstm_hidden: int
    epochs: int
    batch_size: int
    lr: float
    patience: int
    train_cap: int | None = None  # training windows sampled per epoch (None: all)
    val_step: int = 1
    test_step: int = 1
    units: str = ""  # what the original values are
    scaled_space: str = ""  # what the metrics' scaled space is

    @property
    def synthetic(self) -> bool:
        return self.source in SYNTHETIC


SYNTHETIC_RUN = dict(lookback=4, horizon=1, val_size=0, test_size=0.2, scaler="none", season=None,
                     lstm_hidden=5, epochs=30, batch_size=2, lr=1e-3, patience=0,
                     units="[-1, 1] (already min-max scaled)",
                     scaled_space="the paper's min-max [-1, 1] of the whole series")
TELECOM = dict(scaler="minmax", lstm_hidden=16, lr=5e-3, batch_size=128, patience=5,
               scaled_space="per-cell min-max of the training part, [-1, 1]")
INTERNET = dict(source="milan_internet", horizon=1, val_size=0.1, test_size=0.2, season=144,
                units="internet activity", **TELECOM)
HOURLY = dict(source="milan_hourly", val_size=120, test_size=168, season=24, units="CDR count per hour",
              **{**TELECOM, "batch_size": 256})

DATASETS: dict[str, DataSpec] = {d.key: d for d in [
    DataSpec("damped_shm", "Damped SHM (pendulum angular velocity)", "damped_shm",
             **SYNTHETIC_RUN),  # type: ignore[arg-type]
    DataSpec("bessel_j2", "Bessel J2", "bessel_j2", **SYNTHETIC_RUN),  # type: ignore[arg-type]
    # the same with a longer budget for every model: the QKAN models converge more slowly per epoch
    DataSpec("damped_shm_e150", "Damped SHM, 150 epochs", "damped_shm",
             **{**SYNTHETIC_RUN, "epochs": 150}),  # type: ignore[arg-type]
    DataSpec("bessel_j2_e150", "Bessel J2, 150 epochs", "bessel_j2",
             **{**SYNTHETIC_RUN, "epochs": 150}),  # type: ignore[arg-type]
    DataSpec("milan_internet_w4", "Milan internet, 2 squares, 10 min, window 4 -> 1", lookback=4, epochs=30,
             **INTERNET),  # type: ignore[arg-type]
    DataSpec("milan_internet_w64", "Milan internet, 2 squares, 10 min, window 64 -> 1", lookback=64,
             epochs=20, **INTERNET),  # type: ignore[arg-type]
    DataSpec("milan_hourly_h1", "Milan hourly, 211 cells, global, lookback 24 -> 1", lookback=24, horizon=1,
             epochs=20, train_cap=32768, val_step=4, **HOURLY),  # type: ignore[arg-type]
    DataSpec("milan_hourly_h24", "Milan hourly, 211 cells, global, lookback 168 -> 24", lookback=168,
             horizon=24, epochs=16, train_cap=16384, val_step=8, **HOURLY),  # type: ignore[arg-type]
]}

QUICK = {  # --quick: one seed and a small budget everywhere
    "damped_shm": dict(epochs=10), "bessel_j2": dict(epochs=10),
    "damped_shm_e150": dict(epochs=15), "bessel_j2_e150": dict(epochs=15),
    "milan_internet_w4": dict(epochs=3, train_cap=4096),
    "milan_internet_w64": dict(epochs=3, train_cap=4096, val_step=8, test_step=4),
    "milan_hourly_h1": dict(epochs=3, train_cap=8192, val_step=16, test_step=4),
    "milan_hourly_h24": dict(epochs=3, train_cap=4096, val_step=40, test_step=24),
}


# ---------------------------------------------------------------------------------------------------
# models


def build(config: ModelConfig) -> nn.Module:
    """The one place the reproduction constructs a network from its ``ModelConfig``."""
    return build_model(config)


def n_params(config: ModelConfig) -> int:
    return count_parameters(build(config))


@dataclass(frozen=True)
class ModelSpec:
    family: str  # a model family, or a baseline (qkanforecast.baselines.BASELINES)
    variant: str  # paper size | SMALL | ~LSTM params | ~QKAN-LSTM params | baseline
    config: ModelConfig | None = None  # None: a baseline

    @property
    def qkan(self) -> QKANSpec | None:
        """The edge spec of a QKAN family, else None."""
        return self.config.qkan if self.config is not None and self.config.family.qkan else None

    @property
    def label(self) -> str:
        return f"{self.family} ({self.qkan.readout.value})" if self.qkan else self.family

    def columns(self) -> dict[str, Any]:
        """``hidden_size, reps, readout, base_weight, gate_bias`` (None where they do not apply)."""
        q, c = self.qkan, self.config
        return dict(hidden_size=None if c is None else c.hidden_size, reps=q.reps if q else None,
                    readout=q.readout.value if q else None, base_weight=q.base_weight if q else None,
                    gate_bias=c.bias if q and c else None)


def _config(family: str, horizon: int, hidden_size: int, reps: int = 3, base_weight: bool = True,
            bias: bool = True, readout: Readout = Readout.FAST) -> ModelConfig:
    return ModelConfig(model=family, horizon=horizon, hidden_size=hidden_size, bias=bias, **PLAIN,
                       qkan=QKANSpec(reps=reps, readout=readout, base_weight=base_weight))


def _largest(family: str, budget: int, horizon: int, ladder: list[dict[str, Any]]) -> ModelConfig:
    """The first rung of ``ladder`` that fits ``budget`` at some hidden size, at its largest such size."""
    for rung in ladder:
        best = None
        for hidden in range(1, 65):
            config = _config(family, horizon, hidden, **rung)
            if n_params(config) > budget:
                break
            best = config
        if best is not None:
            return best
    raise ValueError(f"no {family} fits in {budget} parameters")


# Preference when sizing a QKAN model down: the product defaults first (reps 3, residual base weight,
# gate bias), then fewer of them. QKAN-LSTM at hidden 1 and reps 1 without residual or bias is the
# paper's 34-parameter configuration.
QKAN_LADDER = [dict(reps=r, base_weight=bw, bias=b) for r in (3, 2, 1) for bw in (True, False)
               for b in (True, False)]
HQKAN_LADDER = [dict(reps=r, base_weight=bw) for r in (3, 2, 1) for bw in (True, False)]


def _with_readout(config: ModelConfig, readout: Readout) -> ModelConfig:
    return replace(config, qkan=replace(config.qkan, readout=readout))


@cache
def model_specs(lstm_hidden: int, horizon: int) -> tuple[ModelSpec, ...]:
    """The models of one dataset, QKAN sizes derived from the LSTM's parameter count."""
    lstm = _config("lstm", horizon, lstm_hidden)
    p_lstm = n_params(lstm)
    budget = math.floor(PARAM_RATIO * p_lstm)
    small_q = _largest("qkan-lstm", budget, horizon, QKAN_LADDER)
    small_h = _largest("hqkan-lstm", budget, horizon, HQKAN_LADDER)
    p_small_q = n_params(small_q)
    # a QKAN-LSTM with about the LSTM's count (residual kept, gate bias on or off): within 10% of it,
    # reps as close to the default 3 as possible, then the closest count
    cands = [_config("qkan-lstm", horizon, h, reps=r, bias=b)
             for h in range(1, 33) for r in (1, 2, 3, 4) for b in (True, False)]

    def rank(config: ModelConfig) -> tuple[bool, int, int]:
        gap = abs(n_params(config) - p_lstm)
        return gap > 0.1 * p_lstm, abs(config.qkan.reps - 3), gap

    equal_q = min(cands, key=rank)
    equal_l = min(range(1, 65), key=lambda h: abs(n_params(_config("lstm", horizon, h)) - p_small_q))
    specs = [ModelSpec("lstm", "paper size", lstm)]
    for readout in Readout:
        specs.append(ModelSpec("qkan-lstm", SMALL, _with_readout(small_q, readout)))
    for readout in Readout:
        specs.append(ModelSpec("hqkan-lstm", SMALL, _with_readout(small_h, readout)))
    specs.append(ModelSpec("qkan-lstm", "~LSTM params", equal_q))
    specs.append(ModelSpec("lstm", "~QKAN-LSTM params", _config("lstm", horizon, equal_l)))
    return tuple(specs)


def all_specs(data: DataSpec) -> list[ModelSpec]:
    """The baselines (seasonal naive where the data has a season), then the trained models."""
    naive, seasonal = BASELINES
    specs = [ModelSpec(naive, "baseline")]
    if data.season:
        specs.append(ModelSpec(seasonal, "baseline"))
    return specs + list(model_specs(data.lstm_hidden, data.horizon))
