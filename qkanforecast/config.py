"""Every choice, default and configuration of qkanforecast, defined once (no torch import here).

Choices are ``str`` Enums; configurations are frozen dataclasses whose ``asdict()`` is what a checkpoint
stores and whose ``from_dict`` validates it back. The CLI imports these: option names are field names
(``hidden_size`` -> ``--hidden-size``), defaults are the fields' defaults, and a ``ConfigError`` names the
field so the CLI can name its flag.

- ``ModelConfig``: the network (family, sizes, the QKAN edge spec ``QKANSpec``).
- ``DataConfig``: how windows are cut from a table (lookback, horizon, splits, scaler).
- ``TrainConfig``: the optimiser and its budget.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from qkanforecast.errors import QKANForecastError
from qkanforecast.typed import from_dict as from_dict
from qkanforecast.typed import to_dict as to_dict


class ConfigError(QKANForecastError):
    """A configuration value out of range; ``field`` names it (the CLI turns it into its flag)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field} {message}")
        self.field = field
        self.detail = message


# -- data choices --------------------------------------------------------------------------------------------
class Fill(str, Enum):
    """What ingest does with gaps and NaN: stop with an error, or fill them."""

    NONE = "none"
    FFILL = "ffill"
    LINEAR = "linear"
    ZERO = "zero"


class OutFormat(str, Enum):
    """File formats of the tables the tool writes."""

    PARQUET = "parquet"
    CSV = "csv"
    JSONL = "jsonl"


INTERVAL_LEVELS = (50, 80, 90, 95, 99)  # conformal levels calibrated at training time
MAX_STEPS = 100_000  # steps one forecast makes at most (recursively beyond the horizon)
# The paper's forecaster (and qkanforecast 0.1's): the raw window in, one Linear from the last hidden state
# out. ModelConfig(..., **PLAIN) builds it; the reproduction of the paper and format-1 checkpoints use it.
PLAIN: dict[str, Any] = dict(norm="none", skip="none", lags=False, calendar=False, decoder="linear")


@dataclass(frozen=True)
class Columns:
    """Column names of a long input table."""

    id_col: str = "unique_id"
    time_col: str = "ds"
    target_col: str = "y"

    def given(self, id_col: str | None, time_col: str | None, target_col: str | None) -> Columns:
        """These names where given (not None), this object's elsewhere."""
        names = {"id_col": id_col, "time_col": time_col, "target_col": target_col}
        return dataclasses.replace(self, **{k: v for k, v in names.items() if v is not None})


# -- model families ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FamilyInfo:
    """A model family: its recurrent core and its defaults.

    ``core`` is ``"module:attr"``: ``Forecaster`` imports ``module`` with importlib and calls ``attr`` with
    the resolved ``ModelConfig`` (``hidden_size`` filled in), ``core = attr(config)``. The core is an
    ``nn.Module`` whose ``core(x)``, x [N, L, input_size] (batch first), returns a tuple whose first item
    is the output [N, L, hidden_size] (nn.LSTM's and nn.GRU's convention); the forecaster's head reads its
    last step. ``hidden_size`` is the family's default width; ``qkan`` says whether the core reads
    ``ModelConfig.qkan`` (a format-1 manifest's QKAN options are ignored for a family that does not).
    """

    core: str
    hidden_size: int
    qkan: bool
    description: str


# Adding a family: one module with its core, one entry here. The CLI, the conformance tests and the
# reproduction read this table.
FAMILIES: dict[str, FamilyInfo] = {
    "qkan-lstm": FamilyInfo(
        "qkanforecast.models.lstm:qkan_lstm_core",
        8,
        True,
        "LSTM whose gates are one QKAN layer (arXiv 2512.05049)",
    ),
    "hqkan-lstm": FamilyInfo(
        "qkanforecast.models.lstm:hqkan_lstm_core", 16, True, "encoder -> latent QKAN -> decoder gate maps"
    ),
    "lstm": FamilyInfo("qkanforecast.models.lstm:lstm_core", 32, False, "torch.nn.LSTM baseline"),
}

