"""The typed manifest of a registered model version (``manifest.json``), validated on load.

Format 4 keeps the per-series scaler statistics in ``scaler.parquet`` beside the weights (``scaler_file``;
the manifest's ``scaler`` holds only the kind on disk, and the registry fills it in on load, or a worker
reads its bucket's rows). Formats 2 and 3 hold them inline and read as they are.

Format 3 is ``to_dict(Manifest)``: the three configurations (``ModelConfig``, ``DataConfig``,
``TrainConfig``) as the run used them, the data schema, the scaler state, the training record and the
conformal calibration, the covariates' scaling and the data's time zone (``schema.tz``). Format 2 is
the same without the last two (read as none and naive data). Format 1
(qkanforecast 0.1, flat constructor arguments and one ``TrainConfig`` dict) is read and converted;
nothing is ever rewritten on disk.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

from qkanforecast.config import (
    INTERVAL_LEVELS,
    MAX_STEPS,
    PLAIN,
    Columns,
    ConfigError,
    DataConfig,
    ModelConfig,
    QKANSpec,
    Scaler,
    TrainConfig,
    family_info,
    from_dict,
    to_dict,
)
from qkanforecast.covariates import CovariateStats
from qkanforecast.errors import QKANForecastError

# 3: exogenous covariates, holidays and the data's time zone (format 2 reads as it is); 4: the per-series
# scaler state in a table beside the weights (``scaler_file``; formats 1-3 hold it inline, read as they are)
FORMAT_VERSION = 4


@dataclass(frozen=True)
class Epoch:
    """One line of the training history."""

    epoch: int
    train_loss: float
    val_loss: float
    seconds: float
    windows_per_s: float


@dataclass(frozen=True)
class Schema:
    """What the model was trained on: the frequency, the series, where the data came from."""

    freq: str
    series: int
    source: str | None = None
    trained_until: str | None = None  # the last timestamp training or validation read
    columns: Columns = dataclasses.field(default_factory=Columns)
    tz: str | None = None  # the data's zone (Table.tz): timestamps are UTC, outputs use it; None: naive


@dataclass(frozen=True)
class ScalerState:
    """Per-series ``(v - loc) / scale`` statistics, one entry per series seen in training."""

    kind: str
    unique_id: list[str]
    loc: list[float]
    scale: list[float]

    def __post_init__(self) -> None:
        if not len(self.unique_id) == len(self.loc) == len(self.scale):
            raise QKANForecastError(
                f"scaler state: {len(self.unique_id)} ids but {len(self.loc)} locations and "
                f"{len(self.scale)} scales"
            )


@dataclass(frozen=True)
class Calibration:
    """Split-conformal half-widths per level and horizon step, in scaled units."""

    method: str
    windows: int
    levels: list[int]
    half_widths: list[list[float]]  # [levels, H]

    def __post_init__(self) -> None:
        if len(self.half_widths) != len(self.levels):
            raise QKANForecastError(
                f"calibration: {len(self.levels)} levels but {len(self.half_widths)} rows of half-widths"
            )


@dataclass(frozen=True)
class Training:
    """How the weights came to be: the run's size and time, and the version it started from."""

    warm_start: str | None
    train_windows: int
    val_windows: int
    seconds: float
    best_epoch: int
    train_loss: float  # at the best epoch
    val_loss: float  # at the best epoch (the training loss when there was no validation part)


@dataclass(frozen=True)
class InputRanges:
    """The range each recurrent layer's QKAN inputs took on a sample of training windows: the x-axis of
    the activation plots (``qkanforecast plot activations``), so that they show the part of every edge
    function the model used. ``low``/``high``: ``[layers][QKAN inputs]``."""

    windows: int
    low: list[list[float]]
    high: list[list[float]]

    def __post_init__(self) -> None:
        if [len(r) for r in self.low] != [len(r) for r in self.high]:
            raise QKANForecastError("input ranges: low and high differ in shape")


