"""Items of the hostile-input audit (issue 10), each named after its number there."""

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import sine_panel
from typer.testing import CliRunner

from qkanforecast.cli import app
from qkanforecast.data import write_frame


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def trained(tmp_path):
    root = tmp_path
    data = root / "panel.csv"
    sine_panel().to_csv(data, index=False)
    reg = root / "registry"
    result = run("train", data, "--model", "lstm", "--lookback", "16", "--epochs", "1", "--registry", reg,
                 "--name", "m", "-q")
    assert result.exit_code == 0, result.stderr
    return data, reg, result.stdout.strip()


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_item_02_malicious_pickle_is_an_error_without_advice(trained):
    data, reg, ref = trained
    path = Path(run("models", "path", ref, "--registry", reg).stdout.strip())
    (path / "model.pt").write_bytes(pickle.dumps({"w": _Evil()}))  # with a matching sha256
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["weights"]["sha256"] = hashlib.sha256((path / "model.pt").read_bytes()).hexdigest()
    (path / "manifest.json").write_text(json.dumps(manifest))
    result = run("forecast", data, "-m", ref, "--registry", reg)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "not a plain state_dict" in result.stderr and "weights_only" not in result.stderr


def test_item_10_format_that_contradicts_the_suffix_is_an_error(tmp_path):
    frame = pd.DataFrame({"y": [1.0]})
    from qkanforecast.errors import QKANForecastError

    with pytest.raises(QKANForecastError, match=r"x\.parquet: the suffix says parquet but the format asked"):
        write_frame(frame, tmp_path / "x.parquet", "csv")
    assert not (tmp_path / "x.parquet").exists()
    write_frame(frame, tmp_path / "x.csv", "csv")  # agreeing is fine
    write_frame(frame, "-", "jsonl", stdout=__import__("io").BytesIO())  # stdout has no suffix


def test_item_11_json_lines_round_trip_exactly(tmp_path):
    values = np.array([0.1234567890123456789, 1 / 3, 1e-300, 123456789.123456789, np.nan])
    ds = pd.date_range("2024-01-01", periods=5, freq="h")
    frame = pd.DataFrame({"unique_id": "a", "ds": ds, "y": values})
    write_frame(frame, tmp_path / "f.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "f.jsonl").read_text().splitlines()]
    back = np.array([np.nan if r["y"] is None else r["y"] for r in rows])
    np.testing.assert_array_equal(back, values)  # bit for bit (NaN as null)
    assert rows[1]["ds"] == "2024-01-01T01:00:00.000"


def test_item_18_steps_beyond_the_limit_is_an_error(trained):
    data, reg, ref = trained
    result = run("forecast", data, "-m", ref, "--registry", reg, "--steps", "99999999999999")
    assert result.exit_code == 1 and result.stdout == ""
    limit = "Error: --steps 99999999999999 is more than 100,000, the most one forecast makes\n"
    assert result.stderr == limit
    assert "at most 100,000" in " ".join(run("forecast", "-h").stdout.split())


def test_item_21_a_bare_name_is_always_a_registry_name(trained, tmp_path, monkeypatch):
    data, reg, ref = trained
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()  # a directory named like the model in the working directory
    result = run("models", "path", "m", "--registry", reg)
    assert result.exit_code == 0 and result.stdout.strip().endswith("registry/m/v1")


def test_item_26_an_empty_registry_says_so(tmp_path):
    result = run("models", "list", "--registry", tmp_path / "empty")
    assert result.exit_code == 0 and result.stdout == ""
    assert result.stderr == f"no models in registry {tmp_path / 'empty'}\n"
    assert torch.get_num_threads() >= 1
