import json
from dataclasses import replace
from pathlib import Path

import pytest

from qkanforecast.config import PLAIN, ModelConfig, QKANSpec
from qkanforecast.errors import QKANForecastError
from qkanforecast.manifest import FORMAT_VERSION, Manifest, model_config_from_v1

V1 = PLAIN  # a format-1 model: the raw window in, one Linear from the last hidden state out
GOLDEN = Path(__file__).parent / "golden" / "registry" / "golden" / "v1" / "manifest.json"


def test_model_config_from_v1_manifest() -> None:
    # the flat constructor arguments of a format-1 manifest (tests/golden), QKAN options into the spec
    flat = dict(input_size=1, horizon=3, hidden_size=3, num_layers=1, dropout=0.0, reps=2, readout="fast",
                solver="auto", preact_trainable=False, postact_trainable=False, base_weight=True, bias=True)
    expected = ModelConfig(
        "qkan-lstm", input_size=1, horizon=3, hidden_size=3, qkan=QKANSpec(reps=2, readout="fast"), **V1
    )
    assert model_config_from_v1("qkan-lstm", flat) == expected
    # a family without a QKAN spec ignores those keys
    lstm = model_config_from_v1("lstm", dict(input_size=2, hidden_size=5, reps=2, readout="born"))
    assert lstm == ModelConfig("lstm", input_size=2, hidden_size=5, **V1)
    with pytest.raises(ValueError, match="^model 'lstm': unknown key 'width'"):
        model_config_from_v1("lstm", dict(width=5))


def test_format_1_is_read_into_the_typed_manifest():
    old = json.loads(GOLDEN.read_text())
    m = Manifest.from_json(old)
    assert m.format_version == FORMAT_VERSION and m.name == "golden"
    expected = ModelConfig(
        "qkan-lstm", input_size=1, horizon=3, hidden_size=3, qkan=QKANSpec(reps=2, readout="fast"), **V1
    )
    assert m.model == replace(expected, recurrent_steps=12)  # the whole lookback, as 0.1 read it
    assert (m.data.lookback, m.data.horizon, m.data.scaler.value) == (12, 3, "standard")
    assert (m.train.epochs, m.train.seed, m.train.patience) == (3, 7, 5)
    assert m.schema.freq == "10min" and m.schema.series == 2 and m.schema.columns.id_col == "unique_id"
    assert m.training.best_epoch == old["metrics"]["best_epoch"] and len(m.history) == len(old["history"])
    assert m.scaler.unique_id == ["cell0", "cell1"] and m.weights.sha256 == old["weights"]["sha256"]
    # format 2 round-trips exactly through JSON
    assert Manifest.from_json(json.loads(json.dumps(m.to_json()))) == m


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["data"].update(lookback="12"), "manifest.data.lookback: expected int, got '12'"),
        (lambda d: d["data"].update(lookback=0), "lookback must be at least 1, got 0"),
        (lambda d: d["model"].update(width=3), "manifest.model: unknown key 'width'"),
        (lambda d: d["scaler"].update(loc=[0.0]), "scaler state: 2 ids but 1 locations"),
        (lambda d: d.update(history={}), "manifest.history: expected a list"),
        (lambda d: d.update(format_version=7), "unknown format_version 7"),
    ],
)
def test_bad_manifests_are_refused_naming_the_field(change, message):
    data = Manifest.from_json(json.loads(GOLDEN.read_text())).to_json()
    change(data)
    with pytest.raises(QKANForecastError, match=message):
        Manifest.from_json(data)