@dataclass(frozen=True)
class Weights:
    file: str
    sha256: str


@dataclass(frozen=True)
class ScalerFile:
    """The table of per-series scaler statistics beside the weights (format 4; see ``scaler_table``)."""

    file: str
    sha256: str
    series: int


@dataclass(frozen=True)
class Manifest:
    """Everything needed to rebuild, check and describe one registered version."""

    name: str
    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    schema: Schema
    num_parameters: int
    scaler: ScalerState
    training: Training
    history: list[Epoch]
    calibration: Calibration | None = None
    covariates: CovariateStats | None = None  # the scaling of the exogenous covariates (if any)
    input_ranges: InputRanges | None = None  # QKAN families; older manifests have none
    weights: Weights | None = None  # set by the registry when it publishes
    scaler_file: ScalerFile | None = None  # format 4: ``scaler`` on disk holds only the kind
    created: str = ""
    qkanforecast_version: str = ""
    torch_version: str = ""
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        """Validate a parsed ``manifest.json`` of any known format into a ``Manifest``."""
        if not isinstance(data, dict):
            raise QKANForecastError(f"expected a JSON object, got {type(data).__name__}")
        fmt = data.get("format_version")
        if fmt == 1:
            data = _from_format_1(data)
        elif fmt in (2, 3):
            data = {**data, "format_version": FORMAT_VERSION}  # formats 3 and 4 only added optional fields
        elif fmt != FORMAT_VERSION:
            raise QKANForecastError(f"unknown format_version {fmt!r}")
        try:
            manifest = from_dict(cls, data, "manifest")
        except ConfigError as exc:
            raise QKANForecastError(f"manifest: {exc}") from None
        check_bounds(manifest)
        return manifest


# Bounds a manifest is checked against on load, far above anything trained here, so that a hostile or
# corrupt manifest cannot make forecast allocate terabytes or loop for ever before the weights are read.
LIMITS = {
    "data.lookback": 1 << 20,
    "data.horizon": MAX_STEPS,
    "model.horizon": MAX_STEPS,
    "model.input_size": 1 << 10,
    "model.hidden_size": 1 << 12,
    "model.num_layers": 64,
    "model.latent_in": 64,
    "model.latent_out": 64,
    "model.season": 1 << 20,
    "model.decoder_size": 1 << 12,
    "model.recurrent_steps": 1 << 20,
    "model.qkan.reps": 64,
    "num_parameters": 1 << 30,
    "schema.series": 1 << 31,
}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_bounds(m: Manifest) -> None:
    """Refuse a manifest whose values are of the right types but out of range or inconsistent."""
    for path, limit in LIMITS.items():
        value: Any = m
        for part in path.split("."):
            value = getattr(value, part)
        if value is not None and not 0 <= value <= limit:
            raise QKANForecastError(f"manifest.{path}: {value} is outside 0..{limit:,}")
    if m.model.horizon != m.data.horizon:
        raise QKANForecastError(
            f"manifest: model.horizon {m.model.horizon} differs from data.horizon {m.data.horizon}")
    scaler = m.scaler
    if scaler.kind not in {s.value for s in Scaler}:
        raise QKANForecastError(f"manifest.scaler.kind: unknown scaler {scaler.kind!r}")
    table = m.scaler_file  # format 4: the statistics are in the table (checked when it is read)
    if table is not None and not _SHA256.match(table.sha256):
        raise QKANForecastError("manifest.scaler_file.sha256: not a sha256 hex digest")
    count = table.series if table is not None and not scaler.unique_id else len(scaler.unique_id)
    if count != m.schema.series:
        raise QKANForecastError(f"manifest.scaler: {count} series but schema.series says {m.schema.series}")
    if len(set(scaler.unique_id)) != len(scaler.unique_id):
        raise QKANForecastError("manifest.scaler.unique_id: a series is listed twice")
    if not all(math.isfinite(v) for v in scaler.loc) or not all(
            math.isfinite(v) and v > 0 for v in scaler.scale):
        raise QKANForecastError("manifest.scaler: locations must be finite and scales finite and positive")
    cal = m.calibration
    if cal is not None:
        if not set(cal.levels) <= set(INTERVAL_LEVELS):
            raise QKANForecastError(f"manifest.calibration.levels: {cal.levels} are not all of "
                                    f"{', '.join(map(str, INTERVAL_LEVELS))}")
        if any(len(row) != m.data.horizon or not all(math.isfinite(v) and v >= 0 for v in row)
               for row in cal.half_widths):
            raise QKANForecastError(
                f"manifest.calibration.half_widths: each row needs {m.data.horizon} finite values >= 0")
    if m.weights is not None and (m.weights.file != "model.pt" or not _SHA256.match(m.weights.sha256)):
        raise QKANForecastError("manifest.weights: file must be model.pt with a sha256 of 64 hex digits")


