"""Format 4: the per-series scaler statistics live in ``scaler.parquet`` beside the weights, read whole or
one bucket at a time; formats 1-3 (statistics in the manifest) keep loading and forecasting alike."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import sine_panel

from qkanforecast import batch, scaler_table
from qkanforecast.config import BacktestConfig, DataConfig, ModelConfig, Settings, TrainConfig
from qkanforecast.data import Dataset, bucket_of, from_frame, write_partitioned
from qkanforecast.errors import QKANForecastError
from qkanforecast.forecast import Predictor
from qkanforecast.manifest import ScalerState
from qkanforecast.registry import Registry
from qkanforecast.train import train


@pytest.fixture(scope="module")
def version(tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, str, Path]:
    root = tmp_path_factory.mktemp("v4")
    table = from_frame(sine_panel(9, 300, ids="c{}"))
    settings = Settings(ModelConfig("lstm", hidden_size=4), DataConfig(lookback=16, horizon=4),
                        TrainConfig(epochs=1, max_windows=256))
    registry = Registry(root / "reg")
    entry = train(table, settings, registry=registry)
    write_partitioned(from_frame(sine_panel(12, 300, ids="c{}")), root / "parts", 4)
    return registry, entry.ref, root


def test_a_new_version_keeps_the_statistics_beside_the_weights(version: tuple[Registry, str, Path]) -> None:
    registry, ref, _ = version
    entry = registry.get(ref)
    on_disk = json.loads((entry.path / "manifest.json").read_text())
    assert on_disk["format_version"] == 4
    assert on_disk["scaler"] == {"kind": "standard", "unique_id": [], "loc": [], "scale": []}
    assert on_disk["scaler_file"]["file"] == "scaler.parquet" and on_disk["scaler_file"]["series"] == 9
    table = Predictor.load(ref, registry)  # statistics read back exactly
    fitted = from_frame(sine_panel(9, 300, ids="c{}"))
    for i, uid in enumerate(fitted.ids):  # standard scaler on the training part (val 10%)
        values = fitted.values[fitted.offsets[i]:fitted.offsets[i + 1]][:270]
        assert table.scaler.stats(uid) == (float(values.mean()), float(values.std()))
    assert registry.get(ref, scaler=False).manifest.scaler.unique_id == []


@pytest.mark.parametrize("buckets", [1, 4, 8, 6])
def test_a_bucket_reads_exactly_its_series(tmp_path: Path, buckets: int) -> None:
    ids = [f"cell-{i}" for i in range(500)]
    state = ScalerState("robust", ids, [float(i) for i in range(500)], [1.0 + i for i in range(500)])
    scaler_table.write_scaler(tmp_path / "s.parquet", state)
    whole = scaler_table.read_scaler(tmp_path / "s.parquet")
    rows = sorted(zip(whole.unique_id, whole.loc, whole.scale, strict=True))
    assert whole.kind == "robust" and rows == sorted(zip(ids, state.loc, state.scale, strict=True))
    want = bucket_of(ids, buckets)
    seen = []
    for k in range(buckets):
        part = scaler_table.read_scaler(tmp_path / "s.parquet", (k, buckets))
        assert part.kind == "robust"
        assert sorted(part.unique_id) == sorted(u for u, b in zip(ids, want, strict=True) if b == k)
        assert all(loc == float(u.split("-")[1]) for u, loc in zip(part.unique_id, part.loc, strict=True))
        seen += part.unique_id
    assert sorted(seen) == sorted(ids)


def test_a_power_of_two_bucket_skips_the_other_row_groups(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scaler_table, "ROW_GROUP", 64)
    ids = [f"cell-{i}" for i in range(4096)]
    state = ScalerState("standard", ids, [0.0] * 4096, [1.0] * 4096)
    scaler_table.write_scaler(tmp_path / "s.parquet", state)
    meta = pq.ParquetFile(tmp_path / "s.parquet").metadata
    lo, hi = scaler_table.key_range(5, 16)
    touched = 0
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(0).statistics  # the key column
        touched += stats.min < hi and stats.max >= lo
    assert meta.num_row_groups == 64 and touched <= 64 // 16 + 1


def test_formats_1_to_3_hold_the_statistics_inline_and_forecast_alike(version: tuple[Registry, str, Path],
                                                                      tmp_path: Path) -> None:
    registry, ref, root = version
    entry = registry.get(ref)
    old = registry.root / "inline" / "v1"
    old.mkdir(parents=True)
    (old / "model.pt").write_bytes((entry.path / "model.pt").read_bytes())
    manifest = entry.manifest.to_json()
    manifest.pop("scaler_file")
    manifest.update(format_version=3, name="inline")
    (old / "manifest.json").write_text(json.dumps(manifest))
    inline = Predictor.load("inline", registry, with_scaler=False)
    assert inline.entry.manifest.scaler == entry.manifest.scaler  # read from the manifest
    parts = Dataset.open(root / "parts")
    a = batch.run_forecast(Predictor.load(ref, registry, with_scaler=False), parts, "-").frame
    b = batch.run_forecast(inline, parts, "-").frame
    assert a is not None and b is not None and len(a) == 12 * 4
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    v4 = Predictor.load(ref, registry, with_scaler=False)
    ea = batch.run_evaluate(v4, parts, BacktestConfig(2)).evaluation
    eb = batch.run_evaluate(inline, parts, BacktestConfig(2)).evaluation
    assert ea is not None and eb is not None
    pd.testing.assert_frame_equal(ea.metrics, eb.metrics, check_exact=True)
    assert ea.notes == eb.notes and ea.notes  # the trained series are known per bucket
    assert np.isfinite(ea.metrics["mae"]).all()


def test_a_modified_scaler_table_is_refused(version: tuple[Registry, str, Path]) -> None:
    registry, ref, root = version
    copy = registry.root / "copy" / "v1"
    copy.mkdir(parents=True)
    src = registry.get(ref, scaler=False).path
    for name in ("model.pt", "manifest.json", "scaler.parquet"):
        (copy / name).write_bytes((src / name).read_bytes())
    scaler_table.write_scaler(copy / "scaler.parquet", ScalerState("standard", ["c0"], [0.0], [2.0]))
    with pytest.raises(QKANForecastError, match=r"scaler\.parquet: sha256 .* does not match the manifest"):
        registry.get("copy")