# The CLI's choice type, made from the table above.
Family = Enum("Family", {name.replace("-", "_").upper(): name for name in FAMILIES}, type=str)  # type: ignore[misc]


def family_info(name: str) -> FamilyInfo:
    try:
        return FAMILIES[str(name)]
    except KeyError:
        raise ConfigError("model", f"{name!r} is unknown; choose from {', '.join(FAMILIES)}") from None


# -- configurations ---------------------------------------------------------------------------------------
def _at_least(obj: Any, minimum: float, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and value < minimum:
            raise ConfigError(name, f"must be at least {minimum:g}, got {value}")


def _coerce(obj: Any, name: str, enum: type[Enum]) -> None:
    """Store a choice field as its Enum member (a plain string from JSON or a caller is accepted)."""
    value = getattr(obj, name)
    try:
        object.__setattr__(obj, name, enum(value))
    except ValueError:
        raise ConfigError(
            name, f"{value!r} is unknown; choose from {', '.join(str(m.value) for m in enum)}"  # type: ignore[attr-defined]
        ) from None


class Readout(str, Enum):
    """How a DARUAN edge turns its final state into a number (qkan-math.md §1)."""

    FAST = "fast"
    BORN = "born"


class Solver(str, Enum):
    """How the circuits are simulated: closed form (spectral), gate by gate, or the best that applies."""

    AUTO = "auto"
    SPECTRAL = "spectral"
    STATEVECTOR = "statevector"


@dataclass(frozen=True)
class QKANSpec:
    """One DARUAN edge: ``reps`` data re-uploadings, its read-out, solver and which parts train."""

    reps: int = 3
    readout: Readout = Readout.BORN  # as accurate as fast here, and half the cost per step
    solver: Solver = Solver.AUTO
    preact_trainable: bool = False
    postact_trainable: bool = False
    base_weight: bool = True

    def __post_init__(self) -> None:
        _at_least(self, 1, "reps")
        _coerce(self, "readout", Readout)
        _coerce(self, "solver", Solver)


class Norm(str, Enum):
    """How each input window is normalised before the network sees it (the output is mapped back)."""

    NONE = "none"
    WINDOW = "window"  # by the mean and standard deviation of the window's recurrent part (RevIN-style)


class Skip(str, Enum):
    """What the network's output is added to: nothing, the seasonal naive or the naive forecast of the
    window. ``auto``: the naive one for short horizons (at most a quarter season), else nothing (measured:
    a seasonal skip a day ahead cost 0.04-0.09 MASE on the Milan squares and was neutral on the cells)."""

    NONE = "none"
    SEASON = "season"
    LAST = "last"
    AUTO = "auto"


class Decoder(str, Enum):
    """From the last hidden state to the horizon: one Linear to every step, or a per-step MLP that also
    sees the step's calendar and lag values."""

    LINEAR = "linear"
    MLP = "mlp"


@dataclass(frozen=True)
class ModelConfig:
    """The network: ``[N, L, input_size] -> [N, horizon]``. ``hidden_size`` None is the family's."""

    model: str = "qkan-lstm"
    input_size: int = 1
    horizon: int = 1
    hidden_size: int | None = None
    num_layers: int = 1
    dropout: float = 0.0
    bias: bool = True
    qkan: QKANSpec = field(default_factory=QKANSpec)
    latent_in: int | None = None  # hqkan-lstm: encoder width (None: ceil(log2(F + D)))
    latent_out: int | None = None  # hqkan-lstm: latent QKAN width (None: ceil(log2(4D)))
    season: int = 1  # steps per day (a week for daily data), from the data's frequency
    norm: Norm = Norm.WINDOW
    skip: Skip = Skip.AUTO
    lags: bool | None = None  # the decoder sees the values a day and a week before each step (None: auto)
    calendar: bool = True  # time of day and day of week at every input and forecast step
    decoder: Decoder = Decoder.MLP
    decoder_size: int = 32
    recurrent_steps: int | None = None  # the recurrence reads the window's last steps (None: all of it)
    future_size: int = 0  # covariates of every forecast step besides the calendar (future, static, holiday)
    lag_days: int = 7  # days of the window the lag values read (the week lag needs 7)
    ensemble: list[int] | None = None  # lag_days of each member, trained apart, averaged (None: auto)

    def __post_init__(self) -> None:
        family_info(self.model)
        _at_least(self, 1, "input_size", "horizon", "hidden_size", "num_layers", "latent_in", "latent_out",
                  "season", "decoder_size", "recurrent_steps")
        _at_least(self, 0, "future_size")
        _at_least(self, 1, "lag_days")
        if self.ensemble is not None:
            object.__setattr__(self, "ensemble", [int(d) for d in self.ensemble])
            if any(d < 1 for d in self.ensemble):
                raise ConfigError("ensemble", f"members read at least 1 day of lags, got {self.ensemble}")
        if not 0 <= self.dropout < 1:
            raise ConfigError("dropout", f"must be in [0, 1), got {self.dropout}")
        if isinstance(self.qkan, dict):
            object.__setattr__(self, "qkan", from_dict(QKANSpec, self.qkan))
        for name, enum in (("norm", Norm), ("skip", Skip), ("decoder", Decoder)):
            _coerce(self, name, enum)

    @property
    def short_horizon(self) -> bool:
        """At most a quarter season ahead (an hour ahead on 10-minute data): there the last value is the
        best base and the lag values of a day and a week before only add noise."""
        return 4 * self.horizon <= self.season

    @property
    def skip_base(self) -> Skip:
        """The skip in force: ``auto`` is the naive skip for a short horizon, else none."""
        if self.skip is not Skip.AUTO:
            return self.skip
        return Skip.LAST if self.short_horizon else Skip.NONE

    @property
    def uses_lags(self) -> bool:
        """Whether the decoder reads lag values: ``lags`` None is auto, on unless the horizon is short."""
        wanted = not self.short_horizon if self.lags is None else self.lags
        return wanted and self.decoder is Decoder.MLP

    @property
    def members(self) -> list[int]:
        """The ensemble in force: ``None`` (auto) is two members reading 7 and 2 days of lags when the
        decoder reads lags (measured: their average beats either alone day-ahead), else one model."""
        if self.ensemble is not None:
            return self.ensemble
        return list(AUTO_ENSEMBLE) if self.uses_lags else []

    @property
    def family(self) -> FamilyInfo:
        return family_info(self.model)

    def resolved(self) -> ModelConfig:
        """The same config with the family's hidden size filled in."""
        if self.hidden_size is not None:
            return self
        return dataclasses.replace(self, hidden_size=self.family.hidden_size)


AUTO_ENSEMBLE = (7, 2)  # days of lag context of the default ensemble's members


class Scaler(str, Enum):
    """Per-series scaling fitted on the training part of each series."""

    STANDARD = "standard"
    ROBUST = "robust"
    MINMAX = "minmax"
    NONE = "none"


@dataclass(frozen=True)
class DataConfig:
    """How training windows are cut: ``lookback`` inputs, ``horizon`` targets, chronological splits."""

    lookback: int | None = None  # None: a week of steps, shorter where the series are (see auto_lookback)
    horizon: int = 1
    val_size: float = 0.1  # < 1: a fraction of each series; >= 1: a number of steps
    test_size: float = 0.0  # held out from training and validation altogether (for an honest evaluate)
    scaler: Scaler = Scaler.STANDARD
    hist_exog: list[str] = field(default_factory=list)  # covariate columns known up to the forecast origin
    futr_exog: list[str] = field(default_factory=list)  # covariate columns known ahead (forecast --futr)
    static: list[str] = field(default_factory=list)  # per-series covariate columns (constant in a series)
    holidays: list[str] = field(default_factory=list)  # ISO dates: a holiday flag at every step

    def __post_init__(self) -> None:
        _at_least(self, 1, "lookback", "horizon")
        named: list[str] = []
        for name in ("hist_exog", "futr_exog", "static"):
            columns = [str(c) for c in getattr(self, name)]
            for c in columns:
                if not c or c in named:
                    raise ConfigError(name, f"names column {c!r} twice" if c else "names an empty column")
                named.append(c)
            object.__setattr__(self, name, columns)
        object.__setattr__(self, "holidays", sorted({str(d) for d in self.holidays}))
        for name in ("val_size", "test_size"):
            size = getattr(self, name)
            if size < 0 or (size >= 1 and size != int(size)) or not math.isfinite(size):
                raise ConfigError(
                    name, f"must be a fraction in [0, 1) or a whole number of steps, got {size}"
                )
        _coerce(self, "scaler", Scaler)

    @property
    def covariates(self) -> list[str]:
        """Every covariate column the windows read: historical, future, static."""
        return [*self.hist_exog, *self.futr_exog, *self.static]

    def part_size(self, name: str) -> int | float:
        """``val_size`` or ``test_size`` as the data layer takes it: steps (int) or a fraction (float)."""
        size = getattr(self, name)
        return int(size) if size >= 1 else float(size)


class Loss(str, Enum):
    """The training loss on the scaled targets; early stopping uses the same loss."""

    MSE = "mse"
    MAE = "mae"
    HUBER = "huber"


@dataclass(frozen=True)
class TrainConfig:
    """Adam on the scaled targets, early stopping on the validation part."""

    epochs: int = 20
    batch_size: int = 128
    lr: float = 5e-3
    patience: int = 5  # epochs without validation gain before stopping (0: never)
    seed: int = 0
    max_windows: int = 2048  # per epoch, a fresh random sample of this many training windows (0: all)
    loss: Loss = Loss.MAE

    def __post_init__(self) -> None:
        _at_least(self, 1, "epochs", "batch_size")
        _at_least(self, 0, "max_windows")
        _coerce(self, "loss", Loss)
        _at_least(self, 0, "patience")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError("lr", f"must be positive, got {self.lr}")


@dataclass(frozen=True)
class BacktestConfig:
    """A rolling-origin backtest: the last ``windows`` origins of every series, ``step`` apart (None: the
    model's horizon); ``refit`` retrains the registered settings per window on the data before it."""

    windows: int = 3
    step: int | None = None
    refit: bool = False

    def __post_init__(self) -> None:
        _at_least(self, 1, "windows", "step")


@dataclass(frozen=True)
class Settings:
    """One training run: the network, the windows and the optimiser. The model's horizon is the data's."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.model.horizon != self.data.horizon:
            object.__setattr__(self, "model", dataclasses.replace(self.model, horizon=self.data.horizon))

    def updated(self, options: dict[str, Any]) -> Settings:
        """A copy with flat option values (``lookback=144, reps=4``, as the CLI names them) put in place."""
        parts: dict[str, dict[str, Any]] = {"model": {}, "qkan": {}, "data": {}, "train": {}}
        for key, value in options.items():
            if key not in OPTIONS:
                raise ConfigError(key, f"is not an option; known: {', '.join(OPTIONS)}")
            parts[OPTIONS[key]][key] = value.value if isinstance(value, Enum) else value
        model = dataclasses.replace(self.model, **parts["model"])
        if parts["qkan"]:
            model = dataclasses.replace(model, qkan=dataclasses.replace(model.qkan, **parts["qkan"]))
        return Settings(
            model,
            dataclasses.replace(self.data, **parts["data"]),
            dataclasses.replace(self.train, **parts["train"]),
        )


def _options() -> dict[str, str]:
    """Flat option name -> the part of ``Settings`` it sets (model fields the data decides are left out)."""
    out: dict[str, str] = {}
    derived = {"input_size", "horizon", "qkan", "season", "future_size", "lag_days"}
    parts = (("data", DataConfig), ("train", TrainConfig), ("model", ModelConfig), ("qkan", QKANSpec))
    for part, cls in parts:
        for f in dataclasses.fields(cls):
            if not (cls is ModelConfig and f.name in derived):
                out.setdefault(f.name, part)
    return out


OPTIONS = _options()
ARCHITECTURE = tuple(k for k, part in OPTIONS.items() if part in ("model", "qkan")) + ("horizon",)