_SPEC_KEYS = frozenset(f.name for f in dataclasses.fields(QKANSpec))



def model_config_from_v1(name: str, flat: dict[str, Any]) -> ModelConfig:
    """The ModelConfig of a format-1 manifest: the family ``name`` and its flat constructor arguments.

    The QKAN edge options (reps, readout, solver, preact_trainable, postact_trainable, base_weight) go
    into ``ModelConfig.qkan``; a family that reads no QKAN spec ignores them. Other keys are ModelConfig
    fields; an unknown one is an error.
    """
    rest = {k: v for k, v in flat.items() if k not in _SPEC_KEYS}
    data: dict[str, Any] = {**PLAIN, **rest, "model": name}
    if family_info(name).qkan:
        data["qkan"] = {k: v for k, v in flat.items() if k in _SPEC_KEYS}
    return from_dict(ModelConfig, data, where=f"model {name!r}")


def _from_format_1(old: dict[str, Any]) -> dict[str, Any]:
    """Convert a format-1 manifest (qkanforecast 0.1) to the format-2 layout."""
    try:
        model, data, training = old["model"], old["data"], old["training"]
        run = dict(training["config"])
        data_keys = {f.name for f in dataclasses.fields(DataConfig)}
        train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
        metrics = old["metrics"]
        return {
            "format_version": FORMAT_VERSION,
            "name": old["name"],
            "created": old.get("created", ""),
            "qkanforecast_version": old.get("qkanforecast_version", ""),
            "torch_version": old.get("torch_version", ""),
            "model": {  # 0.1's recurrence read the whole window
                **to_dict(model_config_from_v1(model["name"], dict(model["config"]))),
                "recurrent_steps": run["lookback"],
            },
            "num_parameters": model["num_parameters"],
            "data": {k: v for k, v in run.items() if k in data_keys},
            "train": {  # 0.1 trained on every window unless max_windows was given
                **{k: v for k, v in run.items() if k in train_keys},
                "max_windows": run.get("max_windows") or 0,
                "loss": "mse",
            },
            "schema": {
                "freq": data["freq"],
                "series": data["series"],
                "source": data.get("source"),
                "trained_until": data.get("trained_until"),
                "columns": data.get("columns") or to_dict(Columns()),
            },
            "scaler": old["scaler"],
            "training": {
                "warm_start": training.get("warm_start"),
                "train_windows": training["train_windows"],
                "val_windows": training["val_windows"],
                "seconds": training["seconds"],
                "best_epoch": metrics["best_epoch"],
                "train_loss": metrics["train_loss"],
                "val_loss": metrics["val_loss"],
            },
            "history": old["history"],
            "calibration": old.get("calibration"),
            "weights": old.get("weights"),
        }
    except (KeyError, TypeError, AttributeError) as exc:
        raise QKANForecastError(f"format 1 manifest without {exc}") from None
